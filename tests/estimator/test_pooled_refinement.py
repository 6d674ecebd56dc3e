"""refine(..., pool_rows=True): a linear function fitted on the other explained rows' pairs joins
each row's proxy."""

import numpy as np
import pytest

from shapley_svc.errors import CancelledError, InvalidArgumentError, LimitExceededError
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.estimator.refinement import (
    PooledDesign,
    PooledMoments,
    pair_features,
    pooled_fold,
    pooled_values,
    pooled_weights,
)
from shapley_svc.reference import exact_shapley


def _aliased(rng, n: int, d: int = 10) -> np.ndarray:
    """Rows whose first two columns are near copies: the model's outputs on them cannot say
    which of the two it reads; pairs that mix rows can."""
    X = rng.normal(size=(n, d))
    X[:, 1] = X[:, 0] + 0.05 * rng.normal(size=n)
    return X


def _model(rows: np.ndarray) -> np.ndarray:
    return 3.0 * rows[:, 0] + np.tanh(rows[:, 2]) * rows[:, 3] + 0.5 * rows[:, 4]


@pytest.fixture(scope="module")
def aliased():
    rng = np.random.default_rng(11)
    X = _aliased(rng, 800)
    explainer = ZeroShotExplainer(random_state=0).fit(X, _model(X))
    query = _aliased(rng, 20)
    truth = exact_shapley(_model, query, explainer.background_rows_).values
    return explainer, query, truth


def _error(values, truth) -> float:
    return float(np.sqrt(np.mean((values - truth) ** 2)))


def test_pair_features_give_a_linear_functions_gaps_on_the_built_rows():
    rng = np.random.default_rng(0)
    m, n_pairs, n_players = 3, 5, 4
    player_of_column = np.array([0, 0, 1, 2, 3, 3])  # two players of two columns each
    design = rng.normal(size=(m, 6))
    reference = rng.normal(size=(7, 6))
    picks = rng.integers(0, 7, size=(m, n_pairs))
    masks = rng.random((m, n_pairs, n_players)) < 0.5
    w = rng.normal(size=6)
    taken = masks[:, :, player_of_column]
    first = np.where(taken, design[:, None, :], reference[picks])
    second = np.where(taken, reference[picks], design[:, None, :])
    features = pair_features(design, reference, picks, masks, player_of_column)
    np.testing.assert_allclose(features @ w, first @ w - second @ w, atol=1e-12)


def test_pooled_values_are_the_linear_functions_exact_values_against_the_background():
    rng = np.random.default_rng(1)
    player_of_column = np.array([0, 1, 1, 2])
    background = rng.normal(size=(30, 4))
    design = rng.normal(size=(2, 4))
    weights = rng.normal(size=(2, 4))
    values = pooled_values(weights, design, background.mean(axis=0), player_of_column, 3)
    for i in range(2):
        truth = exact_shapley(
            lambda rows, w=weights[i]: rows @ w, design[i : i + 1], background
        ).values[0]
        grouped = np.array([truth[0], truth[1] + truth[2], truth[3]])
        np.testing.assert_allclose(values[i], grouped, atol=1e-12)


def _moments(rng, m, n_pairs, w_true, noise):
    features = rng.normal(size=(m, n_pairs, len(w_true)))
    targets = (features @ w_true)[:, :, None] + noise * rng.normal(size=(m, n_pairs, 1))
    moments = PooledMoments.empty(int(pooled_fold(m).max()) + 1, len(w_true), 1)
    moments.add(pooled_fold(m), features, targets)
    return moments


def test_pooled_weights_recover_a_shared_function_and_stay_zero_without_one():
    rng = np.random.default_rng(2)
    w_true = rng.normal(size=8)
    shared = pooled_weights(_moments(rng, 12, 20, w_true, 0.1), 12)
    assert shared.shape == (10, 8, 1)
    assert np.abs(shared[:, :, 0] - w_true).max() < 0.05
    # Targets that no function of the features predicts: held-out rows reject every strength,
    # or keep a function that predicts next to nothing.
    unrelated = pooled_weights(_moments(rng, 12, 20, np.zeros(8), 1.0), 12)
    assert np.linalg.norm(unrelated) < 0.1 * np.linalg.norm(w_true), unrelated


