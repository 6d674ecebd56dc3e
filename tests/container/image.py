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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/shapley-svc:test"
BASE = "localhost/pybase:bookworm"
SUITE = "bookworm"  # the base image's Debian release
APT_CONFIGURATION = Path("/etc/apt")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_LOG = "build.log"


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
    try:
        build_image(Path(folder))
    except subprocess.CalledProcessError as error:
        print(f"{error}\n{error.stdout}\n{error.stderr}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
