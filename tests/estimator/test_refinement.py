"""Refinement: proposals the caller scores, and refined values that are exactly efficient,
deterministic, and converge to the exact interventional values as the budget grows."""

import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from shapley_svc.errors import CancelledError, InvalidArgumentError
from shapley_svc.estimator import ZeroShotExplainer, refinement
from shapley_svc.estimator.refinement import (
    CENTRE_SCALE_PRIOR_STD,
    MIN_PRIOR_VARIANCE_RATIO,
    PRIOR_PAIRS_PER_PLAYER,
    CentreTrial,
    centre_scaled,
    centre_split,
    centre_trial,
    merged_with_prior,
    minimum_budget,
    prefers_centre,
    reference_centre,
    refined_values,
    shrunk_variance_ratio,
    size_distribution,
    t_widening,
    weighing_inflation,
)
from shapley_svc.estimator.surrogates import ZOO, Pairs
from shapley_svc.kernels.coalitions import fill_paired_rows, sample_paired_coalitions
from shapley_svc.reference import exact_shapley


def _interacting(X):
    """A model the zoo cannot represent exactly: interactions and a kink."""
    return np.sin(2 * X[:, 0]) * X[:, 1] + np.abs(X[:, 2]) - 0.5 * X[:, 3] * X[:, 4]


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(600, 5))
    explainer = ZeroShotExplainer(random_state=3).fit(X, _interacting(X))
    query = rng.normal(size=(12, 5))
    truth = exact_shapley(_interacting, query, explainer.background_rows_).values
    return explainer, query, truth


def _refine(explainer, query, budget, predictions=True, random_state=None):
    given = _interacting(query) if predictions else None
    proposal = explainer.propose(query, budget, given, random_state=random_state)
    return proposal, explainer.refine(proposal, _interacting(proposal.rows))


def _error(values, truth):
    return float(np.sqrt(np.mean((values - truth) ** 2)))


def test_the_estimator_is_the_shapley_value_in_expectation():
    """The paired estimator's mean over the Shapley-kernel distribution of coalitions, computed
    by enumeration, is exactly the Shapley value of a random game."""
    rng = np.random.default_rng(0)
    n_players = 5
    game = {mask: rng.normal() for mask in range(1 << n_players)}
    cdf, a = size_distribution(n_players)
    size_probability = np.diff(np.r_[0.0, cdf])
    expected = np.zeros(n_players)
    for mask in range(1, (1 << n_players) - 1):
        inside = np.array([(mask >> j) & 1 for j in range(n_players)], dtype=float)
        size = int(inside.sum())
        probability = size_probability[size - 1] / math.comb(n_players, size)
        gap = game[mask] - game[((1 << n_players) - 1) ^ mask]
        expected += probability * 0.5 * (inside - size / n_players) * gap
    total = game[(1 << n_players) - 1] - game[0]
    estimate = total / n_players + expected / a
    shapley = np.zeros(n_players)
    for j in range(n_players):
        others = [k for k in range(n_players) if k != j]
        for size in range(n_players):
            for subset in itertools.combinations(others, size):
                mask = sum(1 << k for k in subset)
                weight = 1 / (n_players * math.comb(n_players - 1, size))
                shapley[j] += weight * (game[mask | (1 << j)] - game[mask])
    np.testing.assert_allclose(estimate, shapley, atol=1e-12)


def _pairwise_game(n_players: int, interaction: float, seed: int):
    """A game v(S) = sum_{j in S} main_j + interaction * sum_{j < k in S} pair_jk: its Shapley
    values main_j + interaction * sum_k pair_jk / 2, and its pair gaps for given masks."""
    rng = np.random.default_rng(seed)
    main = rng.normal(size=n_players)
    pair = np.triu(rng.normal(size=(n_players, n_players)), 1)

    def value(masks):
        inside = masks.astype(float)
        return inside @ main + interaction * np.einsum("...i,ij,...j->...", inside, pair, inside)

    shapley = main + interaction * (pair + pair.T).sum(axis=1) / 2
    return value, shapley


def _drawn_pairs(value, n_players: int, n_pairs: int, seed: int):
    """(1, n_pairs, P) masks drawn from the Shapley kernel with ``seed``, and ``value``'s pair
    gaps on them."""
    cdf, _ = size_distribution(n_players)
    masks = np.empty((1, n_pairs, n_players), dtype=np.bool_)
    sample_paired_coalitions(
        np.array([seed], dtype=np.uint64), cdf, 1, masks, np.zeros((1, n_pairs), np.int64)
    )
    return masks, value(masks) - value(~masks)


def _pairs_estimate(n_players, n_pairs, interaction, seed, game_seed=0):
    """``refined_values`` on one row of ``_pairwise_game`` (proxy zero), and the exact values."""
    value, shapley = _pairwise_game(n_players, interaction, game_seed)
    masks, gaps = _drawn_pairs(value, n_players, n_pairs, seed)
    total = np.array([value(np.ones(n_players, dtype=bool)) - value(np.zeros(n_players, bool))])
    values, std = refined_values(np.zeros((1, n_players)), np.zeros_like(gaps), gaps, masks, total)
    return values[0], std[0], shapley


def test_the_regression_errs_far_less_than_the_unbiased_estimate_on_a_nearly_additive_game(
    monkeypatch,
):
    """The pairs' regression fits the additive part of the residual, which the unbiased
    estimate (the exact Gram alone) leaves in its noise; both are exactly efficient."""
    n_players, n_pairs = 12, 24

    def errors():
        found = []
        for seed in range(20):
            values, _, shapley = _pairs_estimate(n_players, n_pairs, 0.1, seed)
            assert values.sum() == pytest.approx(shapley.sum(), abs=1e-10)
            found.append(np.mean((values - shapley) ** 2))
        return np.mean(found)

    mixed = errors()
    monkeypatch.setattr(refinement, "GRAM_SAMPLED_SHARE", 0.0)
    unbiased = errors()
    assert mixed < 0.4 * unbiased, (mixed, unbiased)


def test_the_exact_gram_alone_is_the_unbiased_estimate_and_the_sampled_one_least_squares(
    monkeypatch,
):
    n_players, n_pairs = 6, 40
    value, shapley = _pairwise_game(n_players, 0.0, 1)
    _, a = size_distribution(n_players)
    masks, gaps = _drawn_pairs(value, n_players, n_pairs, 3)
    total = np.array([shapley.sum()])
    proxy = np.zeros((1, n_players))
    monkeypatch.setattr(refinement, "GRAM_SAMPLED_SHARE", 0.0)
    unbiased, _ = refined_values(proxy, np.zeros_like(gaps), gaps, masks, total)
    sizes = masks.sum(axis=2, keepdims=True)
    centred = masks - sizes / n_players
    targets = 0.5 * (gaps - (2 * sizes[..., 0] / n_players - 1) * total[:, None])
    expected = total / n_players + (centred * targets[..., None]).mean(axis=1) / a
    np.testing.assert_allclose(unbiased, expected - expected.mean() + total / n_players)
    # The sampled Gram alone: least squares, exact on an additive game with enough pairs.
    monkeypatch.setattr(refinement, "GRAM_SAMPLED_SHARE", 1.0)
    fitted, std = refined_values(proxy, np.zeros_like(gaps), gaps, masks, total)
    np.testing.assert_allclose(fitted[0], shapley, atol=1e-10)
    assert np.all(std < 1e-6)


def test_the_pairs_game_total_is_fitted_where_it_is_not_the_one_asked_for(monkeypatch):
    """Pairs mixed with the background's centre measure a game whose total, f(x) - f(centre),
    is not the prediction less the base value that the values must sum to. Refine fits that
    total as a shift: on an additive game it finds the game's values up to a constant, placed
    on the total asked for, exactly by least squares; fixing the total instead leaves its
    error in every value."""
    n_players, n_pairs = 7, 40
    value, shapley = _pairwise_game(n_players, 0.0, 4)
    masks, gaps = _drawn_pairs(value, n_players, n_pairs, 5)
    asked = np.array([shapley.sum() + 3.0])
    expected = shapley + 3.0 / n_players
    proxy = np.zeros((1, n_players))
    monkeypatch.setattr(refinement, "GRAM_SAMPLED_SHARE", 1.0)
    fitted, std = refined_values(proxy, np.zeros_like(gaps), gaps, masks, asked)
    np.testing.assert_allclose(fitted[0], expected, atol=1e-10)
    assert np.all(std < 1e-6)
    # The total taken as given, as before the shift: the same pairs err by 0.08-0.55 a value.
    monkeypatch.setattr(refinement, "expected_total_slope_square", lambda n: 0.0)
    fixed, _ = refined_values(proxy, np.zeros_like(gaps), gaps, masks, asked)
    assert np.abs(fixed[0] - expected).max() > 0.3
    assert fixed.sum() == pytest.approx(asked[0], abs=1e-10)


