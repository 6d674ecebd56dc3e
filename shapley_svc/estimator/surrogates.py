"""The surrogate zoo: cheap models fitted on (context rows, model outputs), explained exactly.

Each surrogate is fitted to one output column and explains itself exactly (closed forms or
TreeSHAP) or, for logistic surrogates above a few features, by the per-reference rescale rule
(DeepSHAP's, for one link), so its attributions cost nothing of the user's model. Which
surrogate to trust in a context is what the meta-learned combiner decides.

Regularisation strengths are fixed multiples of the row count rather than tuned by
cross-validation: how credit is split among correlated features is not identifiable from the fit,
so the zoo offers a weakly and a strongly regularised variant and lets the combiner choose.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.model_selection import KFold
from sklearn.preprocessing import SplineTransformer

from shapley_svc.kernels.link_additive import sigmoid_additive_rescaled
from shapley_svc.reference import TreeBackground, linear_shapley
from shapley_svc.reference.closed_form import logistic_additive_shapley

RIDGE_ALPHAS = np.logspace(-4, 3, 15)
SPLINE_KNOTS = 6
TREE_MAX_DEPTH = 6
# Above this many features a logistic surrogate is attributed by the per-reference rescale rule
# (r >= 0.996 against its exact values on breast cancer) instead of 2^d coalitions.
LOGISTIC_EXACT_FEATURES = 6


class Surrogate:
    """Fit on standardised rows and one output column; attribute rows against a background.

    ``predict`` and ``shapley`` are on the output's own scale (probability or value).
    """

    def fit(self, Z: np.ndarray, target: np.ndarray, seed: int) -> "Surrogate":
        raise NotImplementedError

    def predict(self, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def shapley(self, Z: np.ndarray, background: np.ndarray, seed: int) -> np.ndarray:
        """(m, d) interventional Shapley values of the surrogate's own output."""
        raise NotImplementedError

    def _for_background(self, background: np.ndarray, prepare):
        """``prepare(background)``, computed once per background: explain calls repeat it."""
        cached = getattr(self, "_background_cache", None)
        if cached is None or not np.array_equal(cached[0], background):
            cached = self._background_cache = (background.copy(), prepare(background))
        return cached[1]


def _spline_basis(Z: np.ndarray) -> SplineTransformer:
    return SplineTransformer(
        n_knots=SPLINE_KNOTS, degree=3, knots="uniform", extrapolation="linear"
    ).fit(Z)


def _per_feature_terms(basis: np.ndarray, coef: np.ndarray, d: int) -> np.ndarray:
    """(m, d) contribution of each feature's block of basis columns."""
    m = basis.shape[0]
    return np.einsum("mdb,db->md", basis.reshape(m, d, -1), coef.reshape(d, -1))


class RidgeSurrogate(Surrogate):
    """Linear; ``strength`` None picks alpha by generalised cross-validation."""

    def __init__(self, strength: float | None = None):
        self.strength = strength

    def fit(self, Z, target, seed):
        if self.strength is None:
            self.model_ = RidgeCV(alphas=RIDGE_ALPHAS).fit(Z, target)
        else:
            self.model_ = Ridge(alpha=self.strength * Z.shape[0]).fit(Z, target)
        return self

    def predict(self, Z):
        return self.model_.predict(Z)

    def shapley(self, Z, background, seed):
        return linear_shapley(self.model_.coef_, self.model_.intercept_, Z, background).values


class SplineSurrogate(Surrogate):
    """A sum of one cubic spline per feature: phi_j = g_j(x_j) - mean_z g_j(z_j)."""

    def fit(self, Z, target, seed):
        self.splines_ = _spline_basis(Z)
        self.model_ = RidgeCV(alphas=RIDGE_ALPHAS).fit(self.splines_.transform(Z), target)
        return self

    def predict(self, Z):
        return self.model_.predict(self.splines_.transform(Z))

    def _terms(self, Z):
        return _per_feature_terms(self.splines_.transform(Z), self.model_.coef_, Z.shape[1])

    def shapley(self, Z, background, seed):
        background_mean = self._for_background(
            background, lambda rows: self._terms(rows).mean(axis=0)
        )
        return self._terms(Z) - background_mean


