"""The combiner benchmark: its ceilings are real ceilings, and its quick mode runs (slow)."""

import json

import numpy as np
import pytest

from benchmarks import bench_combiner
from tests.quick_runs import need_real_tables, run_quick


def test_the_simplex_fit_finds_the_mix_that_made_the_truth(rng):
    members = rng.normal(size=(4, 300))
    weights = np.array([0.6, 0.0, 0.4, 0.0])
    fitted = bench_combiner._simplex_fit(members, weights @ members)
    np.testing.assert_allclose(fitted, weights, atol=1e-6)
    assert fitted.min() >= 0 and abs(fitted.sum() - 1) < 1e-12


def test_ceilings_bound_the_combiner_on_a_case_a_member_gets_exactly(rng):
    # A linear model on numeric columns: the ridge member is exact, so both ceilings are 1 and
    # no mix of the zoo can be closer than the best mix.
    from shapley_svc import ZeroShotExplainer
    from shapley_svc.reference import linear_shapley

    X = rng.normal(size=(400, 5))
    coef = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    predictions = X @ coef
    background, rows = np.arange(40), X[300:310]
    truth = linear_shapley(coef, 0.0, rows, X[background]).values
    explainer = ZeroShotExplainer(random_state=0).fit(X, predictions, background=background)
    candidates = bench_combiner.candidate_values(explainer, X, predictions, rows)
    ceilings = bench_combiner.zoo_ceilings(explainer, rows, predictions[300:310], truth, candidates)
    ours = bench_combiner.pearson(explainer.explain(rows, predictions[300:310]).values, truth)
    assert ceilings["best_member"] > 0.9999
    assert ceilings["best_mix"] >= ceilings["best_member"]
    assert ours <= ceilings["best_mix"] + 1e-9
    # A candidate beside the zoo can only raise the ceilings; a smooth kernel machine on a
    # hyperplane is close to it, not exact.
    assert ceilings["best_member_candidates"] >= ceilings["best_member"]
    assert ceilings["best_mix_candidates"] >= ceilings["best_mix"] - 1e-9
    for name in bench_combiner.CANDIDATES:
        assert ceilings[f"best_mix_with_{name}"] >= ceilings["best_mix"] - 1e-9
        assert 0.95 < ceilings[f"candidate_{name}"] < ceilings["best_member"]


def test_groups_pool_the_gap_closed():
    rows = [
        {
            "pearson": p,
            "best_member": m,
            "best_mix": x,
            "r2": 0,
            "jaccard": 0,
            "coverage_80": 0.8,
            "fidelity": p,
            "boosted_trees_weight": 0.5,
        }
        for p, m, x in ((0.95, 0.9, 1.0), (0.9, 0.9, 0.9))
    ]
    group = bench_combiner._group(rows)
    assert group["gap_closed"] == pytest.approx(0.5)
    assert bench_combiner._group(rows[1:])["gap_closed"] is None


@pytest.mark.slow
def test_quick_mode_writes_a_report(tmp_path):
    need_real_tables()
    # One of the quick mode's tables: the report is what is checked, and penguins has the
    # missing cells (the three took 108 s on 2 cores).
    run_quick("benchmarks.bench_combiner", tmp_path, timeout=900, extra=("--tables", "penguins"))
    payload = json.loads((tmp_path / "combiner_quick.json").read_text())
    assert payload["complete"] and payload["benchmark"] == "combiner"
    assert {r["context"] for r in payload["cases"]} == {"full", "300"}
    assert {r["family"] for r in payload["cases"]} == set(bench_combiner.QUICK_FAMILIES)
    for row in payload["cases"]:
        assert row["best_mix"] >= row["best_member"] - 1e-12
        assert -1 <= row["pearson"] <= 1 and 0 <= row["coverage_80"] <= 1
        # Missing cells (penguins) reach the models' imputers: KernelSHAP scores every case.
        assert -1 <= row["kernelshap_4d"]["pearson"] <= 1 + 1e-9, row["kernelshap_4d"]
    assert payload["summary"]["all"]["kernelshap_cases"] == len(payload["cases"])
    assert (tmp_path / "combiner_quick.md").read_text().startswith("# The combiner")