def test_the_stated_error_matches_the_spread_over_draws_of_pairs_and_the_bias_vanishes():
    """The delta-method standard deviation against the values' spread over 300 draws of pairs
    (a game with interactions, so there is noise to state): 0.98 of it on average at 32 pairs
    for 8 players. The regression's bias (its Gram is random) falls faster than its spread:
    the mean over draws converges to the exact values (max gap 0.14 at 32 pairs, 0.009 at
    512)."""
    n_players = 8

    def draws(n_pairs):
        found = [_pairs_estimate(n_players, n_pairs, 0.8, seed) for seed in range(300)]
        values = np.array([values for values, _, _ in found])
        stated = np.array([std for _, std, _ in found])
        return values, stated, found[0][2]

    values, stated, shapley = draws(32)
    spread = values.std(axis=0)
    # The stated std is widened by Student's t for 32 pairs; the spread is not.
    ratio = np.mean(stated, axis=0) / t_widening(32) / spread
    assert 0.8 < ratio.mean() < 1.25, ratio
    few_bias = np.abs(values.mean(axis=0) - shapley).max()
    values, _, _ = draws(512)
    assert np.abs(values.mean(axis=0) - shapley).max() < 0.25 * few_bias


def _random_refinement(seed: int, m: int, n_pairs: int, n_players: int, bias: float) -> tuple:
    """``refined_values``' arguments, random: proxy values, proxy and model gaps, coalitions
    (never empty or full), totals and a bias variance."""
    rng = np.random.default_rng(seed)
    masks = rng.random((m, n_pairs, n_players)) < 0.5
    masks[:, :, 0], masks[:, :, 1] = True, False
    return (
        rng.normal(size=(m, n_players)),
        rng.normal(size=(m, n_pairs)),
        rng.normal(size=(m, n_pairs)),
        masks,
        rng.normal(size=m),
        bias,
    )


def test_pairs_taken_a_chunk_at_a_time_give_the_same_values_and_errors(monkeypatch):
    """``refined_values`` bounds its memory by taking a row's pairs a chunk at a time (at d =
    4,096 and budget 10d its centred coalitions alone would take 0.67 GB at once): 3 pairs a
    chunk, 40 pairs."""
    n_players = 7
    arguments = _random_refinement(4, 3, 40, n_players, 0.01)
    whole = refined_values(*arguments)
    monkeypatch.setattr(refinement, "PAIR_CHUNK_CELLS", 3 * n_players)
    assert refinement.pair_chunk(n_players) == 3
    chunked = refined_values(*arguments)
    for one, other in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(one, other, rtol=1e-12, atol=1e-14)


def test_rows_that_share_their_coalitions_regress_as_each_alone(monkeypatch):
    """``regress_pairs`` solves the Gram once for consecutive rows with the same coalitions (a
    proposal's rows) and moves each row's estimate by the pairs' shared influences: each row
    gets the values and errors it gets alone, whole or a chunk of pairs at a time, and a row
    with coalitions of its own between them starts another group."""
    n_players, m = 6, 6
    proxy, proxy_gaps, model_gaps, masks, total, bias = _random_refinement(
        9, m, 30, n_players, 0.01
    )
    masks[1] = masks[2] = masks[0]
    masks[5] = masks[0]  # the same coalitions again after rows 3 and 4, which share theirs
    masks[4] = masks[3]
    alone = [
        refined_values(
            proxy[i : i + 1],
            proxy_gaps[i : i + 1],
            model_gaps[i : i + 1],
            masks[i : i + 1],
            total[i : i + 1],
            bias,
        )
        for i in range(m)
    ]
    for cells in (refinement.PAIR_CHUNK_CELLS, 4 * n_players):
        monkeypatch.setattr(refinement, "PAIR_CHUNK_CELLS", cells)
        together = refined_values(proxy, proxy_gaps, model_gaps, masks, total, bias)
        for i in range(m):
            for shared, own in zip(together, alone[i], strict=True):
                np.testing.assert_allclose(shared[i], own[0], rtol=1e-10, atol=1e-12)


def test_a_proposals_rows_share_their_coalitions_and_draw_their_own_background_rows(fitted):
    """One set of coalitions per proposal (its regression's Gram is solved once), drawn from
    the seed; the background rows are each row's own draws."""
    explainer, query, _ = fitted
    proposal = explainer.propose(query, 40, _interacting(query))
    assert not proposal.centre
    assert np.array_equal(proposal.masks, np.broadcast_to(proposal.masks[0], proposal.masks.shape))
    assert len({tuple(picks) for picks in proposal.background}) == len(query)
    other = explainer.propose(query, 40, _interacting(query), random_state=11)
    assert not np.array_equal(other.masks[0], proposal.masks[0])


def _augmented_regression(proxy, proxy_gaps, model_gaps, masks, total, bias, share):
    """One row of ``refined_values`` written as its textbook form: the values and the pairs'
    total as one (P + 1)-column regression solved at once, the delta method's variance from
    the augmented inverse, and the degrees of freedom as trace(H_aug^-1 sampled part)."""
    n_pairs, n_players = masks.shape
    _, a = size_distribution(n_players)
    slope_square = refinement.expected_total_slope_square(n_players) / 4
    sizes = masks.sum(axis=1)
    residual_total = total - proxy.sum()
    targets = 0.5 * (model_gaps - proxy_gaps - (2 * sizes / n_players - 1) * residual_total)
    regressors = np.column_stack([masks - sizes[:, None] / n_players, sizes / n_players - 0.5])
    sampled = share * regressors.T @ regressors / n_pairs
    expected = np.zeros((n_players + 1, n_players + 1))
    expected[:n_players, :n_players] = (1 - share) * a * np.eye(n_players) + (
        1 - (1 - share) * a
    ) / n_players
    expected[n_players, n_players] = (1 - share) * slope_square
    inverse = np.linalg.inv(sampled + expected)
    solution = inverse @ (regressors.T @ targets / n_pairs)
    leverage = targets - share * regressors @ solution
    moves = (regressors @ inverse.T)[:, :n_players] * leverage[:, None]
    variance = moves.var(axis=0, ddof=1) / n_pairs
    spent = np.trace(inverse @ sampled)
    variance *= n_pairs / max(n_pairs - spent, 1.0)
    pooled = refinement.POOLED_SHARE
    variance = (1 - pooled) * variance + pooled * variance.mean()
    estimate = solution[:n_players] - solution[:n_players].mean()
    values = proxy + residual_total / n_players + estimate
    return values, np.sqrt(t_widening(n_pairs) ** 2 * variance + bias)


