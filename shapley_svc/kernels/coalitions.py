"""Kernels of refinement: paired coalitions drawn from the Shapley kernel, and the mixed rows
the caller's model scores for them.

A coalition S over P players comes with its complement: the pair's two rows take the players in
S from the explained row and the others from one background row, then the other way round.
Shapley values depend only on the odd part of a game, v(S) - v(complement of S), which one pair
measures at the cost of two rows.

Randomness: each explained row has its own 64-bit seed and a splitmix64 stream, so its draws
depend on the row and the seed alone, not on the batch it arrives in or the thread that runs it.
"""

import numpy as np
from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@njit("UniTuple(uint64, 2)(uint64)", **_FLAGS)
def _splitmix64(state):
    """(next state, 64 random bits)."""
    state = state + _GOLDEN
    bits = state
    bits = (bits ^ (bits >> np.uint64(30))) * _MIX_1
    bits = (bits ^ (bits >> np.uint64(27))) * _MIX_2
    return state, bits ^ (bits >> np.uint64(31))


@njit(
    "void(uint64[::1], float64[::1], int64, boolean[:, :, ::1], int64[:, ::1])",
    parallel=True,
    **_FLAGS,
)
def sample_paired_coalitions(row_seeds, size_cdf, n_background, out_masks, out_background):
    """Draw each explained row's coalitions and background rows.

    Parameters
    ----------
    row_seeds : (m,) one seed per explained row.
    size_cdf : (P - 1,) cumulative probabilities of the coalition sizes 1 .. P - 1 (the last 1).
    n_background : how many background rows there are to pick from (uniformly).
    out_masks : (m, n_pairs, P), overwritten: True where the pair's first row takes the explained
        row's value (its second row takes the others).
    out_background : (m, n_pairs), overwritten: the background row of each pair.
    """
    m, n_pairs, n_players = out_masks.shape
    for i in prange(m):
        state = row_seeds[i]
        order = np.arange(n_players)
        for p in range(n_pairs):
            state, bits = _splitmix64(state)
            size = np.searchsorted(size_cdf, (bits >> np.uint64(11)) * _UNIT, side="right") + 1
            size = min(size, n_players - 1)
            # Partial Fisher-Yates over the smaller side: sizes pile up near 1 and P - 1.
            chosen = min(size, n_players - size)
            for k in range(chosen):
                state, bits = _splitmix64(state)
                swap = k + np.int64(bits % np.uint64(n_players - k))
                order[k], order[swap] = order[swap], order[k]
            inside = chosen == size
            for j in range(n_players):
                out_masks[i, p, j] = not inside
            for k in range(chosen):
                out_masks[i, p, order[k]] = inside
            state, bits = _splitmix64(state)
            out_background[i, p] = np.int64(bits % np.uint64(n_background))


@njit(
    "void(float64[:, ::1], float64[:, ::1], int64[::1], boolean[:, :, ::1], int64[:, ::1], int64,"
    " float64[:, ::1])",
    parallel=True,
    **_FLAGS,
)
def fill_paired_rows(query, background, player_of_column, masks, picks, lead, out):
    """Write the rows the caller's model scores, explained row by explained row.

    Row ``i``'s block holds ``lead`` copies of the explained row itself (0 or 1: its own
    prediction, when the caller did not give it), then per pair the row with the coalition's
    players from the explained row and the rest from the background row, then its complement.

    Parameters
    ----------
    query : (m, d) explained rows.
    background : (n_background, d) background rows.
    player_of_column : (d,) the player of each column.
    masks, picks : from ``sample_paired_coalitions``.
    lead : 0 or 1.
    out : (m * (lead + 2 * n_pairs), d), overwritten.
    """
    m, n_pairs, _ = masks.shape
    d = query.shape[1]
    block = lead + 2 * n_pairs
    for i in prange(m):
        start = i * block
        for j in range(d):
            for r in range(lead):
                out[start + r, j] = query[i, j]
        for p in range(n_pairs):
            first = start + lead + 2 * p
            source = background[picks[i, p]]
            for j in range(d):
                if masks[i, p, player_of_column[j]]:
                    out[first, j] = query[i, j]
                    out[first + 1, j] = source[j]
                else:
                    out[first, j] = source[j]
                    out[first + 1, j] = query[i, j]
