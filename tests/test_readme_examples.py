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


def test_the_staleness_check_masks_durations_and_the_last_digits_of_long_floats():
    """A run on another CPU may differ in a double's last bits (seen: 0.4332727065881969 against
    ...968): that is no stale example, but a changed value or shorter figure still is."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from update_readme_examples import masked
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    here = '"values": [0.4332727065881969, 0.3845167319744501] in 3.2 ms'
    there = '"values": [0.4332727065881968, 0.38451673197444997] in 4.1 ms'
    assert masked(here) == masked(there)
    assert masked(here) != masked(here.replace("0.43327270658", "0.43327270659"))
    assert masked("r 0.977, rms error 2.2086") == "r 0.977, rms error 2.2086"
