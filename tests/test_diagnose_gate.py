"""The gate diagnostic: its replay of the gate, its refit's gradient and its report."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import diagnose_gate as diagnose
from shapley_svc.estimator.artifact import load_artifact
from shapley_svc.estimator.context import GLOBAL_FEATURES
from shapley_svc.reference import exact_shapley
from tests.quick_runs import need_real_tables, run_quick


def _target(X):
    return np.sin(2 * X[:, 0]) * X[:, 1] + np.abs(X[:, 2]) + 0.3 * X[:, 3]


@pytest.fixture(scope="module")
def gate_case():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 4))
    predictions = _target(X)
    background, explained = np.arange(30), np.arange(280, 290)
    truth = exact_shapley(_target, X[explained], X[background]).values
    case = SimpleNamespace(
        X=X,
        predictions=predictions,
        background=background,
        explained=explained,
        categorical=np.array([], dtype=np.int64),
        truth=truth,
    )
    meta = {"table": "t", "family": "f", "task": "regression", "d": 4, "context": "full"}
    params = load_artifact().parameters
    return diagnose.collect_case(case, np.arange(280), params, **meta), params


def test_the_replayed_gate_is_explains_answer_for_one_output(gate_case):
    case, params = gate_case
    (output,) = case.outputs
    assert not output.exact
    np.testing.assert_allclose(
        diagnose.softmax_weights(diagnose.flat_parameters(params), output), output.weights
    )
    np.testing.assert_allclose(diagnose.case_values(case, diagnose.gate), case.values, atol=1e-12)
    # Another rule answers otherwise, and still sums to what efficiency asks.
    alone = diagnose.case_values(case, diagnose.member_alone(0))
    assert not np.allclose(alone, case.values)
    np.testing.assert_allclose(alone[:, :, 0].sum(axis=1), output.sums, atol=1e-9)


def test_the_refits_gradient_is_its_losss(gate_case):
    case, params = gate_case
    start = diagnose.flat_parameters(params)
    theta = start + np.random.default_rng(0).normal(scale=0.1, size=start.size)
    loss, grad = diagnose.refit_loss(theta, case.outputs, start, 0.05)
    step = 1e-6
    for i in np.random.default_rng(1).choice(start.size, 12, replace=False):
        moved = theta.copy()
        moved[i] += step
        ahead, _ = diagnose.refit_loss(moved, case.outputs, start, 0.05)
        moved[i] -= 2 * step
        behind, _ = diagnose.refit_loss(moved, case.outputs, start, 0.05)
        assert grad[i] == pytest.approx((ahead - behind) / (2 * step), rel=1e-4, abs=1e-7)
    assert loss > 0


def test_the_temperature_and_equal_weights_keep_the_members_that_apply(gate_case):
    case, _ = gate_case
    (output,) = case.outputs
    for rule in (diagnose.with_temperature(0.5), diagnose.toward_equal(0.5)):
        weights = rule(output)
        assert weights.sum() == pytest.approx(1.0)
        assert np.all(weights[~output.available] == 0)
        assert not np.allclose(weights, output.weights)
    np.testing.assert_allclose(diagnose.with_temperature(1.0)(output), output.weights)


def test_a_candidate_joins_the_members_with_its_fit_and_no_weight_until_refitted(gate_case):
    case, params = gate_case
    (output,) = case.outputs
    oof = output.surrogate_features[output.available, 0]
    better = float(oof.max() + (1.0 - oof.max()) / 2)
    values = 0.5 * output.members[0] + 0.01
    grown = dataclasses.replace(output, candidates={"kernel_machine": (better, values)})
    zoo = diagnose.with_members(grown, None, params)
    with_candidate = diagnose.with_members(grown, "kernel_machine", params)
    assert with_candidate.members.shape[0] == zoo.members.shape[0] + 1
    np.testing.assert_array_equal(with_candidate.members[-1], values)
    assert with_candidate.weights[-1] == 0.0 and with_candidate.available[-1]
    # The zoo alone keeps its fits; with the candidate, its fit is the best one.
    np.testing.assert_array_equal(
        zoo.surrogate_features[:, 0],
        np.where(output.available, output.surrogate_features[:, 0], 0.0),
    )
    assert with_candidate.surrogate_features[-1, 1] == 0.0
    best = GLOBAL_FEATURES.index("best_oof_r2")
    raw = with_candidate.features[best] * params.feature_scale[best] + params.feature_mean[best]
    assert raw == pytest.approx(better)


def test_every_table_is_held_out_once():
    cases = [SimpleNamespace(table=name) for name in "abcdefgabc"]
    folds = diagnose.table_folds(cases)
    assert len(folds) == diagnose.FOLDS
    assert sorted(t for fold in folds for t in fold) == list("abcdefg")


@pytest.mark.slow
def test_quick_mode_writes_its_report(tmp_path):
    need_real_tables()
    run_quick("benchmarks.diagnose_gate", tmp_path, extra=("--candidate", "kernel_machine"))
    payload = json.loads((tmp_path / "gate_quick_candidates.json").read_text())
    assert (tmp_path / "gate_quick_candidates.md").read_text().startswith("# What another weighing")
    summary = payload["summary"]
    assert payload["n_cases"] == 12 and payload["settings"]["candidates"] == ["kernel_machine"]
    # The gate's replay leaves out only explain's balancing of class outputs (penguins).
    assert summary["gate (replayed)"]["all"] == pytest.approx(payload["explain_mean_r"], abs=0.01)
    assert all(np.isfinite(found["all"]) for found in summary.values())
    assert {"context full", "context 300", "linear", "xgboost"} <= set(summary["gate (replayed)"])
    for arm in ("the zoo", "the zoo + kernel machine"):
        assert f"refitted gate, features rebuilt, {arm}" in summary
    # The zoo's hindsight ceiling is the same with the member features rebuilt.
    assert summary["best member in hindsight, the zoo"] == summary["best member in hindsight"]
