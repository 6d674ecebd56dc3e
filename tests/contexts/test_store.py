"""The context store alone: single flight, least-recently-used eviction by count and bytes."""

import concurrent.futures
import threading
import time

import pytest

from shapley_svc.contexts import Caller, ContextStore, StoredContext
from shapley_svc.errors import (
    CancelledError,
    DeadlineExceededError,
    LimitExceededError,
    NotFoundError,
)


def _entry(context_id: str, memory_bytes: int = 10, holds: object = None) -> StoredContext:
    return StoredContext(
        context_id, explainer=None, fit_seconds=0.0, memory_bytes=memory_bytes, holds=holds
    )


def test_concurrent_callers_for_one_id_share_one_build():
    store = ContextStore(max_contexts=4, max_bytes=1000)
    builds, building, release = [], threading.Event(), threading.Event()
    results = {}

    def build(_) -> StoredContext:
        builds.append(threading.current_thread().name)
        building.set()
        release.wait()
        return _entry("ctx-a")

    def call(name: str) -> None:
        results[name] = store.get_or_build("ctx-a", build)

    first = threading.Thread(target=call, args=("first",), name="first")
    first.start()
    building.wait()
    second = threading.Thread(target=call, args=("second",), name="second")
    second.start()
    second.join(0.5)  # a broken single flight would start a second build meanwhile
    assert second.is_alive(), "the second caller did not wait for the first one's build"
    release.set()
    first.join()
    second.join()
    assert builds == ["first"]
    # Both calls came before the context was held: both were answered by the one build.
    assert results["first"][1] and results["second"][1]
    assert results["first"][0] is results["second"][0]
    held, built = store.get_or_build("ctx-a", build)
    assert held is results["first"][0] and not built and builds == ["first"]


def test_a_waiting_caller_builds_in_turn_when_the_builder_fails():
    store = ContextStore(max_contexts=4, max_bytes=1000)

    def failing(_) -> StoredContext:
        raise RuntimeError("the fit failed")

    with pytest.raises(RuntimeError):
        store.get_or_build("ctx-a", failing)
    entry, built = store.get_or_build("ctx-a", lambda _: _entry("ctx-a"))
    assert built and store.get("ctx-a") is entry


def test_a_caller_waiting_for_another_s_build_stops_at_its_own_deadline_or_when_it_goes():
    """The waiter ignored both, holding its (gRPC handler) thread until the other caller's fit
    ended: a few impatient retries of a slow CreateContext took every worker thread."""
    store = ContextStore(max_contexts=4, max_bytes=1000)
    building, release = threading.Event(), threading.Event()

    def slow_build(_) -> StoredContext:
        building.set()
        release.wait(60)
        return _entry("ctx-a")

    builder = threading.Thread(target=store.get_or_build, args=("ctx-a", slow_build))
    builder.start()
    try:
        assert building.wait(10)
        waited = {}

        def wait_as(name: str, caller: Caller) -> None:
            start = time.monotonic()
            try:
                store.get_or_build("ctx-a", lambda _: _entry("ctx-a"), caller)
            except (DeadlineExceededError, CancelledError) as error:
                waited[name] = (type(error), time.monotonic() - start)

        gone = threading.Event()
        waiters = [
            threading.Thread(
                target=wait_as, args=("late", Caller(deadline=time.monotonic() + 0.2))
            ),
            threading.Thread(target=wait_as, args=("gone", Caller(should_stop=gone.is_set))),
        ]
        for waiter in waiters:
            waiter.start()
        gone.set()
        for waiter in waiters:
            waiter.join(10)  # the build is still under way
            assert not waiter.is_alive(), "a waiter outlasted its deadline or its caller"
        assert waited["late"][0] is DeadlineExceededError
        assert waited["gone"][0] is CancelledError
        assert max(seconds for _, seconds in waited.values()) < 5
        assert builder.is_alive()  # the build itself went on, for its own caller
    finally:
        release.set()
        builder.join()
    # A patient caller still gets the built context.
    entry, built = store.get_or_build("ctx-a", lambda _: _entry("ctx-a"), Caller())
    assert not built and entry is store.get("ctx-a")


