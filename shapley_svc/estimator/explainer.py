"""``ZeroShotExplainer``: interventional SHAP values of a model from its outputs alone."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from joblib import parallel_config
from threadpoolctl import threadpool_limits

from shapley_svc.estimator._memory import held_bytes
from shapley_svc.estimator.artifact import DEFAULT_ARTIFACT, Artifact, load_artifact
from shapley_svc.estimator.combiner import (
    combine,
    gate_weights,
    predicted_fidelity,
    uncertainty_terms,
)
from shapley_svc.estimator.context import OutputContext, Standardiser, fit_output_context
from shapley_svc.estimator.surrogates import ZOO
from shapley_svc.reference._validation import as_float_matrix

DEFAULT_BACKGROUND_ROWS = 100
MAX_RANDOM_STATE = 2**32
_ARTIFACTS: dict[str, Artifact] = {}


def _artifact(path) -> Artifact:
    key = str(path)
    if key not in _ARTIFACTS:
        _ARTIFACTS[key] = load_artifact(path)
    return _ARTIFACTS[key]


class NotFittedError(ValueError):
    """``explain`` was called before ``fit``."""


@dataclass(frozen=True)
class Explanation:
    """Estimated interventional Shapley values with their uncertainty and provenance.

    Attributes
    ----------
    values : (m, d) for a single output, (m, d, K) for K outputs.
    base_values : (m,) or (m, K): the mean prediction over the background rows.
    uncertainty : same shape as ``values``: the standard deviation of each estimate.
    feature_names : d names.
    diagnostics : per output, each surrogate's out-of-fold R^2 and weight and the predicted
        fidelity (expected Pearson r against the true values); the artifact's version.
    predictions : the ``predictions_query`` given, or None; when given,
        ``values.sum(axis=1) == predictions - base_values``.
    """

    values: np.ndarray
    base_values: np.ndarray
    uncertainty: np.ndarray
    feature_names: list[str]
    diagnostics: dict = field(default_factory=dict)
    predictions: np.ndarray | None = None

    def to_shap(self):
        """The values as a ``shap.Explanation`` (needs shap installed), for shap's plots."""
        try:
            import shap
        except ImportError:
            raise ImportError("to_shap() needs the shap package: pip install shap") from None
        return shap.Explanation(
            values=self.values, base_values=self.base_values, feature_names=list(self.feature_names)
        )


def _finite_matrix(name: str, value, n_features: int | None = None) -> np.ndarray:
    """The reference engine's checks, plus the fitted feature count in the estimator's words."""
    array = as_float_matrix(name, value)
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(
            f"{name} has {array.shape[1]} features; the explainer was fitted on {n_features}"
        )
    return array


