import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

CONTAINER_TESTS = "tests/container/"


@pytest.fixture
def rng():
    """A fresh seeded generator per test: no global seeds."""
    return np.random.default_rng(20261121)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(session, config, items) -> None:
    """When a container test is selected and can run, start building its image now and run
    those tests last: the build (debootstrap, pip, compiling the kernels) takes minutes, mostly
    waiting on downloads, and the rest of the suite runs meanwhile."""
    selected = [item for item in items if item.nodeid.startswith(CONTAINER_TESTS)]
    if not selected:
        return
    from tests.container.image import BUILD_LOG, missing_tools

    items[:] = [item for item in items if item not in selected] + selected
    if missing_tools() is not None:
        return  # the fixture skips or fails, with the reason
    folder = Path(tempfile.mkdtemp(prefix="shapley-svc-containers-"))
    with open(folder / BUILD_LOG, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.container.image", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
            start_new_session=True,  # its own process group: stopped as a whole if unused
        )
    config.container_build = (process, folder)


def pytest_unconfigure(config) -> None:
    """Stop a build the session did not wait for (stopped early), remove its images and files."""
    started = getattr(config, "container_build", None)
    if started is None:
        return
    from tests.container.image import Podman

    process, folder = started
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
    Podman(folder).remove_images()
    shutil.rmtree(folder, ignore_errors=True)
