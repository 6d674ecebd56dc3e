import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

CONTAINER_TESTS = "tests/container/"
# Modules that use the same folder outside their own temporary ones run in one xdist worker:
# both run the Node client from clients/node, and `npm ci` there replaces its node_modules.
SHARED_FOLDERS = {
    "tests/test_node_client.py": "clients/node",
    "tests/test_readme_examples.py": "clients/node",
}


@pytest.fixture
def rng():
    """A fresh seeded generator per test: no global seeds."""
    return np.random.default_rng(20261121)


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config) -> None:
    """The process that may start the container build (the only one, or xdist's controller)
    names its folder now, before xdist starts the workers that inherit it."""
    if _is_worker(config):
        return
    from tests.container.image import BUILD_FOLDER

    folder = Path(tempfile.mkdtemp(prefix="shapley-svc-containers-"))
    os.environ[BUILD_FOLDER] = str(folder)
    config.container_build = {"folder": folder, "process": None}
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_ControllerHooks(), "shapley-svc-container-build")


def pytest_itemcollected(item) -> None:
    """Under xdist (``--dist loadgroup``), a module's tests run in one worker: its module-scoped
    fixtures are built once."""
    module = item.nodeid.split("::")[0]
    item.add_marker(pytest.mark.xdist_group(SHARED_FOLDERS.get(module, module)))


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(session, config, items) -> None:
    """Run the container tests last and, when one is selected and can run, start building its
    image now: the build (debootstrap, pip, compiling the kernels) takes minutes, mostly waiting
    on downloads, and the rest of the suite runs meanwhile. Under xdist the workers collect and
    the controller starts the build (``_ControllerHooks``)."""
    selected = [item for item in items if item.nodeid.startswith(CONTAINER_TESTS)]
    if not selected:
        return
    items[:] = [item for item in items if item not in selected] + selected
    if not _is_worker(config):
        _start_container_build(config)


class _ControllerHooks:
    """xdist's controller collects nothing: it starts the build when a worker's collection
    (container tests last, as above) holds one."""

    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        if any(nodeid.startswith(CONTAINER_TESTS) for nodeid in ids):
            _start_container_build(node.config)


def _start_container_build(config) -> None:
    from tests.container.image import missing_tools, start_build

    started = config.container_build
    if started["process"] is None and missing_tools() is None:
        started["process"] = start_build(started["folder"])


def pytest_unconfigure(config) -> None:
    """Stop a build the session did not wait for (stopped early), remove its images and files."""
    started = getattr(config, "container_build", None)
    if started is None:
        return
    process, folder = started["process"], started["folder"]
    if process is not None:
        from tests.container.image import Podman

        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
        Podman(folder).remove_images()
    shutil.rmtree(folder, ignore_errors=True)
