"""Interventional TreeSHAP with the background folded into per-leaf tables.

A leaf whose path tests k distinct features is reached by a hybrid row (x on the coalition S, z
elsewhere) exactly when every one of those features takes a side that passes its interval. Only
two masks over the k features matter: ``sx``, the tests x passes, and ``sz``, the tests z passes.
With ``A = sx \\ sz`` and ``B = sz \\ sx`` (and ``sx | sz`` covering all k tests) the leaf's game
is ``value * 1[A ⊆ S, B ∩ S = ∅]``, whose Shapley values are the closed forms in
:mod:`shapley_svc.kernels.treeshap`.

So the background enters only through the distribution of ``sz`` over its rows. Folding that
distribution into a table indexed by ``sx`` (``2^k * k`` entries per leaf, built once per
background with superset sums stratified by size) makes explaining a row cost
``sum over leaves of k`` operations, independent of the background's size. The values are the
same as the pairwise walk's, up to rounding.

Leaves are described by their distinct path features and the interval each must fall in:
a row passes test i of leaf l when ``lower[i] < x[feature[i]] <= upper[i]``, or when that value
is NaN (missing) and ``nan_passes[i]``: every split on the path that tests the feature sends
NaN towards the leaf, as the fitted model routes it. The players of the
game may be groups of features (:func:`leaf_players`): a leaf's k is then its number of distinct
groups, and a row passes a group when it passes all of that group's tests.
"""

import numpy as np
from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}
_ROWS_PER_BLOCK = 64


@njit("int64(int64)", **_FLAGS)
def _popcount(mask):
    count = 0
    while mask:
        mask &= mask - 1
        count += 1
    return count


