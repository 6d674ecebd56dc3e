"""Where numba keeps the kernels' compiled code: a per-user cache directory, not the package.

numba's ``cache=True`` writes next to the kernels' sources by default. After ``pip install .``
that is ``site-packages/shapley_svc/kernels/__pycache__``, which pip did not install and so never
removes: a later ``pip install -e .`` of the same checkout leaves the folder behind, Python takes
``site-packages/shapley_svc`` for a namespace package that shadows the editable one, and
``shapley-svc serve`` fails with ``No module named 'shapley_svc.kernels.enumeration'`` (issue 16).
A cache outside every install also survives reinstalls: a cold compile of the kernels took 54 s
on 2 idle cores (issue 16), 183 s on 2 busy ones.
"""

import os
import sys
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
