"""Kernel checks against plain numpy, collected by ``test_kernels.py`` in a subprocess that
sets ``NUMBA_DISABLE_JIT=1`` before numba is imported: the kernels then run as the Python they
are written in, so a failure points at the kernel's logic (and coverage sees every line), not at
numba's compilation. Not named ``test_*``: run in-process it would test the compiled kernels.
"""

from itertools import permutations as all_orders

import numpy as np
import pytest
from sklearn.tree import DecisionTreeRegressor

from shapley_svc.kernels.combine import combine_attributions
from shapley_svc.kernels.enumeration import fill_coalition_rows, shapley_from_coalition_values
from shapley_svc.kernels.link_additive import (
    sigmoid_additive_coalition_values,
    sigmoid_additive_permutation_credits,
    sigmoid_additive_rescaled,
    softmax_additive_coalition_values,
    softmax_additive_path,
)
from shapley_svc.kernels.product_games import product_kernel_values, quadrature
from shapley_svc.kernels.sampling import fill_permutation_rows, permutation_marginals
from shapley_svc.kernels.splines import uniform_cubic_spline_terms
from shapley_svc.reference.trees import TreeBackground
from tests.oracles import brute_force_shapley


@pytest.fixture
def rng():
    return np.random.default_rng(20261130)


def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _masks(d):
    """(2**d, d) bool: row ``mask`` says which features come from the explained row."""
    return (np.arange(1 << d)[:, None] >> np.arange(d)) & 1 == 1


def _shapley_from_table(table):
    """The textbook formula on a (2**d, K) coalition table."""
    d = int(np.log2(table.shape[0]))
    masks = _masks(d)
    sizes = masks.sum(axis=1)
    from math import factorial

    phi = np.zeros((d, table.shape[1]))
    for mask in range(1 << d):
        for j in range(d):
            if masks[mask, j]:
                continue
            s = sizes[mask]
            weight = factorial(s) * factorial(d - s - 1) / factorial(d)
            phi[j] += weight * (table[mask | (1 << j)] - table[mask])
    return phi


@pytest.mark.parametrize("project", [False, True])
@pytest.mark.parametrize("pooling", [0.0, 0.5, 1.0])
def test_combine_attributions(rng, project, pooling):
    values = rng.normal(size=(4, 3, 5))
    weights = rng.dirichlet(np.ones(4))
    targets = rng.normal(size=3)
    out_values, out_std = np.empty((3, 5)), np.empty((3, 5))
    combine_attributions(values, weights, 1.7, 0.01, pooling, targets, project, out_values, out_std)
    combined = np.einsum("s,smd->md", weights, values)
    variance = 1.7 * np.einsum("s,smd->md", weights, (values - combined) ** 2) + 0.01
    if project:
        pooled = (1 - pooling) * variance + pooling * variance.mean(axis=1, keepdims=True)
        share = pooled / variance.sum(axis=1, keepdims=True)
        combined = combined + (targets - combined.sum(axis=1))[:, None] * share
        variance = variance * (1 - share)
    np.testing.assert_allclose(out_values, combined, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out_std, np.sqrt(variance), rtol=0, atol=1e-12)


def test_fill_coalition_rows(rng):
    rows, background = rng.normal(size=(2, 3)), rng.normal(size=(4, 3))
    n_inner = (1 << 3) - 2
    out = np.empty((2 * n_inner * 4, 3))
    fill_coalition_rows(rows, background, 0, 2 * n_inner, out)
    masks = _masks(3)
    for unit in range(2 * n_inner):
        mask = masks[1 + unit % n_inner]
        expected = np.where(mask, rows[unit // n_inner], background)
        np.testing.assert_array_equal(out[unit * 4 : (unit + 1) * 4], expected)


def test_shapley_from_coalition_values(rng):
    table = rng.normal(size=(3, 1 << 4, 2))
    out = np.empty((3, 4, 2))
    shapley_from_coalition_values(table, out)
    for i in range(3):
        np.testing.assert_allclose(out[i], _shapley_from_table(table[i]), rtol=0, atol=1e-12)


def test_sigmoid_additive_coalition_values(rng):
    rows, background = rng.normal(size=(2, 3)), rng.normal(size=(5, 3))
    out = np.empty((2, 8, 1))
    sigmoid_additive_coalition_values(rows, background, 0.3, out)
    for i in range(2):
        for mask, chosen in enumerate(_masks(3)):
            mixed = np.where(chosen, rows[i], background)
            expected = _sigmoid(0.3 + mixed.sum(axis=1)).mean()
            np.testing.assert_allclose(out[i, mask, 0], expected, rtol=0, atol=1e-14)


def test_softmax_additive_coalition_values(rng):
    rows, background = rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 3, 4))
    offset = rng.normal(size=4)
    out = np.empty((2, 8, 4))
    softmax_additive_coalition_values(rows, background, offset, out)
    for i in range(2):
        for mask, chosen in enumerate(_masks(3)):
            mixed = np.where(chosen[None, :, None], rows[i][None], background)
            expected = _softmax(offset + mixed.sum(axis=1)).mean(axis=0)
            np.testing.assert_allclose(out[i, mask], expected, rtol=0, atol=1e-14)