@njit(
    "int64(int64[::1], int64[::1], int64[::1], float64[::1], boolean[::1], int64[::1], int64,"
    " int64, int64[::1], int64[::1], int64[::1], float64[::1], float64[::1], boolean[::1])",
    **_FLAGS,
)
def leaf_paths(
    left,
    right,
    feature,
    threshold,
    missing_left,
    roots,
    max_depth,
    n_features,
    leaf_node,
    path_start,
    path_feature,
    path_lower,
    path_upper,
    path_nan_passes,
):
    """Each leaf's distinct path features and their intervals, in depth-first order.

    Parameters
    ----------
    left, right, feature, threshold, missing_left, roots : a flattened ensemble (see
        ``treeshap``).
    max_depth : deepest leaf of any tree.
    n_features : d.
    leaf_node : (n_leaves,) filled with the node index of each leaf.
    path_start : (n_leaves + 1,) filled with offsets into the path arrays.
    path_feature, path_lower, path_upper, path_nan_passes : filled with each leaf's tests; sized
        for the worst case ``n_leaves * min(max_depth, d)``.

    Returns
    -------
    The number of tests written.
    """
    lower = np.full(n_features, -np.inf)
    upper = np.full(n_features, np.inf)
    times_used = np.zeros(n_features, dtype=np.int64)
    # Splits on the current path that send NaN away from it, per feature.
    nan_blocked = np.zeros(n_features, dtype=np.int64)
    stack_size = max_depth + 2
    # Each stack entry: a node, the split that leads to it (feature, threshold, which bound it
    # tightens) and how many splits of the current path lie above it.
    stack_node = np.empty(stack_size, dtype=np.int64)
    stack_feature = np.empty(stack_size, dtype=np.int64)
    stack_threshold = np.empty(stack_size)
    stack_is_upper = np.empty(stack_size, dtype=np.bool_)
    stack_nan_here = np.empty(stack_size, dtype=np.bool_)
    stack_depth = np.empty(stack_size, dtype=np.int64)
    undo_feature = np.empty(stack_size, dtype=np.int64)
    undo_old = np.empty(stack_size)
    undo_is_upper = np.empty(stack_size, dtype=np.bool_)
    undo_nan_blocked = np.empty(stack_size, dtype=np.bool_)
    n_leaves = 0
    n_tests = 0
    path_start[0] = 0
    depth = 0  # splits applied on the current path; popping an entry unwinds to its depth
    for root in roots:
        top = 0
        stack_node[0] = root
        stack_feature[0] = -1
        stack_depth[0] = 0
        while top >= 0:
            node = stack_node[top]
            f = stack_feature[top]
            split_threshold = stack_threshold[top]
            is_upper = stack_is_upper[top]
            nan_here = stack_nan_here[top]
            target_depth = stack_depth[top]
            top -= 1
            while depth > target_depth:
                depth -= 1
                g = undo_feature[depth]
                times_used[g] -= 1
                if undo_nan_blocked[depth]:
                    nan_blocked[g] -= 1
                if undo_is_upper[depth]:
                    upper[g] = undo_old[depth]
                else:
                    lower[g] = undo_old[depth]
            if f >= 0:
                undo_feature[depth] = f
                undo_is_upper[depth] = is_upper
                undo_nan_blocked[depth] = not nan_here
                times_used[f] += 1
                if not nan_here:
                    nan_blocked[f] += 1
                if is_upper:
                    undo_old[depth] = upper[f]
                    upper[f] = min(upper[f], split_threshold)
                else:
                    undo_old[depth] = lower[f]
                    lower[f] = max(lower[f], split_threshold)
                depth += 1
            if left[node] < 0:
                leaf_node[n_leaves] = node
                for g in range(n_features):
                    if times_used[g] > 0:
                        path_feature[n_tests] = g
                        path_lower[n_tests] = lower[g]
                        path_upper[n_tests] = upper[g]
                        path_nan_passes[n_tests] = nan_blocked[g] == 0
                        n_tests += 1
                n_leaves += 1
                path_start[n_leaves] = n_tests
                continue
            top += 1
            stack_node[top] = right[node]
            stack_feature[top] = feature[node]
            stack_threshold[top] = threshold[node]
            stack_is_upper[top] = False
            stack_nan_here[top] = not missing_left[node]
            stack_depth[top] = depth
            top += 1
            stack_node[top] = left[node]
            stack_feature[top] = feature[node]
            stack_threshold[top] = threshold[node]
            stack_is_upper[top] = True
            stack_nan_here[top] = missing_left[node]
            stack_depth[top] = depth
    return n_tests


@njit("int64(int64[::1], int64[::1], int64[::1], int64[::1], int64[::1], int64[::1])", **_FLAGS)
def leaf_players(path_start, path_feature, player_of_feature, test_bit, player_start, player_id):
    """Group each leaf's tests by player (a player is a set of features that move together).

    A hybrid row passes a player's tests only when all of them pass, and all come from x or all
    from z, so a leaf's game over players has the same form as over features, with k the number
    of distinct players on its path.

    Parameters
    ----------
    path_start, path_feature : from :func:`leaf_paths`.
    player_of_feature : (d,) the player of each feature.
    test_bit : (n_tests,) filled with the bit of each test's player within its leaf.
    player_start : (n_leaves + 1,) filled with offsets into ``player_id``.
    player_id : (n_tests,) filled with each leaf's distinct players, in first-test order.

    Returns
    -------
    The number of player entries written.
    """
    n_leaves = path_start.shape[0] - 1
    n_entries = 0
    player_start[0] = 0
    for leaf in range(n_leaves):
        first = n_entries
        for t in range(path_start[leaf], path_start[leaf + 1]):
            player = player_of_feature[path_feature[t]]
            bit = -1
            for e in range(first, n_entries):
                if player_id[e] == player:
                    bit = e - first
                    break
            if bit < 0:
                player_id[n_entries] = player
                bit = n_entries - first
                n_entries += 1
            test_bit[t] = bit
        player_start[leaf + 1] = n_entries
    return n_entries