@pytest.mark.parametrize(
    ("n_players", "n_pairs", "share"), [(5, 4, 0.5), (9, 45, 0.5), (12, 30, 0.85)]
)
def test_the_compiled_regression_is_the_augmented_least_squares_with_its_delta_method(
    n_players, n_pairs, share
):
    """The kernel solves the values and the pairs' total by the block inverse and sums the
    pairs' moves one at a time; written as one augmented regression (numpy, per row) it gives
    the same values and standard deviations."""
    m = 3
    arguments = _random_refinement(n_players, m, n_pairs, n_players, 0.02)
    values, std = refined_values(*arguments, share)
    for i in range(m):
        expected_values, expected_std = _augmented_regression(
            *(argument[i] for argument in arguments[:5]), 0.02, share
        )
        np.testing.assert_allclose(values[i], expected_values, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(std[i], expected_std, rtol=1e-10, atol=1e-12)


def test_coalitions_follow_the_kernel_and_rows_mix_as_drawn():
    n_players, n_pairs = 6, 20_000
    cdf, _ = size_distribution(n_players)
    masks = np.empty((1, n_pairs, n_players), dtype=np.bool_)
    picks = np.empty((1, n_pairs), dtype=np.int64)
    sample_paired_coalitions(np.array([11], dtype=np.uint64), cdf, 7, masks, picks)
    sizes = masks[0].sum(axis=1)
    observed = np.bincount(sizes, minlength=n_players)[1:] / n_pairs
    np.testing.assert_allclose(observed, np.diff(np.r_[0.0, cdf]), atol=0.01)
    assert picks.min() == 0 and picks.max() == 6
    rng = np.random.default_rng(1)
    query, background = rng.normal(size=(1, n_players)), rng.normal(size=(7, n_players))
    rows = np.empty((1 + 2 * 5, n_players))
    fill_paired_rows(
        query,
        background,
        np.arange(n_players),
        masks[:, :5].copy(),
        picks[:, :5].copy(),
        1,
        rows.reshape(1, 11, n_players),
    )
    assert np.array_equal(rows[0], query[0])
    for p in range(5):
        inside = masks[0, p]
        source = background[picks[0, p]]
        assert np.array_equal(rows[1 + 2 * p], np.where(inside, query[0], source))
        assert np.array_equal(rows[2 + 2 * p], np.where(inside, source, query[0]))


def test_rows_are_written_into_a_slice_of_each_explained_rows_longer_block():
    # The centre's proposal writes its two sets of pairs into slices of one block per row.
    m, n_players, n_pairs, block = 3, 5, 4, 12
    cdf, _ = size_distribution(n_players)
    masks = np.empty((m, n_pairs, n_players), dtype=np.bool_)
    picks = np.empty((m, n_pairs), dtype=np.int64)
    sample_paired_coalitions(np.array([5, 6, 7], dtype=np.uint64), cdf, 9, masks, picks)
    rng = np.random.default_rng(2)
    query, background = rng.normal(size=(m, n_players)), rng.normal(size=(9, n_players))
    blocks = np.full((m, block, n_players), np.inf)
    fill_paired_rows(query, background, np.arange(n_players), masks, picks, 1, blocks[:, 2:11])
    assert np.all(np.isinf(blocks[:, :2])) and np.all(np.isinf(blocks[:, 11:]))
    for i in range(m):
        whole = np.empty((1 + 2 * n_pairs, n_players))
        fill_paired_rows(
            query[i : i + 1],
            background,
            np.arange(n_players),
            masks[i : i + 1],
            picks[i : i + 1],
            1,
            whole.reshape(1, -1, n_players),
        )
        np.testing.assert_array_equal(blocks[i, 2:11], whole)
        assert np.array_equal(whole[0], query[i])
        for p in range(n_pairs):
            source = background[picks[i, p]]
            np.testing.assert_array_equal(whole[1 + 2 * p], np.where(masks[i, p], query[i], source))


def test_refined_values_are_exactly_efficient(fitted):
    explainer, query, _ = fitted
    _, refined = _refine(explainer, query, 20)
    gaps = refined.values.sum(axis=1) - (_interacting(query) - refined.base_values)
    assert np.abs(gaps).max() < 1e-10, np.abs(gaps).max()
    assert refined.model_rows == 20
    assert np.all(refined.uncertainty >= 0)


def test_error_shrinks_as_the_budget_grows(fitted):
    explainer, query, truth = fitted
    zero_shot = _error(explainer.explain(query, _interacting(query)).values, truth)
    errors = [_error(_refine(explainer, query, budget)[1].values, truth) for budget in (20, 400)]
    assert errors[0] <= zero_shot * 1.05, (zero_shot, errors)
    assert errors[1] < errors[0] * 0.6, errors
    large = _error(_refine(explainer, query, 20_000)[1].values, truth)
    assert large < 0.1 * zero_shot, (zero_shot, large)


def test_intervals_cover_about_eighty_percent(fitted):
    explainer, query, truth = fitted
    covered = []
    for seed in range(6):
        refined = _refine(explainer, query, 100, random_state=seed)[1]
        covered.append(np.abs(refined.values - truth) <= 1.2816 * refined.uncertainty)
    assert 0.65 <= np.mean(covered) <= 0.95, np.mean(covered)


def test_refine_starts_from_the_zero_shot_answer_and_merges_it_with_the_pairs(fitted):
    """The prior refine weighs is what explain answers with the same predictions; the answer
    is neither it nor the pairs' unbiased estimate alone, and adds up to the same total."""
    explainer, query, _ = fitted
    proposal = explainer.propose(query, 20, _interacting(query), random_state=4)
    outputs = _interacting(proposal.rows)
    parts = explainer._refinement_parts(proposal, outputs)
    zero_shot = explainer.explain(query, _interacting(query))
    np.testing.assert_allclose(parts.prior[:, :, 0], zero_shot.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(parts.prior_std[:, :, 0], zero_shot.uncertainty, rtol=0, atol=1e-12)
    np.testing.assert_allclose(parts.total[:, 0], _interacting(query) - zero_shot.base_values)
    np.testing.assert_allclose(parts.refined[:, :, 0].sum(axis=1), parts.total[:, 0])
    refined = explainer.refine(proposal, outputs)
    np.testing.assert_allclose(refined.values.sum(axis=1), parts.total[:, 0])
    assert not np.allclose(refined.values, parts.prior[:, :, 0])
    assert not np.allclose(refined.values, parts.refined[:, :, 0])


def test_proposals_are_deterministic_and_independent_of_the_batch(fitted):
    explainer, query, _ = fitted
    first, refined = _refine(explainer, query, 20)
    again, refined_again = _refine(explainer, query, 20)
    assert np.array_equal(first.rows, again.rows)
    assert np.array_equal(refined.values, refined_again.values)
    alone = explainer.propose(query[3:4], 20, _interacting(query[3:4]))
    assert np.array_equal(alone.rows, first.rows[3 * 20 : 4 * 20])
    other_seed = explainer.propose(query, 20, _interacting(query), random_state=1)
    assert not np.array_equal(other_seed.rows, first.rows)


def test_without_predictions_the_row_itself_is_scored(fitted):
    explainer, query, _ = fitted
    proposal, refined = _refine(explainer, query, 21, predictions=False)
    assert proposal.rows_per_query == 21
    assert np.array_equal(proposal.rows[::21], query)
    np.testing.assert_allclose(refined.predictions, _interacting(query))
    gaps = refined.values.sum(axis=1) - (_interacting(query) - refined.base_values)
    assert np.abs(gaps).max() < 1e-10


@pytest.mark.parametrize("reference", ["background", "centre"])
def test_pair_gaps_in_closed_form_equal_the_members_outputs_on_built_rows(fitted, reference):
    """Every member's fast pair gaps (no mixed rows built) equal its outputs on the mixed rows,
    mixed with the background rows the members were prepared for or with other rows."""
    explainer, query, _ = fitted
    design = explainer.context_.standardiser.transform(explainer.encoder_.transform(query))
    centre = reference == "centre"
    background = explainer.context_.standardiser.transform(
        explainer.encoder_.transform(
            explainer._centre_row() if centre else explainer.background_rows_
        )
    )
    proposal = explainer.propose(query, 30, _interacting(query))
    pairs = Pairs(
        background,
        explainer.context_.design_players(design.shape[1]),
        proposal.masks,
        np.zeros_like(proposal.background) if centre else proposal.background,
        prepared=not centre,
    )
    checked = 0
    for kind, fitted_member in zip(ZOO, explainer.context_.outputs[0].surrogates, strict=True):
        if fitted_member is None:
            continue
        fast = fitted_member.model.pair_gaps(design, pairs, {})
        m, n_pairs, _ = proposal.masks.shape
        rows = np.empty((m * 2 * n_pairs, design.shape[1]))
        fill_paired_rows(
            design,
            background,
            pairs.player_of_column,
            pairs.masks,
            pairs.picks,
            0,
            rows.reshape(m, 2 * n_pairs, -1),
        )
        outputs = fitted_member.model.proxy_outputs(rows, {}).reshape(m, n_pairs, 2)
        np.testing.assert_allclose(
            fast, outputs[:, :, 0] - outputs[:, :, 1], atol=1e-9, err_msg=kind.name
        )
        checked += 1
    assert checked >= 5


def test_the_proxy_leaves_out_costly_members_that_weigh_little_and_keeps_the_mixs_total():
    share = refinement.PROXY_MIN_COSTLY_SHARE
    costly = np.array([False, False, True, True])
    light = 0.5 * share
    weights = np.array([0.1, 0.05, 0.85 - light, light])
    kept = refinement.control_weights(weights, costly)
    np.testing.assert_allclose(kept, np.array([0.1, 0.05, 0.85 - light, 0.0]) / (1 - light))
    assert kept.sum() == pytest.approx(weights.sum())
    # The share is of the mix's total, whatever its scale.
    np.testing.assert_allclose(refinement.control_weights(3.0 * weights, costly), 3.0 * kept)
    # A cheap member stays however light; a costly one at the share or above stays.
    heavy = np.array([0.01, 0.0, 0.99 - share, share])
    np.testing.assert_array_equal(refinement.control_weights(heavy, costly), heavy)
    # Where only light costly members weigh, the proxy is the mix itself.
    n_light = int(1 / share) + 1
    spread = np.full(n_light, 1 / n_light)
    all_costly = np.ones(n_light, dtype=bool)
    np.testing.assert_array_equal(refinement.control_weights(spread, all_costly), spread)


def test_refine_computes_no_pair_gaps_for_a_tree_member_that_weighs_little(fitted, monkeypatch):
    """The forest weighs under ``PROXY_MIN_COSTLY_SHARE`` of this context's mix: neither the
    centre trial nor refine walks its trees, its weight goes to the others in the proxy, and the
    zero-shot prior still counts it."""
    explainer, query, truth = fitted
    forest = next(s for s, kind in enumerate(ZOO) if kind.name == "forest")
    weights = explainer.weights_[0]
    assert 0 < weights[forest] < refinement.PROXY_MIN_COSTLY_SHARE * weights.sum()
    light = copy.deepcopy(explainer)
    light.__dict__.pop("_trials", None)

    def refused(*args, **kwargs):
        raise AssertionError("the light forest's pair gaps were computed")

    monkeypatch.setattr(light.context_.outputs[0].surrogates[forest].model, "pair_gaps", refused)
    light._centre_trials()
    proposal = light.propose(query, 20, _interacting(query))
    refined = light.refine(proposal, _interacting(proposal.rows))
    control = light._control_weights(0)
    assert control[forest] == 0 and control.sum() == pytest.approx(weights.sum())
    parts = light._refinement_parts(proposal, _interacting(proposal.rows))
    zero_shot = light.explain(query, _interacting(query))
    np.testing.assert_allclose(parts.prior[:, :, 0], zero_shot.values, rtol=0, atol=1e-12)
    gaps = refined.values.sum(axis=1) - (_interacting(query) - refined.base_values)
    assert np.abs(gaps).max() < 1e-10, np.abs(gaps).max()
    assert _error(refined.values, truth) < _error(zero_shot.values, truth)


def test_the_centre_is_each_columns_mean_or_mode_rounded_to_a_value_the_column_takes():
    background = np.array(
        [
            [0.0, 0.0, np.nan, 5.0],
            [1.0, 1.0, np.nan, np.nan],
            [2.0, 1.0, np.nan, 6.0],
            [10.0, 2.0, np.nan, 9.0],
        ]
    )
    centre = reference_centre(background, np.array([1]))
    # Means 3.25 and 20 / 3 round to 2 and 6; the code column takes its mode; no value: NaN.
    np.testing.assert_array_equal(centre, [[2.0, 1.0, np.nan, 6.0]])


def _trial_games(curvature):
    """Pair gaps of g(x) = sum_j beta_j x_j + curvature * x_j^2 on coalitions of 6 players,
    mixed with each of 40 background rows and with their exact column means, g's exact values
    at the explained rows (an additive game's: each term less its background mean) and the
    centre game's (each term less its value at the centre)."""
    rng = np.random.default_rng(2)
    n_players, n_coalitions = 6, 32
    beta = rng.normal(size=n_players)
    query = rng.normal(size=(4, n_players))
    background = rng.normal(size=(40, n_players))
    centre = background.mean(axis=0)

    def game(values):
        return values @ beta + curvature * (values**2).sum(axis=-1)

    masks = rng.random((4, n_coalitions, n_players)) < 0.5
    masks[:, :, 0] = True  # never the empty coalition
    masks[:, :, 1] = False  # nor the whole one

    def gaps(reference):
        first = np.where(masks, query[:, None, :], reference)
        second = np.where(masks, reference, query[:, None, :])
        return game(first) - game(second)

    every = np.stack([gaps(row) for row in background], axis=2)

    def terms(values):
        return values * beta + curvature * values**2

    exact = terms(query) - terms(background).mean(axis=0)
    return every, gaps(centre), masks, exact, terms(query) - terms(centre)


def test_the_trial_finds_no_bias_where_the_proxy_is_linear_and_the_centre_exact():
    every, centre, masks, exact, _ = _trial_games(0.0)
    trial = centre_trial(every, centre, masks, exact)
    # A linear game against the background's mean is the background's game exactly.
    assert trial.bias_variance == pytest.approx(0.0, abs=1e-12)
    assert trial.centre_variance < trial.background_variance
    assert prefers_centre([trial], 2, 6) and prefers_centre([trial], 10**9, 6)


def test_the_trial_measures_a_curved_proxys_bias_and_leaves_the_centre_at_a_large_budget():
    every, centre, masks, exact, exact_at_centre = _trial_games(1.0)
    trial = centre_trial(every, centre, masks, exact)
    # The exact bias of the centre's values, centred per row: refine fits the pairs' total, so
    # the centre's total (here 6 x the curvature x the columns' variance off the background's)
    # is no bias; what is left is each term's curvature times its column's own variance.
    bias = exact_at_centre - exact
    bias -= bias.mean(axis=1, keepdims=True)
    # Measured from 32 coalitions with their noise taken out, plus its standard error: a
    # little above it (0.026 stated: 0.020 measured + 0.006, for 0.017 exact).
    assert np.mean(bias**2) < trial.bias_variance < 2.0 * np.mean(bias**2)
    # At two pairs the background rows' noise outweighs the bias; far past it, the bias wins.
    assert prefers_centre([trial], 2, 6)
    assert not prefers_centre([trial], 10**6, 6)
    assert prefers_centre([trial], 2, 6) == (trial.centre_error(2) < trial.background_error(2))


def test_the_trial_measures_the_bias_a_rows_scale_leaves():
    # A centre game steeper than the background's by a factor leaves no bias once each row's
    # values take their scale (as ``centre_scaled`` gives them); a curved game's bias is more
    # than a scale, and the scale takes part of it.
    every, _, masks, exact, _ = _trial_games(0.0)
    steeper = centre_trial(every, 1.7 * every.mean(axis=2), masks, exact)
    assert steeper.bias_variance > 0
    assert steeper.scaled_bias_variance == pytest.approx(0.0, abs=1e-12 * steeper.bias_variance)
    every, centre, masks, exact, _ = _trial_games(1.0)
    curved = centre_trial(every, centre, masks, exact)
    assert 0 < curved.scaled_bias_variance <= curved.bias_variance
    assert curved.bias(scaled=False) == curved.bias_variance
    assert curved.bias(scaled=True) == curved.scaled_bias_variance


def test_a_centre_design_with_scale_pairs_counts_the_bias_its_scale_leaves():
    trial = CentreTrial(
        bias_variance=1.0, background_variance=1.0, centre_variance=0.5, scaled_bias_variance=0.0
    )
    # 15 pairs for 8 players: no scale pairs, so the whole bias counts and the background rows
    # err less; 400: 50 scale pairs, and the bias they leave is none.
    assert centre_split(15, 8) == (15, 0) and not prefers_centre([trial], 15, 8)
    assert centre_split(400, 8) == (350, 50) and prefers_centre([trial], 400, 8)
    # Where the scale leaves the whole bias, the background rows still err less.
    whole = dataclasses.replace(trial, scaled_bias_variance=1.0)
    assert not prefers_centre([whole], 400, 8)


def test_the_trial_states_the_noise_the_regression_leaves(monkeypatch):
    """On an additive game against its exact centre, a pair's gap is its additive part alone:
    the centre's regression fits CENTRE_GRAM_SAMPLED_SHARE of it, so the noise the trial states
    per pair there is (1 - share)^2 of the unbiased estimate's (share 0), and none for least
    squares; the background rows' noise follows GRAM_SAMPLED_SHARE alone."""
    every, centre, masks, exact, _ = _trial_games(0.0)
    stated = {}
    for share in (0.0, 0.5, 1.0):
        monkeypatch.setattr(refinement, "CENTRE_GRAM_SAMPLED_SHARE", share)
        stated[share] = centre_trial(every, centre, masks, exact)
    centre_noise = {share: trial.centre_variance for share, trial in stated.items()}
    assert centre_noise[0.0] > 0
    assert centre_noise[0.5] == pytest.approx(0.25 * centre_noise[0.0], rel=1e-9)
    assert centre_noise[1.0] == pytest.approx(0.0, abs=1e-12 * centre_noise[0.0])
    assert stated[0.0].background_variance == stated[1.0].background_variance
    monkeypatch.setattr(refinement, "GRAM_SAMPLED_SHARE", 1.0)
    fitted = centre_trial(every, centre, masks, exact).background_variance
    assert fitted < stated[0.0].background_variance


def test_prefers_centre_sums_the_outputs_errors_and_needs_two_pairs():
    def trial(bias, centre_variance=0.5):
        # A scale that takes none of the bias.
        return CentreTrial(bias, 1.0, centre_variance, scaled_bias_variance=bias)

    cheap, biased = trial(0.0), trial(1.0)
    assert prefers_centre([cheap], 10, 8)
    assert not prefers_centre([cheap, biased], 10, 8)
    assert not prefers_centre([cheap], 1, 8)
    assert not prefers_centre([], 10, 8)
    # With scale pairs, the centre's error counts the pairs left at the centre.
    assert (centre_split(400, 8)) == (350, 50)
    edge = trial(0.0, centre_variance=0.9)
    assert edge.centre_error(400) < edge.background_error(400) < edge.centre_error(350)
    assert not prefers_centre([edge], 400, 8)


def test_a_smooth_context_mixes_its_pairs_with_the_centre_refines_efficiently_and_rebuilds(
    fitted, monkeypatch
):
    """Where the proxy's centre bias is small against the background rows' noise, the pairs mix
    the explained rows with the background's centre; the answer stays exactly efficient, the
    proposal is rebuilt bit for bit, and the stated uncertainty counts the centre's bias as
    refine believes the model's to be (the proxy's times CENTRE_BIAS_WEIGHT)."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(800, 8))
    beta = rng.normal(size=8)

    def smooth(rows):
        return np.tanh(rows @ beta / 3.0)

    explainer = ZeroShotExplainer(random_state=1).fit(X, smooth(X))
    query = X[:6]
    proposal = explainer.propose(query, 16, smooth(query))
    assert proposal.centre
    centre = explainer._centre_row()[0]
    first, second = proposal.rows[0::2], proposal.rows[1::2]
    masks = proposal.masks.reshape(-1, 8)
    expected_query = np.repeat(query, proposal.n_pairs, axis=0)
    np.testing.assert_array_equal(first, np.where(masks, expected_query, centre))
    np.testing.assert_array_equal(second, np.where(masks, centre, expected_query))
    refined = explainer.refine(proposal, smooth(proposal.rows))
    gaps = refined.values.sum(axis=1) - (smooth(query) - refined.base_values)
    assert np.abs(gaps).max() < 1e-10
    again = explainer.propose(query, 16, smooth(query))
    np.testing.assert_array_equal(again.rows, proposal.rows)
    np.testing.assert_array_equal(
        explainer.refine(again, smooth(again.rows)).values, refined.values
    )
    (trial,) = explainer._centre_trials()
    parts = explainer._refinement_parts(proposal, smooth(proposal.rows))
    assert parts.refined_std.min() ** 2 >= trial.model_bias(scaled=False) > trial.bias_variance > 0
    # The weight of that belief moves every value's variance by the proxy's bias times it.
    variances = {}
    for weight in (1.0, 3.0):
        monkeypatch.setattr(refinement, "CENTRE_BIAS_WEIGHT", weight)
        variances[weight] = explainer._refinement_parts(proposal, smooth(proposal.rows))
    np.testing.assert_allclose(
        variances[3.0].refined_std ** 2 - variances[1.0].refined_std ** 2,
        2.0 * trial.bias_variance,
        rtol=1e-9,
    )
    monkeypatch.undo()
    # Without scale pairs the values are not rescaled: the interval counts the whole bias.
    assert proposal.n_scale_pairs == 0
    np.testing.assert_array_equal(parts.interval_std, parts.refined_std)
    # Far past the centre's bias, the pairs mix with the background rows again.
    assert not prefers_centre([trial], 10**7, 8)
    # A context refitted on the model's outputs mixes with background rows, whose residual the
    # refit measured.
    asked = explainer.propose_calibration(random_state=0, refit=True)
    refitted = explainer.calibrate(asked, smooth(asked.rows), X, smooth(X))
    with_background = refitted.propose(query, 16, smooth(query))
    assert not with_background.centre
    # The same coalitions either way: only the rows they mix with differ.
    np.testing.assert_array_equal(with_background.masks, proposal.masks)
    assert not np.array_equal(with_background.rows, proposal.rows)


def test_the_centres_design_keeps_an_eighth_of_its_pairs_for_the_scale_from_two_per_player():
    assert centre_split(15, 8) == (15, 0)  # fewer than two pairs per player
    assert centre_split(120, 64) == (120, 0)
    assert centre_split(127, 8) == (127, 0)  # 15 scale pairs: fewer than 16
    assert centre_split(128, 8) == (112, 16)
    assert centre_split(1536, 384) == (1344, 192)


def _scale_pairs(values, scale, n_pairs, seed):
    """Masks and the pair gaps of two additive games on the same coalitions: the centre's, with
    values ``values``, and the background's, those values rescaled about each row's mean by
    ``scale``; each game with a total of the row's own (not the values' sum)."""
    rng = np.random.default_rng(seed)
    m, n_players = values.shape
    sizes = rng.integers(1, n_players, size=(m, n_pairs))
    order = np.argsort(rng.random((m, n_pairs, n_players)), axis=2)
    masks = order < sizes[..., None]
    deviation = values - values.mean(axis=1, keepdims=True)
    centred = masks - sizes[..., None] / n_players
    slopes = 2 * sizes / n_players - 1
    additive = 2 * np.einsum("mnj,mj->mn", centred, deviation)
    centre_gaps = additive + slopes * rng.normal(size=(m, 1))
    return masks, centre_gaps, scale * additive + slopes * rng.normal(size=(m, 1))


def test_the_centre_scale_is_the_background_gaps_against_the_centres_shrunk_toward_one():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(4, 10))
    std = rng.uniform(0.1, 0.3, size=(4, 10))
    masks, centre_gaps, background_gaps = _scale_pairs(values, 0.6, 30, seed=4)
    # Noise-free gaps: the scale is measured without error and taken whole.
    scaled, scaled_std = centre_scaled(values, std, masks, centre_gaps, background_gaps)
    mean = values.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(scaled, mean + 0.6 * (values - mean), atol=1e-10)
    np.testing.assert_allclose(scaled_std, std, atol=1e-10)
    # Noisy background gaps: each row's least-squares scale (with the pairs' totals, a slope
    # per row) moves toward 1 by the belief's share, and its variance joins the stated error.
    noisy = background_gaps + rng.normal(scale=2.0, size=background_gaps.shape)
    scaled, scaled_std = centre_scaled(values, std, masks, centre_gaps, noisy)
    slopes = 2 * masks.sum(axis=2) / 10 - 1
    for row in range(4):
        design = np.column_stack([slopes[row], centre_gaps[row]])
        coef, residual, _, _ = np.linalg.lstsq(design, noisy[row], rcond=None)
        partial = design[:, 1] - design[:, 0] * (design[:, 0] @ design[:, 1]) / (
            design[:, 0] @ design[:, 0]
        )
        # Least squares' error variance (28 degrees of freedom), times 28 / 26: its mean over
        # what the estimate of it may be.
        error_variance = residual[0] / (30 - 2) / (partial @ partial) * 28 / 26
        weight = CENTRE_SCALE_PRIOR_STD**2 / (CENTRE_SCALE_PRIOR_STD**2 + error_variance)
        scale = 1 + weight * (coef[1] - 1)
        deviation = values[row] - mean[row]
        np.testing.assert_allclose(scaled[row], mean[row] + scale * deviation, atol=1e-10)
        np.testing.assert_allclose(
            scaled_std[row] ** 2,
            std[row] ** 2 + weight * error_variance * deviation**2,
            atol=1e-12,
        )
    np.testing.assert_allclose(scaled.sum(axis=1), values.sum(axis=1), atol=1e-10)
    # A centre game without gaps says nothing of a scale: the values are left as they are.
    kept, kept_std = centre_scaled(values, std, masks, 0 * centre_gaps, noisy)
    np.testing.assert_allclose(kept, values, rtol=0, atol=1e-15)
    np.testing.assert_allclose(kept_std, std, rtol=0, atol=1e-15)


def test_at_the_centre_scale_pairs_with_background_rows_end_each_block_and_rescale_the_values(
    monkeypatch,
):
    """The centre's design spends an eighth of its pairs on its first coalitions again, mixed
    with background rows (here from 3 scale pairs, where the default waits for 16), at the end
    of each row's block; refine rescales the merged values by them, exactly efficient and
    rebuilt bit for bit."""
    monkeypatch.setattr(refinement, "MIN_SCALE_PAIRS", 3)
    rng = np.random.default_rng(11)
    X = rng.normal(size=(800, 8))
    beta = rng.normal(size=8)

    def saturating(rows):
        return np.tanh(rows @ beta)

    explainer = ZeroShotExplainer(random_state=1).fit(X, saturating(X))
    query = X[:6]
    budget = 80
    proposal = explainer.propose(query, budget, saturating(query))
    assert proposal.centre
    assert (proposal.n_pairs, proposal.n_scale_pairs) == centre_split(budget // 2, 8) == (35, 5)
    assert proposal.rows_per_query == budget and proposal.lead == 0
    blocks = proposal.rows.reshape(6, budget, 8)
    centre = explainer._centre_row()[0]
    inside = proposal.masks
    np.testing.assert_array_equal(blocks[:, 0:70:2], np.where(inside, query[:, None], centre))
    np.testing.assert_array_equal(blocks[:, 1:70:2], np.where(inside, centre, query[:, None]))
    expected = np.empty((6 * 10, 8))
    fill_paired_rows(
        proposal.query,
        explainer.background_rows_,
        explainer._player_of_column(),
        proposal.scale_masks,
        proposal.scale_background,
        0,
        expected.reshape(6, 10, 8),
    )
    np.testing.assert_array_equal(blocks[:, 70:].reshape(-1, 8), expected)
    # The scale pairs' coalitions are the first pairs', mixed with background rows.
    np.testing.assert_array_equal(proposal.scale_masks, proposal.masks[:, :5])
    outputs = saturating(proposal.rows)
    refined = explainer.refine(proposal, outputs)
    gaps = refined.values.sum(axis=1) - (saturating(query) - refined.base_values)
    assert np.abs(gaps).max() < 1e-10
    again = explainer.propose(query, budget, saturating(query))
    np.testing.assert_array_equal(again.rows, proposal.rows)
    np.testing.assert_array_equal(explainer.refine(again, outputs).values, refined.values)
    parts = explainer._refinement_parts(proposal, outputs)
    unscaled, unscaled_std = explainer._merged(
        dataclasses.replace(parts, scale_masks=None), proposal.n_pairs
    )
    by_pair = outputs.reshape(6, budget // 2, 2)
    gaps = by_pair[:, :, 0] - by_pair[:, :, 1]
    scale_pairs = (proposal.scale_masks, gaps[:, :5], gaps[:, 35:])
    expected_values, _ = centre_scaled(unscaled[:, :, 0], unscaled_std[:, :, 0], *scale_pairs)
    np.testing.assert_array_equal(refined.values, expected_values)
    assert not np.allclose(refined.values, unscaled[:, :, 0])
    # The stated error bounds the prior's by its gap to the pairs' values rescaled, not to the
    # centre's own, and counts the centre's bias that the scales leave, not its whole bias
    # (which the weights keep).
    pairs, pairs_std = parts.refined[:, :, 0], parts.refined_std[:, :, 0]
    (trial,) = explainer._centre_trials()
    assert 0 < trial.bias(scaled=True) < trial.bias(scaled=False)
    np.testing.assert_allclose(
        parts.interval_std[:, :, 0] ** 2,
        pairs_std**2 - trial.bias(scaled=False) + trial.bias(scaled=True),
        rtol=1e-12,
    )
    share, per_player = explainer._prior_belief(0)
    arguments = (parts.prior[:, :, 0], parts.prior_std[:, :, 0], pairs, pairs_std)
    arguments += (parts.total[:, 0], proposal.n_pairs, per_player, share)
    reference, _ = centre_scaled(pairs, pairs_std, *scale_pairs)
    interval_std = parts.interval_std[:, :, 0]
    _, expected_std = centre_scaled(
        *merged_with_prior(*arguments, reference, interval_std), *scale_pairs
    )
    np.testing.assert_array_equal(refined.uncertainty, expected_std)
    _, centre_referred = centre_scaled(
        *merged_with_prior(*arguments, None, interval_std), *scale_pairs
    )
    assert not np.allclose(refined.uncertainty, centre_referred)
    whole_bias_values, whole_bias_std = centre_scaled(
        *merged_with_prior(*arguments, reference), *scale_pairs
    )
    np.testing.assert_array_equal(refined.values, whole_bias_values)
    assert np.all(refined.uncertainty <= whole_bias_std)
    assert np.any(refined.uncertainty < whole_bias_std)
    # A proposal whose scale pairs name rows past the background was made elsewhere.
    forged = dataclasses.replace(proposal, scale_background=proposal.scale_background + 1000)
    with pytest.raises(InvalidArgumentError, match="another explainer"):
        explainer.refine(forged, outputs)


def test_a_calibrated_copy_measures_its_own_trial(fitted):
    explainer, _, _ = fitted
    original = explainer._centre_trials()
    proposal = explainer.propose_calibration(random_state=0)
    calibrated = explainer.calibrate(proposal, _interacting(proposal.rows))
    trials = calibrated._centre_trials()
    assert trials is not original
    fresh = explainer.calibrate(proposal, _interacting(proposal.rows))._centre_trials()
    assert trials == fresh


def test_classes_groups_missing_and_categories_refine_toward_the_truth():
    rng = np.random.default_rng(5)
    n = 500
    X = rng.normal(size=(n, 4))
    X[:, 3] = rng.integers(0, 4, size=n)
    X[rng.random(n) < 0.15, 0] = np.nan
    target = np.nan_to_num(X[:, 0]) * X[:, 1] + np.array([0.0, 1.0, -1.0, 2.0])[X[:, 3].astype(int)]
    model = RandomForestRegressor(60, max_depth=6, random_state=0).fit(X, target)

    def predict(rows):
        score = model.predict(rows)
        logits = np.column_stack([score, -score, 0.5 * score + rows[:, 2]])
        logits = np.exp(logits - logits.max(axis=1, keepdims=True))
        return logits / logits.sum(axis=1, keepdims=True)

    groups = {"first": [0, 1], "second": [2], "code": [3]}
    explainer = ZeroShotExplainer().fit(X, predict(X), categorical=[3], groups=groups)
    query = X[:6]
    proposal = explainer.propose(query, 2000, predict(query))
    refined = explainer.refine(proposal, predict(proposal.rows))
    assert refined.values.shape == (6, 3, 3)
    # Exact grouped truth: enumerate the 3 groups' coalitions over the background rows.
    background = explainer.background_rows_
    columns = list(groups.values())

    truth = np.zeros((6, 3, 3))
    for i, row in enumerate(query):
        values = {}
        for mask in range(8):
            mixed = background.copy()
            for g, members in enumerate(columns):
                if (mask >> g) & 1:
                    mixed[:, members] = row[members]
            values[mask] = predict(mixed).mean(axis=0)
        for g in range(3):
            others = [h for h in range(3) if h != g]
            for size in range(3):
                for subset in itertools.combinations(others, size):
                    mask = sum(1 << h for h in subset)
                    weight = 1 / (3 * math.comb(2, size))
                    truth[i, g] += weight * (values[mask | (1 << g)] - values[mask])
    zero_shot = explainer.explain(query, predict(query)).values
    assert _error(refined.values, truth) < 0.5 * _error(zero_shot, truth)
    np.testing.assert_allclose(
        refined.values.sum(axis=1), predict(query) - refined.base_values, atol=1e-10
    )


def test_a_loaded_explainer_refines_bit_for_bit(fitted, tmp_path):
    explainer, query, _ = fitted
    explainer.save(tmp_path / "saved")
    loaded = ZeroShotExplainer.load(tmp_path / "saved")
    proposal, refined = _refine(explainer, query, 30)
    again = loaded.refine(
        loaded.propose(query, 30, _interacting(query)), _interacting(proposal.rows)
    )
    assert np.array_equal(refined.values, again.values)
    assert np.array_equal(refined.uncertainty, again.uncertainty)


@pytest.mark.parametrize(
    ("kinds", "kept"),
    [
        # The splines' terms of the background rows.
        (("spline",), "background_terms_"),
        # The leaf each background row reaches, for the pair gaps to skip the trees a pair
        # cannot change.
        (("boosted_trees", "forest"), "background_leaves_"),
    ],
)
def test_an_explainer_saved_without_what_members_keep_of_the_background_refines_the_same(
    fitted, tmp_path, kinds, kept
):
    """An explainer saved before its members kept ``kept`` finds it per call."""
    explainer, query, _ = fitted
    explainer.save(tmp_path / "saved")
    loaded = ZeroShotExplainer.load(tmp_path / "saved")
    members = [
        fitted_member.model
        for kind, fitted_member in zip(ZOO, loaded.context_.outputs[0].surrogates, strict=True)
        if kind.name in kinds and fitted_member is not None
    ]
    weighted = [s for s, kind in enumerate(ZOO) if kind.name in kinds]
    assert members and loaded._control_weights(0)[weighted].max() > 0  # their gaps are computed
    for member in members:
        delattr(member, kept)  # as an earlier version saved it
    proposal, refined = _refine(explainer, query, 30)
    again = loaded.refine(
        loaded.propose(query, 30, _interacting(query)), _interacting(proposal.rows)
    )
    np.testing.assert_allclose(again.values, refined.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(again.uncertainty, refined.uncertainty, rtol=0, atol=1e-12)


def test_refinement_keeps_the_tree_members_background_masks_and_counts_them(fitted, tmp_path):
    """The tree members' background masks are made by the first call that needs them, kept for
    the next and counted in ``memory_bytes``; an explainer never refined holds none, and saves
    do not carry them."""
    explainer = copy.deepcopy(fitted[0])
    query = fitted[1]
    for fitted_member in explainer.context_.outputs[0].surrogates:
        if fitted_member is not None and hasattr(fitted_member.model, "tree_background_"):
            for made in ("_kept_background_off", "_kept_node_player_bit", "_layout"):
                fitted_member.model.tree_background_.__dict__.pop(made, None)
    assert explainer.pair_cache_bytes() == 0
    before = explainer.memory_bytes()
    proposal, refined = _refine(explainer, query, 30)
    kept = explainer.pair_cache_bytes()
    n_background = explainer.background_rows_.shape[0]
    assert kept >= 8 * n_background * 150  # at least one mask per background row and tree
    # What memory_bytes finds, up to the Python objects around the arrays.
    assert abs(explainer.memory_bytes() - before - kept) < 4096
    again = explainer.refine(proposal, _interacting(proposal.rows))
    assert explainer.pair_cache_bytes() == kept
    assert np.array_equal(again.values, refined.values)
    explainer.save(tmp_path / "saved")
    loaded = ZeroShotExplainer.load(tmp_path / "saved")
    assert loaded.pair_cache_bytes() == 0


def test_read_only_query_rows_are_accepted(fitted):
    explainer, query, _ = fitted
    frozen = np.frombuffer(query.tobytes()).reshape(query.shape)
    assert not frozen.flags.writeable
    assert np.array_equal(
        explainer.propose(frozen, 8, _interacting(query)).rows,
        explainer.propose(query, 8, _interacting(query)).rows,
    )


def test_one_player_is_exact_without_model_rows():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 3))
    explainer = ZeroShotExplainer().fit(X, _interacting_three(X), groups={"all": [0, 1, 2]})
    proposal = explainer.propose(X[:4], 8, _interacting_three(X[:4]))
    assert proposal.rows.shape == (0, 3)
    refined = explainer.refine(proposal, np.empty(0))
    exact = _interacting_three(X[:4]) - refined.base_values
    np.testing.assert_allclose(refined.values[:, 0], exact)
    assert np.all(refined.uncertainty == 0)


def _interacting_three(X):
    return X[:, 0] * X[:, 1] + X[:, 2]


@pytest.mark.parametrize(
    ("budget", "predictions", "field"),
    [(3, True, "budget"), (4, False, "budget"), (2.5, True, "budget"), (True, True, "budget")],
)
def test_bad_budgets_are_refused_naming_the_field(fitted, budget, predictions, field):
    explainer, query, _ = fitted
    given = _interacting(query) if predictions else None
    with pytest.raises(InvalidArgumentError) as raised:
        explainer.propose(query, budget, given)
    assert raised.value.argument == field
    assert str(minimum_budget(predictions)) in str(raised.value)


def test_bad_outputs_and_proposals_are_refused(fitted):
    explainer, query, _ = fitted
    proposal = explainer.propose(query, 8, _interacting(query))
    with pytest.raises(InvalidArgumentError) as raised:
        explainer.refine(proposal, np.zeros(len(proposal.rows) - 1))
    assert raised.value.argument == "outputs"
    bad = _interacting(proposal.rows)
    bad[3] = np.inf
    with pytest.raises(InvalidArgumentError) as raised:
        explainer.refine(proposal, bad)
    assert raised.value.argument == "outputs"
    with pytest.raises(InvalidArgumentError) as raised:
        explainer.refine("rows", bad)
    assert raised.value.argument == "proposal"
    rng = np.random.default_rng(0)
    other = ZeroShotExplainer().fit(rng.normal(size=(100, 3)), rng.normal(size=100))
    with pytest.raises(InvalidArgumentError) as raised:
        other.refine(proposal, _interacting(proposal.rows))
    assert raised.value.argument == "proposal"
    for seed in (-1, True):
        with pytest.raises(InvalidArgumentError) as raised:
            explainer.propose(query, 8, _interacting(query), random_state=seed)
        assert raised.value.argument == "random_state"


def test_a_proposal_against_other_background_rows_of_the_same_shape_is_refused(fitted):
    """Same d, players and number of background rows: only the rows differ. Refining it mixed
    the outputs with this explainer's background and erred up to 30x more (QA, 2026-12-05)."""
    explainer, query, _ = fitted
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 5)) + 3.0
    other = ZeroShotExplainer(random_state=3).fit(X, _interacting(X))
    assert other.background_rows_.shape == explainer.background_rows_.shape
    proposal = other.propose(query, 10, _interacting(query))
    with pytest.raises(InvalidArgumentError, match="another explainer") as raised:
        explainer.refine(proposal, _interacting(proposal.rows))
    assert raised.value.argument == "proposal"
    # A calibrated copy keeps the background: the proposal of the explainer it came from holds.
    calibration = explainer.propose_calibration(400)
    calibrated = explainer.calibrate(calibration, _interacting(calibration.rows))
    mine = explainer.propose(query, 10, _interacting(query))
    assert calibrated.refine(mine, _interacting(mine.rows)).values.shape == query.shape


