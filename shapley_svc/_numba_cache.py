"""Where numba keeps the kernels' compiled code: a per-user cache directory, not the package.

numba's ``cache=True`` writes next to the kernels' sources by default. After ``pip install .``
that is ``site-packages/shapley_svc/kernels/__pycache__``, which pip did not install and so never
removes: a later ``pip install -e .`` of the same checkout leaves the folder behind, Python takes
``site-packages/shapley_svc`` for a namespace package that shadows the editable one, and
``shapley-svc serve`` fails with ``No module named 'shapley_svc.kernels.enumeration'`` (issue 16).
A cache outside every install also survives reinstalls: a cold compile of the kernels took 54 s
on 2 idle cores (issue 16), 183 s on 2 busy ones.
"""

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path


def numba_cache_dir(environ: Mapping[str, str]) -> str:
    """The user's own ``NUMBA_CACHE_DIR`` (the container image sets one), else
    ``$XDG_CACHE_HOME/shapley-svc/numba``, else ``~/.cache/shapley-svc/numba``."""
    if environ.get("NUMBA_CACHE_DIR"):
        return environ["NUMBA_CACHE_DIR"]
    base = environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return str(Path(base) / "shapley-svc" / "numba")


def use_user_cache(environ: MutableMapping[str, str] = os.environ) -> None:
    """Point numba at :func:`numba_cache_dir` before it first compiles a kernel.

    numba reads ``NUMBA_CACHE_DIR`` once, when it is imported, and the kernels import it after
    this package's ``__init__`` has run; setting the variable (rather than importing numba to set
    its config) keeps ``shapley-svc --help`` and ``health`` free of numba's import (0.6-2.2 s
    measured on 2 busy cores). Where
    numba cannot create the directory it falls back to its default places, as before.
    """
    environ["NUMBA_CACHE_DIR"] = numba_cache_dir(environ)
    numba = sys.modules.get("numba")
    if numba is not None:  # imported before this package: its configuration is already read
        numba.config.CACHE_DIR = environ["NUMBA_CACHE_DIR"]


# --- a cold cache, filled by parallel processes --------------------------------------------------
# numba compiles one kernel at a time (a cold start took 76 s in one process on 2 idle cores,
# 2026-12-05), but the kernel modules are independent: processes that each import some of them
# fill the cache side by side, and the server then loads every kernel from it.

# Each kernel module's cold compile in one process (2 idle cores, 2026-12-05 afternoon, when the
# same machine compiled the previous kernels in 114 s against 89 s that morning), seconds: what
# the processes' shares are balanced on. A module missing here is compiled by the server itself.
KERNEL_COMPILE_SECONDS = {
    "coalitions": 24.7,
    "link_additive": 14.9,
    "leaf_tables": 12.0,
    "pair_regression": 11.1,
    "treeshap": 5.5,
    "sampling": 3.9,
    "product_games": 3.7,
    "combine": 3.7,
    "tree_outputs": 3.4,
    "enumeration": 3.2,
    "splines": 1.8,
    "threading_probe": 0.7,  # measured alone, 2026-12-06, on 2 busy cores
}
# Modules a kernel module imports: compiled in the same process, never twice.
KERNEL_IMPORTS = {"coalitions": ("tree_outputs",)}
KERNELS_FOLDER = Path(__file__).resolve().parent / "kernels"


def kernels_cache_folder(environ: Mapping[str, str] = os.environ) -> Path:
    """Where numba keeps the kernels of this install: numba's user-cache layout, a folder per
    source folder named by its name and the SHA-1 of its absolute path (numba 0.5x-0.6x)."""
    source = os.path.abspath(KERNELS_FOLDER)
    digest = hashlib.sha1(source.encode()).hexdigest()
    return Path(numba_cache_dir(environ)) / f"{Path(source).name}_{digest}"


def cold_kernel_groups(processes: int, environ: Mapping[str, str] = os.environ) -> list[list[str]]:
    """The kernel modules without an index in numba's cache, shared among at most
    ``processes`` processes by their compile times (longest first, each to the least loaded);
    [] when fewer than two processes would have work, or where numba cannot write its cache
    (it then falls back to other places, which processes started here would fill in vain)."""
    folder = kernels_cache_folder(environ)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        cached = {name.split(".")[0] for name in os.listdir(folder)}
    except OSError:
        return []
    if not os.access(folder, os.W_OK):
        return []
    cold = {name for name in KERNEL_COMPILE_SECONDS if name not in cached}
    units = [
        [name, *(m for m in KERNEL_IMPORTS.get(name, ()) if m in cold)]
        for name in sorted(cold, key=lambda name: -KERNEL_COMPILE_SECONDS[name])
        if not any(name in KERNEL_IMPORTS.get(other, ()) for other in cold)
    ]
    loads = [[0.0, []] for _ in range(max(1, min(processes, len(units))))]
    for unit in units:
        lightest = min(loads, key=lambda load: load[0])
        lightest[0] += sum(KERNEL_COMPILE_SECONDS[name] for name in unit)
        lightest[1].extend(unit)
    groups = [names for _, names in loads if names]
    return groups if len(groups) > 1 else []


def compile_in_processes(
    groups: list[list[str]], timeout: float = 900.0, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """Import each group of kernel modules in its own Python process (numba compiles them and
    writes its cache), and wait for all; returns a line per process that failed or timed out.
    A module a process did not cache is compiled later by whoever imports it, so a failure here
    costs time, not correctness."""
    env = {**environ, "NUMBA_CACHE_DIR": numba_cache_dir(environ)}
    # The processes must import this very package, not another copy of it: numba caches per
    # source folder. `python -c` puts its working directory first on sys.path, so they start in
    # the folder that holds this package (a user who ran `pip install .` in a checkout starts
    # the server there, beside the checkout's copy).
    package_root = str(Path(__file__).resolve().parent.parent)
    started = []
    try:
        for names in groups:
            code = "import " + ", ".join(f"shapley_svc.kernels.{name}" for name in names)
            started.append(
                (
                    names,
                    subprocess.Popen(
                        [sys.executable, "-c", code],
                        cwd=package_root,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
        deadline = time.monotonic() + timeout
        failures = []
        for names, process in started:
            try:
                _, error = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failures.append(f"{', '.join(names)}: not compiled within {timeout:.0f} s")
                continue
            if process.returncode != 0:
                last = (error or "").strip().splitlines()[-1:] or ["no output"]
                failures.append(f"{', '.join(names)}: exit {process.returncode}: {last[0]}")
        return failures
    finally:
        for _, process in started:  # a timeout, or an interrupt while waiting
            if process.poll() is None:
                process.kill()
                process.wait()