@njit(
    "void(int64, float64[:, ::1], int64[::1], int64[::1], float64[::1], float64[::1], boolean[::1],"
    " int64[::1], int64[::1], int64[::1], float64[:, ::1], float64[:, ::1], float64[::1])",
    **_FLAGS,
)
def _leaf_table(
    leaf,
    background,
    path_start,
    path_feature,
    path_lower,
    path_upper,
    path_nan_passes,
    test_bit,
    player_start,
    table_start,
    weight_a,
    weight_b,
    tables,
):
    """``background_leaf_tables`` for one leaf."""
    n_background = background.shape[0]
    start = path_start[leaf]
    k = player_start[leaf + 1] - player_start[leaf]
    if k == 0:
        return
    n_masks = 1 << k
    full = n_masks - 1
    # by_size[s, c]: share of background rows whose pass-mask contains s and has c bits.
    by_size = np.zeros((n_masks, k + 1))
    for b in range(n_background):
        mask = full
        for t in range(start, path_start[leaf + 1]):
            value = background[b, path_feature[t]]
            if value != value:
                if not path_nan_passes[t]:
                    mask &= ~(1 << test_bit[t])
            elif not path_lower[t] < value <= path_upper[t]:
                mask &= ~(1 << test_bit[t])
        by_size[mask, _popcount(mask)] += 1.0 / n_background
    for i in range(k):
        bit = 1 << i
        for mask in range(n_masks):
            if mask & bit == 0:
                for c in range(k + 1):
                    by_size[mask, c] += by_size[mask | bit, c]
    base = table_start[leaf]
    for sx in range(n_masks):
        must = full ^ sx  # players x fails: z must pass them
        n_b_fixed = k - _popcount(sx)
        n_sx = k - n_b_fixed
        # Players x fails are on B's side whatever z does elsewhere.
        b_credit = 0.0
        if n_b_fixed > 0:
            for c in range(n_b_fixed, k + 1):
                n_a = n_sx - (c - n_b_fixed)
                b_credit -= by_size[must, c] * weight_b[n_a, n_b_fixed]
        for i in range(k):
            bit = 1 << i
            if sx & bit == 0:
                tables[base + sx * k + i] = b_credit
                continue
            # Player i is on A's side when z fails it: rows containing `must` but not i.
            a_credit = 0.0
            for c in range(n_b_fixed, k):
                n_a = n_sx - (c - n_b_fixed)
                share = by_size[must, c] - by_size[must | bit, c]
                a_credit += share * weight_a[n_a, n_b_fixed]
            tables[base + sx * k + i] = a_credit


@njit(
    "void(float64[:, ::1], int64[::1], int64[::1], float64[::1], float64[::1], boolean[::1],"
    " int64[::1], int64[::1], int64[::1], float64[:, ::1], float64[:, ::1], float64[::1])",
    parallel=True,
    **_FLAGS,
)
def background_leaf_tables(
    background,
    path_start,
    path_feature,
    path_lower,
    path_upper,
    path_nan_passes,
    test_bit,
    player_start,
    table_start,
    weight_a,
    weight_b,
    tables,
):
    """Fill, for every leaf and every mask ``sx`` over its players, each player's Shapley weight.

    ``tables[table_start[l] + sx * k + i]`` is the background-averaged Shapley value, per unit
    of leaf value, credited to the leaf's i-th player for a row passing the players in sx (a row
    passes a player when it passes all of that player's tests).

    Parameters
    ----------
    background : (n_background, d).
    path_start, path_feature, path_lower, path_upper, path_nan_passes : from :func:`leaf_paths`.
    test_bit, player_start : from :func:`leaf_players` (one player per feature: ``test_bit`` is
        each test's position in its leaf and ``player_start`` is ``path_start``).
    table_start : (n_leaves + 1,) offsets, ``2^k * k`` entries per leaf of k players.
    weight_a, weight_b : ``leaf_weight_tables`` covering the largest k.
    tables : (table_start[-1],) output.
    """
    for leaf in prange(path_start.shape[0] - 1):
        _leaf_table(
            leaf,
            background,
            path_start,
            path_feature,
            path_lower,
            path_upper,
            path_nan_passes,
            test_bit,
            player_start,
            table_start,
            weight_a,
            weight_b,
            tables,
        )


