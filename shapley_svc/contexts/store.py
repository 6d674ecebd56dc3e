"""Fitted contexts held in memory, bounded in count and bytes, least recently used evicted.

Concurrent requests for the same content address share one fit: the first starts it, and every
caller waits for it until its own deadline or until it goes away. The fit goes on while any of
them still waits, and what it makes is stored even when all have gone (a retry finds it). A
context larger than the whole byte budget is refused rather than stored. Contexts that hold the
same fitted members (a context and its weights-only calibration) count those bytes once: they are
freed when the last of them goes.
"""

import concurrent.futures
import copy
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shapley_svc.contexts.spec import PATIENT, STOPPING, Caller
from shapley_svc.errors import (
    CancelledError,
    DeadlineExceededError,
    LimitExceededError,
    NotFoundError,
    UnavailableError,
)

# How often a caller waiting for another caller's build looks at its own ``should_stop``.
WAIT_POLL_SECONDS = 0.1


@dataclass(eq=False)
class StoredContext:
    """A fitted context: its content address, the fitted ``ZeroShotExplainer``, what the fit
    took, ``memory_bytes`` what it holds, ``description``: whatever the service's ``describe``
    made of it after the fit, and again when what it holds grew (the server's ContextInfo
    message), so that it is not rebuilt on every request, ``holds``: the object
    ``memory_bytes`` measures, when other entries may hold the same one (None: this entry's
    alone), and ``grown_bytes``: what of ``memory_bytes`` the object built after its fit (see
    ``ContextStore.count_growth``)."""

    context_id: str
    explainer: Any
    fit_seconds: float
    memory_bytes: int
    description: Any = None
    holds: Any = None
    grown_bytes: int = 0
    # Whether it was loaded from, or saved in, the service's context_dir: then its saved copy
    # going (another replica's DeleteContext) means it is deleted here too.
    saved: bool = False


