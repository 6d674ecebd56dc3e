"""Unbiased permutation sampling of interventional Shapley values, for any d."""

from collections.abc import Callable

import numpy as np

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.kernels.sampling import fill_permutation_rows, permutation_marginals
from shapley_svc.reference._result import ShapleyValues, package
from shapley_svc.reference._validation import (
    DEFAULT_MAX_MEMORY_BYTES,
    MAX_ROWS_PER_CALL,
    check_max_memory,
    check_rows_and_background,
    evaluate,
)


def sampled_shapley(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    background: np.ndarray,
    budget: int,
    random_state: int | np.random.Generator | None,
    *,
    max_memory: int = DEFAULT_MAX_MEMORY_BYTES,
) -> ShapleyValues:
    """Unbiased estimates of interventional Shapley values with a standard error per value.

    Each explained row gets P independent pairs of antithetic permutations (a random order of the
    features and its reverse) and, per pair, a background row z drawn uniformly. A pair walks z
    towards x, one feature at a time, and credits each feature with the change in the model's
    output, so each pair is an unbiased estimate. Every pair's credits sum exactly to
    ``f(x) - base``, so the estimates satisfy efficiency exactly however small the budget.
    Background rows are drawn independently (not stratified) so that pairs are independent and
    the standard errors are honest.

    Parameters
    ----------
    predict : callable mapping an (n, d) float64 array to (n,) or (n, K) outputs.
    X : (m, d) rows to explain; NaN (a missing value) is passed on to ``predict``, +-inf is
        refused.
    background : (n_background, d) background rows; NaN as in X.
    budget : model evaluations per explained row; P = budget // (2 * (d - 1)) pairs, at least 2.
        The model also sees X and the background once.
    random_state : int seed, numpy Generator, or None for fresh entropy. An int gives results
        that repeat bit for bit.
    max_memory : bound in bytes on the arrays this function allocates.

    Returns
    -------
    ShapleyValues
        ``values`` and ``uncertainty`` of shape (m, d) or (m, d, K); an uncertainty is the
        standard error of the estimate: the spread of the P pairs' credits over sqrt(P).
    """
    rows, background = check_rows_and_background(X, background, allow_nan=True)
    max_memory = check_max_memory(max_memory)
    m, d = rows.shape
    evaluations_per_permutation = max(d - 1, 1)
    minimum_budget = 4 * evaluations_per_permutation
    if not isinstance(budget, int | np.integer) or budget < minimum_budget:
        raise InvalidArgumentError(
            "budget",
            f"must be an integer >= {minimum_budget} (two antithetic pairs of permutations) for "
            f"{d} features; got {budget!r}",
        )
    n_pairs = int(budget) // (2 * evaluations_per_permutation)
    row_seeds = _row_seed_sequences(random_state, m)

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

    jobs_per_row = 2 * n_pairs
    # Per row: the prefix inputs, their outputs and each job's credits.
    bytes_per_row = 8 * jobs_per_row * ((d - 1) * (d + n_outputs) + d * n_outputs + d + 2)
    rows_per_group = max(1, max_memory // 2 // bytes_per_row)
    if bytes_per_row > max_memory // 2:
        raise InvalidArgumentError(
            "budget",
            f"{budget} needs {bytes_per_row} bytes per explained row, more than half of "
            f"max_memory={max_memory}; lower the budget or raise max_memory",
        )

    values = np.empty((m, d, n_outputs))
    uncertainty = np.empty((m, d, n_outputs))
    model_evaluations = m + n_background
    for group_start in range(0, m, rows_per_group):
        group_stop = min(group_start + rows_per_group, m)
        row_index, background_index, permutations = _draw_jobs(
            row_seeds[group_start:group_stop], group_start, n_pairs, d, n_background
        )
        inputs = np.empty((row_index.size * (d - 1), d))
        fill_permutation_rows(rows, background, row_index, background_index, permutations, inputs)
        prefix_outputs = np.empty((inputs.shape[0], n_outputs))
        for start in range(0, inputs.shape[0], MAX_ROWS_PER_CALL):
            chunk = inputs[start : start + MAX_ROWS_PER_CALL]
            outputs, _ = evaluate(predict, chunk)
            if outputs.shape[1] != n_outputs:
                raise InvalidArgumentError(
                    "predict",
                    f"returned {outputs.shape[1]} outputs; it returned {n_outputs} before",
                )
            prefix_outputs[start : start + chunk.shape[0]] = outputs
        model_evaluations += inputs.shape[0]
        credits = np.empty((row_index.size, d, n_outputs))
        permutation_marginals(
            prefix_outputs.reshape(row_index.size, d - 1, n_outputs),
            row_outputs,
            background_outputs,
            base_value,
            row_index,
            background_index,
            permutations,
            credits,
        )
        group_size = group_stop - group_start
        pair_credits = credits.reshape(group_size, n_pairs, 2, d, n_outputs).mean(axis=2)
        values[group_start:group_stop] = pair_credits.mean(axis=1)
        uncertainty[group_start:group_stop] = pair_credits.std(axis=1, ddof=1) / np.sqrt(n_pairs)

    return package(
        values,
        base_value,
        row_outputs,
        single_output,
        "antithetic permutation sampling",
        uncertainty=uncertainty,
        model_evaluations=model_evaluations,
    )


def _row_seed_sequences(
    random_state: int | np.random.Generator | None, n_rows: int
) -> list[np.random.SeedSequence]:
    """One independent seed per explained row, so batching never changes the draws."""
    if isinstance(random_state, np.random.Generator):
        root = np.random.SeedSequence(int(random_state.integers(2**63)))
    elif random_state is None or isinstance(random_state, int | np.integer):
        if random_state is not None and random_state < 0:
            raise InvalidArgumentError("random_state", f"must be non-negative; got {random_state}")
        root = np.random.SeedSequence(None if random_state is None else int(random_state))
    else:
        raise InvalidArgumentError(
            "random_state", f"must be an int, a numpy Generator or None; got {random_state!r}"
        )
    return root.spawn(n_rows)


def _draw_jobs(
    seeds: list[np.random.SeedSequence],
    first_row: int,
    n_pairs: int,
    d: int,
    n_background: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, background row and permutation of every job of a group of explained rows.

    Jobs come in antithetic pairs (a permutation, then its reverse) that share a background row
    drawn uniformly with replacement.
    """
    n_rows = len(seeds)
    row_index = np.repeat(np.arange(first_row, first_row + n_rows, dtype=np.int64), 2 * n_pairs)
    background_index = np.empty((n_rows, n_pairs, 2), dtype=np.int64)
    permutations = np.empty((n_rows, n_pairs, 2, d), dtype=np.int64)
    for r, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        background_index[r] = rng.integers(n_background, size=n_pairs)[:, None]
        forward = rng.permuted(np.tile(np.arange(d, dtype=np.int64), (n_pairs, 1)), axis=1)
        permutations[r, :, 0] = forward
        permutations[r, :, 1] = forward[:, ::-1]
    return row_index, background_index.reshape(-1), permutations.reshape(-1, d)
