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


def _labels_in_order(present: list) -> list:
    """The distinct labels of ``present`` (no missing values), sorted."""
    distinct = list(dict.fromkeys(present))
    try:
        return sorted(distinct)
    except TypeError:  # mixed types: a deterministic order all the same
        return sorted(distinct, key=lambda value: (type(value).__name__, str(value)))


def _kind(value) -> str | None:
    """What a label is: "string", "bool" or "number"; None for anything a coded column cannot
    hold (dates, Decimals, lists, ...: a saved explainer keeps its labels as JSON, and lookups
    need them hashable)."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | float | np.integer | np.floating):
        return "number"
    return None


def _kinds(name: str, column: str, values: list) -> dict[str, object]:
    """Each kind among ``values`` (present ones) -> one value of that kind; a value of no kind
    is refused naming ``name`` and the column."""
    kinds: dict[str, object] = {}
    for value in {type(value): value for value in values}.values():
        kind = _kind(value)
        if kind is None:
            raise InvalidArgumentError(
                name,
                f"column {column!r} holds {type(value).__name__} values ({value!r}); a coded "
                "column holds strings, bools or numbers: convert it (e.g. with .astype(str))",
            )
        kinds.setdefault(kind, value)
    return kinds


def _check_labels(name: str, column: str, labels: list) -> None:
    """Refuse labels a fit cannot code: of no kind, or bools with numbers (True is 1 and False
    is 0 to a lookup, so they would silently share a code)."""
    kinds = _kinds(name, column, labels)
    if "bool" in kinds and "number" in kinds:
        raise InvalidArgumentError(
            name,
            f"column {column!r} mixes bool and number labels ({kinds['bool']!r}, "
            f"{kinds['number']!r}), which would share codes (True is 1): make them one kind "
            "(e.g. with .astype(str))",
        )


def _check_like_values(name: str, column: str, kinds: dict[str, object], labels: list) -> None:
    """Refuse query values (``kinds``, from ``_kinds``) of another kind than the labels coded at
    fit: "True" among bool labels, or 0 among string labels, was an unseen category in every row
    with no error (off by up to 0.67, QA 2026-12-05). A label of the right kind that the fit
    never saw stays an unseen category; so does any label when the fit saw none."""
    expected = list(dict.fromkeys(_kind(label) for label in labels))
    wrong = [kind for kind in kinds if labels and kind not in expected]
    if wrong:
        value = kinds[wrong[0]]
        raise InvalidArgumentError(
            name,
            f"column {column!r} holds {type(value).__name__} values ({value!r}); the explainer "
            f"coded it from {' and '.join(map(str, expected))} labels ({_some(labels)}) at fit: "
            "pass the labels",
        )


def _some(labels: list) -> str:
    return f"{labels[:5]}{', ...' if len(labels) > 5 else ''}"


def _coded(values: list, missing: list, labels: list) -> np.ndarray:
    position = {label: float(code) for code, label in enumerate(labels)}
    return np.array(
        [
            np.nan if gone else position.get(value, UNSEEN_CODE)
            for value, gone in zip(values, missing, strict=True)
        ],
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
    for j in range(frame.shape[1]):
        series = frame.iloc[:, j]
        dtype = series.dtype
        if categories is not None and j in categories:
            labels = categories[j]
            _check_like_labels(name, names[j], series, labels)
        elif categories is not None and not (
            types.is_numeric_dtype(dtype) and not types.is_bool_dtype(dtype)
        ):
            if series.isna().all():
                # A number missing in every row: one record parsed from JSON gives an object
                # column of None, which holds no labels (QA, 2026-12-06: refused as labels).
                rows[:, j] = display[:, j] = np.nan
                continue
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
            labels = None  # the values' own, sorted
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
        values = series.astype(object).tolist()
        missing = [_missing(value) for value in values]
        present = [value for value, gone in zip(values, missing, strict=True) if not gone]
        kinds = _kinds(name, names[j], present)  # first: a list or dict cannot be looked up
        if categories is not None:
            _check_like_values(name, names[j], kinds, labels)
        else:
            labels = _labels_in_order(present) if labels is None else labels
            _check_labels(name, names[j], labels)
        found[j] = labels
        rows[:, j] = _coded(values, missing, labels)
        display[:, j] = [
            None if gone else value for value, gone in zip(values, missing, strict=True)
        ]
    return CodedTable(rows, names, found, display)


def label_kind(labels: list) -> str | None:
    """ "string" or "bool" when every label is one (what a column coded from them must hold),
    else None (numbers, or a mix: any column may hold them)."""
    if labels and all(isinstance(label, str) for label in labels):
        return "string"
    if labels and all(isinstance(label, bool | np.bool_) for label in labels):
        return "bool"
    return None


def _check_like_labels(name: str, column: str, series, labels: list) -> None:
    """Refuse a column that cannot hold the labels it was coded from at fit: numbers in a
    column of string labels are all unseen categories, so every row got the unseen-label
    answer with no error (off by up to 0.51, QA 2026-12-05)."""
    from pandas.api import types

    dtype = series.dtype
    if series.isna().all():
        return  # every value missing (an empty column read from a file is float64 NaN)
    kind = label_kind(labels)
    if kind is None or isinstance(dtype, types.CategoricalDtype):
        return
    text = types.is_object_dtype(dtype) or types.is_string_dtype(dtype)
    if text or (kind == "bool" and types.is_bool_dtype(dtype)):
        return
    raise InvalidArgumentError(
        name,
        f"column {column!r} has dtype {dtype}; the explainer coded it from {kind} labels "
        f"({_some(labels)}) at fit: pass the labels",
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
