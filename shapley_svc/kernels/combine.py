"""Kernel of the combiner: weigh the surrogates' attributions, estimate uncertainty, project.

The uncertainty of a value is the weighted spread of the surrogates around the combination,
scaled, plus a floor; efficiency is restored by moving each row's residual onto its values in
shares that follow their variances, pooled part way towards the row's mean variance (the
least-squares projection when the pooling is 0), which also shrinks each variance by its share.
"""

import numpy as np
from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}


@njit(
    "void(float64[:, :, ::1], float64[::1], float64, float64, float64, float64[::1], boolean,"
    " float64[:, ::1], float64[:, ::1])",
    parallel=True,
    **_FLAGS,
)
def combine_attributions(
    values,
    weights,
    spread_scale,
    variance_floor,
    pooling,
    target_sums,
    project,
    out_values,
    out_std,
):
    """Combined attributions and their standard deviations.

    Parameters
    ----------
    values : (S, m, d) attributions of each surrogate.
    weights : (S,) non-negative, summing to one.
    spread_scale : multiplies the weighted variance of the surrogates around the combination.
    variance_floor : added to every value's variance.
    pooling : in [0, 1]: the residual's shares follow (1 - pooling) * variance + pooling * the
        row's mean variance.
    target_sums : (m,) what each row's values must sum to (``prediction - base``).
    project : whether to enforce ``target_sums`` (False when predictions are unknown).
    out_values, out_std : (m, d), overwritten.
    """
    n_surrogates, m, d = values.shape
    for i in prange(m):
        variance = np.empty(d)
        total_variance = 0.0
        total = 0.0
        for j in range(d):
            combined = 0.0
            for s in range(n_surrogates):
                combined += weights[s] * values[s, i, j]
            spread = 0.0
            for s in range(n_surrogates):
                gap = values[s, i, j] - combined
                spread += weights[s] * gap * gap
            variance[j] = spread_scale * spread + variance_floor
            total_variance += variance[j]
            total += combined
            out_values[i, j] = combined
        if project and total_variance > 0.0:
            residual = target_sums[i] - total
            mean_variance = total_variance / d
            for j in range(d):
                pooled = (1.0 - pooling) * variance[j] + pooling * mean_variance
                share = pooled / total_variance
                out_values[i, j] += residual * share
                variance[j] = variance[j] * (1.0 - share)
        for j in range(d):
            out_std[i, j] = np.sqrt(max(variance[j], 0.0))
