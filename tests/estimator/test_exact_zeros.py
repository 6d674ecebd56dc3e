"""What the estimator knows exactly whatever the model: a null player's value is zero, and where
the outputs sum to a constant (class probabilities) each player's values sum to zero over them."""

import copy

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

from shapley_svc import ZeroShotExplainer
from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator.combiner import balanced_across_outputs, constant_output_total
from shapley_svc.reference import exact_shapley


@pytest.fixture(scope="module")
def constant_column():
    """Diabetes with an eleventh column of 3.0 everywhere and missing values in a fourth: a
    boosted model, and an explainer of its outputs."""
    X, y = load_diabetes(return_X_y=True)
    X = np.column_stack([X, np.full(len(X), 3.0)])
    X[::7, 3] = np.nan
    model = GradientBoostingRegressor(n_estimators=50, random_state=0).fit(np.nan_to_num(X), y)

    def predict(rows):
        return model.predict(np.nan_to_num(rows))

    return X, predict, ZeroShotExplainer(random_state=0).fit(X, predict(X))


def test_a_constant_column_gets_exactly_zero_and_no_uncertainty(constant_column):
    """The projection onto efficiency gave it a share of the residual (up to 1.6 where the
    largest value was 92, QA 2026-12-06); its exact value is 0 for any model."""
    X, predict, explainer = constant_column
    answer = explainer.explain(X[:30], predict(X[:30]))
    assert np.all(answer.values[:, 10] == 0.0) and np.all(answer.uncertainty[:, 10] == 0.0)
    assert np.abs(answer.values[:, :10]).max() > 1.0
    np.testing.assert_allclose(
        answer.values.sum(axis=1), predict(X[:30]) - answer.base_values, rtol=0, atol=1e-9
    )
    proposal = explainer.propose(X[:4], 44, predict(X[:4]), random_state=0)
    refined = explainer.refine(proposal, predict(proposal.rows))
    assert np.all(refined.values[:, 10] == 0.0) and np.all(refined.uncertainty[:, 10] == 0.0)
    np.testing.assert_allclose(
        refined.values.sum(axis=1), predict(X[:4]) - refined.base_values, rtol=0, atol=1e-9
    )


def test_a_row_off_the_constant_is_not_null(constant_column):
    X, predict, explainer = constant_column
    query = X[:5].copy()
    query[:, 10] = 4.0
    answer = explainer.explain(query, predict(query))
    assert np.all(answer.uncertainty[:, 10] > 0)


def test_a_group_of_null_columns_is_null(constant_column):
    X, predict, _ = constant_column
    groups = {"first": [0, 1, 2, 3, 4], "second": [5, 6, 7, 8, 9], "constant": [10]}
    explainer = ZeroShotExplainer(random_state=0).fit(X, predict(X), groups=groups)
    answer = explainer.explain(X[:5], predict(X[:5]))
    assert np.all(answer.values[:, 2] == 0.0) and np.all(answer.uncertainty[:, 2] == 0.0)


@pytest.fixture(scope="module")
def iris_probabilities():
    X, y = load_iris(return_X_y=True)
    model = GradientBoostingClassifier(n_estimators=50, random_state=0).fit(X, y)
    explainer = ZeroShotExplainer(random_state=0).fit(X, model.predict_proba(X))
    return X, model.predict_proba, explainer


def test_class_probabilities_give_values_that_sum_to_zero_over_the_classes(iris_probabilities):
    X, predict, explainer = iris_probabilities
    assert explainer.output_total_ == pytest.approx(1.0)
    query = X[::10]
    for predictions in (predict(query), None):
        answer = explainer.explain(query, predictions)
        np.testing.assert_allclose(answer.values.sum(axis=2), 0.0, atol=1e-12)
    answer = explainer.explain(query, predict(query))
    np.testing.assert_allclose(
        answer.values.sum(axis=1), predict(query) - answer.base_values, rtol=0, atol=1e-12
    )
    proposal = explainer.propose(query[:3], 16, predict(query[:3]), random_state=0)
    refined = explainer.refine(proposal, predict(proposal.rows))
    np.testing.assert_allclose(refined.values.sum(axis=2), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        refined.values.sum(axis=1), predict(query[:3]) - refined.base_values, atol=1e-12
    )


