"""The public accuracy benchmark: scikit-learn's bundled data sets x model families, with truth.

Each case is a model trained on 70 % of a data set; the context is every row of the set with the
model's outputs; 100 background rows and 40 explained rows are drawn from it with a fixed seed.
Truth comes from the reference engine: TreeSHAP for forests, enumeration up to 13 features,
unbiased sampling with a recorded standard error above. Truth is cached under
``benchmarks/.cache/`` (npz, keyed by the case's settings) because enumeration takes minutes.
"""

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from shapley_svc.reference import exact_shapley, sampled_shapley, tree_shapley

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
CASES_VERSION = 1
N_BACKGROUND = 100
N_EXPLAINED = 40
MAX_ENUMERATED_FEATURES = 13
SAMPLING_BUDGET = 40_000

FAMILIES = ("random_forest", "gradient_boosting", "linear", "mlp", "svm", "knn")


@dataclass(frozen=True)
class DataSpec:
    name: str
    task: str  # "binary", "multiclass" or "regression"
    load: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]


def _iris_binary():
    data = load_iris()
    return data.data, (data.target == 2).astype(int), list(data.feature_names)


def _iris_multiclass():
    data = load_iris()
    return data.data, data.target, list(data.feature_names)


def _wine_binary():
    data = load_wine()
    return data.data, (data.target == 0).astype(int), list(data.feature_names)


def _breast_cancer():
    data = load_breast_cancer()
    return data.data, data.target, list(data.feature_names)


def _diabetes():
    data = load_diabetes()
    return data.data, data.target, list(data.feature_names)


DATA = (
    DataSpec("iris", "binary", _iris_binary),
    DataSpec("wine", "binary", _wine_binary),
    DataSpec("breast_cancer", "binary", _breast_cancer),
    DataSpec("diabetes", "regression", _diabetes),
    DataSpec("iris_3class", "multiclass", _iris_multiclass),
)


@dataclass(frozen=True)
class Case:
    """One model on one data set: what the estimator sees and the truth it is judged against.

    Attributes
    ----------
    X : (n, d) context rows (the whole data set).
    predictions : (n,) or (n, K) the model's outputs on X.
    background : (100,) indices into X.
    explained : (40,) indices into X of the rows to explain.
    truth, truth_error : (40, d) or (40, d, K) reference values and their standard errors
        (zeros where exact).
    """

    data: str
    family: str
    task: str
    feature_names: list[str]
    X: np.ndarray
    predictions: np.ndarray
    background: np.ndarray
    explained: np.ndarray
    truth: np.ndarray
    truth_error: np.ndarray
    truth_method: str
    model: object = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.data}/{self.family}"


def make_model(family: str, task: str, seed: int):
    """A scikit-learn model of the family; scale-sensitive ones behind a StandardScaler."""
    classify = task != "regression"
    if family == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(n_estimators=100, random_state=seed)
    if family == "gradient_boosting":
        cls = GradientBoostingClassifier if classify else GradientBoostingRegressor
        return cls(random_state=seed)
    if family == "linear":
        model = LogisticRegression(max_iter=2000) if classify else Ridge(alpha=1.0)
    elif family == "mlp":
        cls = MLPClassifier if classify else MLPRegressor
        model = cls(hidden_layer_sizes=(32, 32), max_iter=2000, random_state=seed)
    elif family == "svm":
        # Platt-scaled probabilities; SVC(probability=True) is deprecated in scikit-learn 1.9.
        model = CalibratedClassifierCV(SVC(), ensemble=False) if classify else SVR(C=10.0)
    elif family == "knn":
        model = KNeighborsClassifier(10) if classify else KNeighborsRegressor(10)
    else:
        raise ValueError(f"unknown family {family!r}")
    return make_pipeline(StandardScaler(), model)


def output_function(model, task: str) -> Callable[[np.ndarray], np.ndarray]:
    """The explained output: P(class 1) for binary, class probabilities, or the regression value."""
    if task == "binary":
        return lambda Z: model.predict_proba(Z)[:, 1]
    if task == "multiclass":
        return model.predict_proba
    return model.predict


