"""pandas DataFrames as rows of numbers: category, object/string and bool columns become codes.

A coded column's labels are kept (column index -> labels; code c stands for labels[c]), so that
query frames are coded with the same mapping and answers can show the labels. pandas is imported
only when a DataFrame arrives (``is_data_frame`` is duck-typed): the client needs it for
DataFrames alone. The estimator codes frames the same way (``shapley_svc.estimator.tables``);
the client keeps its own copy, as it never imports the server's package.
"""

from dataclasses import dataclass

import numpy as np

# What a label the context never showed is sent as: no label of the column has this code, so the
# server takes it as an unseen category.
UNSEEN_CODE = -1.0

SUPPORTED = "numeric, bool, category, object and string columns are supported"


def is_data_frame(table: object) -> bool:
    """Duck-typed, so that arrays never import pandas."""
    return (
        type(table).__module__.startswith("pandas")
        and hasattr(table, "dtypes")
        and hasattr(table, "columns")  # a Series has dtypes too: it is one row, or one column
    )


@dataclass(frozen=True)
class CodedFrame:
    """A DataFrame as rows of numbers.

    Attributes
    ----------
    rows : (n, d) float64 (float32 when every column is float32); NaN for missing values, codes
        in coded columns.
    names : the d column names, as strings.
    categories : column index -> the labels whose codes are 0, 1, ... (the columns coded).
    display : (n, d) objects: the frame's values, with None for a coded column's missing cells.
    """

    rows: np.ndarray
    names: list[str]
    categories: dict[int, list]
    display: np.ndarray


def _is_missing(value) -> bool:
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _labels_in_order(present: list) -> list:
    """The distinct labels of ``present`` (no missing values), sorted (mixed types: by type
    name, then text)."""
    distinct = list(dict.fromkeys(present))
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=lambda value: (type(value).__name__, str(value)))


def _refused(name: str, problem: str, wrong_type: bool = False) -> Exception:
    # Imported here: the client module imports this one.
    from shapley_client.client import InvalidArgumentError, InvalidArgumentTypeError

    return (InvalidArgumentTypeError if wrong_type else InvalidArgumentError)(name, problem)


def _kind(value) -> str | None:
    """What a label is: "string", "bool" or "number"; None for anything a coded column cannot
    hold (dates, Decimals, lists, ...), as the estimator, which saves labels as JSON, rules."""
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
            raise _refused(
                name,
                f"column {column!r} holds {type(value).__name__} values ({value!r}); a coded "
                "column holds strings, bools or numbers: convert it (e.g. with .astype(str))",
            )
        kinds.setdefault(kind, value)
    return kinds


def _check_labels(name: str, column: str, labels: list) -> None:
    """Refuse labels a context cannot be coded from: of no kind, or bools with numbers (True is
    1 and False is 0 to a lookup, so they would silently share a code)."""
    kinds = _kinds(name, column, labels)
    if "bool" in kinds and "number" in kinds:
        raise _refused(
            name,
            f"column {column!r} mixes bool and number labels ({kinds['bool']!r}, "
            f"{kinds['number']!r}), which would share codes (True is 1): make them one kind "
            "(e.g. with .astype(str))",
        )


def _label_kind(labels: list) -> str | None:
    """ "string" or "bool" when every label is one, else None (the estimator's ``label_kind``)."""
    if labels and all(isinstance(label, str) for label in labels):
        return "string"
    if labels and all(isinstance(label, bool | np.bool_) for label in labels):
        return "bool"
    return None


def _some(labels: list) -> str:
    return f"{labels[:5]}{', ...' if len(labels) > 5 else ''}"


def _check_like_labels(name: str, column: str, series, labels: list) -> None:
    """Refuse a column whose dtype cannot hold the labels the context was coded from: numbers
    in a column of string or bool labels would all be unseen categories."""
    from pandas.api import types

    dtype = series.dtype
    if series.isna().all():
        return  # every value missing (an empty column read from a file is float64 NaN)
    kind = _label_kind(labels)
    if kind is None or isinstance(dtype, types.CategoricalDtype):
        return
    text = types.is_object_dtype(dtype) or types.is_string_dtype(dtype)
    if text or (kind == "bool" and types.is_bool_dtype(dtype)):
        return
    raise _refused(
        name,
        f"column {column!r} has dtype {dtype}; the context coded it from {kind} labels "
        f"({_some(labels)}): send the labels (or an array of their codes)",
    )


def _check_like_values(name: str, column: str, kinds: dict[str, object], labels: list) -> None:
    """Refuse values (``kinds``, from ``_kinds``) of another kind than the context's labels:
    "True" among bool labels, or 0 among string labels, would be an unseen category in every
    row. A label of the right kind the context never showed stays an unseen category; so does
    any label when it showed none."""
    expected = list(dict.fromkeys(_kind(label) for label in labels))
    wrong = [kind for kind in kinds if labels and kind not in expected]
    if wrong:
        value = kinds[wrong[0]]
        raise _refused(
            name,
            f"column {column!r} holds {type(value).__name__} values ({value!r}); the context "
            f"coded it from {' and '.join(map(str, expected))} labels ({_some(labels)}): send "
            "the labels (or an array of their codes)",
        )


