"""The refinement diagnostic: its hindsight merge and its every-background-row estimate."""

import json

import numpy as np
import pytest

from benchmarks import diagnose_refinement
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.estimator.refinement import refined_values
from shapley_svc.reference import exact_shapley
from tests.quick_runs import need_real_tables, run_quick


def _interacting(X):
    return np.sin(2 * X[:, 0]) * X[:, 1] + np.abs(X[:, 2]) - 0.5 * X[:, 3] * X[:, 4]


def test_the_best_share_is_the_point_of_the_segment_nearest_the_truth():
    prior = np.zeros((3, 4, 1))
    estimate = np.ones((3, 4, 1))
    truth = np.stack([np.full((4, 1), 0.25), np.full((4, 1), 2.0), np.full((4, 1), -1.0)])
    found = diagnose_refinement.best_share_in_hindsight(prior, estimate, truth)
    np.testing.assert_allclose(found[0], 0.25)  # on the segment: the truth itself
    np.testing.assert_allclose(found[1], 1.0)  # beyond the estimate: the estimate
    np.testing.assert_allclose(found[2], 0.0)  # behind the prior: the prior
    # No step between the two: the prior, not a division by zero.
    np.testing.assert_array_equal(
        diagnose_refinement.best_share_in_hindsight(prior, prior, truth), prior
    )


def test_the_pairs_estimate_is_linear_in_the_gaps_so_averaging_estimates_averages_gaps():
    """What ``pairs_over_every_background`` relies on: for fixed coalitions and totals, the
    estimate from gaps averaged over background rows is the average of the estimates."""
    rng = np.random.default_rng(3)
    m, n_pairs, n_players, n_background = 3, 8, 5, 6
    masks = rng.random((m, n_pairs, n_players)) < 0.5
    proxy_values = rng.normal(size=(m, n_players))
    total = rng.normal(size=m)
    model_gaps = rng.normal(size=(n_background, m, n_pairs))
    proxy_gaps = rng.normal(size=(n_background, m, n_pairs))
    each = [
        refined_values(proxy_values, proxy_gaps[b], model_gaps[b], masks, total)[0]
        for b in range(n_background)
    ]
    averaged, _ = refined_values(
        proxy_values, proxy_gaps.mean(axis=0), model_gaps.mean(axis=0), masks, total
    )
    np.testing.assert_allclose(np.mean(each, axis=0), averaged, atol=1e-12)


def test_scoring_every_background_row_removes_the_background_rows_share_of_the_error():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 5))
    explainer = ZeroShotExplainer(random_state=1).fit(X, _interacting(X), background=np.arange(30))
    query = rng.normal(size=(6, 5))
    truth = exact_shapley(_interacting, query, explainer.background_rows_).values
    proposal = explainer.propose(query, 40, _interacting(query), random_state=2)
    one = explainer._refinement_parts(proposal, _interacting(proposal.rows)).refined[:, :, 0]
    every = diagnose_refinement.pairs_over_every_background(explainer, _interacting, proposal)
    assert every.shape == (6, 5, 1)
    # The same coalitions: the estimate keeps exact efficiency, and loses the background draw's
    # error: on this model 0.18 of the squared error remains.
    np.testing.assert_allclose(every[:, :, 0].sum(axis=1), one.sum(axis=1), atol=1e-9)
    assert np.mean((every[:, :, 0] - truth) ** 2) < 0.5 * np.mean((one - truth) ** 2)


@pytest.mark.slow
def test_quick_mode_writes_its_report(tmp_path):
    need_real_tables()
    run_quick("benchmarks.diagnose_refinement", tmp_path)
    payload = json.loads((tmp_path / "refinement_noise_quick.json").read_text())
    assert (tmp_path / "refinement_noise_quick.md").read_text().startswith("# Where refinement")
    assert len(payload["cases"]) == 4
    keys = {key for key, _ in diagnose_refinement.ESTIMATES}
    for case in payload["cases"]:
        assert set(case["r"]) == {str(m) for m in diagnose_refinement.MULTIPLES}
        for found in case["r"].values():
            assert set(found) == keys
            assert all(-1 <= r <= 1 + 1e-12 for r in found.values()), case["case"]
            # Per row the oracle is no farther from the truth than either end of its segment,
            # so over a case its r falls below both ends' only through a bug.
            assert found["best_share"] >= min(found["zero_shot"], found["pairs"]) - 1e-9
    summary = payload["summary"]["4"]
    assert summary["pairs_every_background"] > summary["pairs"]
