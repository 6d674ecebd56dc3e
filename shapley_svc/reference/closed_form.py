"""Closed forms: linear models and sums of low-order terms."""

from collections.abc import Callable, Sequence

import numpy as np

from shapley_svc.reference._result import ShapleyValues, package
from shapley_svc.reference._validation import (
    DEFAULT_MAX_MEMORY_BYTES,
    check_max_memory,
    check_rows_and_background,
)
from shapley_svc.reference.enumeration import MAX_EXACT_FEATURES, exact_shapley


def _as_offsets(intercept: float | np.ndarray, n_outputs: int) -> np.ndarray:
    """The intercept as a finite (K,) array; a scalar applies to every output."""
    offsets = np.asarray(intercept, dtype=np.float64).reshape(-1)
    if offsets.size == 1:
        offsets = np.repeat(offsets, n_outputs)
    if offsets.size != n_outputs or not np.isfinite(offsets).all():
        raise ValueError(
            f"intercept must be a finite scalar or have {n_outputs} entries; "
            f"got {np.shape(intercept)}"
        )
    return offsets


def linear_shapley(
    coef: np.ndarray,
    intercept: float | np.ndarray,
    X: np.ndarray,
    background: np.ndarray,
) -> ShapleyValues:
    """Exact interventional Shapley values of ``f(x) = coef @ x + intercept``.

    ``phi_j = coef_j * (x_j - mean_z z_j)``: the background enters only through its mean.

    Parameters
    ----------
    coef : (d,) for a single output, (K, d) for K outputs (scikit-learn's ``coef_`` layout).
    intercept : scalar, or (K,) with a (K, d) ``coef``.
    X : (m, d) rows to explain.
    background : (n_background, d) background rows.

    Returns
    -------
    ShapleyValues
        ``values`` of shape (m, d) for a 1-D ``coef``, (m, d, K) for a 2-D one.
    """
    rows, background = check_rows_and_background(X, background)
    d = rows.shape[1]
    weights = np.asarray(coef, dtype=np.float64)
    single_output = weights.ndim == 1
    weights = np.atleast_2d(weights)
    if weights.ndim != 2 or weights.shape[1] != d:
        raise ValueError(
            f"coef must have shape ({d},) or (K, {d}) for X with {d} features; got {np.shape(coef)}"
        )
    offsets = _as_offsets(intercept, weights.shape[0])
    if not np.isfinite(weights).all():
        raise ValueError("coef must be finite")
    mean_background = background.mean(axis=0)
    values = (rows - mean_background)[:, :, None] * weights.T[None, :, :]
    base_value = mean_background @ weights.T + offsets
    predictions = rows @ weights.T + offsets
    return package(values, base_value, predictions, single_output, "closed form (linear)")


def additive_shapley(
    terms: Sequence[tuple[Sequence[int], Callable[[np.ndarray], np.ndarray]]],
    X: np.ndarray,
    background: np.ndarray,
    intercept: float | np.ndarray = 0.0,
    *,
    max_memory: int = DEFAULT_MAX_MEMORY_BYTES,
) -> ShapleyValues:
    """Exact interventional Shapley values of ``f(x) = intercept + sum_t g_t(x[features_t])``.

    Shapley values are linear in the game and a term is a null player's game for every feature
    outside its own, so each term is enumerated over its own features only: a one-feature term
    costs its values on X and on the background, a two-feature term adds the 2-D averages
    ``mean_z g(x_j, z_k)`` and ``mean_z g(z_j, x_k)``.

    Parameters
    ----------
    terms : sequence of ``(features, function)``; ``features`` is a sequence of distinct column
        indices (at most 16), ``function`` maps an (n, len(features)) array to (n,) or (n, K)
        outputs; all terms must agree on K.
    X : (m, d) rows to explain.
    background : (n_background, d) background rows.
    intercept : scalar or (K,) constant added to the output (it shifts predictions and base
        values, never attributions).
    max_memory : passed to :func:`exact_shapley` for each term.

    Returns
    -------
    ShapleyValues
        ``values`` of shape (m, d) when the terms return 1-D outputs, (m, d, K) otherwise.
    """
    rows, background = check_rows_and_background(X, background)
    max_memory = check_max_memory(max_memory)
    m, d = rows.shape
    if len(terms) == 0:
        raise ValueError("terms must hold at least one (features, function) pair")
    values = None
    base_value = predictions = None
    single_output = True
    evaluations = 0
    for index, term in enumerate(terms):
        try:
            features, function = term
        except (TypeError, ValueError):
            raise ValueError(f"terms[{index}] must be a (features, function) pair") from None
        columns = np.asarray(features, dtype=np.int64).reshape(-1)
        if not 1 <= columns.size <= MAX_EXACT_FEATURES:
            raise ValueError(
                f"terms[{index}] must name 1 to {MAX_EXACT_FEATURES} features; got {columns.size}"
            )
        if columns.min() < 0 or columns.max() >= d or np.unique(columns).size != columns.size:
            raise ValueError(
                f"terms[{index}] features must be distinct column indices in "
                f"[0, {d}); got {columns.tolist()}"
            )
        if not callable(function):
            raise ValueError(f"terms[{index}] function must be callable")
        part = exact_shapley(
            function, rows[:, columns], background[:, columns], max_memory=max_memory
        )
        part_values = part.values if part.values.ndim == 3 else part.values[:, :, None]
        n_outputs = part_values.shape[2]
        if values is None:
            values = np.zeros((m, d, n_outputs))
            base_value = np.zeros(n_outputs)
            predictions = np.zeros((m, n_outputs))
            single_output = part.values.ndim == 2
        elif n_outputs != values.shape[2] or single_output != (part.values.ndim == 2):
            raise ValueError(
                f"terms[{index}] returns {n_outputs} outputs; earlier terms "
                f"returned {values.shape[2]}"
            )
        values[:, columns] += part_values
        base_value += part.base_values.reshape(m, n_outputs)[0]
        predictions += part.predictions.reshape(m, n_outputs)
        evaluations += part.model_evaluations
    offset = _as_offsets(intercept, values.shape[2])
    return package(
        values,
        base_value + offset,
        predictions + offset,
        single_output,
        "closed form (additive)",
        model_evaluations=evaluations,
    )
