"""Interventional TreeSHAP over a flattened ensemble of binary decision trees.

For one explained row x and one background row z, the game v(S) = T(x_S, z_rest) of a tree T is
a sum over leaves of ``value * 1[A ⊆ S and B ∩ S = ∅]``, where A holds the features whose split
sends x (but not z) towards the leaf and B those that send z (but not x). That game has the closed
form ``phi_j = +value * (|A|-1)! |B|! / (|A|+|B|)!`` for j in A and
``phi_j = -value * |A|! (|B|-1)! / (|A|+|B|)!`` for j in B, so a depth-first walk that follows
x and z together, and forks where they part on a feature not yet assigned, is exact
(Lundberg et al. 2020, "From local explanations to global understanding", Independent TreeSHAP).

Node arrays describe all trees of an ensemble laid end to end; a leaf has ``left == -1``. Split
rule: go left when ``x[feature] <= threshold``; a NaN (missing) value goes left when
``missing_left`` of the node is set, right otherwise.
"""

import numpy as np
from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}

_UNASSIGNED = 0
_IN_A = 1  # the explained row's side was taken at this feature: the feature must be in S
_IN_B = 2  # the background row's side was taken: the feature must stay out of S


def leaf_weight_tables(max_features_on_path: int) -> tuple[np.ndarray, np.ndarray]:
    """Tables ``w_a[a, b] = (a-1)! b! / (a+b)!`` and ``w_b[a, b] = a! (b-1)! / (a+b)!``.

    Shapes are (D + 1, D + 1) with D = ``max_features_on_path``; entries with a = 0 (for w_a) or
    b = 0 (for w_b) are unused and set to zero.
    """
    size = max_features_on_path + 1
    w_a = np.zeros((size, size))
    w_b = np.zeros((size, size))
    for a in range(size):
        for b in range(size):
            if a + b == 0:
                continue
            # 1 / C(a+b, a), built multiplicatively so large depths stay finite and accurate.
            inv_binomial = 1.0
            for i in range(1, a + 1):
                inv_binomial *= i / (b + i)
            if a > 0:
                w_a[a, b] = inv_binomial / a
            if b > 0:
                w_b[a, b] = inv_binomial / b
    return w_a, w_b


@njit("int64(float64, float64, boolean, int64, int64)", inline="always", **_FLAGS)
def _child(value, threshold, missing_left, left, right):
    if value <= threshold:
        return left
    if value > threshold:
        return right
    return left if missing_left else right  # NaN: neither comparison holds


