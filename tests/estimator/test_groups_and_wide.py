"""Feature groups and wide (embedding-like) inputs in the estimator."""

import numpy as np
import pytest

from shapley_svc import ZeroShotExplainer
from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator.groups import parse_groups
from shapley_svc.estimator.surrogates import (
    SPLINE_MAX_FEATURES,
    ZOO,
    SoftLogisticSurrogate,
    SoftMultinomialSurrogate,
    SplineSurrogate,
    rows_within_budget,
)
from tests.oracles import brute_force_shapley


def _embedding_task(rng, n=600, d=96, factors=4):
    """Low-rank, correlated rows and a smooth classifier's probabilities on them."""
    latent = rng.normal(size=(n, factors))
    X = np.tanh(latent @ rng.normal(size=(factors, d))) + 0.1 * rng.normal(size=(n, d))
    logits = X @ rng.normal(size=d) / np.sqrt(d) + np.sin(X[:, 0])
    return X, 1.0 / (1.0 + np.exp(-2 * logits))


def _players(groups, d):
    return parse_groups({f"g{i}": g for i, g in enumerate(groups)}, d)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SplineSurrogate(),
        lambda: SoftLogisticSurrogate(strength=0.002, splines=True),
    ],
)
def test_additive_surrogates_give_the_group_game_exactly_even_when_wide(rng, make):
    # d above SPLINE_MAX_FEATURES: splines on the screened columns, linear terms elsewhere.
    X, p = _embedding_task(rng, d=SPLINE_MAX_FEATURES + 16)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    surrogate = make().fit(Z, p, 0)
    d = Z.shape[1]
    groups = [list(range(0, d, 3)), list(range(1, d, 3)), list(range(2, d, 3))]
    ours = surrogate.prepare(Z[:40], _players(groups, d)).attributions(Z[:5])
    truth = brute_force_shapley(surrogate.predict, Z[:5], Z[:40], groups)[:, :, 0]
    np.testing.assert_allclose(ours, truth, atol=1e-10)


def test_multinomial_surrogate_gives_the_group_game_exactly(rng):
    Z = rng.normal(size=(300, 7))
    logits = Z @ rng.normal(size=(7, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    surrogate = SoftMultinomialSurrogate(strength=0.002, splines=False).fit(Z, probabilities, 0)
    groups = [[0, 1, 2], [3], [4, 5, 6]]
    ours = surrogate.prepare(Z[:30], _players(groups, 7)).attributions(Z[:4])
    truth = brute_force_shapley(surrogate.predict, Z[:4], Z[:30], groups)
    np.testing.assert_allclose(ours, truth, atol=1e-10)


def test_groups_are_exactly_efficient_and_named(rng):
    X, p = _embedding_task(rng, d=48)
    groups = {f"block{b}": list(range(b * 12, (b + 1) * 12)) for b in range(4)}
    explainer = ZeroShotExplainer().fit(X, p, groups=groups)
    explanation = explainer.explain(X[:50], p[:50])
    assert explanation.values.shape == explanation.uncertainty.shape == (50, 4)
    assert explanation.attribution_names == explainer.attribution_names_ == list(groups)
    assert explainer.feature_names_ == [f"x{j}" for j in range(48)]
    assert [name for name, _ in explainer.groups_] == list(groups)
    for (_, columns), members in zip(explainer.groups_, groups.values(), strict=True):
        assert columns.dtype == np.int64
        np.testing.assert_array_equal(columns, members)
    np.testing.assert_allclose(
        explanation.values.sum(axis=1), p[:50] - explanation.base_values, atol=1e-12
    )


def test_singleton_groups_in_any_order_are_the_per_feature_values(rng):
    X, p = _embedding_task(rng, n=400, d=8)
    plain = ZeroShotExplainer().fit(X, p).explain(X[:20], p[:20])
    reverse = {f"x{j}": [j] for j in reversed(range(8))}
    grouped = ZeroShotExplainer().fit(X, p, groups=reverse).explain(X[:20], p[:20])
    assert grouped.attribution_names == [f"x{j}" for j in reversed(range(8))]
    np.testing.assert_allclose(grouped.values, plain.values[:, ::-1], atol=1e-12)


def test_a_small_working_memory_subsamples_fits_and_slices_explains(rng):
    X, p = _embedding_task(rng, n=2000, d=100)
    spline = next(kind for kind in ZOO if kind.name == "logistic_spline")
    assert rows_within_budget(spline, 2000, 100, 16 << 20) < 2000  # the fit subsamples
    small = ZeroShotExplainer(working_memory_bytes=16 << 20).fit(X, p)
    assert small.rows_per_slice() < 400
    explanation = small.explain(X[:400], p[:400])
    np.testing.assert_allclose(
        explanation.values.sum(axis=1), p[:400] - explanation.base_values, atol=1e-12
    )
    # Slicing does not change the answer: the same fit explained in one piece agrees.
    # The budget a fit runs with is fitted state: changing it in place slices differently.
    small.working_memory_bytes_ = 1 << 34
    whole = small.explain(X[:400], p[:400])
    np.testing.assert_allclose(whole.values, explanation.values, rtol=0, atol=1e-13)
    again = ZeroShotExplainer(working_memory_bytes=16 << 20).fit(X, p).explain(X[:400], p[:400])
    np.testing.assert_array_equal(again.values, explanation.values)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ("abc", "groups must map group names"),
        ({}, "at least one group"),
        ([("a", [0, 1, 2])], "cover every column: 1 in no group (3)"),
        ([("a", [0, 1]), ("a", [2, 3])], "the name 'a' is used twice"),
        ({"a": [0, 1, 1], "b": [2, 3]}, "lists a column twice"),
        ({"a": [0.5], "b": [0, 1, 2, 3]}, "integer column indices"),
        ({"a": [0, 1], "b": [1, 2, 3]}, "column 1 is in both 'a' and 'b'"),
        ({"a": [0, 1, 2, 3, -1]}, "column -1, outside [0, 4)"),
        ([("a",)], "groups item 0 must be a (name, column indices) pair"),
        ({"": [0, 1, 2, 3]}, "group 0 has an empty name"),
        ({"a": [[0, 1], [2]], "b": [3]}, "group 'a' has [[0, 1], [2]]"),  # was numpy's own
    ],
)
def test_bad_groups_are_refused_with_the_problem(rng, groups, message):
    X = rng.normal(size=(50, 4))
    with pytest.raises(InvalidArgumentError) as caught:
        ZeroShotExplainer().fit(X, X[:, 0], groups=groups)
    assert message in str(caught.value)
    assert caught.value.argument == "groups"


def test_working_memory_is_checked(rng):
    X = rng.normal(size=(50, 4))
    with pytest.raises(ValueError, match="working_memory_bytes must be an int of at least"):
        ZeroShotExplainer(working_memory_bytes=1000).fit(X, X[:, 0])
