"""The benchmark scripts still run: their quick modes, end to end, as CI smoke tests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_quick(module: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def _report(name: str) -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / name).read_text())


@pytest.mark.slow
def test_tree_benchmark_quick_mode():
    pytest.importorskip("shap")
    _run_quick("benchmarks.bench_tree_shapley")
    for case in _report("tree_shapley_quick.json")["cases"]:
        scale = case["max_abs_value"]
        assert case["ours_efficiency_gap"] <= 1e-9 * scale, case["case"]
        # shap's own rounding is about 1e-7 of the scale (see tests/reference/test_trees.py).
        assert case["max_abs_diff"] <= 1e-6 * scale, case["case"]


@pytest.mark.slow
def test_exact_benchmark_quick_mode():
    _run_quick("benchmarks.bench_exact_shapley")
    rows = _report("exact_shapley_quick.json")["throughput"]
    assert rows
    for row in rows:
        assert row["efficiency_gap"] <= 1e-9, row
