"""The benchmark scripts still run: their quick modes, end to end, as CI smoke tests."""

import json
from pathlib import Path

import pytest

from benchmarks import diagnose_contention
from tests.quick_runs import run_quick

ROOT = Path(__file__).resolve().parents[1]


def _report(name: str) -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / name).read_text())


@pytest.mark.slow
def test_tree_benchmark_quick_mode():
    pytest.importorskip("shap")
    run_quick("benchmarks.bench_tree_shapley")
    for case in _report("tree_shapley_quick.json")["cases"]:
        scale = case["max_abs_value"]
        assert case["ours_efficiency_gap"] <= 1e-9 * scale, case["case"]
        # shap's own rounding is about 1e-7 of the scale (see tests/reference/test_trees.py).
        assert case["max_abs_diff"] <= 1e-6 * scale, case["case"]


@pytest.mark.slow
def test_exact_benchmark_quick_mode():
    run_quick("benchmarks.bench_exact_shapley")
    rows = _report("exact_shapley_quick.json")["throughput"]
    assert rows
    for row in rows:
        assert row["efficiency_gap"] <= 1e-9, row


@pytest.mark.slow
def test_contention_diagnostic_quick_mode(tmp_path):
    run_quick("benchmarks.diagnose_contention", tmp_path)
    payload = json.loads((tmp_path / "contention_quick.json").read_text())
    rows = payload["rows"]
    assert [(row["busy_process"], row["environment"]) for row in rows] == [
        (busy, name) for busy in (False, True) for name in diagnose_contention.ENVIRONMENTS
    ]
    assert payload["budget"] == 80 and payload["calls"] == 15
    for row in rows:
        for caller in diagnose_contention.CALLERS:
            times = row[caller]
            assert 0 < times["p50_ms"] <= times["p95_ms"] <= times["max_ms"], row
    text = (tmp_path / "contention_quick.md").read_text()
    assert "Quick mode" in text and text.count("| one busy-loop process |") == 4
