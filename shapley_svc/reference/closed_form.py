"""Closed forms: linear models and sums of low-order terms."""

from collections.abc import Callable, Sequence

import numpy as np

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.kernels.enumeration import shapley_from_coalition_values
from shapley_svc.kernels.link_additive import (
    sigmoid_additive_coalition_values,
    sigmoid_additive_permutation_credits,
)
from shapley_svc.reference._result import ShapleyValues, package
from shapley_svc.reference._validation import (
    DEFAULT_MAX_MEMORY_BYTES,
    as_float_matrix,
    check_max_memory,
    check_rows_and_background,
)
from shapley_svc.reference.enumeration import MAX_EXACT_FEATURES, exact_shapley

MAX_LOGISTIC_ENUMERATION = 12
# Rows per coalition table: 256 rows x 2**12 coalitions x 8 bytes = 8 MiB.
LOGISTIC_ROWS_PER_TABLE = 256


def _as_offsets(intercept: float | np.ndarray, n_outputs: int) -> np.ndarray:
    """The intercept as a finite (K,) array; a scalar applies to every output."""
    offsets = np.asarray(intercept, dtype=np.float64).reshape(-1)
    if offsets.size == 1:
        offsets = np.repeat(offsets, n_outputs)
    if offsets.size != n_outputs or not np.isfinite(offsets).all():
        raise InvalidArgumentError(
            "intercept",
            f"must be a finite scalar or have {n_outputs} entries; got {np.shape(intercept)}",
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
        raise InvalidArgumentError(
            "coef",
            f"must have shape ({d},) or (K, {d}) for X with {d} features; got {np.shape(coef)}",
        )
    offsets = _as_offsets(intercept, weights.shape[0])
    if not np.isfinite(weights).all():
        raise InvalidArgumentError("coef", "must be finite")
    mean_background = background.mean(axis=0)
    values = linear_values(weights, rows, mean_background)
    base_value = mean_background @ weights.T + offsets
    predictions = rows @ weights.T + offsets
    return package(values, base_value, predictions, single_output, "closed form (linear)")


def linear_values(coef: np.ndarray, rows: np.ndarray, background_mean: np.ndarray) -> np.ndarray:
    """(m, d, K) values of ``linear_shapley``, with no checks: the core the estimator's linear
    surrogates call on rows it has already validated.

    Parameters
    ----------
    coef : (K, d) float64.
    rows : (m, d) float64 rows to explain.
    background_mean : (d,) the background rows' column means.
    """
    return (rows - background_mean)[:, :, None] * coef.T[None, :, :]


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
    try:
        terms = list(terms)
    except TypeError:
        raise InvalidArgumentError(
            "terms", f"must be a sequence of (features, function) pairs; got {terms!r}"
        ) from None
    if len(terms) == 0:
        raise InvalidArgumentError("terms", "must hold at least one (features, function) pair")
    values = None
    base_value = predictions = None
    single_output = True
    evaluations = 0
    for index, term in enumerate(terms):
        try:
            features, function = term
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                "terms", f"item {index} must be a (features, function) pair"
            ) from None
        columns = np.asarray(features).reshape(-1)
        if not 1 <= columns.size <= MAX_EXACT_FEATURES:
            raise InvalidArgumentError(
                "terms",
                f"item {index} must name 1 to {MAX_EXACT_FEATURES} features; got {columns.size}",
            )
        if columns.dtype == bool or not np.issubdtype(columns.dtype, np.integer):
            # A cast would take 1.7 for column 1 and True for column 1.
            raise InvalidArgumentError(
                "terms", f"item {index} features must be integer column indices; got {features!r}"
            )
        if columns.min() < 0 or columns.max() >= d or np.unique(columns).size != columns.size:
            raise InvalidArgumentError(
                "terms",
                f"item {index} features must be distinct column indices in [0, {d}); got "
                f"{columns.tolist()}",
            )
        if not callable(function):
            raise InvalidArgumentError("terms", f"item {index} function must be callable")
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
            raise InvalidArgumentError(
                "terms",
                f"item {index} returns {n_outputs} outputs; earlier terms returned "
                f"{values.shape[2]}",
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


def logistic_additive_shapley(
    row_terms: np.ndarray,
    background_terms: np.ndarray,
    offset: float,
    *,
    n_permutations: int = 64,
    random_state: int = 0,
) -> ShapleyValues:
    """Interventional Shapley values of ``f(x) = sigmoid(offset + sum_j g_j(x_j))``.

    Logistic regression and additive models on the logit scale, explained on the probability
    scale. Exact by enumeration for d <= 12; above, antithetic permutation sampling in which
    every permutation is averaged over the whole background (unbiased, exactly efficient, with
    standard errors). Either way no model is called: the terms are all it needs.

    Parameters
    ----------
    row_terms : (m, d) ``g_j(x_ij)`` for the rows to explain.
    background_terms : (n_background, d) ``g_j(z_bj)`` for the background rows.
    offset : the constant inside the sigmoid.
    n_permutations : permutations per row when d > 12 (rounded up to an even number).
    random_state : seed of the permutations.
    """
    rows = as_float_matrix("row_terms", row_terms)
    background = as_float_matrix("background_terms", background_terms, n_features=rows.shape[1])
    given = np.asarray(offset)
    if given.ndim != 0 or not (
        np.issubdtype(given.dtype, np.integer) or np.issubdtype(given.dtype, np.floating)
    ):
        raise InvalidArgumentError("offset", f"must be a real number; got {offset!r}")
    if not np.isfinite(given):
        raise InvalidArgumentError("offset", f"must be finite; got {offset}")
    offset = float(given)
    if (
        not isinstance(n_permutations, int | np.integer)
        or isinstance(n_permutations, bool)
        or n_permutations < 1
    ):
        raise InvalidArgumentError(
            "n_permutations", f"must be a positive int; got {n_permutations!r}"
        )
    if (
        not isinstance(random_state, int | np.integer)
        or isinstance(random_state, bool)
        or random_state < 0
    ):
        raise InvalidArgumentError(
            "random_state", f"must be a non-negative int; got {random_state!r}"
        )
    m, d = rows.shape
    predictions = sigmoid(offset + rows.sum(axis=1))[:, None]
    base_value = np.array([sigmoid(offset + background.sum(axis=1)).mean()])
    if d <= MAX_LOGISTIC_ENUMERATION:
        values = logistic_additive_values(rows, background, float(offset))[:, :, None]
        return package(values, base_value, predictions, True, "closed form (logistic additive)")
    n_pairs = max(2, (int(n_permutations) + 1) // 2)
    rng = np.random.default_rng(random_state)
    forward = rng.permuted(np.tile(np.arange(d, dtype=np.int64), (m, n_pairs, 1)), axis=2)
    permutations = np.ascontiguousarray(
        np.stack([forward, forward[:, :, ::-1]], axis=2).reshape(m, 2 * n_pairs, d)
    )
    credits = np.empty((m, 2 * n_pairs, d))
    sigmoid_additive_permutation_credits(rows, background, float(offset), permutations, credits)
    pair_credits = credits.reshape(m, n_pairs, 2, d).mean(axis=2)
    values = pair_credits.mean(axis=1)[:, :, None]
    errors = (pair_credits.std(axis=1, ddof=1) / np.sqrt(n_pairs))[:, :, None]
    return package(
        values,
        base_value,
        predictions,
        True,
        "antithetic permutations (logistic additive)",
        uncertainty=errors,
    )


def logistic_additive_values(
    row_terms: np.ndarray, background_terms: np.ndarray, offset: float
) -> np.ndarray:
    """(m, d) exact values of ``logistic_additive_shapley`` by enumeration, with no checks: the
    core the estimator's logistic surrogates call on terms they computed themselves.

    Parameters
    ----------
    row_terms : (m, d) C-contiguous float64, d <= ``MAX_LOGISTIC_ENUMERATION``.
    background_terms : (n_background, d) C-contiguous float64.
    offset : the constant inside the sigmoid.
    """
    m, d = row_terms.shape
    values = np.empty((m, d, 1))
    for start in range(0, m, LOGISTIC_ROWS_PER_TABLE):
        chunk = row_terms[start : start + LOGISTIC_ROWS_PER_TABLE]
        table = np.empty((chunk.shape[0], 1 << d, 1))
        sigmoid_additive_coalition_values(chunk, background_terms, offset, table)
        shapley_from_coalition_values(table, values[start : start + chunk.shape[0]])
    return values[:, :, 0]


def sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))
