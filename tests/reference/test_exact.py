import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.reference import exact_shapley, sampled_shapley
from tests.oracles import as_3d, brute_force_shapley, random_polynomial_game


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 6),
    m=st.integers(1, 4),
    n_background=st.integers(1, 6),
    n_outputs=st.sampled_from([1, 3]),
)
def test_matches_brute_force_on_random_games(seed, d, m, n_background, n_outputs):
    rng = np.random.default_rng(seed)
    predict = random_polynomial_game(rng, d, n_outputs)
    X = rng.normal(size=(m, d))
    background = rng.normal(size=(n_background, d))
    result = exact_shapley(predict, X, background)
    expected = brute_force_shapley(predict, X, background)
    np.testing.assert_allclose(as_3d(result.values), expected, rtol=0, atol=1e-10)
    assert result.values.ndim == (2 if n_outputs == 1 else 3)
    assert result.exact
    assert np.all(result.uncertainty == 0)


def test_matches_brute_force_for_a_fitted_classifier(rng):
    from sklearn.neural_network import MLPClassifier

    X = rng.normal(size=(300, 5))
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype(int) + (X[:, 3] > 1)
    model = MLPClassifier((16,), max_iter=300, random_state=0).fit(X, y)
    result = exact_shapley(model.predict_proba, X[:6], X[100:120])
    expected = brute_force_shapley(model.predict_proba, X[:6], X[100:120])
    assert result.values.shape == (6, 5, 3)
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-10)


def test_efficiency_and_reported_outputs(rng):
    predict = random_polynomial_game(rng, 9, 2)
    X = rng.normal(size=(7, 9))
    background = rng.normal(size=(20, 9))
    result = exact_shapley(predict, X, background)
    np.testing.assert_array_equal(result.predictions, predict(X))
    np.testing.assert_allclose(result.base_values, np.tile(predict(background).mean(0), (7, 1)))
    scale = np.abs(result.values).sum(axis=1)
    gap = result.values.sum(axis=1) - (result.predictions - result.base_values)
    assert np.all(np.abs(gap) <= 1e-9 * scale), f"efficiency gap {np.abs(gap).max()}"


def test_small_memory_bound_batches_calls_and_keeps_values(rng):
    predict = random_polynomial_game(rng, 10, 1)
    X = rng.normal(size=(3, 10))
    background = rng.normal(size=(300, 10))
    call_sizes = []

    def recording_predict(Z):
        call_sizes.append(Z.shape[0])
        return predict(Z)

    bound = 1024**2
    bounded = exact_shapley(recording_predict, X, background, max_memory=bound)
    mixed_calls = call_sizes[2:]
    assert len(mixed_calls) > 10, "a 1 MiB bound must split the 3 * 1022 * 300 rows into calls"
    assert max(mixed_calls) * 8 * (10 + 2) <= bound // 4
    assert sum(mixed_calls) == 3 * (2**10 - 2) * 300
    assert bounded.model_evaluations == sum(call_sizes)
    unbounded = exact_shapley(predict, X, background)
    np.testing.assert_allclose(bounded.values, unbounded.values, rtol=0, atol=1e-12)


def test_repeated_calls_are_identical(rng):
    predict = random_polynomial_game(rng, 8, 1)
    X = rng.normal(size=(5, 8))
    background = rng.normal(size=(10, 8))
    first = exact_shapley(predict, X, background)
    second = exact_shapley(predict, X, background)
    np.testing.assert_array_equal(first.values, second.values)


def test_single_feature_needs_no_mixed_rows(rng):
    calls = []

    def predict(Z):
        calls.append(Z.shape[0])
        return np.exp(Z[:, 0])

    X = rng.normal(size=(4, 1))
    background = rng.normal(size=(6, 1))
    result = exact_shapley(predict, X, background)
    np.testing.assert_allclose(result.values[:, 0], np.exp(X[:, 0]) - np.exp(background).mean())
    assert calls == [6, 4]


@pytest.mark.parametrize(
    ("X", "background", "message"),
    [
        (np.zeros(3), np.zeros((2, 3)), "X must be 2-D"),
        (np.zeros((0, 3)), np.zeros((2, 3)), "X must have at least one row"),
        (np.zeros((2, 3)), np.zeros((2, 4)), "background has 4 features; expected 3"),
        (
            np.array([[0.0, -np.inf]]),
            np.zeros((2, 2)),
            r"X must be finite or NaN \(missing\); found -inf at row 0",
        ),
        (np.zeros((2, 2)), np.array([[np.inf, 0.0]]), "background must be finite or NaN"),
        (np.zeros((1, 17)), np.zeros((2, 17)), "X has 17 features; exact_shapley enumerates"),
        ([["a", "b"]], np.zeros((2, 2)), "X must be a numeric 2-D array"),
    ],
)
def test_rejects_bad_arrays_naming_the_argument(X, background, message):
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        exact_shapley(lambda Z: Z.sum(axis=1), X, background)
    assert caught.value.argument == message.split()[0]


def test_missing_values_reach_the_model():
    # NaN is a missing value the model routes itself: rows holding it are evaluated as they are.
    def predict(Z):
        return np.where(np.isnan(Z[:, 0]), 5.0, Z[:, 0]) * np.nan_to_num(Z[:, 1], nan=-1.0)

    X = np.array([[np.nan, 2.0], [1.0, np.nan]])
    background = np.array([[0.5, np.nan], [np.nan, 3.0], [2.0, 1.0]])
    truth = brute_force_shapley(predict, X, background)[:, :, 0]
    np.testing.assert_allclose(exact_shapley(predict, X, background).values, truth, atol=1e-12)
    sampled = sampled_shapley(predict, X, background, budget=200, random_state=0)
    np.testing.assert_allclose(sampled.values.sum(axis=1), predict(X) - predict(background).mean())


def test_rejects_bad_model_outputs():
    X, background = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"predict must return shape \(4,\) or \(4, K\)"):
        exact_shapley(lambda Z: Z.sum(axis=1)[:-1], X, background)
    with pytest.raises(ValueError, match="predict returned non-finite outputs"):
        exact_shapley(lambda Z: np.full(Z.shape[0], np.nan), X, background)
    with pytest.raises(ValueError, match="max_memory must be an integer number of bytes"):
        exact_shapley(lambda Z: Z.sum(axis=1), X, background, max_memory=10)