def test_a_proposal_for_a_model_with_other_outputs_on_the_same_background_is_refused():
    """Two explainers fitted on the same rows share the background's fingerprint. A regressor's
    proposal refined by a 3-class explainer failed with an IndexError from inside; the other way
    round it answered against the other model's class-0 probabilities (QA, 2026-12-05)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5))
    logits = np.column_stack([X[:, 0], X[:, 1] * X[:, 2], X[:, 3]])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    regressor = ZeroShotExplainer(random_state=0).fit(X, _interacting(X))
    classifier = ZeroShotExplainer(random_state=0).fit(X, probabilities)
    query = X[:3]
    for proposer, refiner, predictions, outputs in [
        (regressor, classifier, _interacting(query), probabilities),
        (classifier, regressor, probabilities[:3], _interacting(X)),
    ]:
        proposal = proposer.propose(query, 10, predictions)
        with pytest.raises(InvalidArgumentError, match="another explainer") as raised:
            refiner.refine(proposal, outputs[: len(proposal.rows)])
        assert raised.value.argument == "proposal"


def test_a_budget_whose_rows_would_not_fit_in_the_working_memory_is_refused_naming_it():
    """propose at 10**9 ran out of memory inside numpy and at 10**30 failed there naming
    nothing; propose_calibration at 10**12 the same (QA, 2026-12-05)."""
    from shapley_svc.errors import LimitExceededError

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5))
    explainer = ZeroShotExplainer(working_memory_bytes=16 << 20).fit(X, _interacting(X))
    query = X[:3]
    # 16 MiB holds 419,430 rows of 5 float64s: 3 explained rows x 139,810 rows each fit.
    assert explainer.propose(query, 139_810, _interacting(query)).rows.shape[1] == 5
    for call in (
        lambda: explainer.propose(query, 139_811, _interacting(query)),
        lambda: explainer.propose(query, 10**30),
        lambda: explainer.propose_calibration(419_431),
    ):
        with pytest.raises(LimitExceededError, match="working_memory_bytes") as raised:
            call()
        assert raised.value.argument == "budget"


def _smooth(X):
    """A smooth model: refine mixes its pairs with the background's centre."""
    return np.tanh(X[:, :6]).sum(axis=1) + X[:, 0] * X[:, 1]