def test_each_folds_function_is_fitted_without_that_folds_rows():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(4, 30, 3))
    targets = features @ np.array([1.0, -2.0, 0.5])
    targets[1] = features[1] @ np.array([2.0, -2.0, 0.5])  # one row unlike the others
    moments = PooledMoments.empty(4, 3, 1)
    moments.add(pooled_fold(4), features, targets[:, :, None])
    weights = pooled_weights(moments, 4)[:, :, 0]
    # Every other fold sees row 1, whose first weight is twice the others'; its own fold's
    # function does not (the ridge shrinks each function a little, not the ratio).
    ratio = weights[:, 0] / -weights[:, 1]
    assert abs(ratio[1] - 0.5) < 0.02, ratio
    assert np.all(ratio[[0, 2, 3]] > 0.6), ratio


def test_pooling_corrects_what_no_rows_pairs_alone_can_tell_apart(aliased):
    explainer, query, truth = aliased
    proposal = explainer.propose(query, 20, _model(query), random_state=1)
    outputs = _model(proposal.rows)
    alone = explainer.refine(proposal, outputs)
    pooled = explainer.refine(proposal, outputs, pool_rows=True)
    assert _error(pooled.values, truth) < 0.5 * _error(alone.values, truth)
    np.testing.assert_allclose(
        pooled.values.sum(axis=1), _model(query) - pooled.base_values, atol=1e-10
    )
    assert pooled.model_rows == alone.model_rows
    assert np.all(pooled.uncertainty >= 0)


def test_pooled_intervals_cover_about_eighty_percent(aliased):
    explainer, query, truth = aliased
    covered = []
    for seed in range(4):
        proposal = explainer.propose(query, 40, _model(query), random_state=seed)
        refined = explainer.refine(proposal, _model(proposal.rows), pool_rows=True)
        covered.append(np.abs(refined.values - truth) <= 1.2816 * refined.uncertainty)
    assert 0.65 <= np.mean(covered) <= 0.97, np.mean(covered)


def test_pooled_refinement_is_deterministic_and_a_single_row_refines_as_without_it(aliased):
    explainer, query, _ = aliased
    proposal = explainer.propose(query, 20, _model(query), random_state=4)
    outputs = _model(proposal.rows)
    first = explainer.refine(proposal, outputs, pool_rows=True)
    again = explainer.refine(proposal, outputs, pool_rows=True)
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_array_equal(first.uncertainty, again.uncertainty)
    one = explainer.propose(query[:1], 20, _model(query[:1]), random_state=4)
    one_outputs = _model(one.rows)
    np.testing.assert_array_equal(
        explainer.refine(one, one_outputs, pool_rows=True).values,
        explainer.refine(one, one_outputs).values,
    )


def test_pooled_slices_give_the_answer_of_one_slice(aliased, monkeypatch):
    explainer, query, _ = aliased
    proposal = explainer.propose(query, 20, _model(query), random_state=5)
    outputs = _model(proposal.rows)
    whole = explainer.refine(proposal, outputs, pool_rows=True)
    monkeypatch.setattr(type(explainer), "_refine_rows_per_slice", lambda self, block: 3)
    sliced = explainer.refine(proposal, outputs, pool_rows=True)
    np.testing.assert_allclose(sliced.values, whole.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sliced.uncertainty, whole.uncertainty, rtol=0, atol=1e-12)


def test_pooling_refines_classes_missing_values_and_categories_efficiently():
    rng = np.random.default_rng(6)
    n = 400
    X = rng.normal(size=(n, 4))
    X[:, 3] = rng.integers(0, 3, size=n)
    X[rng.random(n) < 0.1, 0] = np.nan

    def predict(rows):
        score = np.nan_to_num(rows[:, 0]) + rows[:, 1] * (rows[:, 3] == 1)
        return np.column_stack([score, -0.5 * score + rows[:, 2]])

    explainer = ZeroShotExplainer(random_state=0).fit(X, predict(X), categorical=[3])
    query = X[:8]
    proposal = explainer.propose(query, 16, predict(query), random_state=0)
    pooled = explainer.refine(proposal, predict(proposal.rows), pool_rows=True)
    assert pooled.values.shape == (8, 4, 2)
    np.testing.assert_allclose(
        pooled.values.sum(axis=1), predict(query) - pooled.base_values, atol=1e-10
    )
    assert np.all(np.isfinite(pooled.uncertainty))


