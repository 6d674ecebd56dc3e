"""Exact interventional Shapley values by enumerating every coalition."""

from collections.abc import Callable

import numpy as np

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.kernels.enumeration import fill_coalition_rows, shapley_from_coalition_values
from shapley_svc.reference._result import ShapleyValues, package
from shapley_svc.reference._validation import (
    DEFAULT_MAX_MEMORY_BYTES,
    MAX_ROWS_PER_CALL,
    check_max_memory,
    check_rows_and_background,
    evaluate,
)

MAX_EXACT_FEATURES = 16


def exact_shapley(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    background: np.ndarray,
    *,
    max_memory: int = DEFAULT_MAX_MEMORY_BYTES,
) -> ShapleyValues:
    """Exact interventional Shapley values of any vectorised model, for d <= 16 features.

    The value of coalition S for row x is the mean over background rows z of
    ``predict(x_S, z_rest)``; all 2**d coalitions are evaluated, so the model sees
    ``m * (2**d - 2) * n_background + m + n_background`` rows in total.

    Parameters
    ----------
    predict : callable mapping an (n, d) float64 array to (n,) or (n, K) outputs.
    X : (m, d) rows to explain; NaN (a missing value) is passed on to ``predict``, +-inf is
        refused.
    background : (n_background, d) rows that stand in for absent features; NaN as in X.
    max_memory : bound in bytes on the arrays this function allocates (model inputs, coalition
        value tables, results), whatever m, d and n_background. Each call of ``predict`` also
        receives at most 65,536 rows, which bounds the model's own working memory.

    Returns
    -------
    ShapleyValues
        ``values`` of shape (m, d) for a model with a 1-D output, (m, d, K) otherwise.
    """
    rows, background = check_rows_and_background(X, background, allow_nan=True)
    max_memory = check_max_memory(max_memory)
    m, d = rows.shape
    if d > MAX_EXACT_FEATURES:
        raise InvalidArgumentError(
            "X",
            f"has {d} features; exact_shapley enumerates 2**d coalitions and takes at most "
            f"{MAX_EXACT_FEATURES}. Use sampled_shapley (or tree_shapley for tree ensembles).",
        )
    n_background = background.shape[0]
    background_outputs, single_output = evaluate(predict, background)
    row_outputs, _ = evaluate(predict, rows)
    n_outputs = background_outputs.shape[1]
    if row_outputs.shape[1] != n_outputs:
        raise InvalidArgumentError(
            "predict",
            f"returned {row_outputs.shape[1]} outputs for X but {n_outputs} for background",
        )
    base_value = background_outputs.mean(axis=0)

    # A quarter of the budget for one call's inputs and outputs, half for coalition tables.
    bytes_per_model_row = 8 * (d + 2 * n_outputs)
    if n_background * bytes_per_model_row > max_memory // 4:
        raise InvalidArgumentError(
            "background",
            f"has {n_background} rows, too many to evaluate one coalition within "
            f"max_memory={max_memory} bytes; subsample it or raise max_memory",
        )
    rows_per_call = min(MAX_ROWS_PER_CALL, max_memory // 4 // bytes_per_model_row)
    units_per_call = max(1, rows_per_call // n_background)
    n_masks = 1 << d
    bytes_per_table_row = 8 * n_outputs * (2 * n_masks + d)
    rows_per_group = max(1, max_memory // 2 // bytes_per_table_row)

    values = np.empty((m, d, n_outputs))
    model_evaluations = m + n_background
    for group_start in range(0, m, rows_per_group):
        group = rows[group_start : group_start + rows_per_group]
        group_size = group.shape[0]
        table = np.empty((group_size, n_masks, n_outputs))
        table[:, 0] = base_value
        table[:, n_masks - 1] = row_outputs[group_start : group_start + group_size]
        n_units = group_size * (n_masks - 2)
        inner = np.empty((n_units, n_outputs))
        buffer = np.empty((min(units_per_call, n_units) * n_background, d))
        for unit_start in range(0, n_units, units_per_call):
            unit_stop = min(unit_start + units_per_call, n_units)
            inputs = buffer[: (unit_stop - unit_start) * n_background]
            fill_coalition_rows(group, background, unit_start, unit_stop, inputs)
            outputs, _ = evaluate(predict, inputs)
            if outputs.shape[1] != n_outputs:
                raise InvalidArgumentError(
                    "predict",
                    f"returned {outputs.shape[1]} outputs; it returned {n_outputs} before",
                )
            per_unit = outputs.reshape(unit_stop - unit_start, n_background, n_outputs)
            inner[unit_start:unit_stop] = per_unit.mean(axis=1)
            model_evaluations += inputs.shape[0]
        table[:, 1 : n_masks - 1] = inner.reshape(group_size, n_masks - 2, n_outputs)
        shapley_from_coalition_values(table, values[group_start : group_start + group_size])

    return package(
        values,
        base_value,
        row_outputs,
        single_output,
        "exact enumeration",
        model_evaluations=model_evaluations,
    )
