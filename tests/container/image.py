"""Build the project's image without a Docker engine or a registry.

buildah/podman with runc and cgroupfs, storage in a given folder, and a Debian bookworm base made
by debootstrap (no registry). Run as a module it builds into the folder given and exits 0 on
success: ``tests/conftest.py`` starts it when the session starts, so that the minutes it spends
mostly waiting on downloads overlap the rest of the suite.

    python -m tests.container.image FOLDER
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/shapley-svc:test"
BASE = "localhost/pybase:bookworm"
SUITE = "bookworm"  # the base image's Debian release
APT_CONFIGURATION = Path("/etc/apt")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_LOG = "build.log"
BUILD_PID = "build.pid"
BUILD_STATUS = "build.status"
# The folder the session's image builds in: set by the process that starts the build, before any
# xdist worker starts, so the worker that runs the container test inherits it.
BUILD_FOLDER = "SHAPLEY_SVC_CONTAINER_BUILD"


class Podman:
    """Commands run with the container configuration of one storage folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = os.environ | {
            "CONTAINERS_CONF": str(folder / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(folder / "storage.conf"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, check=check, capture_output=True, text=True)

    def remove_images(self) -> None:
        self.run("podman", "rmi", "-f", IMAGE, BASE, check=False)


def missing_tools() -> str | None:
    """Why the image cannot be built here, or None."""
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        tools = ", ".join(missing) or "podman"
        return f"needs root and {tools} (the build uses buildah, podman, runc and debootstrap)"
    if debian_mirror() is None:
        return (
            f"no Debian archive for {SUITE} in {APT_CONFIGURATION}/sources.list*; "
            "set SHAPLEY_SVC_DEBIAN_MIRROR to one"
        )
    return None


def debian_mirror(apt: Path = APT_CONFIGURATION) -> str | None:
    """The archive this machine's apt installs ``SUITE`` from (``SHAPLEY_SVC_DEBIAN_MIRROR``
    overrides it): debootstrap fetches the base image's packages where apt would, so no host is
    written here. Reads one-line ``deb URI SUITE ...`` entries and deb822 ``.sources`` files."""
    override = os.environ.get("SHAPLEY_SVC_DEBIAN_MIRROR")
    if override:
        return override
    one_line = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in filter(Path.is_file, one_line):
        for line in path.read_text().splitlines():
            words = line.split("#")[0].split()
            if words[:1] != ["deb"]:
                continue
            words = words[1:]
            if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2 and words[1] == SUITE:
                return words[0]
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for paragraph in path.read_text().split("\n\n"):
            fields = {}
            for line in paragraph.splitlines():
                key, colon, value = line.partition(":")
                if colon and not line.startswith((" ", "#")):
                    fields[key.strip().lower()] = value.strip()
            if (
                "deb" in fields.get("types", "").split()
                and SUITE in fields.get("suites", "").split()
                and fields.get("enabled", "yes").lower() != "no"
                and fields.get("uris")
            ):
                return fields["uris"].split()[0]
    return None


def build_image(folder: Path) -> Podman:
    """The Debian base, then the project's image on it; raises CalledProcessError on failure."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
    )
    (folder / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{folder}/storage"\nrunroot = "{folder}/run"\n'
    )
    tools = Podman(folder)
    rootfs = folder / "rootfs"
    include = "--include=python3,python3-venv,python3-pip,ca-certificates"
    tools.run("debootstrap", "--variant=minbase", include, SUITE, str(rootfs), debian_mirror())
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["podman", "import", "-", BASE], env=tools.env, stdin=tar.stdout, check=True,
                   capture_output=True)  # fmt: skip
    tar.wait()
    shutil.rmtree(rootfs)
    build = ["podman", "build", "--build-arg", f"BASE={BASE}", "-t", IMAGE]
    if HOST_CA.exists():  # behind a TLS-intercepting proxy pip needs the host's CA bundle
        build += ["-v", f"{HOST_CA}:/tmp/host-ca.crt:ro"]
        build += ["--build-arg", "PIP_CERT=/tmp/host-ca.crt"]
    tools.run(*build, str(ROOT))
    return tools


def main(folder: str) -> int:
    """Build into ``folder``; write the exit status to ``BUILD_STATUS`` there when done, for a
    test in another process (an xdist worker) to wait on."""
    status = 1
    try:
        build_image(Path(folder))
        status = 0
    except subprocess.CalledProcessError as error:
        print(f"{error}\n{error.stdout}\n{error.stderr}", file=sys.stderr)
    finally:
        (Path(folder) / BUILD_STATUS).write_text(str(status))
    return status


def start_build(folder: Path) -> subprocess.Popen:
    """Run :func:`main` in a child process of its own group, its output in ``BUILD_LOG``."""
    with open(folder / BUILD_LOG, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.container.image", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # its own process group: stopped as a whole if unused
        )
    (folder / BUILD_PID).write_text(str(process.pid))
    return process


def wait_for_build(folder: Path, poll: float = 2.0) -> int:
    """The build's exit status, once it has ended; 1 if it died without writing one (or was
    never started)."""
    status, pid = folder / BUILD_STATUS, folder / BUILD_PID
    while not status.exists():
        if not pid.exists() or not _running(int(pid.read_text())):
            return int(status.read_text()) if status.exists() else 1
        time.sleep(poll)
    return int(status.read_text())


def _running(pid: int) -> bool:
    """Alive and not a zombie: the build is another process's child (xdist's controller), so
    it stays a zombie until that process reaps it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