def test_a_pooled_refinement_can_be_cancelled(aliased):
    explainer, query, _ = aliased
    proposal = explainer.propose(query, 20, _model(query), random_state=1)
    with pytest.raises(CancelledError):
        explainer.refine(proposal, _model(proposal.rows), pool_rows=True, should_stop=lambda: True)


@pytest.mark.parametrize("pool_rows", [1, "yes", None])
def test_pool_rows_must_be_a_bool(aliased, pool_rows):
    explainer, query, _ = aliased
    proposal = explainer.propose(query[:2], 20, _model(query[:2]), random_state=1)
    with pytest.raises(InvalidArgumentError) as error:
        explainer.refine(proposal, _model(proposal.rows), pool_rows=pool_rows)
    assert error.value.argument == "pool_rows"


def test_pooling_more_columns_than_half_the_working_memory_holds_is_refused_naming_it():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(200, 300))
    y = X[:, 0] + X[:, 1] * X[:, 2]
    # 13 Grams of 300 x 300 floats are 9.4 MB: over half of 16 MiB.
    explainer = ZeroShotExplainer(random_state=0, working_memory_bytes=16 << 20).fit(X, y)
    query = X[:12]
    proposal = explainer.propose(query, 8, y[:12], random_state=0)
    with pytest.raises(LimitExceededError) as error:
        explainer.refine(proposal, proposal.rows[:, 0], pool_rows=True)
    assert error.value.argument == "pool_rows"
    # Without pooling, or for one row (nothing to pool), the same explainer refines.
    assert explainer.refine(proposal, proposal.rows[:, 0]).values.shape == (12, 300)
    one = explainer.propose(query[:1], 8, y[:1], random_state=0)
    assert explainer.refine(one, one.rows[:, 0], pool_rows=True).values.shape == (1, 300)


@pytest.mark.parametrize("n_references", [1, 7])
def test_rows_that_share_coalitions_and_a_reference_row_pool_as_built_features_do(n_references):
    rng = np.random.default_rng(9)
    m, n_pairs, n_players, n_outputs = 5, 12, 4, 2
    player_of_column = np.array([0, 0, 1, 2, 3, 3])
    design = rng.normal(size=(m, 6))
    reference = rng.normal(size=(n_references, 6))
    picks = rng.integers(0, n_references, size=(m, n_pairs))
    masks = np.broadcast_to(rng.random((1, n_pairs, n_players)) < 0.5, (m, n_pairs, n_players))
    residual = rng.normal(size=(m, n_pairs, n_outputs))
    weights = rng.normal(size=(m, 6, n_outputs))
    found = PooledDesign.of(design, reference, picks, masks, player_of_column)
    built = PooledDesign.of(design, reference, picks, masks, player_of_column, shared=False)
    assert (found.signs is not None) == (n_references == 1)
    # One row drawing a coalition of its own: the features are built.
    own = masks.copy()
    own[3, 5, 0] = not own[3, 5, 0]
    assert PooledDesign.of(design, reference, picks, own, player_of_column).signs is None
    pooled = []
    for features in (found, built):
        moments = PooledMoments.empty(3, 6, n_outputs)
        features.add(moments, pooled_fold(m) % 3, slice(0, 2), residual[:2])
        features.add(moments, pooled_fold(m) % 3, slice(2, m), residual[2:])
        pooled.append((moments, features.gaps(slice(1, 4), weights[1:4])))
    (a, a_gaps), (b, b_gaps) = pooled
    np.testing.assert_allclose(a.grams, b.grams, atol=1e-10)
    np.testing.assert_allclose(a.moments, b.moments, atol=1e-10)
    assert a.feature_squares == pytest.approx(b.feature_squares, rel=1e-12)
    np.testing.assert_allclose(a_gaps, b_gaps, atol=1e-10)