def test_least_recently_used_contexts_are_evicted_by_count_and_by_bytes():
    store = ContextStore(max_contexts=2, max_bytes=100)
    for name in ("a", "b"):
        store.get_or_build(name, lambda _, name=name: _entry(name, 30))
    assert store.get("a") is not None  # "a" is now the most recently used
    store.get_or_build("c", lambda _: _entry("c", 30))
    entries, total = store.snapshot()
    assert [e.context_id for e in entries] == ["c", "a"] and total == 60
    store.get_or_build("d", lambda _: _entry("d", 80))  # 140 bytes: both older ones go
    entries, total = store.snapshot()
    assert [e.context_id for e in entries] == ["d"] and total == 80
    assert store.evictions == 3 and len(store) == 1


def test_a_context_larger_than_the_store_is_refused_and_not_held():
    store = ContextStore(max_contexts=2, max_bytes=100)
    with pytest.raises(LimitExceededError) as refused:
        store.get_or_build("big", lambda _: _entry("big", 101))
    assert refused.value.argument == "context" and "at most 100" in refused.value.problem
    assert store.get("big") is None and store.total_bytes == 0


def test_delete_frees_the_bytes():
    store = ContextStore(max_contexts=2, max_bytes=100)
    store.get_or_build("a", lambda _: _entry("a", 40))
    entry, freed = store.delete("a")
    assert entry.context_id == "a" and freed == 40
    assert store.delete("a") == (None, 0) and store.total_bytes == 0


def test_contexts_holding_the_same_members_count_them_once_until_the_last_goes():
    store = ContextStore(max_contexts=4, max_bytes=100)
    members = object()  # what a context and its weights-only calibration both hold
    store.get_or_build("a", lambda _: _entry("a", 60, holds=members))
    store.get_or_build("a-calibrated", lambda _: _entry("a-calibrated", 60, holds=members))
    assert store.total_bytes == 60  # counted twice, 120 bytes would have evicted "a"
    assert len(store) == 2 and store.evictions == 0
    # Another context of 50 bytes: 110 in all, so the least recently used goes, but that frees
    # nothing while the calibration still holds the members; then the calibration goes too.
    store.get_or_build("b", lambda _: _entry("b", 50))
    entries, total = store.snapshot()
    assert [e.context_id for e in entries] == ["b"] and total == 50
    assert store.evictions == 2


def test_deleting_one_of_two_contexts_sharing_members_frees_nothing():
    store = ContextStore(max_contexts=4, max_bytes=100)
    members = object()
    store.get_or_build("a", lambda _: _entry("a", 60, holds=members))
    store.get_or_build("a-calibrated", lambda _: _entry("a-calibrated", 60, holds=members))
    assert store.delete("a")[1] == 0 and store.total_bytes == 60
    assert store.delete("a-calibrated")[1] == 60 and store.total_bytes == 0


def test_what_a_context_grows_by_is_counted_once_per_holding_and_evicts_the_oldest():
    """Refinement's kept masks grow a held context after it was measured: the growth is
    counted once however many entries hold the same members and however often it is reported,
    and least recently used contexts go while the store is over its bytes, never one that
    holds what grew."""
    store = ContextStore(max_contexts=10, max_bytes=250)
    members = object()
    store.get_or_build("old", lambda _: _entry("old", 50))
    store.get_or_build("a", lambda _: _entry("a", 60, holds=members))
    calibrated, _ = store.get_or_build("a-cal", lambda _: _entry("a-cal", 60, holds=members))
    assert store.total_bytes == 110
    grown = store.count_growth(calibrated, 30)
    # Both entries that hold the members now say what the store counts for them.
    assert {entry.context_id for entry in grown} == {"a", "a-cal"}
    assert all((entry.memory_bytes, entry.grown_bytes) == (90, 30) for entry in grown)
    assert store.count_growth(store.get("a"), 30) == []  # the same members: already counted
    untouched = {entry.context_id: entry.memory_bytes for entry in store.snapshot()[0]}
    assert store.total_bytes == 140 and untouched["old"] == 50  # (snapshot: no use recorded)
    store.count_growth(calibrated, 20)  # less than counted: a release, counted
    assert store.total_bytes == 130 and store.get("a").memory_bytes == 80
    store.count_growth(calibrated, 100)
    assert store.total_bytes == 210
    store.count_growth(calibrated, 150)  # 260 is over the budget: "old" goes
    assert store.total_bytes == 210 and store.evictions == 1 and store.get("old") is None
    _, freed = store.delete("a")
    assert freed == 0  # the calibration still holds the members
    _, freed = store.delete("a-cal")
    assert freed == 210 and store.total_bytes == 0
    assert store.count_growth(calibrated, 500) == []  # no longer held: not counted
    assert store.total_bytes == 0