def test_the_balance_brings_the_values_closer_to_the_exact_ones(iris_probabilities):
    X, predict, explainer = iris_probabilities
    query = X[::5]
    unbalanced = copy.copy(explainer)
    del unbalanced.output_total_
    truth = exact_shapley(predict, query, explainer.background_rows_).values
    errors = [
        np.sqrt(np.mean((e.explain(query, predict(query)).values - truth) ** 2))
        for e in (explainer, unbalanced)
    ]
    assert errors[0] < errors[1]  # 0.0672 against 0.0693


def test_rows_whose_predictions_do_not_sum_to_the_constant_keep_their_values(
    iris_probabilities,
):
    X, predict, explainer = iris_probabilities
    unbalanced = copy.copy(explainer)
    del unbalanced.output_total_
    # Off by more than the balance's tolerance, less than another scale's (refused, below):
    # efficiency holds, the balance cannot.
    off = predict(X[:4]) * (1 + 1e-3)
    np.testing.assert_array_equal(
        explainer.explain(X[:4], off).values, unbalanced.explain(X[:4], off).values
    )


def test_outputs_that_do_not_sum_to_a_constant_are_left_alone():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=50)
    assert constant_output_total(probabilities) == pytest.approx(1.0)
    assert constant_output_total(probabilities[:, :2]) is None
    assert constant_output_total(probabilities[:, :1]) is None
    assert constant_output_total(np.float32(probabilities).astype(np.float64)) is not None


def test_the_balance_is_the_least_change_that_keeps_efficiency():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(5, 6, 3))
    truth -= truth.mean(axis=2, keepdims=True)
    targets = truth.sum(axis=1)
    estimate = truth + 0.3 * rng.normal(size=truth.shape)
    estimate += (targets - estimate.sum(axis=1))[:, None, :] / 6
    std = np.full(truth.shape, 0.3)
    balanced, shrunk = balanced_across_outputs(estimate, std, targets)
    np.testing.assert_allclose(balanced.sum(axis=2), 0.0, atol=1e-12)
    np.testing.assert_allclose(balanced.sum(axis=1), targets, atol=1e-12)
    # With equal variances it is the orthogonal projection onto both constraints: the error
    # cannot grow, and moves by a third of what each player's sum missed.
    assert np.sum((balanced - truth) ** 2) < np.sum((estimate - truth) ** 2)
    assert shrunk is std  # as stated: the outputs' errors are correlated
    fixed = np.zeros((5, 6), dtype=bool)
    fixed[:, 0] = True
    estimate[:, 0] = 0.0
    kept, _ = balanced_across_outputs(estimate, std, estimate.sum(axis=1), fixed)
    assert np.all(kept[:, 0] == 0.0)


def test_outputs_on_another_scale_than_the_contexts_probabilities_are_refused(
    iris_probabilities,
):
    """Log-odds given for a context of class probabilities were explained as if they were
    probabilities (QA F8); float32 probabilities are the same scale."""
    X, predict, explainer = iris_probabilities
    query = X[::25]
    log_odds = np.log(np.clip(predict(query), 1e-9, None))
    for call in (
        lambda: explainer.explain(query, log_odds),
        lambda: explainer.propose(query, 16, log_odds),
    ):
        with pytest.raises(InvalidArgumentError, match=r"sums to -\d.*outputs sum to 1 ") as caught:
            call()
        assert caught.value.argument == "predictions_query" and caught.value.row == 0
    proposal = explainer.propose(query, 16, predict(query), random_state=0)
    scores = np.log(np.clip(predict(proposal.rows), 1e-9, None))
    with pytest.raises(InvalidArgumentError, match="context's scale") as caught:
        explainer.refine(proposal, scores)
    assert caught.value.argument == "outputs"
    # Calibration's outputs too, whether it refits the weights or the zoo: scores on another
    # scale fitted the weights (or the members) to them without a word.
    calibration = explainer.propose_calibration()
    log_scores = np.log(np.clip(predict(calibration.rows), 1e-9, None))
    for kwargs in ({}, {"X": X, "predictions": predict(X)}):
        with pytest.raises(InvalidArgumentError, match="context's scale") as caught:
            explainer.calibrate(calibration, log_scores, **kwargs)
        assert caught.value.argument == "outputs" and caught.value.row == 0
    assert explainer.calibrate(calibration, predict(calibration.rows)).calibration_ is not None
    rounded = predict(query).astype(np.float16).astype(np.float64)
    assert explainer.explain(query, rounded).values.shape == (query.shape[0], 4, 3)
