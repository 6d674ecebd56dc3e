"""The zero-shot, meta-learned Shapley estimator: the public API the server and users build on."""

from shapley_svc.errors import CancelledError
from shapley_svc.estimator.artifact import ArtifactError, load_artifact
from shapley_svc.estimator.explainer import NotFittedError, ZeroShotExplainer
from shapley_svc.estimator.result import (
    Diagnostics,
    Explanation,
    OutputDiagnostics,
    SurrogateDiagnostics,
)

# The name earlier releases gave the cancellation of fit(should_stop=...): the same class.
FitCancelled = CancelledError

__all__ = [
    "ArtifactError",
    "Diagnostics",
    "Explanation",
    "FitCancelled",
    "NotFittedError",
    "OutputDiagnostics",
    "SurrogateDiagnostics",
    "ZeroShotExplainer",
    "load_artifact",
]