def test_a_context_measured_after_it_grew_is_not_counted_twice():
    store = ContextStore(max_contexts=10, max_bytes=1000)
    entry, _ = store.get_or_build("a", lambda _: _entry("a", 90))
    entry.grown_bytes = 30  # of its 90 bytes, 30 grew after the fit
    store.delete("a")
    entry, _ = store.get_or_build("a", lambda _: entry)
    store.count_growth(entry, 30)
    assert store.total_bytes == 90
    store.count_growth(entry, 40)
    assert store.total_bytes == 100
    store.count_growth(entry, 2000)  # over the whole budget, but the last context stays
    assert store.get("a") is entry and store.total_bytes == 2060


def test_growth_never_evicts_the_context_that_grew():
    """The context that grew was evicted in the middle of its call when another was used after
    it; and whether the growth fits at all is asked before anything is evicted for it."""
    store = ContextStore(max_contexts=10, max_bytes=200)
    grower, _ = store.get_or_build("a", lambda _: _entry("a", 80))
    store.get_or_build("b", lambda _: _entry("b", 60))
    store.get("b")  # used after "a": "a" is the least recently used
    assert store.room_for_growth(grower, 120) and not store.room_for_growth(grower, 121)
    store.count_growth(grower, 100)  # 240: over, and "b" goes, not "a"
    assert store.get("b") is None and store.get("a") is grower
    assert store.total_bytes == 180 and store.evictions == 1