def test_sigmoid_additive_rescaled(rng):
    rows, background = rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
    out = np.empty((3, 4))
    sigmoid_additive_rescaled(rows, background, -0.2, out)
    row_logit = -0.2 + rows.sum(axis=1)
    background_logit = -0.2 + background.sum(axis=1)
    ratio = (_sigmoid(row_logit)[:, None] - _sigmoid(background_logit)[None]) / (
        row_logit[:, None] - background_logit[None]
    )
    expected = np.einsum("ibj,ib->ij", rows[:, None] - background[None], ratio) / 6
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-14)


def test_softmax_additive_path_of_one_feature_is_exact(rng):
    # With one feature the per-reference path credit is the whole change of each class, up to
    # the Gauss-Legendre quadrature of the path integral.
    rows, background = rng.normal(size=(3, 1, 3)), rng.normal(size=(5, 1, 3))
    offset = rng.normal(size=3)
    out = np.empty((3, 1, 3))
    softmax_additive_path(rows, background, offset, out)
    expected = _softmax(offset + rows[:, 0]) - _softmax(offset + background[:, 0]).mean(axis=0)
    np.testing.assert_allclose(out[:, 0], expected, rtol=0, atol=1e-6)


def test_sigmoid_additive_permutation_credits(rng):
    rows, background = rng.normal(size=(2, 3)), rng.normal(size=(4, 3))
    orders = np.ascontiguousarray(np.array(list(all_orders(range(3))))[None].repeat(2, axis=0))
    out = np.empty((2, 6, 3))
    sigmoid_additive_permutation_credits(rows, background, 0.1, orders, out)
    for i in range(2):
        for p, order in enumerate(orders[i]):
            expected = np.zeros(3)
            for z in background:
                current = z.copy()
                for j in order:
                    before = _sigmoid(0.1 + current.sum())
                    current[j] = rows[i, j]
                    expected[j] += _sigmoid(0.1 + current.sum()) - before
            np.testing.assert_allclose(out[i, p], expected / 4, rtol=0, atol=1e-14)
    # Averaged over every order, the credits are the exact Shapley values.
    table = np.empty((2, 8, 1))
    sigmoid_additive_coalition_values(rows, background, 0.1, table)
    exact = np.empty((2, 3, 1))
    shapley_from_coalition_values(table, exact)
    np.testing.assert_allclose(out.mean(axis=1), exact[:, :, 0], rtol=0, atol=1e-14)


