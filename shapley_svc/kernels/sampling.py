"""Kernels for permutation sampling of interventional Shapley values.

A sampling job is a triple (explained row, background row, permutation of the d features). Its
model inputs are the d - 1 proper, non-empty prefixes of the permutation: the background row with
the prefix's features replaced by the explained row's values. The empty prefix is the background
row itself and the full prefix is the explained row, whose model outputs are known separately.
"""

from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}


@njit(
    "void(float64[:, ::1], float64[:, ::1], int64[::1], int64[::1], int64[:, ::1],"
    " float64[:, ::1])",
    parallel=True,
    **_FLAGS,
)
def fill_permutation_rows(rows, background, row_index, background_index, permutations, out):
    """Write each job's d - 1 prefix inputs into ``out``.

    Parameters
    ----------
    rows : (m, d) explained rows.
    background : (n_background, d) background rows.
    row_index, background_index : (n_jobs,) the explained and background row of each job.
    permutations : (n_jobs, d) a permutation of range(d) per job.
    out : (n_jobs * (d - 1), d), overwritten; job t's prefixes of length 1..d-1 are rows
        ``t*(d-1) .. t*(d-1) + d-2``.
    """
    n_jobs, d = permutations.shape
    for t in prange(n_jobs):
        x = rows[row_index[t]]
        z = background[background_index[t]]
        start = t * (d - 1)
        if d > 1:
            for j in range(d):
                out[start, j] = z[j]
        for k in range(d - 1):
            target = out[start + k]
            if k > 0:
                for j in range(d):
                    target[j] = out[start + k - 1, j]
            f = permutations[t, k]
            target[f] = x[f]


@njit(
    "void(float64[:, :, ::1], float64[:, ::1], float64[:, ::1], float64[::1], int64[::1],"
    " int64[::1], int64[:, ::1], float64[:, :, ::1])",
    parallel=True,
    **_FLAGS,
)
def permutation_marginals(
    prefix_outputs,
    row_outputs,
    background_outputs,
    base_value,
    row_index,
    background_index,
    permutations,
    out,
):
    """Per-job marginal contributions, each job's summing exactly to f(x) - base.

    Feature ``pi[k]`` gets f(prefix k+1) - f(prefix k) with the same background row on both sides.
    Those telescope to f(x) - f(z); the zero-mean term (f(z) - base) / d added to every feature
    makes each job sum to f(x) - base, the efficiency target, without biasing any feature
    (z is uniform over the background, so E[f(z)] = base).

    Parameters
    ----------
    prefix_outputs : (n_jobs, d - 1, K) model outputs of the prefixes written by
        :func:`fill_permutation_rows`.
    row_outputs : (m, K) model outputs of the explained rows.
    background_outputs : (n_background, K) model outputs of the background rows.
    base_value : (K,) mean of ``background_outputs`` over all background rows.
    row_index, background_index, permutations : as for :func:`fill_permutation_rows`.
    out : (n_jobs, d, K), overwritten.
    """
    n_jobs, d = permutations.shape
    n_outputs = row_outputs.shape[1]
    for t in prange(n_jobs):
        fx = row_outputs[row_index[t]]
        fz = background_outputs[background_index[t]]
        for k in range(d):
            f = permutations[t, k]
            for o in range(n_outputs):
                after = fx[o] if k == d - 1 else prefix_outputs[t, k, o]
                before = fz[o] if k == 0 else prefix_outputs[t, k - 1, o]
                out[t, f, o] = after - before + (fz[o] - base_value[o]) / d
