"""Thin client of the shapley-svc gRPC service: numpy in, attributions out."""

from shapley_client.client import (
    Context,
    Explanation,
    FieldViolation,
    OutputDiagnostics,
    Proposal,
    ShapleyClient,
    ShapleyError,
    SurrogateDiagnostics,
    TlsConfig,
    retry_service_config,
)

__all__ = [
    "Context",
    "Explanation",
    "FieldViolation",
    "OutputDiagnostics",
    "Proposal",
    "ShapleyClient",
    "ShapleyError",
    "SurrogateDiagnostics",
    "TlsConfig",
    "retry_service_config",
]