def test_a_refit_forgets_what_the_previous_context_derived_from_its_background():
    """The centre and its trial, kept from the first propose, are the old background's: a fit
    of the same object to another context refines as a fresh explainer does (it mixed the new
    rows with the old centre, and erred 7x more, QA 2026-12-05)."""
    rng = np.random.default_rng(5)
    first, second = rng.normal(size=(400, 12)), rng.normal(size=(400, 12)) + 5.0
    query = second[:4]
    reused = ZeroShotExplainer(random_state=0).fit(first, _smooth(first))
    reused.propose(first[:2], 48, _smooth(first[:2]))  # derives the first context's centre
    reused.fit(second, _smooth(second))
    fresh = ZeroShotExplainer(random_state=0).fit(second, _smooth(second))
    proposals = [e.propose(query, 48, _smooth(query)) for e in (reused, fresh)]
    assert proposals[1].centre  # what the stale centre would have changed
    np.testing.assert_array_equal(proposals[0].rows, proposals[1].rows)
    found = [
        e.refine(p, _smooth(p.rows)).values for e, p in zip((reused, fresh), proposals, strict=True)
    ]
    np.testing.assert_array_equal(*found)
    wider = rng.normal(size=(400, 14))
    reused.fit(wider, _smooth(wider))  # another d: the old centre's row no longer fits
    proposal = reused.propose(wider[:3], 56, _smooth(wider[:3]))
    assert proposal.rows.shape[1] == 14
    assert np.isfinite(reused.refine(proposal, _smooth(proposal.rows)).values).all()


