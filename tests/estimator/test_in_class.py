"""A model in the link member's class gets that class's exact answer.

The zoo's logistic member is penalised, which keeps it stable on outputs outside its class but
shrinks the large, opposite-sign coefficients that collinear columns (x and x**2) need. When a
refit with a vanishing penalty reproduces the outputs out of fold, it stands in for the member,
the combiner takes it alone, and it enumerates every coalition up to
``IN_CLASS_ENUMERATION_EVALUATIONS``: the answer is the model's exact Shapley values, above the
d where the zoo's members switch to the rescale rule.
"""

import json
import warnings

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning

from shapley_svc import ZeroShotExplainer
from shapley_svc.estimator.surrogates import (
    IN_CLASS_ENUMERATION_EVALUATIONS,
    IN_CLASS_STRENGTH,
    LOGISTIC_EXACT_FEATURES,
    ZOO,
    SoftLogisticSurrogate,
    SoftMultinomialSurrogate,
    enumerates_coalitions,
)
from tests.oracles import as_3d, brute_force_shapley

LOGISTIC = [kind.name for kind in ZOO].index("logistic")
D = 9  # above LOGISTIC_EXACT_FEATURES: the zoo's members use the rescale rule here
N_ROWS, N_BACKGROUND = 1200, 24


def _rows(rng) -> np.ndarray:
    """Columns 0 and 1 come with their squares (7 and 8), as age and age**2 do in a survey."""
    base = rng.normal(size=(N_ROWS, D - 2))
    base[:, :2] = rng.uniform(1.0, 3.0, size=(N_ROWS, 2))
    return np.column_stack([base, base[:, 0] ** 2, base[:, 1] ** 2])


def _logits(X: np.ndarray) -> np.ndarray:
    # Opposite-sign coefficients on x and x**2: a hump a penalty flattens.
    return 6.0 * X[:, 0] - 1.5 * X[:, 7] - 4.0 * X[:, 1] + 1.0 * X[:, 8] + X[:, 2:5] @ [1, -1, 0.5]


def _fit(X, outputs, seed=0):
    background = np.arange(N_BACKGROUND)
    return ZeroShotExplainer(random_state=seed).fit(X, outputs, background=background)


def test_the_in_class_members_enumerate_further():
    assert D > LOGISTIC_EXACT_FEATURES


def test_a_logistic_model_gets_its_exact_values(rng, tmp_path):
    X = _rows(rng)
    predict = lambda rows: expit(_logits(rows) - _logits(X).mean())  # noqa: E731
    explainer = _fit(X, predict(X))
    member = explainer.context_.outputs[0].surrogates[LOGISTIC].model
    assert member.in_class and member.strength == IN_CLASS_STRENGTH
    np.testing.assert_array_equal(explainer.weights_[0], np.eye(len(ZOO))[LOGISTIC])

    query = X[-4:]
    truth = brute_force_shapley(predict, query, X[:N_BACKGROUND])[:, :, 0]
    values = explainer.explain(query, predict(query)).values
    # Without the in-class refit the gate mixes the members and misses by 0.26 (r 0.69).
    np.testing.assert_allclose(values, truth, rtol=0, atol=2e-3)

    directory = explainer.save(tmp_path / "saved")
    # Servers from before in-class members read versions 2 and 3 only, so they refuse this save
    # and fit again rather than explain the member by the rescale rule.
    assert json.loads((directory / "manifest.json").read_text())["format_version"] == 4
    loaded = ZeroShotExplainer.load(directory)
    assert loaded.context_.outputs[0].surrogates[LOGISTIC].model.in_class
    assert loaded.calibration_ is None
    np.testing.assert_array_equal(loaded.explain(query, predict(query)).values, values)


