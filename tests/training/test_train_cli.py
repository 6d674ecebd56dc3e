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