def reference_values(
    model, family, task, rows, background, max_enumerated=MAX_ENUMERATED_FEATURES
) -> tuple[np.ndarray, np.ndarray, str]:
    """Truth for a trained model: TreeSHAP for forests, enumeration up to ``max_enumerated``
    features, the sampling estimator (with its standard errors) above."""
    if family == "random_forest":
        result = tree_shapley(model, rows, background)
        values = result.values[:, :, 1] if task == "binary" else result.values
        return values, np.zeros_like(values), "tree_shapley"
    predict = output_function(model, task)
    if rows.shape[1] <= max_enumerated:
        result = exact_shapley(predict, rows, background)
        return result.values, result.uncertainty, "exact_shapley"
    result = sampled_shapley(predict, rows, background, SAMPLING_BUDGET, random_state=0)
    return result.values, result.uncertainty, f"sampled_shapley(budget={SAMPLING_BUDGET})"


def split_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded training rows (70 %), background rows and explained rows outside the background."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    train = order[: int(0.7 * n)]
    background = np.sort(rng.choice(n, size=N_BACKGROUND, replace=False))
    outside = np.setdiff1d(np.arange(n), background)
    explained = np.sort(rng.choice(outside, size=N_EXPLAINED, replace=False))
    return train, background, explained


def cached_truth(
    key: str, predictions: np.ndarray, compute: Callable[[], tuple[np.ndarray, np.ndarray, str]]
) -> tuple[np.ndarray, np.ndarray, str]:
    """``compute()`` once per key, kept in ``CACHE_DIR``; refused when the model's outputs moved."""
    cache = CACHE_DIR / f"{key}.npz"
    if cache.exists():
        stored = np.load(cache)
        if not np.array_equal(stored["predictions"], predictions):
            raise RuntimeError(f"cached truth {cache} no longer matches the model's outputs")
        return stored["truth"], stored["truth_error"], str(stored["method"])
    truth, truth_error, method = compute()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, truth=truth, truth_error=truth_error, method=method, predictions=predictions)
    return truth, truth_error, method


def build_case(spec: DataSpec, family: str, seed: int = 0) -> Case:
    """Train, predict and compute (or load cached) truth for one case."""
    X, y, names = spec.load()
    X = np.asarray(X, dtype=np.float64)
    key = json.dumps(
        [CASES_VERSION, spec.name, family, seed, N_BACKGROUND, N_EXPLAINED, SAMPLING_BUDGET]
    )
    train, background, explained = split_rows(len(X), seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make_model(family, spec.task, seed).fit(X[train], y[train])
    predictions = output_function(model, spec.task)(X)
    truth, truth_error, method = cached_truth(
        hashlib.sha256(key.encode()).hexdigest()[:16],
        predictions,
        lambda: reference_values(model, family, spec.task, X[explained], X[background]),
    )
    return Case(
        spec.name,
        family,
        spec.task,
        names,
        X,
        predictions,
        background,
        explained,
        truth,
        truth_error,
        method,
        model,
    )


def all_cases(
    seed: int = 0, data: tuple[str, ...] | None = None, families: tuple[str, ...] = FAMILIES
) -> list[Case]:
    return [
        build_case(spec, family, seed)
        for spec in DATA
        if data is None or spec.name in data
        for family in families
    ]


def pearson(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Pearson r over all cells."""
    a, b = estimate.ravel(), truth.ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


def r_squared(estimate: np.ndarray, truth: np.ndarray) -> float:
    """1 - SS_residual / SS_total over all cells."""
    residual = np.sum((estimate - truth) ** 2)
    total = np.sum((truth - truth.mean()) ** 2)
    return float(1 - residual / total) if total > 0 else 0.0


def top_k_jaccard(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows (and outputs) of the Jaccard index of the top-floor(d/3) |phi| features."""
    est = estimate if estimate.ndim == 3 else estimate[:, :, None]
    tru = truth if truth.ndim == 3 else truth[:, :, None]
    d = est.shape[1]
    k = max(1, d // 3)
    scores = []
    for i in range(est.shape[0]):
        for o in range(est.shape[2]):
            top_est = set(np.argsort(-np.abs(est[i, :, o]), kind="stable")[:k])
            top_tru = set(np.argsort(-np.abs(tru[i, :, o]), kind="stable")[:k])
            scores.append(len(top_est & top_tru) / len(top_est | top_tru))
    return float(np.mean(scores))
