"""Fitted contexts and explanations against them, with no transport: the layer between the gRPC
servicer and the estimator (content addresses, single-flight store, limits, compute threads)."""

from shapley_svc.contexts.service import (
    PATIENT,
    Caller,
    ContextLimits,
    ContextService,
    ContextSpec,
    content_id,
)
from shapley_svc.contexts.store import ContextStore, StoredContext

__all__ = [
    "PATIENT",
    "Caller",
    "ContextLimits",
    "ContextService",
    "ContextSpec",
    "ContextStore",
    "StoredContext",
    "content_id",
]