def _plain_numeric(dtype) -> bool:
    from pandas.api import types

    return (
        types.is_numeric_dtype(dtype)
        and not types.is_bool_dtype(dtype)
        and not types.is_complex_dtype(dtype)
    )


def coded_columns(frame) -> list[str]:
    """The names of the columns of ``frame`` that need labels to be sent: not plain numbers,
    and not missing in every row (one JSON record's null is an object column of None, which
    holds no label)."""
    return [
        str(column)
        for j, (column, dtype) in enumerate(frame.dtypes.items())
        if not _plain_numeric(dtype) and not frame.iloc[:, j].isna().all()
    ]


def code_frame(frame, categories: dict[int, list] | None = None, name: str = "rows") -> CodedFrame:
    """Code ``frame``'s columns, by the estimator's rules (``shapley_svc.estimator.tables``).

    Without ``categories`` (a context being created), the labels are taken from the frame:
    category order, sorted distinct labels of object/string columns, False < True; labels are
    strings, bools or numbers, not bools with numbers. With the ``categories`` of a context, its
    coded columns use its labels (a label not among them becomes ``UNSEEN_CODE``; values of
    another kind than its labels are refused) and every other column must be numeric. Refusals
    are :class:`InvalidArgumentError` naming ``name`` (the request field) and the column.
    """
    from pandas.api import types

    names = [str(column) for column in frame.columns]
    repeated = sorted({column for column in names if names.count(column) > 1})
    if repeated:  # as the estimator refuses them, whatever feature_names say
        raise _refused(name, f"has repeated column names: {repeated}")
    numeric = [_plain_numeric(dtype) for dtype in frame.dtypes]
    all_float32 = all(dtype == np.float32 for dtype in frame.dtypes)
    rows = np.empty(frame.shape, dtype=np.float32 if all_float32 else np.float64)
    display = np.empty(frame.shape, dtype=object)
    found: dict[int, list] = {}
    for j in range(frame.shape[1]):
        series = frame.iloc[:, j]
        dtype = series.dtype
        if categories is not None and j in categories:
            labels = categories[j]
            _check_like_labels(name, names[j], series, labels)
        elif numeric[j]:
            rows[:, j] = series.to_numpy(dtype=rows.dtype, na_value=np.nan)
            # The frame's own numbers, not the floats sent: a year in an int64 column showed as
            # 2007.0 in a waterfall (QA, 2026-12-06).
            display[:, j] = np.where(np.isnan(rows[:, j]), np.nan, series.to_numpy(dtype=object))
            continue
        elif categories is not None:
            if series.isna().all():
                # A number missing in every row: one record parsed from JSON gives an object
                # column of None, which holds no labels (as the estimator takes it).
                rows[:, j] = display[:, j] = np.nan
                continue
            raise _refused(
                name,
                f"column {names[j]!r} has dtype {dtype}; the context was created with numbers "
                "in this column, not labels, so it has no codes for them",
            )
        elif isinstance(dtype, types.CategoricalDtype):
            labels = dtype.categories.tolist()
        elif types.is_bool_dtype(dtype):
            labels = [False, True]
        elif types.is_object_dtype(dtype) or types.is_string_dtype(dtype):
            labels = None  # the values' own, sorted
        else:
            raise _refused(
                name,
                f"column {names[j]!r} has dtype {dtype}, which cannot be sent: {SUPPORTED}",
                wrong_type=True,
            )
        values = series.astype(object).tolist()
        missing = [_is_missing(value) for value in values]
        present = [value for value, gone in zip(values, missing, strict=True) if not gone]
        kinds = _kinds(name, names[j], present)  # first: a list or dict cannot be looked up
        if categories is not None:
            _check_like_values(name, names[j], kinds, labels)
        else:
            labels = _labels_in_order(present) if labels is None else labels
            _check_labels(name, names[j], labels)
        found[j] = labels
        position = {label: float(code) for code, label in enumerate(labels)}
        rows[:, j] = [
            np.nan if gone else position.get(value, UNSEEN_CODE)
            for value, gone in zip(values, missing, strict=True)
        ]
        display[:, j] = [
            None if gone else value for value, gone in zip(values, missing, strict=True)
        ]
    return CodedFrame(rows, names, found, display)


def display_rows(rows: np.ndarray, categories: dict[int, list]) -> np.ndarray:
    """(m, d) objects: labels in coded columns (None for a missing or unknown code), numbers
    elsewhere: what a query sent as codes stands for."""
    display = rows.astype(object)
    for j, labels in categories.items():
        display[:, j] = [
            labels[int(code)]
            if code == code and 0 <= code < len(labels) and code == int(code)
            else None
            for code in rows[:, j]
        ]
    return display
