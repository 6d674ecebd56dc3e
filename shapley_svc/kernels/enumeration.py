"""Kernels for exact Shapley values by enumerating every coalition of d players.

A coalition is a bit mask over the d features: bit j set means feature j takes the explained
row's value, bit j clear means it takes the background row's value.
"""

import numpy as np
from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}


@njit("void(float64[:, ::1], float64[:, ::1], int64, int64, float64[:, ::1])", **_FLAGS)
def fill_coalition_rows(rows, background, unit_start, unit_stop, out):
    """Write the model inputs of the units ``unit_start..unit_stop-1`` into ``out``.

    Only proper, non-empty coalitions need the model on mixed rows (the empty one is the
    background itself, the full one the explained row), so unit ``u`` is the pair
    (explained row ``u // (2**d - 2)``, coalition mask ``1 + u % (2**d - 2)``). It occupies
    ``n_background`` consecutive rows of ``out``, one per background row, with the features in
    the coalition copied from the explained row and the others from the background row.

    Parameters
    ----------
    rows : (m, d) explained rows.
    background : (n_background, d) background rows.
    unit_start, unit_stop : half-open range of unit indices.
    out : ((unit_stop - unit_start) * n_background, d), overwritten.
    """
    n_background, d = background.shape
    n_inner = (np.int64(1) << d) - 2
    for unit in range(unit_start, unit_stop):
        row = rows[unit // n_inner]
        mask = 1 + unit % n_inner
        start = (unit - unit_start) * n_background
        for b in range(n_background):
            target = out[start + b]
            source = background[b]
            for j in range(d):
                target[j] = row[j] if (mask >> j) & 1 else source[j]


@njit("float64[::1](int64)", **_FLAGS)
def shapley_weights(d):
    """``w[s] = s! (d - s - 1)! / d!``: the Shapley weight of a coalition of size s, shape (d,)."""
    weights = np.empty(d, dtype=np.float64)
    # 1 / (d * C(d-1, s)), with the binomial built up multiplicatively to stay in range.
    binomial = 1.0
    for s in range(d):
        weights[s] = 1.0 / (d * binomial)
        binomial = binomial * (d - 1 - s) / (s + 1)
    return weights


@njit("void(float64[:, :, ::1], float64[:, :, ::1])", parallel=True, **_FLAGS)
def shapley_from_coalition_values(coalition_values, out):
    """Shapley values from the value of every coalition.

    Parameters
    ----------
    coalition_values : (m, 2**d, K) value of each coalition mask, per explained row and output.
    out : (m, d, K), overwritten with the Shapley values.
    """
    m, n_masks, n_outputs = coalition_values.shape
    d = out.shape[1]
    weights = shapley_weights(d)
    for i in prange(m):
        values = coalition_values[i]
        phi = out[i]
        for j in range(d):
            for k in range(n_outputs):
                phi[j, k] = 0.0
        for mask in range(n_masks):
            size = 0
            rest = mask
            while rest:
                rest &= rest - 1
                size += 1
            if size == d:
                continue
            w = weights[size]
            for j in range(d):
                if (mask >> j) & 1:
                    continue
                with_j = values[mask | (1 << j)]
                without_j = values[mask]
                for k in range(n_outputs):
                    phi[j, k] += w * (with_j[k] - without_j[k])
