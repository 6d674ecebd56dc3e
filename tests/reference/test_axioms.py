"""The Shapley axioms on closed-form games, for every method of the reference engine."""

import numpy as np
import pytest
from sklearn.tree import DecisionTreeRegressor

from shapley_svc.reference import (
    additive_shapley,
    exact_shapley,
    linear_shapley,
    sampled_shapley,
    tree_shapley,
)


def _symmetric_data(rng, m=4, n_background=9, d=5):
    """Rows and background in which features 0 and 1 always carry equal values."""
    X = rng.normal(size=(m, d))
    background = rng.normal(size=(n_background, d))
    X[:, 1] = X[:, 0]
    background[:, 1] = background[:, 0]
    return X, background


def _game(Z):
    """Symmetric in features 0 and 1; feature 4 is a null player."""
    return np.exp(0.3 * (Z[:, 0] + Z[:, 1])) * Z[:, 2] + np.sin(Z[:, 0] * Z[:, 1]) + Z[:, 3]


METHODS = {
    "exact": lambda f, X, B: exact_shapley(f, X, B),
    "additive": lambda f, X, B: additive_shapley([([0, 1, 2, 3, 4], f)], X, B),
    "sampled": lambda f, X, B: sampled_shapley(f, X, B, 20000, random_state=0),
}


@pytest.mark.parametrize("method", METHODS)
def test_efficiency(rng, method):
    X, background = _symmetric_data(rng)
    result = METHODS[method](_game, X, background)
    np.testing.assert_allclose(
        result.values.sum(axis=1), _game(X) - _game(background).mean(), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("method", ["exact", "additive"])
def test_symmetry_and_null_player(rng, method):
    X, background = _symmetric_data(rng)
    values = METHODS[method](_game, X, background).values
    np.testing.assert_allclose(values[:, 0], values[:, 1], rtol=0, atol=1e-12)
    assert np.all(np.abs(values[:, 4]) <= 1e-12), values[:, 4]


def test_sampled_values_respect_symmetry_and_null_player_within_their_error(rng):
    X, background = _symmetric_data(rng)
    result = sampled_shapley(_game, X, background, 20000, random_state=0)
    difference = result.values[:, 0] - result.values[:, 1]
    spread = np.hypot(result.uncertainty[:, 0], result.uncertainty[:, 1])
    assert np.all(np.abs(difference) <= 4 * spread)
    assert np.all(np.abs(result.values[:, 4]) <= 4 * result.uncertainty[:, 4] + 1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_linearity(rng, method):
    X, background = _symmetric_data(rng)

    def other(Z):
        return np.tanh(Z[:, 2] - Z[:, 4]) * Z[:, 1]

    combined = METHODS[method](lambda Z: 2.0 * _game(Z) - 3.0 * other(Z), X, background).values
    separate = (
        2.0 * METHODS[method](_game, X, background).values
        - 3.0 * METHODS[method](other, X, background).values
    )
    np.testing.assert_allclose(combined, separate, rtol=0, atol=1e-9)


def test_linear_closed_form_axioms(rng):
    X, background = _symmetric_data(rng)
    coef = np.array([1.5, 1.5, -2.0, 0.5, 0.0])
    values = linear_shapley(coef, 1.0, X, background).values
    np.testing.assert_array_equal(values[:, 0], values[:, 1])
    assert np.all(values[:, 4] == 0)
    np.testing.assert_allclose(values.sum(1), (X - background.mean(0)) @ coef, rtol=1e-12)


def test_tree_values_with_ignored_features(rng):
    X = rng.normal(size=(600, 5))
    y = X[:, 0] + X[:, 1] + np.sin(3 * X[:, 2])
    model = DecisionTreeRegressor(max_depth=6, random_state=0).fit(X[:, :3], y)
    # The tree sees three features; a wrapper adds two it ignores.
    rows, background = X[:8, :3], X[300:320, :3]
    values = tree_shapley(model, rows, background).values
    padded = exact_shapley(lambda Z: model.predict(Z[:, :3]), X[:8], X[300:320]).values
    np.testing.assert_allclose(padded[:, :3], values, rtol=0, atol=1e-10)
    assert np.all(np.abs(padded[:, 3:]) <= 1e-12)
