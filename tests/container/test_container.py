"""Build the image, run it, call it with the Python client, stop it with SIGTERM.

The image is built as ``tests/container/image.py`` says (no Docker engine needed). Needs root,
podman and debootstrap; CI installs them and sets ``SHAPLEY_SVC_REQUIRE_CONTAINER=1`` so that
their absence fails instead of skipping.
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest
from shapley_client import ShapleyClient

from tests.container.image import (
    BUILD_FOLDER,
    BUILD_LOG,
    IMAGE,
    Podman,
    missing_tools,
    wait_for_build,
)
from tests.server.conftest import make_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def podman():
    reason = missing_tools()
    if reason is not None:
        if os.environ.get("SHAPLEY_SVC_REQUIRE_CONTAINER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    # tests/conftest.py started the build when the session started (the tools are here), in
    # this process or in xdist's controller.
    folder = Path(os.environ[BUILD_FOLDER])
    if wait_for_build(folder) != 0:
        log = folder / BUILD_LOG
        tail = log.read_text()[-4000:] if log.exists() else "(the build never started)"
        pytest.fail("building the image failed:\n" + tail)
    tools = Podman(folder)
    yield tools
    tools.remove_images()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_container_serves_and_stops_on_sigterm(podman):
    port = _free_port()
    started = time.perf_counter()
    container = podman.run(
        "podman", "run", "-d", "--init", "-p", f"127.0.0.1:{port}:50051", IMAGE
    ).stdout.strip()  # fmt: skip
    try:
        with ShapleyClient(f"127.0.0.1:{port}", timeout=5) as client:
            serving_after = None
            while time.perf_counter() - started < 120:
                health = podman.run(
                    "podman", "exec", container, "shapley-svc", "health", check=False
                )
                if health.returncode == 0:
                    serving_after = time.perf_counter() - started
                    break
                time.sleep(0.5)
            assert serving_after is not None, "container never reported SERVING"
            print(f"container SERVING {serving_after:.1f} s after `podman run`")
            client.timeout = 120
            X, p = make_task()
            context = client.create_context(X, p)
            explanation = client.explain(context, X[:10], p[:10])
            np.testing.assert_allclose(
                explanation.values.sum(axis=1), p[:10] - explanation.base_values, atol=1e-9
            )
        podman.run("podman", "stop", "--time", "30", container)
        state = podman.run("podman", "inspect", "--format", "{{.State.ExitCode}}", container)
        assert state.stdout.strip() == "0"
        # The image has libgomp: numba's OpenMP layer runs concurrent calls' kernels side by
        # side (without it the server warns and calls take turns).
        shown = podman.run("podman", "logs", container)
        logs = shown.stdout + shown.stderr
        assert "SERVING after" in logs and "threading layer is" not in logs, logs[-2000:]
    finally:
        podman.run("podman", "rm", "-f", container, check=False)
