"""Run the kernel checks with numba's JIT disabled, in a subprocess (see checks_interpreted)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_kernels_match_numpy_references_without_jit():
    # The variable must be set before numba is first imported: a fresh interpreter guarantees it.
    environment = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",  # one module: xdist's workers would cost more than they save
            str(Path(__file__).with_name("checks_interpreted.py")),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout and "skipped" not in completed.stdout
