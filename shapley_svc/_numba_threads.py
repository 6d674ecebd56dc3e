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
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs the process's cgroup may use per unit of time (cgroup v2 ``cpu.max``, else v1
    ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``); None without a quota or a cgroup."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        cpus = int(quota) / int(period)
    except ValueError:  # "max": no quota
        return None
    return cpus if cpus > 0 else None  # v1 writes -1 for none


def schedulable_cpus() -> int:
    """numba's own default: the CPUs the process may be scheduled on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """The CPUs the process may keep busy: the schedulable ones, fewer under a CPU quota (a
    quota of 1.5 CPUs counts as 2)."""
    quota = cpu_quota(root)
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
