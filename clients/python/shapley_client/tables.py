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
    return type(table).__module__.startswith("pandas") and hasattr(table, "dtypes")


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


def _labels_in_order(values) -> list:
    """The distinct present labels, sorted (mixed types: by type name, then text)."""
    present = [value for value in dict.fromkeys(values) if not _is_missing(value)]
    try:
        return sorted(present)
    except TypeError:
        return sorted(present, key=lambda value: (type(value).__name__, str(value)))


def _plain_numeric(dtype) -> bool:
    from pandas.api import types

    return (
        types.is_numeric_dtype(dtype)
        and not types.is_bool_dtype(dtype)
        and not types.is_complex_dtype(dtype)
    )


def coded_columns(frame) -> list[str]:
    """The names of the columns of ``frame`` that need labels to be sent (not plain numbers)."""
    return [str(column) for column, dtype in frame.dtypes.items() if not _plain_numeric(dtype)]


def _labels_of(name: str, series) -> list:
    from pandas.api import types

    dtype = series.dtype
    if isinstance(dtype, types.CategoricalDtype):
        return dtype.categories.tolist()
    if types.is_bool_dtype(dtype):
        return [False, True]
    if types.is_object_dtype(dtype) or types.is_string_dtype(dtype):
        return _labels_in_order(series.tolist())
    raise TypeError(f"rows column {name!r} has dtype {dtype}, which cannot be sent: {SUPPORTED}")


def code_frame(frame, categories: dict[int, list] | None = None) -> CodedFrame:
    """Code ``frame``'s columns.

    Without ``categories`` (a context being created), the labels are taken from the frame:
    category order, sorted distinct labels of object/string columns, False < True. With the
    ``categories`` of a context, its coded columns use its labels (a label not among them
    becomes ``UNSEEN_CODE``; numbers where it had text labels are refused) and every other
    column must be numeric.
    """
    names = [str(column) for column in frame.columns]
    numeric = [_plain_numeric(dtype) for dtype in frame.dtypes]
    all_float32 = all(dtype == np.float32 for dtype in frame.dtypes)
    rows = np.empty(frame.shape, dtype=np.float32 if all_float32 else np.float64)
    display = np.empty(frame.shape, dtype=object)
    found: dict[int, list] = {}
    for j in range(frame.shape[1]):
        series = frame.iloc[:, j]
        if categories is not None and j in categories:
            labels = categories[j]
            if numeric[j] and not any(
                isinstance(label, int | float | np.number) for label in labels
            ):
                # Numbers looked up among text labels would all be unseen categories.
                raise ValueError(
                    f"rows column {names[j]!r} holds numbers; the context coded it from the "
                    f"labels {labels}: send those labels (or an array of their codes)"
                )
        elif numeric[j]:
            rows[:, j] = series.to_numpy(dtype=rows.dtype, na_value=np.nan)
            display[:, j] = rows[:, j]
            continue
        elif categories is not None:
            raise ValueError(
                f"rows column {names[j]!r} has dtype {series.dtype}; the context was created "
                "with numbers in this column, not labels, so it has no codes for them"
            )
        else:
            labels = _labels_of(names[j], series)
        found[j] = labels
        position = {label: float(code) for code, label in enumerate(labels)}
        values = series.astype(object).tolist()
        missing = [_is_missing(value) for value in values]
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
