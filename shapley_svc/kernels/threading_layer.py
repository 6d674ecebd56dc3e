"""Whether the parallel kernels may be launched from several threads at once.

numba runs ``parallel=True`` kernels on a threading layer it picks at the first launch: OpenMP
(``omp``, needs the system's ``libgomp.so.1``), TBB (``tbb``, the pip package) or its own
``workqueue``. Only the first two take launches from several threads at once; ``workqueue``
aborts the process ("Concurrent access has been detected"), whatever the thread counts. A
slim Debian image has no ``libgomp1``, and there numba falls back to ``workqueue`` silently: the
server answered one call, then died on 12 concurrent five-row Explains (QA 2026-12-06).

:func:`serialised` makes callers that may run kernels on several threads (the server's handler
and compute threads) take turns, only where the layer needs it.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numba
import numpy as np
from numba import prange

THREAD_SAFE_LAYERS = ("omp", "tbb")
_TURN = threading.RLock()
_LAYER: list[str] = []  # numba's layer, once a launch has chosen it


@numba.njit("void(float64[::1])", parallel=True, cache=True, nogil=True)
def _touch(out):
    for i in prange(out.size):
        out[i] = i


def threading_layer() -> str:
    """numba's threading layer, chosen by a first parallel launch if none has run yet."""
    if not _LAYER:
        with _TURN:
            if not _LAYER:
                _touch(np.empty(2))
                _LAYER.append(numba.threading_layer())
    return _LAYER[0]


def kernels_thread_safe() -> bool:
    """Whether parallel kernels may be launched from several threads at once."""
    return threading_layer() in THREAD_SAFE_LAYERS


@contextmanager
def serialised() -> Iterator[None]:
    """One caller at a time in this block where the threading layer cannot take concurrent
    launches (``workqueue``); no waiting where it can."""
    with nullcontext() if kernels_thread_safe() else _TURN:
        yield
