"""Thin client of the shapley-svc gRPC service: numpy in, attributions out."""

from shapley_client.client import (
    Context,
    Explanation,
    ShapleyClient,
    ShapleyError,
    TlsConfig,
)

__all__ = ["Context", "Explanation", "ShapleyClient", "ShapleyError", "TlsConfig"]
