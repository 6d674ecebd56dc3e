"""Fitted contexts and explanations against them, with no transport: the layer between the gRPC
servicer and the estimator (content addresses, single-flight store, limits, compute threads).

``ContextService`` pulls in the estimator and its numba kernels, so it is imported when first
asked for: the plain values (``spec``) and the store load without them.
"""

from shapley_svc.contexts.spec import PATIENT, Caller, ContextLimits, ContextSpec, content_id
from shapley_svc.contexts.store import ContextStore, StoredContext


def __getattr__(name: str):
    if name == "ContextService":
        from shapley_svc.contexts.service import ContextService

        return ContextService
    raise AttributeError(f"module 'shapley_svc.contexts' has no attribute {name!r}")


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
