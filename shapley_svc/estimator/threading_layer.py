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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numba
import numpy as np

from shapley_svc.kernels.threading_probe import touch

THREAD_SAFE_LAYERS = ("omp", "tbb")
_TURN = threading.RLock()
_LAYER: list[str] = []  # numba's layer, once a launch has chosen it


def threading_layer() -> str:
    """numba's threading layer, chosen by a first parallel launch if none has run yet."""
    if not _LAYER:
        with _TURN:
            if not _LAYER:
                touch(np.empty(2))
                _LAYER.append(numba.threading_layer())
    return _LAYER[0]


def kernels_thread_safe() -> bool:
    """Whether parallel kernels may be launched from several threads at once."""
    return threading_layer() in THREAD_SAFE_LAYERS


class TurnAbandoned(Exception):
    """``serialised``'s ``give_up`` said to stop waiting for the turn."""


# How often a caller waiting for its turn asks ``give_up``.
_WAIT_POLL_SECONDS = 0.05


@contextmanager
def serialised(give_up: Callable[[], bool] | None = None) -> Iterator[None]:
    """One caller at a time in this block where the threading layer cannot take concurrent
    launches (``workqueue``); no waiting where it can. A caller waiting for its turn asks
    ``give_up`` every 50 ms and raises ``TurnAbandoned`` when it says so: waiting without end,
    small calls past their deadline held every handler thread behind one long fit."""
    if kernels_thread_safe():
        yield
        return
    while not _TURN.acquire(timeout=_WAIT_POLL_SECONDS):
        if give_up is not None and give_up():
            raise TurnAbandoned("gave up waiting for a turn on the kernels")
    try:
        yield
    finally:
        _TURN.release()