class ContextStore:
    def __init__(self, max_contexts: int, max_bytes: int):
        self.max_contexts = max_contexts
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, StoredContext] = OrderedDict()
        self._bytes = 0
        # id of what entries hold -> [its bytes, how many entries hold it, the bytes it has
        # grown by, counted in the first]; an entry keeps what it holds alive, so the id is not
        # reused while it is listed here.
        self._held: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._building: dict[str, _Build] = {}
        self.evictions = 0

    def get(self, context_id: str) -> StoredContext | None:
        with self._lock:
            entry = self._entries.get(context_id)
            if entry is not None:
                self._entries.move_to_end(context_id, last=False)
            return entry

    def get_or_build(
        self,
        context_id: str,
        build: Callable[[Callable[[], bool]], StoredContext],
        caller: Caller = PATIENT,
        run: Callable[..., concurrent.futures.Future] | None = None,
    ) -> tuple[StoredContext, bool]:
        """The held context, or the one ``build(should_stop)`` makes (stored); and whether it
        was built during this call (False: it was held already). A caller that waited for
        another's build is told True as well, as the proto's ``created`` says: which of the
        callers started it is chance, and the starter may have gone before it ended.

        ``run(build, should_stop)`` starts it and returns its future (by default it runs here,
        at once). A concurrent caller for the same id waits for the same build. Each caller
        waits until its own deadline (``DeadlineExceededError``) or until it goes away
        (``CancelledError``); the build's ``should_stop`` turns True only once every caller
        waiting for it has, so that one impatient caller does not throw away a fit another
        still waits for (QA, 2026-12-05: a waiter fitted the context again in 2 of 9 trials
        where the first caller's deadline fell near the end of its fit). A build that finishes
        after all its callers left is stored all the same. A build that fails gives its error
        (a copy each) to every caller waiting for it, but for ``NotFoundError`` (a load by id
        found nothing loadable: a waiting caller builds in turn, as it may fit the context);
        one that stopped because nobody waited is started again by a caller that comes
        meanwhile.
        """
        start = _run_here if run is None else run
        while True:
            _check_waiting(caller, "before the context was built")
            with self._lock:
                entry = self._entries.get(context_id)
                if entry is not None:
                    self._entries.move_to_end(context_id, last=False)
                    return entry, False
                pending = self._building.get(context_id)
                started = pending is None
                if started:
                    pending = self._building[context_id] = _Build()
                pending.callers = (*pending.callers, caller)
            if started:
                try:
                    pending.future = start(build, pending.unwanted)
                except BaseException as error:
                    pending.future = concurrent.futures.Future()
                    pending.future.set_exception(error)
                pending.future.add_done_callback(
                    lambda done, pending=pending: self._built(context_id, pending, done)
                )
            try:
                _wait_for_build(pending.finished, caller)
            except (CancelledError, DeadlineExceededError):
                with self._lock:  # its Caller (and what that holds) is not kept alive
                    pending.callers = tuple(c for c in pending.callers if c is not caller)
                # (None while the default ``run`` is still building on the starter's thread.)
                if pending.unwanted() and pending.future is not None:
                    pending.future.cancel()  # still queued: it never starts
                raise
            if pending.entry is not None:
                return pending.entry, True
            if not started and isinstance(pending.error, NotFoundError):
                # A load by id found nothing loadable (a damaged copy, another artifact's): a
                # caller that came with the data fits it instead (QA, 2026-12-06: a
                # CreateContext that joined such a load was told NOT_FOUND).
                continue
            if pending.told_to_stop and isinstance(
                pending.error, (CancelledError, DeadlineExceededError)
            ):
                # The build noticed before this caller did that it had gone; or it stopped for
                # want of callers as this one came: then it is built again.
                _check_waiting(caller, "while the context was being built")
                continue
            raise _own_copy(pending.error)

    def _built(self, context_id: str, pending: "_Build", done: concurrent.futures.Future) -> None:
        """The build of ``context_id`` has ended: its entry stored, or its error kept for its
        callers, and the id free to build again."""
        try:
            entry = done.result()
            self._put(entry)
            pending.entry = entry
        except concurrent.futures.CancelledError:  # dropped from the compute queue
            pending.error = (
                CancelledError("every caller of the build went away before it started")
                if pending.told_to_stop
                else UnavailableError(STOPPING)
            )
        except BaseException as error:  # every caller waiting hears it
            pending.error = error
        finally:
            with self._lock:
                if self._building.get(context_id) is pending:
                    del self._building[context_id]
            pending.finished.set()

    def check_room(self, entry: StoredContext, argument: str = "context") -> None:
        """Refuse a context larger than the whole byte budget: it could never be held.
        ``argument`` names what the caller gave for it (the context itself, or its id)."""
        if entry.memory_bytes > self.max_bytes:
            raise LimitExceededError(
                argument,
                f"{entry.context_id} needs {entry.memory_bytes} bytes; the store holds at most "
                f"{self.max_bytes}",
            )

    def _put(self, entry: StoredContext) -> None:
        self.check_room(entry)
        with self._lock:
            self._entries[entry.context_id] = entry
            self._entries.move_to_end(entry.context_id, last=False)
            self._hold(entry)
            while len(self._entries) > self.max_contexts or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=True)
                self._release(evicted)
                self.evictions += 1

    def delete(self, context_id: str) -> tuple[StoredContext | None, int]:
        """The context removed (None if not held) and the bytes that freed: none while another
        held context shares its members."""
        with self._lock:
            entry = self._entries.pop(context_id, None)
            return entry, 0 if entry is None else self._release(entry)

    def drop(self, entry: StoredContext) -> bool:
        """Remove ``entry`` if it is still the one held under its id (not another built since);
        whether it was."""
        with self._lock:
            if self._entries.get(entry.context_id) is not entry:
                return False
            del self._entries[entry.context_id]
            self._release(entry)
            return True

    def room_for_growth(self, entry: StoredContext, grown_bytes: int) -> bool:
        """Whether ``entry``'s context, grown to ``grown_bytes`` of what it built after its fit,
        would still fit in the byte budget on its own (else its cache is to be released, not
        counted: other contexts were evicted for a cache then released anyway)."""
        with self._lock:
            held = self._held.get(id(_holding(entry)))
            return held is None or held[0] - held[2] + grown_bytes <= self.max_bytes

    def count_growth(self, entry: StoredContext, grown_bytes: int) -> list[StoredContext]:
        """Count what ``entry``'s context has built since it was measured, ``grown_bytes`` in
        all (refinement's kept masks: made on first use, so that contexts never refined do not
        hold them, and released when they alone would pass the budget): once per held object,
        however many entries hold it and however often this is called; then evict least
        recently used contexts, never one that holds the same object, while over the byte
        budget. A context no longer held is not counted. Returns the entries whose
        ``memory_bytes`` (and ``grown_bytes``) this changed: every held one that holds the same
        object, so that what they say they hold is what the store counts."""
        with self._lock:
            holding = _holding(entry)
            held = self._held.get(id(holding))
            if held is None or grown_bytes == held[2]:
                return []
            self._bytes += grown_bytes - held[2]
            held[0] += grown_bytes - held[2]
            held[2] = grown_bytes
            grown = [other for other in self._entries.values() if _holding(other) is holding]
            for other in grown:
                other.memory_bytes, other.grown_bytes = held[0], held[2]
            while self._bytes > self.max_bytes:
                # The least recently used context that does not hold what grew: the one that
                # grew was evicted in the middle of its call when another was used after it.
                victim = next(
                    (key for key, other in reversed(self._entries.items())
                     if _holding(other) is not holding),
                    None,
                )  # fmt: skip
                if victim is None:
                    break
                self._release(self._entries.pop(victim))
                self.evictions += 1
            return grown

    def _hold(self, entry: StoredContext) -> None:
        held = self._held.setdefault(
            id(_holding(entry)), [entry.memory_bytes, 0, entry.grown_bytes]
        )
        if held[1] == 0:
            self._bytes += held[0]
        held[1] += 1

    def _release(self, entry: StoredContext) -> int:
        key = id(_holding(entry))
        held = self._held[key]
        held[1] -= 1
        if held[1] > 0:
            return 0
        del self._held[key]
        self._bytes -= held[0]
        return held[0]

    def snapshot(self) -> tuple[list[StoredContext], int]:
        """Held contexts, most recently used first, and their total bytes."""
        with self._lock:
            return list(self._entries.values()), self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._bytes


