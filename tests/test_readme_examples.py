"""The READMEs' example outputs are what the examples print today.

scripts/update_readme_examples.py --check runs them all and compares."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_example_blocks_match_a_real_run():
    if shutil.which("node") is None and os.environ.get("SHAPLEY_SVC_REQUIRE_NODE") == "1":
        pytest.fail("node is required for the Node client's example")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "update_readme_examples.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
