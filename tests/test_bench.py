"""The KernelSHAP comparison and the service benchmark: pure helpers fast, quick runs slow.

The slow checks run the real quick modes end to end (through ``shapley-svc bench``) into a
temporary folder and read back what a user would: the report, the JSON and the plots.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_embeddings, bench_kernelshap, bench_service
from benchmarks import kernelshap_report as report
from shapley_svc import cli

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_JSON = [
    ROOT / "benchmarks" / "results" / f"{name}.json"
    for name in ("kernelshap", "service", "embeddings")
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- the equivalent budget and other pure helpers ---------------------------------------------


@pytest.mark.parametrize(
    ("ours", "kernel", "expected"),
    [
        (0.90, {"1d": 0.3, "2d": 0.89, "4d": 0.95, "10d": 0.99, "default": 1.0}, "4d"),
        (0.50, {"1d": 0.6, "2d": 0.4, "4d": 0.9, "10d": 0.99, "default": 1.0}, "1d"),
        (0.999, {"1d": 0.3, "2d": 0.5, "4d": 0.9, "10d": 0.99, "default": 0.9995}, "default"),
        (0.99, {"1d": 0.3, "2d": 0.5, "4d": 0.9, "10d": 0.95, "default": 0.98}, "> default"),
        (0.97, {"1d": 0.3, "2d": 0.5, "4d": 0.9}, "> 4d"),
        # A tie as printed (0.950 and 0.950) is a match; 0.9494 prints as 0.949 and is not.
        (0.9504, {"1d": 0.9496, "2d": 1.0}, "1d"),
        (0.9504, {"1d": 0.9494, "2d": 1.0}, "2d"),
        # Budgets are tried cheapest first, whatever the mapping's order.
        (0.9, {"default": 1.0, "10d": 0.95, "1d": 0.1}, "10d"),
    ],
)
def test_equivalent_budget(ours, kernel, expected):
    assert report.equivalent_budget(ours, kernel) == expected


def test_equivalent_budget_needs_a_budget():
    with pytest.raises(ValueError, match="no KernelSHAP budget"):
        report.equivalent_budget(0.9, {})


@pytest.mark.parametrize(
    ("budget", "d", "expected"),
    [
        ("default", 4, ("auto", 14, True)),  # 2**4 - 2 coalitions: shap enumerates them
        ("default", 11, ("auto", 2046, True)),
        ("default", 13, ("auto", 2074, False)),
        ("default", 64, ("auto", 2176, False)),
        ("10d", 4, (40, 14, True)),
        ("1d", 30, (30, 30, False)),
        ("4d", 64, (256, 256, False)),
    ],
)
def test_kernel_nsamples(budget, d, expected):
    assert bench_kernelshap.kernel_nsamples(budget, d) == expected


def test_compared_rows_are_spread_over_the_explained_rows():
    positions = bench_kernelshap.compared_positions(40, 10)
    assert len(positions) == 10 and positions[0] == 0 and positions[-1] == 39
    assert np.all(np.diff(positions) >= 4), positions
    assert list(bench_kernelshap.compared_positions(3, 10)) == [0, 1, 2]


def test_truth_ceiling(rng):
    truth = rng.normal(size=(10, 5))
    assert bench_kernelshap.truth_ceiling(truth, np.zeros_like(truth)) == 1.0
    noisy = bench_kernelshap.truth_ceiling(truth, np.full_like(truth, 0.5 * truth.std()))
    assert noisy == pytest.approx(np.sqrt(0.75), abs=1e-9)


def test_synthetic_data_is_seeded_and_correlated():
    X, y = bench_kernelshap.synthetic_data(16)
    again, _ = bench_kernelshap.synthetic_data(16)
    assert np.array_equal(X, again) and X.shape == (bench_kernelshap.SYNTHETIC_ROWS, 16)
    assert 0.4 < y.mean() < 0.6
    correlation = np.corrcoef(X, rowvar=False)[np.triu_indices(16, 1)]
    assert correlation.max() > 0.4, "features should be correlated"


def _fake_case(name: str, family: str, d: int, ours: float, kernel_r: list[float]) -> dict:
    methods = {
        "zero_shot": {
            "pearson": ours,
            "jaccard": 0.7,
            "r2": ours**2,
            "seconds_per_row": 0.05,
            "explain_seconds_per_row": 0.001,
            "pearson_all_rows": ours,
        },
        "surrogate": {"pearson": ours - 0.05, "jaccard": 0.6, "r2": 0.7, "seconds_per_row": 0.02},
    }
    for budget, r in zip(report.BUDGETS, kernel_r, strict=True):
        methods[f"kernelshap_{budget}"] = {
            "pearson": r,
            "jaccard": r,
            "r2": r,
            "seconds_per_row": 0.01 * (1 + len(budget)),
            "enumerates_all": d <= 11,
        }
    return {
        "case": name,
        "source": "synthetic" if name.startswith("synthetic") else "public",
        "family": family,
        "d": d,
        "truth_method": "exact_shapley",
        "truth_ceiling_r": 1.0,
        "methods": methods,
        "equivalent_budget": report.equivalent_budget(
            ours, dict(zip(report.BUDGETS, kernel_r, strict=True))
        ),
    }


def _fake_payload(mode: str = "full") -> dict:
    cases = [
        _fake_case("iris/mlp", "mlp", 4, 0.95, [0.5, 0.9, 0.99, 1.0, 1.0]),
        _fake_case("synthetic_d64/mlp", "mlp", 64, 0.85, [0.1, 0.3, 0.6, 0.8, 0.97]),
        _fake_case("synthetic_d64/svm", "svm", 64, 0.8123, [0.1, 0.3, 0.6, 0.8, 0.81]),
    ]
    return {
        "benchmark": "kernelshap",
        "mode": mode,
        "command": "python -m benchmarks.bench_kernelshap",
        "plot_suffix": "" if mode == "full" else "_quick",
        "elapsed_seconds": 600.0,
        "machine": {
            "date": "2026-11-21T20:00:00+00:00",
            "cpus_available": 2,
            "processor": "x86_64",
            "platform": "Linux",
            "python": "3.11.7",
            "shap": "0.51.0",
            "sklearn": "1.9.1",
        },
        "settings": {
            "background_rows": 100,
            "explained_rows": 40,
            "kernel_rows": 10,
            "budgets": list(report.BUDGETS),
            "sampling_budget": 40_000,
            "case_description": "test cases",
        },
        "quoted": report.QUOTED_EXPLAINERPFN,
        "summary": report.summarise(cases),
        "cases": cases,
    }


def test_summary_means_and_equivalent_budget():
    payload = _fake_payload()
    overall = payload["summary"]["overall"]
    assert overall["cases"] == 3
    assert overall["methods"]["zero_shot"]["pearson"] == pytest.approx((0.95 + 0.85 + 0.8123) / 3)
    # Means of KernelSHAP: 4d 0.73, 10d 0.8667, default 0.9267 >= ours 0.8708.
    assert overall["equivalent_budget"] == "default"
    assert overall["equivalent_budget_per_case"] == {"4d": 1, "default": 1, "> default": 1}
    assert payload["summary"]["by_family"]["svm"]["equivalent_budget"] == "> default"
    assert list(payload["summary"]["by_d"]) == ["4", "64"]


def test_report_and_readme_block_carry_the_payloads_numbers():
    payload = _fake_payload()
    text = report.markdown(payload)
    assert "| ZeroShotExplainer (ours), fit + explain | 0.871 |" in text
    assert "quoted, not re-run" in text and "Quick mode" not in text
    assert "synthetic_d64/svm" in text and "> default" in text
    block = report.readme_block(payload, "benchmarks/results/kernelshap.json")
    assert block.startswith(report.README_START) and block.endswith(report.README_END)
    assert "0.871" in block and "2026-11-21" in block and "python -m benchmarks" in block
    assert "![accuracy against time" in block
    quick = report.readme_block(_fake_payload("quick"), "benchmarks/results/kernelshap_quick.json")
    assert "Quick mode, a smoke run" in quick and "![" not in quick


def test_readme_block_replacement():
    readme = f"intro\n{report.README_START}\nold\n{report.README_END}\nrest\n"
    block = f"{report.README_START}\nnew\n{report.README_END}"
    assert report.replace_readme_block(readme, block) == f"intro\n{block}\nrest\n"
    with pytest.raises(ValueError, match="markers"):
        report.replace_readme_block("no markers here", block)


def test_readme_has_the_benchmark_blocks():
    readme = (ROOT / "README.md").read_text()
    for module in (report, bench_service, bench_embeddings):
        for marker in (module.README_START, module.README_END):
            assert readme.count(marker) == 1, marker


def test_readme_block_matches_the_committed_report():
    """The README's numbers are generated from the committed JSON, so they cannot go stale."""
    for path in COMMITTED_JSON:
        if not path.exists():
            pytest.skip(f"no committed {path.relative_to(ROOT)} yet (only quick runs)")
    completed = subprocess.run(
        [sys.executable, "scripts/update_readme_benchmarks.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def test_update_script_rewrites_only_the_block(tmp_path):
    json_path = tmp_path / "kernelshap.json"
    json_path.write_text(json.dumps(_fake_payload()))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{report.README_START}\nstale\n{report.README_END}\n\n## next\n")
    script = [sys.executable, "scripts/update_readme_benchmarks.py", "--json", str(json_path)]
    script += ["--readme", str(readme)]
    check = subprocess.run([*script, "--check"], cwd=ROOT, capture_output=True, check=False)
    assert check.returncode == 1, "a stale block must fail --check"
    subprocess.run(script, cwd=ROOT, check=True, capture_output=True)
    check = subprocess.run([*script, "--check"], cwd=ROOT, capture_output=True, check=False)
    assert check.returncode == 0, check.stderr
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\n\n## next\n")
    assert "stale" not in text and "| ZeroShotExplainer (ours), fit + explain | 0.871 |" in text


# --- the service benchmark's load generator ---------------------------------------------------


def test_run_load_counts_errors_and_respects_its_bounds():
    calls = []

    def call() -> int:
        calls.append(1)
        if len(calls) % 5 == 0:
            raise RuntimeError("refused")
        return 3

    result = bench_service.run_load([call, call, call], max_calls=20, max_seconds=30.0)
    assert result["calls"] == 20 and len(calls) == 20
    assert result["errors"] == 4 and result["rows"] == 16 * 3
    assert result["error_samples"][0] == "RuntimeError: refused"
    assert result["p50_ms"] is not None and result["rows_per_second"] > 0

    def slow() -> int:
        time.sleep(0.05)
        return 1

    start = time.perf_counter()
    bounded = bench_service.run_load([slow, slow], max_calls=10_000, max_seconds=0.3)
    assert time.perf_counter() - start < 2.0
    assert 2 <= bounded["calls"] < 100 and bounded["errors"] == 0


def test_percentiles():
    assert bench_service.percentiles([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    values = bench_service.percentiles([i / 1000 for i in range(1, 101)])
    assert values["p50_ms"] == pytest.approx(50.5) and values["p99_ms"] == pytest.approx(99.01)


# --- the CLI: optional dependencies stay optional ---------------------------------------------


def test_server_and_cli_import_without_benchmark_dependencies():
    code = (
        "import sys, shapley_svc.cli, shapley_svc.server, shapley_svc.reference\n"
        "optional = ('shap', 'matplotlib', 'benchmarks', 'xgboost', 'lightgbm', 'catboost')\n"
        "loaded = [m for m in optional if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests", check=True)


def test_bench_outside_a_checkout_says_what_to_do(tmp_path, monkeypatch, capsys):
    assert cli.bench_checkout([tmp_path]) is None
    assert cli.bench_checkout([tmp_path, ROOT]) == ROOT
    monkeypatch.setattr(cli, "bench_checkout", lambda: None)
    assert cli.main(["bench", "accuracy", "--quick"]) == 2
    message = capsys.readouterr().err
    assert "source repository" in message and "pip install -e '.[bench]'" in message


def test_bench_names_the_missing_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "shap" else real(name, *a)
    )
    assert cli.main(["bench", "accuracy"]) == 2
    assert "pip install 'shapley-svc[bench]'" in capsys.readouterr().err


# --- the quick modes, end to end --------------------------------------------------------------


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "shapley_svc.cli", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.mark.slow
def test_accuracy_quick_mode(tmp_path):
    pytest.importorskip("shap")
    pytest.importorskip("matplotlib")
    start = time.perf_counter()
    completed = _run("accuracy", "--quick", "--out-dir", str(tmp_path), timeout=600)
    seconds = time.perf_counter() - start
    assert "5/5 cases" in completed.stderr, "no progress line"
    payload = json.loads((tmp_path / "kernelshap_quick.json").read_text())
    assert payload["mode"] == "quick" and payload["command"].startswith("shapley-svc bench")
    assert len(payload["cases"]) == 5
    for case in payload["cases"]:
        methods = case["methods"]
        assert set(methods) == {"zero_shot", "surrogate", *report.kernel_methods(list(methods))}
        assert len(report.kernel_methods(list(methods))) == 5, case["case"]
        for name, scores in methods.items():
            assert abs(scores["pearson"]) <= 1.0 + 1e-12, (case["case"], name, scores)
            assert 0.0 <= scores["jaccard"] <= 1.0, (case["case"], name, scores)
            assert scores["seconds_per_row"] > 0, (case["case"], name, scores)
        # KernelSHAP's default budget is exact or nearly so on these small cases.
        assert methods["kernelshap_default"]["pearson"] > 0.97, case
        assert methods["zero_shot"]["pearson"] > 0.6, case
        assert case["equivalent_budget"] in (*report.BUDGETS, "> default")
    overall = payload["summary"]["overall"]["methods"]
    assert overall["zero_shot"]["pearson"] > 0.8, overall["zero_shot"]
    text = (tmp_path / "kernelshap_quick.md").read_text()
    assert "Quick mode" in text and "## Where we lose" in text
    assert (
        f"| ZeroShotExplainer (ours), fit + explain | {overall['zero_shot']['pearson']:.3f} |"
        in (text)
    )
    for name in report.plot_names("_quick").values():
        png = (tmp_path / name).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000, name
    assert seconds < 300, f"quick mode took {seconds:.0f} s; it must stay well under 3 minutes"


@pytest.mark.slow
def test_service_quick_mode(tmp_path):
    _run("service", "--quick", "--out-dir", str(tmp_path), timeout=600)
    payload = json.loads((tmp_path / "service_quick.json").read_text())
    assert payload["total_errors"] == 0 and payload["server_exit_code"] == 0
    assert [(r["scenario"], r["concurrency"]) for r in payload["scenarios"]] == [
        (s, c) for s in ("unary_single_row", "unary_batch", "stream", "refine") for c in (1, 8, 32)
    ]
    for row in payload["scenarios"]:
        assert row["grpc"]["calls"] >= 1 and row["grpc"]["errors"] == 0, row
        assert row["grpc"]["rows_per_second"] > 0 and row["in_process"]["rows_per_second"] > 0
        assert row["server_peak_rss_bytes"] > 50 * 2**20, row
    streams = [r for r in payload["scenarios"] if r["scenario"] == "stream"]
    assert all(r["grpc"]["rows"] == max(3, r["concurrency"]) * r["rows_per_call"] for r in streams)
    refines = [r for r in payload["scenarios"] if r["scenario"] == "refine"]
    assert all(r["budget"] == 80 and r["in_process"]["calls"] >= 1 for r in refines), refines
    assert payload["server_peak_rss_bytes"] >= payload["server_rss_after_warm_up_bytes"]
    # The earlier keys still answer.
    for key in ("single_row_grpc", "batch_grpc_rows_per_second", "batch_max_abs_difference"):
        assert key in payload, key
    assert payload["batch_max_abs_difference"] < 1e-9
    assert (tmp_path / "service_quick.md").read_text().startswith("# Service load")
    block = bench_service.readme_block(payload, "benchmarks/results/service_quick.json")
    assert block.startswith(bench_service.README_START) and "Quick mode" in block
    assert f"p50 {payload['single_row_grpc']['p50_ms']:.2f} ms" in block
    assert "grpcio echoing" in block and payload["grpcio_echo_floor"]["p50_ms"] > 0
    readme = f"a\n{bench_service.README_START}\nold\n{bench_service.README_END}\nb\n"
    assert report.replace_readme_block(readme, block) == f"a\n{block}\nb\n"


# --- the embeddings benchmark ------------------------------------------------------------------


def test_embedding_groups_partition_the_columns():
    for groups, d in (
        (bench_embeddings.contiguous_groups(1024), 1024),
        (bench_embeddings.pixel_block_groups(), 64),
    ):
        columns = sorted(c for members in groups.values() for c in members)
        assert columns == list(range(d)) and len(groups) == bench_embeddings.N_GROUPS
    assert bench_embeddings.pixel_block_groups()["block 0,1"] == [2, 3, 10, 11]


def test_grouped_sampled_truth_is_the_group_game(rng):
    """The lifted sampler agrees with the group game's exact values (brute force, 3 groups)."""
    from tests.oracles import brute_force_shapley

    weights = rng.normal(size=5)

    def output(rows):
        return np.tanh(rows @ weights) + rows[:, 0] * rows[:, 3]

    query, background = rng.normal(size=(3, 5)), rng.normal(size=(20, 5))
    groups = {"a": [0, 1], "b": [2], "c": [3, 4]}
    sampled = bench_embeddings.grouped_sampled_truth(output, query, background, groups, 0)
    exact = brute_force_shapley(output, query, background, list(groups.values()))[:, :, 0]
    assert sampled.values.shape == (3, 3)
    # Unbiased within its own standard errors (5 sigma), and exactly efficient.
    assert np.all(np.abs(sampled.values - exact) <= 5 * sampled.uncertainty + 1e-12)
    np.testing.assert_allclose(sampled.values.sum(axis=1), exact.sum(axis=1), atol=1e-12)


@pytest.mark.slow
def test_embeddings_quick_mode(tmp_path):
    pytest.importorskip("shap")
    _run("embeddings", "--quick", "--out-dir", str(tmp_path), timeout=600)
    payload = json.loads((tmp_path / "embeddings_quick.json").read_text())
    assert payload["mode"] == "quick" and payload["command"].startswith("shapley-svc bench")
    scale = payload["scale"]
    assert scale["fit_seconds"] > 0 and scale["peak_rss_mib"] > 0
    assert scale["efficiency_gap"] < 1e-9
    assert [(r["task"], r["family"]) for r in payload["results"]] == [
        (task, family)
        for task in ("digits", "synthetic d=96")
        for family in bench_embeddings.FAMILIES
    ]
    for result in payload["results"]:
        for label in ("dimensions", "groups"):
            assert -1 <= result[label]["pearson"] <= 1 and 0 <= result[label]["jaccard"] <= 1
        # Linear models are explained on their logit, which the ridge member recovers.
        if result["family"] == "linear":
            assert result["dimensions"]["pearson"] > 0.9, result
    assert "kernelshap" in payload["results"][2]
    block = bench_embeddings.readme_block(payload, "x.json")
    assert "quick run" in block and block.startswith(bench_embeddings.README_START)
