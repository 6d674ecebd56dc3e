"""The fidelity floor: a context's stated uncertainty is no smaller than its predicted fidelity
implies, and the floor changes the uncertainty only."""

import copy

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier

from shapley_svc import ZeroShotExplainer
from shapley_svc.estimator.combiner import fidelity_floor


def test_the_floor_is_the_variance_the_fidelity_implies_and_never_lowers_it():
    values = np.full((4, 3), 2.0)  # mean square 4
    std = np.ones((4, 3))  # mean variance 1
    # (1 - r^2) * 4 over 1
    assert fidelity_floor(values, std, 0.5) == pytest.approx(3.0)
    assert fidelity_floor(values, std, 0.0) == pytest.approx(4.0)
    assert fidelity_floor(values, std, -0.3) == pytest.approx(4.0)  # no worse than r = 0
    assert fidelity_floor(values, std, 0.9) == 1.0  # 0.76 < 1: stated already enough
    assert fidelity_floor(values, std, 1.0) == 1.0
    assert fidelity_floor(values, np.zeros((4, 3)), 0.5) == 1.0


@pytest.fixture(scope="module")
def iris_boosting():
    """Three class probabilities of a boosted model on iris: the gate states less error on one
    class than the fidelity it predicts for it implies (the floor binds there)."""
    X, y = load_iris(return_X_y=True)
    probabilities = GradientBoostingClassifier(random_state=0).fit(X, y).predict_proba(X)
    return X, probabilities, ZeroShotExplainer(random_state=0).fit(X, probabilities)


def test_a_fit_states_at_least_the_error_its_fidelity_implies(iris_boosting):
    _, probabilities, explainer = iris_boosting
    assert all(factor >= 1.0 for factor in explainer.fidelity_floor_)
    assert max(explainer.fidelity_floor_) > 1.5  # it binds on this context
    rows = explainer.background_rows_
    answer = explainer.explain(rows, probabilities[explainer.background_])
    for k, output in enumerate(answer.diagnostics.outputs):
        r = output.predicted_fidelity
        implied = (1 - r**2) * np.mean(answer.values[:, :, k] ** 2)
        assert np.mean(answer.uncertainty[:, :, k] ** 2) >= implied * (1 - 1e-9)


def test_the_floor_moves_the_uncertainty_only(iris_boosting):
    X, probabilities, explainer = iris_boosting
    without = copy.copy(explainer)
    without.fidelity_floor_ = [1.0] * explainer.n_outputs_
    floored = explainer.explain(X[:25], probabilities[:25])
    plain = without.explain(X[:25], probabilities[:25])
    np.testing.assert_allclose(floored.values, plain.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        floored.uncertainty,
        plain.uncertainty * np.sqrt(explainer.fidelity_floor_),
        rtol=1e-9,
        atol=1e-15,
    )


def test_a_calibrated_context_states_its_measured_residual_without_the_floor(iris_boosting):
    X, probabilities, explainer = iris_boosting
    model = GradientBoostingClassifier(random_state=0).fit(X, load_iris().target)
    proposal = explainer.propose_calibration(random_state=0)
    scored = model.predict_proba(proposal.rows)
    reweighted = explainer.calibrate(proposal, scored)
    refitted = explainer.calibrate(proposal, scored, X, probabilities)
    assert reweighted.fidelity_floor_ == [1.0, 1.0, 1.0]
    assert refitted.fidelity_floor_ == [1.0, 1.0, 1.0]
    assert max(explainer.fidelity_floor_) > 1.5  # the zero-shot explainer keeps its own


def test_the_floor_is_saved_and_an_explainer_saved_without_it_states_none(iris_boosting, tmp_path):
    X, probabilities, explainer = iris_boosting
    loaded = ZeroShotExplainer.load(explainer.save(tmp_path / "with"))
    assert loaded.fidelity_floor_ == explainer.fidelity_floor_
    older = copy.copy(explainer)
    del older.fidelity_floor_  # as saved before the floor existed
    loaded_older = ZeroShotExplainer.load(older.save(tmp_path / "without"))
    assert not hasattr(loaded_older, "fidelity_floor_")
    without = copy.copy(explainer)
    without.fidelity_floor_ = [1.0] * explainer.n_outputs_
    np.testing.assert_array_equal(
        loaded_older.explain(X[:10], probabilities[:10]).uncertainty,
        without.explain(X[:10], probabilities[:10]).uncertainty,
    )