def test_permutation_rows_and_marginals(rng):
    rows, background = rng.normal(size=(2, 3)), rng.normal(size=(4, 3))
    row_index = np.array([0, 0, 1], dtype=np.int64)
    background_index = np.array([3, 1, 2], dtype=np.int64)
    orders = np.array([[2, 0, 1], [1, 2, 0], [0, 1, 2]], dtype=np.int64)
    prefixes = np.empty((3 * 2, 3))
    fill_permutation_rows(rows, background, row_index, background_index, orders, prefixes)
    for t in range(3):
        current = background[background_index[t]].copy()
        for k in range(2):
            current[orders[t, k]] = rows[row_index[t], orders[t, k]]
            np.testing.assert_array_equal(prefixes[2 * t + k], current)

    def f(inputs):
        return np.column_stack([inputs.prod(axis=1), np.sin(inputs).sum(axis=1)])

    base = f(background).mean(axis=0)
    credits = np.empty((3, 3, 2))
    permutation_marginals(
        f(prefixes).reshape(3, 2, 2),
        f(rows),
        f(background),
        base,
        row_index,
        background_index,
        orders,
        credits,
    )
    for t in range(3):
        walk = [f(background[background_index[t]][None])[0]]
        walk += list(f(prefixes[2 * t : 2 * t + 2]))
        walk.append(f(rows[row_index[t]][None])[0])
        shift = (walk[0] - base) / 3
        for k in range(3):
            expected = walk[k + 1] - walk[k] + shift
            np.testing.assert_allclose(credits[t, orders[t, k]], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("nan_share", [0.0, 0.25])  # NaN routed by missing_go_to_left
@pytest.mark.parametrize("max_table_entries", [0, 4_000_000])  # the pairwise walk, the tables
def test_tree_kernels_against_enumeration(rng, max_table_entries, nan_share):
    X = rng.normal(size=(80, 4))
    y = X[:, 0] * X[:, 1] + np.sin(3 * X[:, 2])
    X[rng.random(X.shape) < nan_share] = np.nan
    model = DecisionTreeRegressor(max_depth=4, random_state=0).fit(X, y)
    prepared = TreeBackground(model, X[:10], max_table_entries=max_table_entries)
    assert prepared.algorithm == ("pairwise walk" if max_table_entries == 0 else "leaf tables")
    truth = brute_force_shapley(model.predict, X[40:43], X[:10])
    np.testing.assert_allclose(prepared.values(X[40:43]), truth, rtol=0, atol=1e-10)


def test_grouped_leaf_tables_against_enumeration(rng):
    X = rng.normal(size=(80, 5))
    y = X[:, 0] * X[:, 3] + X[:, 1] - X[:, 4] ** 2
    model = DecisionTreeRegressor(max_depth=5, random_state=0).fit(X, y)
    of_feature = np.array([0, 1, 0, 2, 1])
    prepared = TreeBackground(model, X[:10], player_of_feature=of_feature)
    groups = [[0, 2], [1, 4], [3]]
    truth = brute_force_shapley(model.predict, X[40:43], X[:10], groups)
    np.testing.assert_allclose(prepared.values(X[40:43]), truth, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n_players", [1, 2, 5, 8])
def test_product_kernel_values(rng, n_players):
    # Each centre's term is a product over players: the game's value on a coalition takes the
    # row's factors inside it and the background row's outside.
    n_centres, n_background = 3, 4
    row_factors = rng.uniform(0.05, 1.0, size=(2, n_centres, n_players))
    background_factors = rng.uniform(0.05, 1.0, size=(n_background, n_centres, n_players))
    coefficients = rng.normal(size=n_centres)

    out = np.empty((2, n_players))
    product_kernel_values(
        row_factors, background_factors, coefficients, *quadrature(n_players), out
    )
    for i in range(2):
        # The oracle mixes a row of ones (the explained row) into background rows of zeros, one
        # per background row in order: a one at player p takes the row's factor, a zero the
        # background row's.
        def predict(mixed, row=row_factors[i]):
            factors = np.where(mixed[:, None, :] == 1.0, row[None], background_factors)
            return np.prod(factors, axis=2) @ coefficients

        truth = brute_force_shapley(
            predict, np.ones((1, n_players)), np.zeros((n_background, n_players))
        )
        np.testing.assert_allclose(out[i], truth[0, :, 0], rtol=0, atol=1e-12)


def test_uniform_cubic_spline_terms(rng):
    """Against scikit-learn's basis (its linear extrapolation too) times the coefficients."""
    from sklearn.preprocessing import SplineTransformer

    Z = rng.normal(size=(200, 4))
    Z[:, 2] = 1.5  # constant: an all-zero basis
    queries = np.vstack([Z[:20], 3.0 * rng.normal(size=(30, 4))])
    transformer = SplineTransformer(n_knots=6, degree=3, knots="uniform", extrapolation="linear")
    basis = transformer.fit(Z).transform(queries).reshape(len(queries), 4, 8)
    coef = rng.normal(size=(2, 4, 8))
    low, high = Z.min(axis=0), Z.max(axis=0)
    out = np.empty((len(queries), 4, 2))
    uniform_cubic_spline_terms(queries, low, high, (high - low) / 5, coef, out)
    np.testing.assert_allclose(out, np.einsum("mdb,kdb->mdk", basis, coef), atol=1e-12)