@njit(
    "void(float64[::1], float64[:, ::1], int64[::1], int64[::1], int64[::1], float64[::1],"
    " boolean[::1], float64[:, ::1], int64[::1], int64, float64[:, ::1], float64[:, ::1],"
    " float64[:, ::1])",
    **_FLAGS,
)
def _row_tree_shap(
    x,
    background,
    left,
    right,
    feature,
    threshold,
    missing_left,
    node_values,
    roots,
    max_depth,
    weight_a,
    weight_b,
    phi,
):
    """``interventional_tree_shap`` for one explained row ``x``: overwrites ``phi`` (d, K)."""
    d = x.shape[0]
    n_background = background.shape[0]
    n_outputs = node_values.shape[1]
    stack_size = max_depth + 2
    path_size = min(max_depth, d) + 1
    phi[:, :] = 0.0
    # Per-row scratch: the walk's pending nodes and the features assigned on the current path.
    stack_node = np.empty(stack_size, dtype=np.int64)
    stack_path_len = np.empty(stack_size, dtype=np.int64)
    stack_new_feature = np.empty(stack_size, dtype=np.int64)
    stack_new_side = np.empty(stack_size, dtype=np.int64)
    path_feature = np.empty(path_size, dtype=np.int64)
    path_side = np.empty(path_size, dtype=np.int64)
    side_of = np.zeros(d, dtype=np.int64)
    for zi in range(n_background):
        z = background[zi]
        for root in roots:
            top = 0
            stack_node[0] = root
            stack_path_len[0] = 0
            stack_new_feature[0] = -1
            stack_new_side[0] = _UNASSIGNED
            path_len = 0
            n_a = 0
            n_b = 0
            while top >= 0:
                node = stack_node[top]
                keep = stack_path_len[top]
                new_feature = stack_new_feature[top]
                new_side = stack_new_side[top]
                top -= 1
                while path_len > keep:
                    path_len -= 1
                    if path_side[path_len] == _IN_A:
                        n_a -= 1
                    else:
                        n_b -= 1
                    side_of[path_feature[path_len]] = _UNASSIGNED
                if new_feature >= 0:
                    path_feature[path_len] = new_feature
                    path_side[path_len] = new_side
                    path_len += 1
                    side_of[new_feature] = new_side
                    if new_side == _IN_A:
                        n_a += 1
                    else:
                        n_b += 1
                # Follow the walk down while x and z agree or the feature is already assigned.
                while left[node] >= 0:
                    f = feature[node]
                    t = threshold[node]
                    x_child = _child(x[f], t, missing_left[node], left[node], right[node])
                    z_child = _child(z[f], t, missing_left[node], left[node], right[node])
                    if x_child == z_child:
                        node = x_child
                    elif side_of[f] == _IN_A:
                        node = x_child
                    elif side_of[f] == _IN_B:
                        node = z_child
                    else:
                        # Fork: continue with z's side, leave x's side on the stack.
                        top += 1
                        stack_node[top] = x_child
                        stack_path_len[top] = path_len
                        stack_new_feature[top] = f
                        stack_new_side[top] = _IN_A
                        path_feature[path_len] = f
                        path_side[path_len] = _IN_B
                        path_len += 1
                        side_of[f] = _IN_B
                        n_b += 1
                        node = z_child
                if n_a + n_b == 0:
                    continue
                w_a = weight_a[n_a, n_b]
                w_b = weight_b[n_a, n_b]
                leaf = node_values[node]
                for p in range(path_len):
                    f = path_feature[p]
                    if path_side[p] == _IN_A:
                        for k in range(n_outputs):
                            phi[f, k] += w_a * leaf[k]
                    else:
                        for k in range(n_outputs):
                            phi[f, k] -= w_b * leaf[k]
            # Leave the per-feature marks clean for the next tree.
            while path_len > 0:
                path_len -= 1
                side_of[path_feature[path_len]] = _UNASSIGNED
    scale = 1.0 / n_background
    for j in range(d):
        for k in range(n_outputs):
            phi[j, k] *= scale


@njit(
    "void(float64[:, ::1], float64[:, ::1], int64[::1], int64[::1], int64[::1], float64[::1],"
    " boolean[::1], float64[:, ::1], int64[::1], int64, float64[:, ::1], float64[:, ::1],"
    " float64[:, :, ::1])",
    parallel=True,
    **_FLAGS,
)
def interventional_tree_shap(
    rows,
    background,
    left,
    right,
    feature,
    threshold,
    missing_left,
    node_values,
    roots,
    max_depth,
    weight_a,
    weight_b,
    out,
):
    """Exact interventional Shapley values of a tree ensemble, averaged over the background.

    Parameters
    ----------
    rows : (m, d) explained rows.
    background : (n_background, d) background rows.
    left, right, feature : (n_nodes,) child indices (-1 at leaves) and split feature per node.
    threshold : (n_nodes,) split threshold per node.
    missing_left : (n_nodes,) whether a NaN value goes left at each node.
    node_values : (n_nodes, K) output contribution of each leaf (already weighted per tree).
    roots : (n_trees,) index of each tree's root node.
    max_depth : the largest depth of any tree (root at depth 0).
    weight_a, weight_b : tables from :func:`leaf_weight_tables` covering min(d, max_depth).
    out : (m, d, K), overwritten with the Shapley values.
    """
    for i in prange(rows.shape[0]):
        _row_tree_shap(
            rows[i],
            background,
            left,
            right,
            feature,
            threshold,
            missing_left,
            node_values,
            roots,
            max_depth,
            weight_a,
            weight_b,
            out[i],
        )