@njit(
    "void(int64, float64[:, ::1], int64[::1], int64[::1], float64[::1], float64[::1], boolean[::1],"
    " int64[::1], int64[::1], int64[::1], float64[:, ::1], int64[::1], float64[::1],"
    " float64[:, :, ::1])",
    **_FLAGS,
)
def _tabled_block(
    first,
    rows,
    path_start,
    path_feature,
    path_lower,
    path_upper,
    path_nan_passes,
    test_bit,
    player_start,
    player_id,
    leaf_values,
    table_start,
    tables,
    out,
):
    """``tabled_tree_shap`` for the block of rows from ``first`` (``_ROWS_PER_BLOCK`` at most)."""
    m = rows.shape[0]
    n_players = out.shape[1]
    n_leaves = path_start.shape[0] - 1
    n_outputs = leaf_values.shape[1]
    size = min(m, first + _ROWS_PER_BLOCK) - first
    totals = np.zeros((n_players, n_outputs, _ROWS_PER_BLOCK))
    masks = np.empty(_ROWS_PER_BLOCK, dtype=np.int64)
    for leaf in range(n_leaves):
        players = player_start[leaf]
        k = player_start[leaf + 1] - players
        if k == 0:
            continue
        for r in range(size):
            masks[r] = (1 << k) - 1
        for t in range(path_start[leaf], path_start[leaf + 1]):
            f = path_feature[t]
            lower = path_lower[t]
            upper = path_upper[t]
            nan_passes = path_nan_passes[t]
            clear = ~(1 << test_bit[t])
            for r in range(size):
                value = rows[first + r, f]
                if value != value:
                    if not nan_passes:
                        masks[r] &= clear
                elif not lower < value <= upper:
                    masks[r] &= clear
        base = table_start[leaf]
        for i in range(k):
            p = player_id[players + i]
            for o in range(n_outputs):
                leaf_value = leaf_values[leaf, o]
                for r in range(size):
                    totals[p, o, r] += tables[base + masks[r] * k + i] * leaf_value
    for r in range(size):
        for j in range(n_players):
            for o in range(n_outputs):
                out[first + r, j, o] = totals[j, o, r]


@njit(
    "void(float64[:, ::1], int64[::1], int64[::1], float64[::1], float64[::1], boolean[::1],"
    " int64[::1], int64[::1], int64[::1], float64[:, ::1], int64[::1], float64[::1],"
    " float64[:, :, ::1])",
    parallel=True,
    **_FLAGS,
)
def tabled_tree_shap(
    rows,
    path_start,
    path_feature,
    path_lower,
    path_upper,
    path_nan_passes,
    test_bit,
    player_start,
    player_id,
    leaf_values,
    table_start,
    tables,
    out,
):
    """Interventional Shapley values of an ensemble from its background tables.

    Parameters
    ----------
    rows : (m, d) explained rows.
    path_start, path_feature, path_lower, path_upper, path_nan_passes : from :func:`leaf_paths`.
    test_bit, player_start, player_id : from :func:`leaf_players`.
    leaf_values : (n_leaves, K) each leaf's weighted contribution to each output.
    table_start, tables : from :func:`background_leaf_tables`.
    out : (m, P, K), overwritten; P players.
    """
    n_blocks = (rows.shape[0] + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    # Leaves outside, a block of rows inside: a leaf's table stays in cache while the block reads
    # it, and the block's accumulators (player, output, row) are written with unit stride.
    for block in prange(n_blocks):
        _tabled_block(
            block * _ROWS_PER_BLOCK,
            rows,
            path_start,
            path_feature,
            path_lower,
            path_upper,
            path_nan_passes,
            test_bit,
            player_start,
            player_id,
            leaf_values,
            table_start,
            tables,
            out,
        )