@dataclass(eq=False)
class _Build:
    """A build under way: the callers waiting for it, and what it ended with."""

    callers: tuple[Caller, ...] = ()
    future: concurrent.futures.Future | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    entry: StoredContext | None = None
    error: BaseException | None = None
    # Whether ``unwanted`` ever said so: the build was told to stop.
    told_to_stop: bool = False

    def unwanted(self) -> bool:
        """Whether every caller waiting for the build has gone or passed its deadline (or left:
        callers that stop waiting are taken off ``callers``)."""
        if all(_gone(caller) for caller in self.callers):
            self.told_to_stop = True
        return self.told_to_stop


def _run_here(
    build: Callable[[Callable[[], bool]], StoredContext], should_stop: Callable[[], bool]
) -> concurrent.futures.Future:
    done: concurrent.futures.Future = concurrent.futures.Future()
    try:
        done.set_result(build(should_stop))
    except BaseException as error:
        done.set_exception(error)
    return done


def _own_copy(error: BaseException) -> BaseException:
    """``error`` as one caller raises it: a copy of its own with the build's traceback, so that
    the callers sharing a failed build do not each add their frames to one object (and keep the
    others' alive through it)."""
    try:
        own = copy.copy(error)
    except Exception:  # an exception that does not copy is shared as it is
        return error
    own.__cause__, own.__suppress_context__ = error.__cause__, error.__suppress_context__
    return own.with_traceback(error.__traceback__)


def _gone(caller: Caller) -> bool:
    left = caller.seconds_left()
    return (left is not None and left <= 0) or caller.should_stop()


def _check_waiting(caller: Caller, when: str) -> None:
    remaining = caller.seconds_left()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError(f"deadline expired {when}")
    if caller.should_stop():
        raise CancelledError(f"the caller went away {when}")


def _wait_for_build(finished: threading.Event, caller: Caller) -> None:
    """Wait for the build of a context, for as long as ``caller`` waits: in slices of at most
    ``WAIT_POLL_SECONDS``, so that a caller that goes away stops waiting soon after (and gives
    its thread back) rather than when the build ends."""
    while not finished.is_set():
        _check_waiting(caller, "while the context was being built")
        remaining = caller.seconds_left()
        finished.wait(
            WAIT_POLL_SECONDS if remaining is None else max(0.0, min(WAIT_POLL_SECONDS, remaining))
        )


def _holding(entry: StoredContext) -> object:
    return entry if entry.holds is None else entry.holds
