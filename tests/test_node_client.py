"""The Node client's own tests (node --test), against real servers of this checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NODE_CLIENT = Path(__file__).resolve().parents[1] / "clients" / "node"


@pytest.mark.slow
def test_node_client_against_the_python_server():
    if shutil.which("npm") is None or shutil.which("node") is None:
        if os.environ.get("SHAPLEY_SVC_REQUIRE_NODE") == "1":
            pytest.fail("node and npm are required")
        pytest.skip("node and npm are not installed")
    server = Path(sys.executable).parent / "shapley-svc"
    env = os.environ | {"SHAPLEY_SVC_COMMAND": str(server)}
    env.pop("SHAPLEY_SVC_ARTIFACT", None)
    install = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    result = subprocess.run(
        ["npm", "test", "--", "--test-concurrency=2"],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
