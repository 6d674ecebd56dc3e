"""How many threads numba's parallel kernels run on: the CPUs this process may use.

numba sizes its pool by the CPUs the process may be scheduled on (``sched_getaffinity``), which a
container's CPU quota does not change: a pod limited to 2 CPUs on a 64-core node started 64
threads per kernel launch, and each compute thread launches its own, so the quota throttled
every kernel. joblib's ``cpu_count`` (scikit-learn's own dependency) counts the quota too
(cgroup v1 and v2). numba reads ``NUMBA_NUM_THREADS`` once, at its import: set it before then,
and only where the user has not.
"""

import os
import sys
from collections.abc import Callable, MutableMapping


def cap_numba_threads(
    environ: MutableMapping[str, str] = os.environ,
    usable_cpus: Callable[[], int] | None = None,
    schedulable_cpus: Callable[[], int] | None = None,
) -> int | None:
    """Set ``NUMBA_NUM_THREADS`` to the CPUs the process may use when its CPU quota allows fewer
    than numba would start; the number set, or None when nothing was changed (the user chose, no
    quota binds, or numba is already imported and has read its setting)."""
    if environ.get("NUMBA_NUM_THREADS") or "numba" in sys.modules:
        return None
    if usable_cpus is None:
        from joblib import cpu_count as usable_cpus
    if schedulable_cpus is None:
        schedulable_cpus = _schedulable_cpus
    usable = max(1, int(usable_cpus()))
    if usable >= schedulable_cpus():
        return None
    environ["NUMBA_NUM_THREADS"] = str(usable)
    return usable


def _schedulable_cpus() -> int:
    """numba's own default: the CPUs the process may be scheduled on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
