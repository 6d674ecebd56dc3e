"""Thin client of the shapley-svc gRPC service: numpy in, attributions out."""

from shapley_client.client import (
    CalibrationDiagnostics,
    CalibrationProposal,
    Context,
    Explanation,
    FieldViolation,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    OutputDiagnostics,
    Proposal,
    ShapleyClient,
    ShapleyError,
    SurrogateDiagnostics,
    TlsConfig,
    retry_service_config,
)

__all__ = [
    "CalibrationDiagnostics",
    "CalibrationProposal",
    "Context",
    "Explanation",
    "FieldViolation",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "OutputDiagnostics",
    "Proposal",
    "ShapleyClient",
    "ShapleyError",
    "SurrogateDiagnostics",
    "TlsConfig",
    "retry_service_config",
]
