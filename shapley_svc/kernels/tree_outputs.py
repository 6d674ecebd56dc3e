"""Kernel of a tree ensemble's own output: the sum of the leaves a row reaches.

Refinement evaluates its proxy (the weighted zoo) on thousands of mixed rows per explained row;
the saved tree members keep only their flat node arrays, so their outputs are read from those.
"""

from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}


@njit(inline="always", **_FLAGS)
def leaf_reached(row, node, left, right, feature, threshold, missing_left):
    """The leaf ``row`` reaches from ``node`` down (NaN follows ``missing_left``)."""
    while left[node] >= 0:
        value = row[feature[node]]
        if value != value:
            goes_left = missing_left[node]
        else:
            goes_left = value <= threshold[node]
        node = left[node] if goes_left else right[node]
    return node


@njit(
    "void(float64[:, ::1], int64[::1], int64[::1], int64[::1], float64[::1], boolean[::1],"
    " float64[:, ::1], int64[::1], float64[:, ::1])",
    parallel=True,
    **_FLAGS,
)
def ensemble_outputs(rows, left, right, feature, threshold, missing_left, node_values, roots, out):
    """Sum over the trees of the leaf each row reaches (no model intercept).

    Parameters
    ----------
    rows : (m, d) rows as the model compares them (already rounded where it rounds); NaN is
        missing and follows ``missing_left``.
    left, right, feature, threshold, missing_left, node_values, roots : a flat ensemble's
        arrays (children -1 at leaves; ``node_values`` (n_nodes, K)).
    out : (m, K), overwritten.
    """
    m = rows.shape[0]
    n_outputs = node_values.shape[1]
    for i in prange(m):
        for k in range(n_outputs):
            out[i, k] = 0.0
        for t in range(roots.size):
            node = leaf_reached(rows[i], roots[t], left, right, feature, threshold, missing_left)
            for k in range(n_outputs):
                out[i, k] += node_values[node, k]


@njit(
    "void(float64[:, ::1], int64[::1], int64[::1], int64[::1], float64[::1], boolean[::1],"
    " int64[::1], int64[:, ::1])",
    parallel=True,
    **_FLAGS,
)
def ensemble_leaves(rows, left, right, feature, threshold, missing_left, roots, out):
    """The leaf (node index) each row reaches in each tree.

    Parameters
    ----------
    rows, left, right, feature, threshold, missing_left, roots : as in ``ensemble_outputs``.
    out : (m, n_trees) int64, overwritten.
    """
    for i in prange(rows.shape[0]):
        for t in range(roots.size):
            node = leaf_reached(rows[i], roots[t], left, right, feature, threshold, missing_left)
            out[i, t] = node
