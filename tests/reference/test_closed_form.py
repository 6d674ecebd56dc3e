import numpy as np
import pytest

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.reference import additive_shapley, exact_shapley, linear_shapley
from shapley_svc.reference.closed_form import logistic_additive_shapley
from tests.oracles import as_3d, brute_force_shapley


def test_linear_matches_brute_force_single_and_multi_output(rng):
    X = rng.normal(size=(5, 6))
    background = rng.normal(size=(9, 6))
    coef = rng.normal(size=6)
    single = linear_shapley(coef, 0.7, X, background)
    expected = brute_force_shapley(lambda Z: Z @ coef + 0.7, X, background)
    np.testing.assert_allclose(single.values, expected[:, :, 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(single.predictions, X @ coef + 0.7)

    coefs, intercepts = rng.normal(size=(3, 6)), rng.normal(size=3)
    multi = linear_shapley(coefs, intercepts, X, background)
    expected = brute_force_shapley(lambda Z: Z @ coefs.T + intercepts, X, background)
    assert multi.values.shape == (5, 6, 3)
    np.testing.assert_allclose(multi.values, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(multi.base_values[0], background.mean(0) @ coefs.T + intercepts)


def test_additive_with_one_two_and_three_feature_terms_matches_brute_force(rng):
    d = 7
    X = rng.normal(size=(4, d))
    background = rng.normal(size=(8, d))
    terms = [
        ([0], lambda Z: np.sin(3 * Z[:, 0])),
        ([2], lambda Z: Z[:, 0] ** 2),
        ([1, 4], lambda Z: np.tanh(Z[:, 0] * Z[:, 1])),
        ([5, 3], lambda Z: np.maximum(Z[:, 0], Z[:, 1])),
        ([6, 1, 0], lambda Z: Z[:, 0] * Z[:, 1] * Z[:, 2]),
    ]

    def model(Z):
        return 1.5 + sum(function(Z[:, features]) for features, function in terms)

    result = additive_shapley(terms, X, background, intercept=1.5)
    expected = brute_force_shapley(model, X, background)
    np.testing.assert_allclose(result.values, expected[:, :, 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.predictions, model(X), rtol=1e-12)
    np.testing.assert_allclose(result.base_values, model(background).mean(), rtol=1e-12)


def test_additive_multi_output_terms(rng):
    X = rng.normal(size=(3, 4))
    background = rng.normal(size=(5, 4))
    terms = [
        ([0, 1], lambda Z: np.column_stack([Z[:, 0] * Z[:, 1], Z[:, 0] - Z[:, 1]])),
        ([3], lambda Z: np.column_stack([Z[:, 0] ** 3, np.cos(Z[:, 0])])),
    ]
    result = additive_shapley(terms, X, background, intercept=[1.0, -1.0])
    expected = brute_force_shapley(
        lambda Z: terms[0][1](Z[:, [0, 1]]) + terms[1][1](Z[:, [3]]), X, background
    )
    np.testing.assert_allclose(as_3d(result.values), expected, rtol=0, atol=1e-10)
    assert np.all(result.values[:, 2] == 0)


def test_one_feature_terms_cost_no_mixed_rows(rng):
    calls = []

    def g(Z):
        calls.append(Z.shape[0])
        return np.exp(Z[:, 0])

    additive_shapley([([1], g)], rng.normal(size=(10, 3)), rng.normal(size=(50, 3)))
    assert sorted(calls) == [10, 50]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda X, B: linear_shapley(np.ones(4), 0.0, X, B), r"coef must have shape \(3,\)"),
        (lambda X, B: linear_shapley(np.ones((2, 3)), [1, 2, 3], X, B), "intercept must be"),
        (lambda X, B: linear_shapley([np.nan, 1, 1], 0.0, X, B), "coef must be finite"),
        (lambda X, B: additive_shapley([], X, B), "at least one"),
        (lambda X, B: additive_shapley([([0, 0], np.sum)], X, B), r"terms item 0 features must"),
        (lambda X, B: additive_shapley([([3], np.sum)], X, B), r"terms item 0 features must"),
        (lambda X, B: additive_shapley([([0], "f")], X, B), r"terms item 0 function"),
        (lambda X, B: additive_shapley([[0]], X, B), r"terms item 0 must be a"),
        # Casts took 1.7 and True for column 1.
        (lambda X, B: additive_shapley([([1.7], np.sum)], X, B), "integer column indices"),
        (lambda X, B: additive_shapley([([True], np.sum)], X, B), "integer column indices"),
        (lambda X, B: additive_shapley([(["a"], np.sum)], X, B), "integer column indices"),
        (lambda X, B: additive_shapley(None, X, B), "terms must be a sequence"),
        (lambda X, B: logistic_additive_shapley(X, B, None), "offset must be a real number"),
        (lambda X, B: logistic_additive_shapley(X, B, "0.3"), "offset must be a real number"),
        (lambda X, B: logistic_additive_shapley(X, B, [0.1, 0.2]), "offset must be a real"),
        (
            lambda X, B: logistic_additive_shapley(X, B, 0.1, random_state=-1),
            "random_state must be a non-negative int",
        ),
        (
            lambda X, B: logistic_additive_shapley(X, B, 0.1, n_permutations="a"),
            "n_permutations must be a positive int",
        ),
    ],
)
def test_rejects_bad_arguments(rng, call, message):
    with pytest.raises(InvalidArgumentError, match=message):
        call(rng.normal(size=(2, 3)), rng.normal(size=(4, 3)))


def test_additive_terms_may_come_from_a_generator(rng):
    X, B = rng.normal(size=(3, 3)), rng.normal(size=(5, 3))
    terms = [([0], lambda z: z[:, 0] ** 2), ([1, 2], lambda z: z[:, 0] * z[:, 1])]
    listed = additive_shapley(terms, X, B)
    generated = additive_shapley((term for term in terms), X, B)
    np.testing.assert_array_equal(listed.values, generated.values)


def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def test_logistic_additive_is_exact_up_to_twelve_features(rng):
    d = 7
    weights = rng.normal(size=d) * 1.5
    X = rng.normal(size=(4, d))
    background = rng.normal(size=(9, d))

    def model(Z):
        return _sigmoid(0.4 + np.sin(Z) @ weights)

    result = logistic_additive_shapley(np.sin(X) * weights, np.sin(background) * weights, 0.4)
    expected = brute_force_shapley(model, X, background)
    np.testing.assert_allclose(result.values, expected[:, :, 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.predictions, model(X), rtol=1e-12)
    assert result.exact


def test_logistic_additive_samples_without_bias_above_twelve_features(rng):
    d = 14
    weights = rng.normal(size=d)
    X = rng.normal(size=(3, d))
    background = rng.normal(size=(12, d))
    truth = exact_shapley(lambda Z: _sigmoid(Z @ weights - 0.2), X, background).values
    result = logistic_additive_shapley(
        X * weights, background * weights, -0.2, n_permutations=400, random_state=1
    )
    assert not result.exact
    z = np.abs(result.values - truth) / result.uncertainty
    assert np.mean(z <= 1.96) > 0.85, np.mean(z <= 1.96)
    assert result.efficiency_gap <= 1e-12