class SoftLogisticSurrogate(Surrogate):
    """``sigmoid(sum_j g_j(x_j))`` fitted to probabilities by soft-label cross-entropy.

    Cross-entropy against the model's own probabilities is the KL projection onto the logistic
    family; unlike least squares on clipped logits it is not distorted by saturated outputs.
    ``strength`` is the L2 penalty per row (scikit-learn's C = 1 / (strength * n)).
    """

    def __init__(self, strength: float, splines: bool):
        self.strength = strength
        self.splines = splines

    def _basis(self, Z):
        return self.splines_.transform(Z) if self.splines else Z

    def fit(self, Z, target, seed):
        self.splines_ = _spline_basis(Z) if self.splines else None
        basis = self._basis(Z)
        n = Z.shape[0]
        self.model_ = LogisticRegression(C=1.0 / (self.strength * n), max_iter=2000).fit(
            np.vstack([basis, basis]),
            np.r_[np.ones(n), np.zeros(n)],
            sample_weight=np.r_[target, 1.0 - target],
        )
        return self

    def _terms(self, Z):
        return _per_feature_terms(self._basis(Z), self.model_.coef_[0], Z.shape[1])

    def predict(self, Z):
        return self.model_.predict_proba(self._basis(Z))[:, 1]

    def shapley(self, Z, background, seed):
        row_terms = np.ascontiguousarray(self._terms(Z))
        background_terms = self._for_background(
            background, lambda rows: np.ascontiguousarray(self._terms(rows))
        )
        offset = float(self.model_.intercept_[0])
        if Z.shape[1] <= LOGISTIC_EXACT_FEATURES:
            return logistic_additive_shapley(row_terms, background_terms, offset).values
        values = np.empty(row_terms.shape)
        sigmoid_additive_rescaled(row_terms, background_terms, offset, values)
        return values


class _TreeSurrogate(Surrogate):
    """A scikit-learn tree ensemble in ``model_``, explained by interventional TreeSHAP.

    Depth is capped at ``TREE_MAX_DEPTH`` so that every leaf tests at most that many features:
    the background then folds into small per-leaf tables, built once per background, and a row
    costs the same whatever the background's size.
    """

    def predict(self, Z):
        return self.model_.predict(Z)

    def shapley(self, Z, background, seed):
        prepared = self._for_background(background, lambda rows: TreeBackground(self.model_, rows))
        return prepared.values(Z)[:, :, 0]


class BoostedTreesSurrogate(_TreeSurrogate):
    def fit(self, Z, target, seed):
        self.model_ = HistGradientBoostingRegressor(
            max_iter=200,
            learning_rate=0.1,
            max_leaf_nodes=15,
            max_depth=TREE_MAX_DEPTH,
            min_samples_leaf=5,
            l2_regularization=1e-3,
            random_state=seed,
        ).fit(Z, target)
        return self


class ForestSurrogate(_TreeSurrogate):
    """Extremely randomised trees on half the features per split: spreads correlated credit."""

    def fit(self, Z, target, seed):
        self.model_ = ExtraTreesRegressor(
            n_estimators=100,
            max_depth=TREE_MAX_DEPTH,
            min_samples_leaf=2,
            max_features=0.5,
            random_state=seed,
            n_jobs=None,  # the caller's joblib configuration decides (the explainer: all cores)
        ).fit(Z, target)
        return self


@dataclass(frozen=True)
class SurrogateKind:
    """A named member of the zoo; ``probability_only`` kinds need outputs in [0, 1]."""

    name: str
    probability_only: bool

    def make(self) -> Surrogate:
        return _FACTORIES[self.name]()


_FACTORIES = {
    "ridge": RidgeSurrogate,
    "ridge_strong": lambda: RidgeSurrogate(strength=0.05),
    "spline": SplineSurrogate,
    "logistic": lambda: SoftLogisticSurrogate(strength=0.002, splines=False),
    "logistic_strong": lambda: SoftLogisticSurrogate(strength=0.02, splines=False),
    "logistic_spline": lambda: SoftLogisticSurrogate(strength=0.002, splines=True),
    "boosted_trees": BoostedTreesSurrogate,
    "forest": ForestSurrogate,
}

ZOO = (
    SurrogateKind("ridge", False),
    SurrogateKind("ridge_strong", False),
    SurrogateKind("spline", False),
    SurrogateKind("logistic", True),
    SurrogateKind("logistic_strong", True),
    SurrogateKind("logistic_spline", True),
    SurrogateKind("boosted_trees", False),
    SurrogateKind("forest", False),
)


@dataclass
class FittedSurrogate:
    """A surrogate fitted on one output column, and how well it fits out of fold."""

    kind: SurrogateKind
    model: Surrogate
    oof_r2: float


def fit_surrogate(
    kind: SurrogateKind, Z: np.ndarray, target: np.ndarray, seed: int, n_folds: int = 3
) -> FittedSurrogate:
    """Fit on all rows, and measure R^2 out of fold from ``n_folds`` refits."""
    out_of_fold = np.empty_like(target)
    for train, test in KFold(n_folds, shuffle=True, random_state=seed).split(Z):
        out_of_fold[test] = kind.make().fit(Z[train], target[train], seed).predict(Z[test])
    total = np.sum((target - target.mean()) ** 2)
    oof_r2 = 1.0 - np.sum((target - out_of_fold) ** 2) / total if total > 0 else 0.0
    return FittedSurrogate(kind, kind.make().fit(Z, target, seed), float(oof_r2))