def _outputs(name: str, value, n_rows: int, n_outputs: int | None = None) -> np.ndarray:
    """Predictions as (n, K) float64; the caller remembers whether they came 1-D."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array") from None
    if array.ndim not in (1, 2) or array.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows},) or ({n_rows}, K); got {array.shape}")
    array = array.reshape(n_rows, -1)
    if n_outputs is not None and array.shape[1] != n_outputs:
        raise ValueError(
            f"{name} has {array.shape[1]} outputs; the explainer was fitted on {n_outputs}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return np.ascontiguousarray(array)


class ZeroShotExplainer:
    """Estimate a model's interventional SHAP values from rows and the model's outputs alone.

    Per output, a zoo of surrogates (linear, logistic, additive splines, boosted trees, a forest)
    is fitted to (X, predictions) and each explains itself exactly; a combiner meta-trained on
    a synthetic prior of data-generating processes and model families weighs them for this
    context and estimates each value's uncertainty. With the query rows' predictions, each row
    is projected onto efficiency, its residual placed where the uncertainty is largest.

    Parameters
    ----------
    random_state : int in [0, 2**32), seeds the background sample, the surrogates and their
        sampling.
    artifact : path of the meta-learned artifact's manifest (default: the shipped one).
    """

    def __init__(self, random_state: int = 0, artifact: str | None = None):
        self.random_state = random_state
        self.artifact = artifact

    def fit(
        self, X, predictions, background=None, feature_names: Sequence[str] | None = None
    ) -> "ZeroShotExplainer":
        """Fit to a context.

        Parameters
        ----------
        X : (n, d) rows; n >= 2.
        predictions : (n,) or (n, K) the model's outputs on X (probabilities, logits or values).
        background : None for a seeded sample of min(n, 100) rows of X, or 1-D int indices into
            X of the rows that stand in for absent features.
        feature_names : d distinct names (default x0, x1, ...).
        """
        if (
            not isinstance(self.random_state, int | np.integer)
            or not 0 <= self.random_state < MAX_RANDOM_STATE
        ):
            raise ValueError(
                f"random_state must be an int in [0, 2**32) (scikit-learn's seed range); "
                f"got {self.random_state!r}"
            )
        rows = _finite_matrix("X", X)
        n, d = rows.shape
        if n < 2:
            raise ValueError(f"X must have at least 2 rows to learn from; got {n}")
        outputs = _outputs("predictions", predictions, n)
        constant = np.flatnonzero(outputs.std(axis=0) <= 1e-12 * (1 + np.abs(outputs).max()))
        if constant.size:
            raise ValueError(
                f"predictions are constant (output {constant[0]}): there is nothing to attribute"
            )
        self.background_ = self._background_indices(background, n)
        self.feature_names_ = self._feature_names(feature_names, d)
        self.artifact_ = _artifact(self.artifact or DEFAULT_ARTIFACT)
        self.single_output_ = np.ndim(predictions) == 1
        self.n_rows_ = n
        self.n_features_in_ = d
        self.n_outputs_ = outputs.shape[1]
        self.standardiser_ = Standardiser.fit(rows)
        Z = self.standardiser_.transform(rows)
        self.background_rows_ = Z[self.background_]
        seed = int(self.random_state)
        # Forest surrogates grow their trees on all cores (the values do not depend on it). The
        # boosted surrogate's OpenMP stays on one thread: on these sizes two are no faster, and
        # called from a worker thread (the server's) OpenMP teams spin against each other,
        # making the fit about 5x slower.
        with (
            parallel_config(backend="threading", n_jobs=-1),
            threadpool_limits(1, user_api="openmp"),
        ):
            self.contexts_: list[OutputContext] = [
                fit_output_context(rows, Z, outputs[:, k], self.background_, seed)
                for k in range(self.n_outputs_)
            ]
        params = self.artifact_.parameters
        self.weights_ = [gate_weights(context, params) for context in self.contexts_]
        self.uncertainty_terms_ = [
            uncertainty_terms(context, params, d) for context in self.contexts_
        ]
        self.diagnostics_ = {
            "artifact": self.artifact_.version,
            "outputs": [
                {
                    "predicted_fidelity": predicted_fidelity(context, params, weights),
                    "surrogates": {
                        kind.name: {"oof_r2": float(features[0]), "weight": float(weight)}
                        for kind, features, weight, ok in zip(
                            ZOO, context.surrogate_features, weights, context.available, strict=True
                        )
                        if ok
                    },
                }
                for context, weights in zip(self.contexts_, self.weights_, strict=True)
            ],
        }
        return self

    def memory_bytes(self) -> int:
        """Estimated bytes this fitted explainer holds (surrogates, their tables, the rows)."""
        if not hasattr(self, "contexts_"):
            raise NotFittedError("this ZeroShotExplainer is not fitted yet: call fit first")
        return held_bytes([self.contexts_, self.background_rows_, self.standardiser_])

    def _background_indices(self, background, n: int) -> np.ndarray:
        if background is None:
            rng = np.random.default_rng(self.random_state)
            return np.sort(rng.choice(n, size=min(n, DEFAULT_BACKGROUND_ROWS), replace=False))
        indices = np.asarray(background)
        if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                "background must be a non-empty 1-D array of integer row indices "
                f"into X; got dtype {indices.dtype}, shape {indices.shape}"
            )
        if indices.min() < 0 or indices.max() >= n:
            raise ValueError(
                f"background indices must lie in [0, {n}); got values from "
                f"{indices.min()} to {indices.max()}"
            )
        if np.unique(indices).size != indices.size:
            raise ValueError("background indices must be distinct")
        return indices.astype(np.int64)

    @staticmethod
    def _feature_names(names, d: int) -> list[str]:
        if names is None:
            return [f"x{j}" for j in range(d)]
        names = [str(name) for name in names]
        if len(names) != d:
            raise ValueError(f"feature_names has {len(names)} names; X has {d} features")
        if len(set(names)) != d:
            raise ValueError("feature_names must be distinct")
        return names

    def explain(self, X_query, predictions_query=None) -> Explanation:
        """Estimated SHAP values of the query rows (exactly efficient when predictions given).

        Parameters
        ----------
        X_query : (m, d) rows to explain.
        predictions_query : None, or the model's outputs on X_query, shaped like ``predictions``.
        """
        if not hasattr(self, "contexts_"):
            raise NotFittedError("this ZeroShotExplainer is not fitted yet: call fit first")
        rows = _finite_matrix("X_query", X_query, self.n_features_in_)
        m, d = rows.shape
        outputs = None
        if predictions_query is not None:
            outputs = _outputs("predictions_query", predictions_query, m, self.n_outputs_)
        Z = self.standardiser_.transform(rows)
        values = np.empty((m, d, self.n_outputs_))
        uncertainty = np.empty((m, d, self.n_outputs_))
        base_values = np.empty((m, self.n_outputs_))
        for k, context in enumerate(self.contexts_):
            surrogate_values = context.surrogate_values(
                Z, self.background_rows_, int(self.random_state)
            )
            spread_scale, floor = self.uncertainty_terms_[k]
            targets = None if outputs is None else outputs[:, k] - context.base_value
            values[:, :, k], uncertainty[:, :, k] = combine(
                surrogate_values, self.weights_[k], spread_scale, floor, targets
            )
            base_values[:, k] = context.base_value
        if self.single_output_:
            values, uncertainty, base_values = (
                values[:, :, 0],
                uncertainty[:, :, 0],
                base_values[:, 0],
            )
            outputs = None if outputs is None else outputs[:, 0]
        return Explanation(
            values, base_values, uncertainty, list(self.feature_names_), self.diagnostics_, outputs
        )
