"""How many threads numba's parallel kernels run on: the CPUs this process may use.

numba sizes its pool by the CPUs the process may be scheduled on (``sched_getaffinity``), which a
container's CPU quota does not change: a pod limited to 2 CPUs on a 64-core node started 64
threads per kernel launch, and each compute thread launches its own, so the quota throttled
every kernel. numba reads ``NUMBA_NUM_THREADS`` once, at its import: set it before then, and
only where the user has not.

The quota is read from the cgroup files here rather than through joblib's ``cpu_count``, which
also obeys ``LOKY_MAX_CPU_COUNT`` (a joblib setting, often set only to quiet a warning) and
fails on a value that is not an integer.
"""

import math
import os
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMBERSHIP = Path("/proc/self/cgroup")


def _cgroup_paths(membership: Path) -> dict[str, PurePosixPath]:
    """The process's cgroup in the v2 hierarchy ("") and in v1's ``cpu`` one ("cpu"), from
    ``/proc/self/cgroup`` lines ``id:controllers:path``; empty when it cannot be read."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return {}
    paths = {}
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            paths[""] = PurePosixPath("/", path)
        elif "cpu" in controllers.split(","):
            paths["cpu"] = PurePosixPath("/", path)
    return paths


def _quota_in(directory: Path, v1: bool) -> float | None:
    """One cgroup directory's quota in CPUs, None where it sets none or cannot be read."""
    try:
        if v1:
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
        else:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        cpus = int(quota) / int(period)
    except (OSError, ValueError):  # no file, or "max": no quota
        return None
    return cpus if cpus > 0 else None  # v1 writes -1 for none


def cpu_quota(root: Path = CGROUP_ROOT, membership: Path = MEMBERSHIP) -> float | None:
    """The CPUs the process may use per unit of time: the smallest quota (cgroup v2
    ``cpu.max``, v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``) of its cgroup and every
    cgroup above it, as the kernel enforces them all; None without a quota or a cgroup.

    A container with its own cgroup namespace sees its cgroup at the root (Docker and
    Kubernetes on cgroup v2); a systemd unit's ``CPUQuota=`` or a container sharing the host's
    namespace sets it further down, at the path ``/proc/self/cgroup`` names. Where that path is
    not under the mount (a v1 container sees the host's path), the root's files are the ones
    that apply."""
    paths = _cgroup_paths(membership)
    quotas = []
    for hierarchy, v1 in (("", False), ("cpu", True)):
        top = root / hierarchy
        path = paths.get(hierarchy, PurePosixPath("/"))
        for level in (path, *path.parents):
            quota = _quota_in(top / level.relative_to("/"), v1)
            if quota is not None:
                quotas.append(quota)
    return min(quotas, default=None)


def schedulable_cpus() -> int:
    """numba's own default: the CPUs the process may be scheduled on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def usable_cpus(root: Path = CGROUP_ROOT, membership: Path = MEMBERSHIP) -> int:
    """The CPUs the process may keep busy: the schedulable ones, fewer under a CPU quota (a
    quota of 1.5 CPUs counts as 2)."""
    quota = cpu_quota(root, membership)
    schedulable = schedulable_cpus()
    return schedulable if quota is None else max(1, min(schedulable, math.ceil(quota)))


def cap_numba_threads(
    environ: MutableMapping[str, str] = os.environ,
    usable: Callable[[], int] = usable_cpus,
    schedulable: Callable[[], int] = schedulable_cpus,
) -> int | None:
    """Set ``NUMBA_NUM_THREADS`` to the CPUs the process may use when its CPU quota allows fewer
    than numba would start; the number set, or None when nothing was changed (the user chose, no
    quota binds, or numba is already imported and has read its setting)."""
    if environ.get("NUMBA_NUM_THREADS") or "numba" in sys.modules:
        return None
    cpus = usable()
    if cpus >= schedulable():
        return None
    environ["NUMBA_NUM_THREADS"] = str(cpus)
    return cpus