def test_refined_values_without_pairs_spread_the_residual_evenly():
    values, std = refined_values(
        np.array([[1.0, 2.0]]),
        np.zeros((1, 0)),
        np.zeros((1, 0)),
        np.zeros((1, 0, 2), dtype=bool),
        np.array([5.0]),
    )
    np.testing.assert_allclose(values, [[2.0, 3.0]])
    assert np.all(std == 0)


def test_the_prior_variance_ratio_is_shrunk_toward_the_prior_share_by_how_few_pairs_measured_it():
    measured = np.array([[5.0], [0.0]])  # (m, 1): a row whose prior is worse, one better
    players = 10

    def shrunk(n_pairs, prior_pairs=PRIOR_PAIRS_PER_PLAYER, share=1.0):
        return shrunk_variance_ratio(measured, n_pairs, players, prior_pairs, share).ravel()

    # No pairs: the stated uncertainty stands.
    assert shrunk(0) == pytest.approx([1.0, 1.0])
    # PRIOR_PAIRS_PER_PLAYER pairs per player: the measurement counts half.
    assert shrunk(int(PRIOR_PAIRS_PER_PLAYER * players)) == pytest.approx([3.0, 0.5])
    # A calibrated context believes a share of its stated variance: shrunk toward that share.
    assert shrunk(0, share=0.4) == pytest.approx([0.4, 0.4])
    assert shrunk(int(PRIOR_PAIRS_PER_PLAYER * players), share=0.4) == pytest.approx([2.7, 0.2])
    # Many pairs, or a belief that does not count (a calibrated context saved before it kept
    # its share): the measurement, down to the floor that keeps a few lucky pairs from making
    # the prior certain; no share goes below that floor either.
    floor = MIN_PRIOR_VARIANCE_RATIO
    assert shrunk(10**9) == pytest.approx([5.0, floor], rel=1e-6)
    assert shrunk(4, prior_pairs=0.0) == pytest.approx([5.0, floor])
    assert shrunk(0, prior_pairs=0.0) == pytest.approx([5.0, floor])
    assert shrunk(0, share=0.0) == pytest.approx([floor, floor])