def test_a_softmax_model_gets_its_exact_values(rng):
    X = _rows(rng)
    logits = _logits(X) - _logits(X).mean()
    weights = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.4, -0.6, 1.0]])

    def predict(rows):
        first = _logits(rows) - _logits(X).mean()
        second = rows[:, 2:5] @ [-1.0, 2.0, 1.0]
        return softmax(np.column_stack([first, second, 0 * first]) @ weights, axis=1)

    assert logits.std() > 1.0
    explainer = _fit(X, predict(X))
    for k in range(3):
        member = explainer.context_.outputs[k].surrogates[LOGISTIC].model
        assert member.parent.in_class and member.parent.strength == IN_CLASS_STRENGTH
        np.testing.assert_array_equal(explainer.weights_[k], np.eye(len(ZOO))[LOGISTIC])

    query = X[-3:]
    truth = as_3d(brute_force_shapley(predict, query, X[:N_BACKGROUND]))
    values = as_3d(explainer.explain(query, predict(query)).values)
    # Without the in-class refit: off by 0.25 (r 0.76).
    np.testing.assert_allclose(values, truth, rtol=0, atol=2e-3)


def test_outputs_outside_the_class_keep_the_penalised_member(rng):
    X = _rows(rng)
    outputs = expit(np.sin(2.0 * X[:, 2]) * 3.0 + X[:, 3] * X[:, 4])
    explainer = _fit(X, outputs)
    member = explainer.context_.outputs[0].surrogates[LOGISTIC].model
    assert not member.in_class and member.strength == ZOO[LOGISTIC].make().strength
    assert explainer.weights_[0][LOGISTIC] < 1.0


@pytest.mark.parametrize("multinomial", [False, True], ids=["sigmoid", "softmax"])
def test_in_class_members_enumerate_and_match_the_oracle(rng, multinomial):
    """In-class members enumerate (exact to 1e-10, across more rows than one coalition table
    holds); the zoo's members use the per-reference rules here, which are not exact."""
    Z = rng.normal(size=(400, D))
    logits = Z @ rng.normal(size=D) * 1.5
    if multinomial:
        target = softmax(np.column_stack([logits, -0.5 * logits, 0 * logits]), axis=1)
        cls = SoftMultinomialSurrogate
    else:
        target = expit(logits)
        cls = SoftLogisticSurrogate
    background = Z[:12]
    for in_class in (True, False):
        member = cls(strength=IN_CLASS_STRENGTH, splines=False, in_class=in_class)
        member.fit(Z, target, 0).prepare(background)
        values = as_3d(member.attributions(Z[:300]))
        truth = as_3d(brute_force_shapley(member.predict, Z[[0, 150, 299]], background))
        error = np.abs(values[[0, 150, 299]] - truth).max()
        assert (error < 1e-10) if in_class else (error > 1e-4)


def test_the_enumeration_budget():
    per_row = IN_CLASS_ENUMERATION_EVALUATIONS
    assert enumerates_coalitions(False, LOGISTIC_EXACT_FEATURES, 10**6)
    assert not enumerates_coalitions(False, LOGISTIC_EXACT_FEATURES + 1, 1)
    assert enumerates_coalitions(True, 12, per_row >> 12)  # 100 background rows
    assert not enumerates_coalitions(True, 13, per_row >> 12)
    assert not enumerates_coalitions(True, 12, 4 * (per_row >> 12))  # four classes


def test_a_refit_that_stops_at_its_step_limit_warns_nobody(rng):
    """Outputs outside the class need not converge; the R^2 test judges the refit, so the
    solver's convergence warning is not passed on to the caller."""
    X = _rows(rng)
    # Four classes by the signs of two columns, as hard labels: separable, so no finite optimum.
    outputs = np.eye(4)[(X[:, 2] > 0) + 2 * (X[:, 3] > 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        member = SoftMultinomialSurrogate(IN_CLASS_STRENGTH, splines=False, in_class=True)
        member.fit(X, outputs, 0)
    assert member.model_.n_iter_[0] == 300  # it did stop at its limit
