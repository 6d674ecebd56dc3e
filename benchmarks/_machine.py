"""What the benchmark scripts record about the machine they ran on, and its load."""

import datetime
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from typing import Any

import numba
import numpy as np

CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def package_version(package: str) -> str:
    """The installed version of ``package``: a distribution's name, or a module's, whichever
    distribution installed it
    (XGBoost's CPU-only wheel is the distribution ``xgboost-cpu``: asked by distribution name,
    it was recorded "not installed" beside the results it computed)."""
    for distribution in packages_distributions().get(package, [package]):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "not installed"


def machine_info() -> dict[str, Any]:
    """Date, CPUs, platform, library versions, numba threads and BLAS pools."""
    from threadpoolctl import threadpool_info

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_available": CPUS,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "sklearn": package_version("scikit-learn"),
        "shap": package_version("shap"),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _threading_layer(),
        "blas": ", ".join(
            f"{pool['internal_api']} {pool['version']} ({pool['num_threads']} threads)"
            for pool in threadpool_info()
            if pool["user_api"] == "blas"
        ),
    }


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        return "not initialised"


def system_busy_seconds() -> float | None:
    """CPU seconds used machine-wide since boot, steal included; None off Linux.

    The difference over a timed call, minus this process's own CPU time, is what other
    processes (or the hypervisor) took meanwhile: on a shared 2-core machine a second busy
    process halves a parallel kernel's speed, and this makes that visible.
    """
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """What other processes took of the CPUs from this object's making on (``fraction``):
    machine-wide busy CPU seconds less this process's own, over wall seconds x CPUs.

    A whole run's figure can hide contention in one part of it: a refinement run beside an
    offline experiment during its real-table section alone read 0.084 for the run, while that
    section's time ratios were 2-5 times a quiet run's (2026-12-07), so runs with parts also
    measure each part with one of these."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._busy = system_busy_seconds()

    def fraction(self) -> float | None:
        """The share so far, in [0, 1]; None off Linux."""
        busy = system_busy_seconds()
        seconds = time.perf_counter() - self._wall
        if self._busy is None or busy is None or seconds <= 0:
            return None
        own = time.process_time() - self._own
        return max(0.0, busy - self._busy - own) / (seconds * CPUS)