def test_the_pairs_weigh_by_students_t_variance_and_not_at_all_from_three_pairs_down():
    # The t predictive variance, (n - 1) / (n - 3) of the estimated one, over the t interval's.
    for n_pairs in (4, 5, 10, 40):
        expected = (n_pairs - 1) / (n_pairs - 3) / t_widening(n_pairs) ** 2
        assert weighing_inflation(n_pairs) == pytest.approx(expected)
    assert weighing_inflation(4) > weighing_inflation(10) > weighing_inflation(1000) > 1.0
    assert weighing_inflation(1000) == pytest.approx(1.0, abs=0.01)
    assert all(math.isinf(weighing_inflation(n)) for n in (2, 3))


def test_with_three_pairs_or_fewer_refine_keeps_the_zero_shot_values_and_states_their_error(
    fitted,
):
    """Three pairs (budget 6 with the predictions, d = 5) cannot weigh themselves: the values
    are explain's; the uncertainty is still the pairs' measurement of the prior's error. Four
    pairs move the values."""
    explainer, query, _ = fitted
    zero_shot = explainer.explain(query, _interacting(query))
    proposal, few = _refine(explainer, query, 6, random_state=4)
    assert proposal.n_pairs == 3
    np.testing.assert_allclose(few.values, zero_shot.values, rtol=0, atol=1e-12)
    assert np.all(np.isfinite(few.uncertainty)) and np.all(few.uncertainty >= 0)
    assert not np.allclose(few.uncertainty, zero_shot.uncertainty)
    proposal, enough = _refine(explainer, query, 8, random_state=4)
    assert proposal.n_pairs == 4
    assert not np.allclose(enough.values, zero_shot.values)
    np.testing.assert_allclose(enough.values.sum(axis=1), zero_shot.values.sum(axis=1))