def _on_a_thread(build, should_stop):
    """The service's way to run a build: on a thread of its own, its future returned."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(build, should_stop)
    pool.shutdown(wait=False)
    return future


def test_a_build_goes_on_for_a_caller_still_waiting_when_its_starter_leaves():
    """The starter's deadline fell near the end of its fit while another caller waited: the fit
    was told to stop (or thrown away when past its last poll) and the waiter fitted the context
    again (QA, 2026-12-05: 2 of 9 trials)."""
    store = ContextStore(max_contexts=4, max_bytes=1000)
    builds, release, told = [], threading.Event(), []

    def build(should_stop) -> StoredContext:
        builds.append(1)
        release.wait(30)
        told.append(should_stop())
        return _entry("ctx-a")

    starter = Caller(deadline=time.monotonic() + 0.3)
    result = {}

    def patient() -> None:
        time.sleep(0.05)
        result["waiter"] = store.get_or_build("ctx-a", build, Caller(), _on_a_thread)

    waiter = threading.Thread(target=patient)
    waiter.start()
    with pytest.raises(DeadlineExceededError, match="while the context was being built"):
        store.get_or_build("ctx-a", build, starter, _on_a_thread)
    release.set()
    waiter.join(10)
    entry, built = result["waiter"]
    assert builds == [1], "the waiter built the context again"
    assert told == [False], "the build was told to stop while a caller still waited for it"
    assert entry is store.get("ctx-a") and built  # during its call, by the starter's build


def test_a_build_every_caller_left_is_told_to_stop_and_kept_if_it_finished_anyway():
    store = ContextStore(max_contexts=4, max_bytes=1000)
    release, told = threading.Event(), []

    def build(should_stop) -> StoredContext:
        release.wait(30)
        told.append(should_stop())
        return _entry("ctx-a")  # past its last poll: it finishes all the same

    with pytest.raises(DeadlineExceededError):
        store.get_or_build("ctx-a", build, Caller(deadline=time.monotonic() + 0.2), _on_a_thread)
    release.set()
    deadline = time.monotonic() + 10
    while store.get("ctx-a") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert told == [True]
    entry, built = store.get_or_build("ctx-a", lambda _: pytest.fail("built again"), Caller())
    assert entry.context_id == "ctx-a" and not built  # a retry finds it


def test_a_queued_build_whose_callers_all_left_never_starts_and_is_built_for_the_next():
    store = ContextStore(max_contexts=4, max_bytes=1000)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    hold = threading.Event()
    pool.submit(hold.wait, 30)  # the one compute thread is busy
    started = []

    def build(should_stop) -> StoredContext:
        started.append(1)
        return _entry("ctx-a")

    def queued(build, should_stop):
        return pool.submit(build, should_stop)

    with pytest.raises(DeadlineExceededError):
        store.get_or_build("ctx-a", build, Caller(deadline=time.monotonic() + 0.2), queued)
    hold.set()
    entry, built = store.get_or_build("ctx-a", build, Caller(), queued)
    pool.shutdown()
    assert started == [1] and built and entry is store.get("ctx-a")


def _joined_while_building(
    store, first_build, second_build, *, first_caller=None, second_caller=None, run=None
):
    """``first_build`` started by one thread; a second caller joins while it runs (by default
    on the first caller's thread, else on ``run``'s). What each got: (entry, built) or the
    exception."""
    building, release, got = threading.Event(), threading.Event(), {}

    def first(should_stop):
        building.set()
        release.wait(30)
        return first_build(should_stop)

    def call(name, build, caller):
        try:
            got[name] = store.get_or_build("ctx-a", build, caller, run)
        except Exception as error:
            got[name] = error

    one = threading.Thread(target=call, args=("first", first, first_caller or Caller()))
    one.start()
    assert building.wait(10)
    two = threading.Thread(target=call, args=("second", second_build, second_caller or Caller()))
    two.start()
    time.sleep(0.2)  # the second caller is waiting
    release.set()
    one.join(10)
    two.join(10)
    return got


def test_a_caller_that_joined_a_load_which_found_nothing_builds_in_turn():
    """A CreateContext that joined a load by id of a damaged saved copy was told NOT_FOUND,
    naming a field it does not have (QA, 2026-12-06)."""
    store = ContextStore(max_contexts=4, max_bytes=1000)

    def load(_):
        raise NotFoundError("context_id", "'ctx-a' is not held")

    got = _joined_while_building(store, load, lambda _: _entry("ctx-a"))
    assert isinstance(got["first"], NotFoundError)
    entry, built = got["second"]
    assert built and store.get("ctx-a") is entry


def test_callers_sharing_a_failed_build_each_raise_their_own_copy_of_its_error():
    store = ContextStore(max_contexts=4, max_bytes=1000)

    def failing(_):
        raise LimitExceededError("context", "too large")

    for run in (None, _on_a_thread):
        got = _joined_while_building(store, failing, lambda _: pytest.fail("built again"), run=run)
        first, second = got["first"], got["second"]
        assert isinstance(first, LimitExceededError) and isinstance(second, LimitExceededError)
        assert first is not second and (first.argument, first.problem) == ("context", "too large")
        assert (second.argument, second.problem) == ("context", "too large")


def test_a_caller_leaving_a_build_on_its_starter_s_thread_gets_its_deadline():
    """With the default run the build runs on its starter's thread and has no future yet: a
    joiner whose deadline passed raised AttributeError (QA, 2026-12-06)."""
    store = ContextStore(max_contexts=4, max_bytes=1000)
    got = _joined_while_building(
        store,
        lambda _: _entry("ctx-a"),
        lambda _: pytest.fail("built again"),
        second_caller=Caller(deadline=time.monotonic() + 0.1),
        first_caller=Caller(deadline=time.monotonic() + 0.05),  # both gone before the build ends
    )
    assert isinstance(got["second"], DeadlineExceededError)
    assert got["first"][1] and store.get("ctx-a") is got["first"][0]


def test_callers_that_leave_are_no_longer_held_by_the_build():
    store = ContextStore(max_contexts=4, max_bytes=1000)
    release, seen = threading.Event(), []

    def build(should_stop) -> StoredContext:
        release.wait(30)
        seen.append(len(store._building["ctx-a"].callers))
        return _entry("ctx-a")

    starter = threading.Thread(target=store.get_or_build, args=("ctx-a", build, Caller()))
    starter.start()
    for _ in range(5):  # impatient retries while the build runs
        with pytest.raises(DeadlineExceededError):
            store.get_or_build("ctx-a", build, Caller(deadline=time.monotonic() + 0.05))
    release.set()
    starter.join(10)
    assert seen == [1]
