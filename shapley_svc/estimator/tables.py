"""pandas DataFrames as the estimator's numeric rows: categories become codes, kept in a mapping.

Columns of dtype ``category``, ``object``/string and ``bool`` become integer codes (NaN for a
missing value) and are declared categorical; the labels behind the codes are kept by the fitted
explainer, so query frames are coded the same way and answers stay per original column. pandas
is imported only when a DataFrame arrives: the server never needs it.
"""

from dataclasses import dataclass

import numpy as np

from shapley_svc.errors import InvalidArgumentError

UNSEEN_CODE = -1.0  # a label the context never showed: no level of the column has this code


def is_data_frame(table: object) -> bool:
    """Duck-typed, so that arrays never import pandas."""
    return (
        type(table).__module__.startswith("pandas")
        and hasattr(table, "dtypes")
        and hasattr(table, "columns")  # a Series has dtypes too: it is one row, or one column
    )


@dataclass(frozen=True)
class CodedTable:
    """A DataFrame as float64 rows.

    Attributes
    ----------
    rows : (n, d) float64; NaN for missing values, codes in categorical columns.
    names : the d column names, as strings.
    categories : column index -> the labels whose codes are 0, 1, ... (columns coded here).
    display : (n, d) objects: the frame's own values (numbers; labels, unseen ones included),
        None for a coded column's missing cell.
    """

    rows: np.ndarray
    names: list[str]
    categories: dict[int, list]
    display: np.ndarray


def _missing(value) -> bool:
    """None, NaN, pandas' NA or NaT: ``value == value`` cannot tell, as NA == NA is NA."""
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _labels_in_order(values) -> list:
    present = [value for value in dict.fromkeys(values) if not _missing(value)]
    try:
        return sorted(present)
    except TypeError:  # mixed types: a deterministic order all the same
        return sorted(present, key=lambda value: (type(value).__name__, str(value)))


def _coded(values, labels: list) -> np.ndarray:
    position = {label: float(code) for code, label in enumerate(labels)}
    return np.array(
        [np.nan if _missing(value) else position.get(value, UNSEEN_CODE) for value in values],
        dtype=np.float64,
    )


def code_frame(name: str, frame, categories: dict[int, list] | None = None) -> CodedTable:
    """Code ``frame``'s columns: with ``categories`` from an earlier fit, the same labels get the
    same codes (and labels not among them ``UNSEEN_CODE``); without, the labels are taken from
    the frame (category order, else sorted; bool False < True)."""
    from pandas.api import types

    names = [str(column) for column in frame.columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidArgumentError(name, f"has repeated column names: {repeated}")
    rows = np.empty(frame.shape, dtype=np.float64)
    display = np.empty(frame.shape, dtype=object)
    found: dict[int, list] = {}
    for j, column in enumerate(frame.columns):
        series = frame[column]
        dtype = series.dtype
        if categories is not None and j in categories:
            labels = categories[j]
            _check_like_labels(name, names[j], dtype, labels)
        elif categories is not None and not (
            types.is_numeric_dtype(dtype) and not types.is_bool_dtype(dtype)
        ):
            raise InvalidArgumentError(
                name,
                f"column {names[j]!r} has dtype {dtype}; it was numeric when the explainer was "
                "fitted",
            )
        elif isinstance(dtype, types.CategoricalDtype):
            labels = list(dtype.categories)
        elif types.is_bool_dtype(dtype):
            labels = [False, True]
        elif types.is_object_dtype(dtype) or types.is_string_dtype(dtype):
            labels = _labels_in_order(series.tolist())
        elif types.is_numeric_dtype(dtype) and not types.is_complex_dtype(dtype):
            rows[:, j] = series.to_numpy(dtype=np.float64, na_value=np.nan)
            display[:, j] = rows[:, j]
            continue
        else:
            raise InvalidArgumentError(
                name,
                f"column {names[j]!r} has dtype {dtype}, which the explainer cannot take: "
                "numeric, bool, category, object and string columns are supported",
            )
        found[j] = labels
        values = series.astype(object).tolist()
        rows[:, j] = _coded(values, labels)
        display[:, j] = [None if _missing(value) else value for value in values]
    return CodedTable(rows, names, found, display)


def label_kind(labels: list) -> str | None:
    """ "string" or "bool" when every label is one (what a column coded from them must hold),
    else None (numbers, or a mix: any column may hold them)."""
    if labels and all(isinstance(label, str) for label in labels):
        return "string"
    if labels and all(isinstance(label, bool | np.bool_) for label in labels):
        return "bool"
    return None


def _check_like_labels(name: str, column: str, dtype, labels: list) -> None:
    """Refuse a column that cannot hold the labels it was coded from at fit: numbers in a
    column of string labels are all unseen categories, so every row got the unseen-label
    answer with no error (off by up to 0.51, QA 2026-12-05)."""
    from pandas.api import types

    kind = label_kind(labels)
    if kind is None or isinstance(dtype, types.CategoricalDtype):
        return
    text = types.is_object_dtype(dtype) or types.is_string_dtype(dtype)
    if text or (kind == "bool" and types.is_bool_dtype(dtype)):
        return
    raise InvalidArgumentError(
        name,
        f"column {column!r} has dtype {dtype}; the explainer coded it from {kind} labels "
        f"({labels[:5]}{', ...' if len(labels) > 5 else ''}) at fit: pass the labels",
    )


def display_rows(rows: np.ndarray, categories: dict[int, list]) -> np.ndarray:
    """(m, d) object rows of coded ``rows`` (an array, not a frame): labels in coded columns
    (None for missing or unseen codes), else numbers."""
    display = rows.astype(object)
    for j, labels in categories.items():
        display[:, j] = [
            labels[int(code)] if code == code and 0 <= code < len(labels) else None
            for code in rows[:, j]
        ]
    return display