def test_a_background_larger_than_the_trials_is_sampled_for_it_deterministically():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 6))
    target = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    background = np.arange(0, 300, 2)  # 150 rows: the trial mixes with a seeded 100 of them
    first = ZeroShotExplainer(random_state=2).fit(X, target, background=background)
    second = ZeroShotExplainer(random_state=2).fit(X, target, background=background)
    (trial,) = first._centre_trials()
    assert second._centre_trials() == [trial]
    assert np.isfinite(
        [trial.bias_variance, trial.background_variance, trial.centre_variance]
    ).all()
    assert trial.background_variance > 0 and trial.centre_variance > 0


def test_refine_polls_should_stop_between_slices_and_members(fitted):
    # A server's late Refine must give its compute thread back: refine polls, and stops.
    explainer, query, _ = fitted
    proposal = explainer.propose(query, 20, _interacting(query))
    outputs = _interacting(proposal.rows)
    polls = []

    def after_third_poll() -> bool:
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(CancelledError):
        explainer.refine(proposal, outputs, should_stop=after_third_poll)
    assert len(polls) == 4
    never = explainer.refine(proposal, outputs, should_stop=lambda: False)
    assert np.array_equal(never.values, explainer.refine(proposal, outputs).values)


def _reorderable_table(rng):
    """Rows with missing cells and a categorical column (0), and two models of them: a smooth
    one (refine mixes its pairs with the background's centre) and one with a kink and
    interactions (with background rows)."""
    n = 700
    X = np.column_stack([rng.integers(0, 4, size=n).astype(float), rng.normal(size=(n, 7))])
    X[rng.random(n) < 0.1, 2] = np.nan
    beta = rng.normal(size=7)

    def smooth(rows):
        return np.tanh(np.nan_to_num(rows[:, 1:]) @ beta / 3.0)

    def kinked(rows):
        filled = np.nan_to_num(rows)
        return np.abs(filled[:, 2]) * filled[:, 1] + (filled[:, 0] == 2) * filled[:, 4] ** 2

    return X, {"smooth": smooth, "kinked": kinked}


@pytest.mark.parametrize("name", ["smooth", "kinked"])
def test_a_reordering_of_the_columns_reorders_the_refined_values_alone(name):
    """Refine and calibrate drew each row's coalitions in the columns' order, so the same table
    with its columns in another order got other draws (diabetes, gradient boosting: values up to
    6.0 apart at budget 10, 0.99 after a calibration). They draw in an order set by the
    background's contents (``DrawOrder``): a reordering reorders the rows to score and the
    values alone, at the centre (scale pairs too) and with background rows."""
    X, models = _reorderable_table(np.random.default_rng(5))
    model = models[name]
    permutation = np.array([4, 0, 7, 2, 6, 1, 5, 3])
    back = np.argsort(permutation)
    given = ZeroShotExplainer(random_state=2).fit(X, model(X), categorical=[0])
    moved = ZeroShotExplainer(random_state=2).fit(
        X[:, permutation], model(X), categorical=[int(back[0])]
    )
    query = X[:6]
    designs = set()
    for budget in (16, 40, 300):
        proposal = given.propose(query, budget, model(query))
        reordered = moved.propose(query[:, permutation], budget, model(query))
        designs.add((proposal.centre, proposal.n_scale_pairs > 0))
        assert (reordered.centre, reordered.n_scale_pairs) == (
            proposal.centre,
            proposal.n_scale_pairs,
        )
        np.testing.assert_array_equal(reordered.rows, proposal.rows[:, permutation])
        as_given = given.refine(proposal, model(proposal.rows))
        as_moved = moved.refine(reordered, model(reordered.rows[:, back]))
        np.testing.assert_allclose(as_moved.values, as_given.values[:, permutation], atol=1e-9)
        np.testing.assert_allclose(
            as_moved.uncertainty, as_given.uncertainty[:, permutation], atol=1e-9
        )
    # Each model reaches the designs it is there for (the smooth one with scale pairs too).
    wanted = {(True, False), (True, True)} if name == "smooth" else {(False, False)}
    assert wanted <= designs
    calibration = given.propose_calibration()
    calibrated = given.calibrate(calibration, model(calibration.rows))
    moved_calibration = moved.propose_calibration()
    np.testing.assert_array_equal(moved_calibration.rows, calibration.rows[:, permutation])
    moved_calibrated = moved.calibrate(moved_calibration, model(moved_calibration.rows[:, back]))
    np.testing.assert_allclose(
        moved_calibrated.explain(query[:, permutation], model(query)).values,
        calibrated.explain(query, model(query)).values[:, permutation],
        atol=1e-9,
    )


def test_the_draw_order_places_each_player_by_its_first_column_in_the_canonical_order():
    """A group of columns is one player: it takes the place of the first of its columns in
    ``canonical_column_order``, and the kernel's k-th player is ``players[k]``."""
    from shapley_svc.estimator.surrogates import canonical_column_order

    rng = np.random.default_rng(4)
    rows = rng.normal(size=(30, 6))
    player_of_column = np.array([2, 0, 1, 2, 0, 3])
    order = refinement.DrawOrder.of(rows, player_of_column, 4)
    columns = canonical_column_order(rows)
    np.testing.assert_array_equal(order.columns, columns)
    first_place = [
        int(np.flatnonzero(np.isin(columns, np.flatnonzero(player_of_column == p)))[0])
        for p in range(4)
    ]
    np.testing.assert_array_equal(order.players, np.argsort(first_place))


def test_rows_sha256_reads_the_shape_and_the_values_with_nan_and_zero_canonical():
    """The fingerprint a server answers with a proposal: sha256 of the shape (two int64s) and
    the float64 values in row order, -0.0 as 0.0 and every NaN as numpy's, whatever the array's
    layout."""
    import hashlib

    rows = np.random.default_rng(3).normal(size=(6, 4))
    expected = hashlib.sha256(np.asarray(rows.shape, dtype="<i8").tobytes())
    expected.update(rows.astype("<f8").tobytes())
    assert refinement.rows_sha256(rows) == expected.hexdigest()
    assert refinement.rows_sha256(np.asfortranarray(rows)) == expected.hexdigest()
    assert refinement.rows_sha256(rows.reshape(4, 6)) != expected.hexdigest()
    signed, unsigned = rows.copy(), rows.copy()
    signed[1, 2], unsigned[1, 2] = -0.0, 0.0
    assert refinement.rows_sha256(signed) == refinement.rows_sha256(unsigned)
    payload = np.frombuffer(np.array([0x7FF8000000000001], dtype="<u8").tobytes(), "<f8")[0]
    quiet, loud = rows.copy(), rows.copy()
    quiet[0, 0], loud[0, 0] = np.nan, payload
    assert refinement.rows_sha256(quiet) == refinement.rows_sha256(loud)
    assert refinement.rows_sha256(quiet) != refinement.rows_sha256(rows)
