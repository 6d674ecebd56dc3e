"""Build the image, run it, call it with the Python client, stop it with SIGTERM.

Follows ``../shared/docs/FIELD_NOTES.md`` section 7 for machines without a Docker engine:
buildah/podman with runc and cgroupfs, storage in a temporary folder, and a Debian bookworm base
made by debootstrap (no registry). Needs root, podman and debootstrap; CI installs them and sets
``SHAPLEY_SVC_REQUIRE_CONTAINER=1`` so that their absence fails instead of skipping.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from shapley_client import ShapleyClient

from tests.server.conftest import make_task

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/shapley-svc:test"
BASE = "localhost/pybase:bookworm"
DEBIAN_MIRROR = os.environ.get("SHAPLEY_SVC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

pytestmark = pytest.mark.slow


class Podman:
    """Commands run with the temporary container configuration."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, check=check, capture_output=True, text=True)


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        reason = f"needs root and {', '.join(missing) or 'podman'} (FIELD_NOTES section 7)"
        if os.environ.get("SHAPLEY_SVC_REQUIRE_CONTAINER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("containers")
    (folder / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
    )
    (folder / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{folder}/storage"\nrunroot = "{folder}/run"\n'
    )
    env = os.environ | {
        "CONTAINERS_CONF": str(folder / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(folder / "storage.conf"),
    }

    tools = Podman(env)
    run = tools.run
    rootfs = folder / "rootfs"
    include = "--include=python3,python3-venv,python3-pip,ca-certificates"
    run("debootstrap", "--variant=minbase", include, "bookworm", str(rootfs), DEBIAN_MIRROR)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["podman", "import", "-", BASE], env=env, stdin=tar.stdout, check=True,
                   capture_output=True)  # fmt: skip
    tar.wait()
    build = ["podman", "build", "--build-arg", f"BASE={BASE}", "-t", IMAGE]
    if HOST_CA.exists():  # behind a TLS-intercepting proxy pip needs the host's CA bundle
        build += ["-v", f"{HOST_CA}:/tmp/host-ca.crt:ro"]
        build += ["--build-arg", "PIP_CERT=/tmp/host-ca.crt"]
    run(*build, str(ROOT))
    yield tools
    tools.run("podman", "rmi", "-f", IMAGE, BASE, check=False)


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
    finally:
        podman.run("podman", "rm", "-f", container, check=False)
