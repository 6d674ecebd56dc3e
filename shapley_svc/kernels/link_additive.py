"""Interventional Shapley values of ``f(x) = sigmoid(offset + sum_j g_j(x_j))``.

The model is additive inside a logistic link, so a coalition's input differs from a background
row's by ``sum over j in S of g_j(x_j) - g_j(z_j)``: every evaluation is a running sum and one
sigmoid, with no call of any model. Callers pass the per-feature terms already evaluated:
``row_terms[i, j] = g_j(x_ij)`` and ``background_terms[b, j] = g_j(z_bj)``.
"""

import numpy as np
from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}


@njit("float64(float64)", **_FLAGS)
def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


@njit(
    "void(float64[:, ::1], float64[:, ::1], float64, float64[:, :, ::1])", parallel=True, **_FLAGS
)
def sigmoid_additive_coalition_values(row_terms, background_terms, offset, out):
    """The value of every coalition: ``out[i, mask, 0] = mean_z f(x_i on mask, z elsewhere)``.

    Parameters
    ----------
    row_terms : (m, d) per-feature terms of the explained rows.
    background_terms : (n_background, d) per-feature terms of the background rows.
    offset : the constant inside the link.
    out : (m, 2**d, 1), overwritten; feed it to ``shapley_from_coalition_values``.
    """
    m, d = row_terms.shape
    n_background = background_terms.shape[0]
    n_masks = 1 << d
    lowest_bit = np.zeros(n_masks, dtype=np.int64)
    for mask in range(1, n_masks):
        bit = 0
        while not (mask >> bit) & 1:
            bit += 1
        lowest_bit[mask] = bit
    for i in prange(m):
        partial = np.empty(n_masks)
        values = out[i, :, 0]
        values[:] = 0.0
        for b in range(n_background):
            z = background_terms[b]
            base = offset
            for j in range(d):
                base += z[j]
            partial[0] = 0.0
            values[0] += _sigmoid(base)
            for mask in range(1, n_masks):
                j = lowest_bit[mask]
                partial[mask] = partial[mask & (mask - 1)] + row_terms[i, j] - z[j]
                values[mask] += _sigmoid(base + partial[mask])
        for mask in range(n_masks):
            values[mask] /= n_background


@njit(
    "void(float64[:, ::1], float64[:, ::1], float64, int64[:, :, ::1], float64[:, :, ::1])",
    parallel=True,
    **_FLAGS,
)
def sigmoid_additive_permutation_credits(row_terms, background_terms, offset, permutations, out):
    """Per-permutation credits, each averaged over every background row, for any d.

    Each permutation walks every background row towards x one feature at a time; the credits of
    one walk telescope to ``f(x) - f(z)``, so each permutation's credits, averaged over the
    background, sum exactly to ``f(x) - base``.

    Parameters
    ----------
    row_terms : (m, d); background_terms : (n_background, d); offset : as above.
    permutations : (m, P, d) permutations of range(d) per explained row.
    out : (m, P, d), overwritten with each permutation's credits.
    """
    m, d = row_terms.shape
    n_background = background_terms.shape[0]
    n_permutations = permutations.shape[1]
    scale = 1.0 / n_background
    for i in prange(m):
        credits = out[i]
        credits[:, :] = 0.0
        for b in range(n_background):
            z = background_terms[b]
            base = offset
            for j in range(d):
                base += z[j]
            start = _sigmoid(base)
            for p in range(n_permutations):
                running = base
                previous = start
                for k in range(d):
                    j = permutations[i, p, k]
                    running += row_terms[i, j] - z[j]
                    current = _sigmoid(running)
                    credits[p, j] += current - previous
                    previous = current
        for p in range(n_permutations):
            for j in range(d):
                credits[p, j] *= scale


@njit("void(float64[:, ::1], float64[:, ::1], float64, float64[:, ::1])", parallel=True, **_FLAGS)
def sigmoid_additive_rescaled(row_terms, background_terms, offset, out):
    """Per-reference rescaling: a fast, exactly efficient approximation for any d.

    Against each background row z the output moves by ``f(x) - f(z)`` while the logit moves by
    ``t = sum_j delta_j`` with ``delta_j = g_j(x_j) - g_j(z_j)``; each feature is credited
    ``delta_j * (f(x) - f(z)) / t`` (the slope ``f'`` where t vanishes), then averaged over z.
    This is DeepSHAP's rescale rule for a single link. It is exact for one feature and whenever
    the link is locally linear, and costs ``m * n_background * d`` with two sigmoids per pair
    instead of one per feature and permutation.

    Parameters
    ----------
    row_terms : (m, d); background_terms : (n_background, d); offset : the constant in the link.
    out : (m, d), overwritten with the attributions on the probability scale.
    """
    m, d = row_terms.shape
    n_background = background_terms.shape[0]
    background_logit = np.empty(n_background)
    for b in range(n_background):
        background_logit[b] = offset + np.sum(background_terms[b])
    for i in prange(m):
        row_logit = offset + np.sum(row_terms[i])
        row_output = _sigmoid(row_logit)
        phi = out[i]
        phi[:] = 0.0
        for b in range(n_background):
            shift = row_logit - background_logit[b]
            if abs(shift) > 1e-9:
                ratio = (row_output - _sigmoid(background_logit[b])) / shift
            else:
                slope = _sigmoid(row_logit)
                ratio = slope * (1.0 - slope)
            for j in range(d):
                phi[j] += (row_terms[i, j] - background_terms[b, j]) * ratio
        for j in range(d):
            phi[j] /= n_background
