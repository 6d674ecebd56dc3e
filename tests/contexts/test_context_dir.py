"""Contexts saved in a shared directory: another service (a replica, a restarted server) loads
them instead of refitting or answering not found."""

import errno
import logging
import os
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from shapley_svc.contexts import ContextService, ContextSpec
from shapley_svc.contexts import service as service_module
from shapley_svc.errors import (
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    StorageError,
)
from shapley_svc.estimator.persistence import ARRAYS, MANIFEST
from tests.contexts.test_context_service import LIMITS
from tests.server.conftest import make_task

X, P = make_task(n=150, d=4, seed=5)
X[::7, 1] = np.nan


@pytest.fixture
def replicas(tmp_path):
    started = [ContextService(LIMITS, 1, context_dir=tmp_path / "contexts") for _ in range(2)]
    yield started
    for service in started:
        service.shutdown()


def test_a_replica_loads_a_context_another_fitted(replicas, tmp_path):
    first, second = replicas
    entry, created = first.get_or_create(ContextSpec(X, P))
    assert created and (tmp_path / "contexts" / entry.context_id / ARRAYS).exists()
    loaded = second.get(entry.context_id)
    assert second.contexts_loaded == 1 and first.contexts_loaded == 0
    ours, theirs = first.explain(entry, X[:20], P[:20]), second.explain(loaded, X[:20], P[:20])
    assert np.array_equal(ours.values, theirs.values)
    assert np.array_equal(ours.uncertainty, theirs.uncertainty)
    # Asked to create it, a third service loads the saved one instead of fitting.
    third = ContextService(LIMITS, 1, context_dir=tmp_path / "contexts")
    again, created = third.get_or_create(ContextSpec(X, P))
    assert third.contexts_loaded == 1 and again.context_id == entry.context_id
    third.shutdown()


def test_a_damaged_saved_context_is_refitted_not_served(replicas, tmp_path):
    first, second = replicas
    entry, _ = first.get_or_create(ContextSpec(X, P))
    saved = tmp_path / "contexts" / entry.context_id / ARRAYS
    saved.write_bytes(saved.read_bytes()[:-5] + b"xxxxx")
    with pytest.raises(NotFoundError, match="is not held by this server"):
        second.get(entry.context_id)
    refitted, created = second.get_or_create(ContextSpec(X, P))
    assert created and second.contexts_loaded == 0
    # The refit saved it again, whole.
    third = ContextService(LIMITS, 1, context_dir=tmp_path / "contexts")
    assert third.get(entry.context_id).context_id == refitted.context_id
    third.shutdown()


def test_only_content_addresses_reach_the_directory(replicas, tmp_path):
    first, _ = replicas
    (tmp_path / "outside").mkdir()
    for context_id in ("../outside", "ctx-" + "0" * 40, "ctx-../../outside"):
        with pytest.raises(NotFoundError):
            first.get(context_id)
    assert (tmp_path / "outside").exists()


def test_delete_forgets_the_saved_copy(replicas, tmp_path):
    first, second = replicas
    entry, _ = first.get_or_create(ContextSpec(X, P))
    first.delete(entry.context_id)
    assert not (tmp_path / "contexts" / entry.context_id).exists()
    with pytest.raises(NotFoundError):
        second.get(entry.context_id)


def _hidden_entries(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def _refuse_with(error: BaseException):
    def save(explainer, path, **options):
        raise error

    return save


@pytest.mark.parametrize(
    "failure",
    ["directory replaced by a file", "read-only volume", "pruned during the save", "refused"],
)
def test_a_context_whose_save_fails_is_held_served_counted_and_logged(
    tmp_path, monkeypatch, caplog, failure
):
    """Every fit and calibration failed (INTERNAL at the server) and its context was thrown
    away when the directory could not be written: the context is what was asked for, the save
    only a cache for the replicas."""
    folder = tmp_path / "contexts"
    service = ContextService(LIMITS, 1, context_dir=folder)
    if failure == "directory replaced by a file":
        folder.rmdir()
        folder.write_text("not a directory")
    elif failure == "read-only volume":  # root writes through file modes: the OS error itself
        error = PermissionError(errno.EACCES, "Permission denied", str(folder))
        monkeypatch.setattr(service_module, "save_explainer", _refuse_with(error))
    elif failure == "pruned during the save":
        error = FileNotFoundError(errno.ENOENT, "No such file or directory", str(folder))
        monkeypatch.setattr(service_module, "save_explainer", _refuse_with(error))
    else:  # the estimator's refusal of a path it cannot use
        error = InvalidArgumentError("path", f"{folder}: cannot hold a saved explainer")
        monkeypatch.setattr(service_module, "save_explainer", _refuse_with(error))
    caplog.set_level(logging.WARNING, logger="shapley_svc.contexts")
    try:
        entry, created = service.get_or_create(ContextSpec(X, P))
        assert created and service.get(entry.context_id) is entry
        assert service.explain(entry, X[:3], P[:3]).values.shape == (3, 4)
        rows = np.nan_to_num(entry.explainer.propose_calibration().rows)  # X has missing values
        outputs = np.sin(rows[:, 0]) + rows[:, 1]
        calibrated, built = service.calibrate(entry, None, None, outputs)
        assert built and service.get(calibrated.context_id) is calibrated
        assert service.contexts_fitted == service.contexts_calibrated == 1
        assert service.contexts_unsaved == 2
        warnings = [record.getMessage() for record in caplog.records]
        assert len(warnings) == 2, warnings  # once per failed save
        ids = (entry.context_id, calibrated.context_id)
        for context_id, warning in zip(ids, warnings, strict=True):
            assert f"{context_id} is held but was not saved in {folder / context_id}" in warning
        problem = {
            "directory replaced by a file": "Not a directory",
            "read-only volume": "Permission denied",
            "pruned during the save": "No such file or directory",
            "refused": "cannot hold a saved explainer",
        }[failure]
        assert all(problem in warning for warning in warnings), warnings
        if failure != "directory replaced by a file":
            assert list(folder.iterdir()) == []  # no partial save left behind
    finally:
        service.shutdown()


def test_a_save_is_written_aside_and_renamed_into_place_whole(replicas, tmp_path, monkeypatch):
    """A loader (another replica) never sees a saved context's directory half written: the save
    goes to a hidden name no loader takes, then is renamed under the context's id. A copy that
    another replica saved meanwhile is kept (it holds the same context): replacing it moved it
    aside for a moment, in which the replicas holding it dropped it as deleted."""
    from shapley_svc.estimator import persistence

    first, second = replicas
    final = tmp_path / "contexts" / first.content_id(ContextSpec(X, P))
    publish = persistence._publish
    seen = []

    def publish_while_looking(partial, target, keep_existing=False):
        seen.append((partial, target, final.exists(), sorted(os.listdir(partial))))
        publish(partial, target, keep_existing)

    monkeypatch.setattr(persistence, "_publish", publish_while_looking)
    entry, _ = first.get_or_create(ContextSpec(X, P))
    [(partial, target, before, written)] = seen
    assert partial.parent == final.parent and partial.name.startswith(".") and target == final
    assert not before and written == [ARRAYS, MANIFEST]  # whole before it takes its name
    assert (final / ARRAYS).exists() and _hidden_entries(final.parent) == []
    # A second replica that fitted it too (it found no saved copy before its fit) keeps the
    # copy saved meanwhile, and a replica holding it never sees it missing.
    saved_copy = final.stat().st_ino
    loaded_elsewhere = ContextService(LIMITS, 1, context_dir=final.parent)
    held = loaded_elsewhere.get(entry.context_id)
    real_saved = second._saved
    monkeypatch.setattr(second, "_saved", lambda context_id: None)
    _, created = second.get_or_create(ContextSpec(X, P))
    monkeypatch.setattr(second, "_saved", real_saved)
    assert created and second.contexts_unsaved == 0 and len(seen) == 2
    assert seen[1][2] and final.stat().st_ino == saved_copy  # never moved aside
    assert _hidden_entries(final.parent) == []
    assert loaded_elsewhere.get(entry.context_id) is held
    loaded_elsewhere.shutdown()
    third = ContextService(LIMITS, 1, context_dir=final.parent)
    try:
        loaded = third.get(entry.context_id)
        assert np.array_equal(
            third.explain(loaded, X[:5], P[:5]).values, first.explain(entry, X[:5], P[:5]).values
        )
    finally:
        third.shutdown()


def test_delete_of_a_context_only_saved_answers_with_its_id(replicas, tmp_path):
    """After a restart, an eviction, or a fit by another replica, the context is only on disk:
    delete removed it there, then said it was not found."""
    first, second = replicas
    entry, _ = first.get_or_create(ContextSpec(X, P))
    deleted, freed = second.delete(entry.context_id)
    assert deleted.context_id == entry.context_id and freed == 0  # nothing held in memory here
    assert not (tmp_path / "contexts" / entry.context_id).exists()
    assert _hidden_entries(tmp_path / "contexts") == []
    with pytest.raises(NotFoundError):
        second.delete(entry.context_id)
    # The replica that held it frees its memory as before; the saved copy is already gone.
    deleted, freed = first.delete(entry.context_id)
    assert deleted is entry and freed == entry.memory_bytes


def test_a_saved_copy_that_cannot_be_removed_leaves_the_context_as_it_was(
    replicas, tmp_path, monkeypatch
):
    """On a read-only volume DeleteContext answered OK, and the context, loaded again from its
    copy, went on being served (QA, 2026-12-05). Now nothing is deleted, and the caller is told."""
    first, _ = replicas
    entry, _ = first.get_or_create(ContextSpec(X, P))
    saved = tmp_path / "contexts" / entry.context_id

    def read_only(source, target):
        raise PermissionError(30, "Read-only file system", str(source))

    monkeypatch.setattr("shapley_svc.contexts.service.os.rename", read_only)
    with pytest.raises(StorageError, match=r"cannot be removed .*Read-only file system") as caught:
        first.delete(entry.context_id)
    assert caught.value.argument == "context_id"
    assert saved.is_dir() and first.get(entry.context_id) is entry  # held, and saved, still
    monkeypatch.undo()
    deleted, _ = first.delete(entry.context_id)
    assert deleted is entry and not saved.exists()


def test_a_context_larger_than_the_store_is_refused_before_it_is_saved_or_counted(tmp_path):
    """It was fitted, saved and counted, then refused; and loaded again by every later request
    for its id, each refused naming ``context`` where the caller had given an id."""
    folder = tmp_path / "contexts"
    small = ContextService(replace(LIMITS, max_store_bytes=1000), 1, context_dir=folder)
    large = ContextService(LIMITS, 1, context_dir=folder)
    try:
        with pytest.raises(LimitExceededError, match="the store holds at most 1000") as refused:
            small.get_or_create(ContextSpec(X, P))
        assert refused.value.argument == "context"
        assert list(folder.iterdir()) == [] and small.contexts_fitted == 0
        # Saved by a replica with a larger store: asked for by id, refused naming the id.
        entry, _ = large.get_or_create(ContextSpec(X, P))
        with pytest.raises(LimitExceededError) as refused:
            small.get(entry.context_id)
        assert refused.value.argument == "context_id" and small.contexts_loaded == 0
    finally:
        small.shutdown()
        large.shutdown()


def test_leftovers_of_killed_saves_and_deletes_are_removed_at_start(tmp_path, caplog, monkeypatch):
    """A replica killed during a save (or a delete) leaves its hidden directory in the shared
    context_dir, which nothing removed: a whole context's bytes each time. A service starting on
    the directory removes those unchanged for an hour, and nothing else: not a save under way,
    nor a copy a save moved aside a moment ago (a rename keeps its modification time, which was
    the context's: the sweep removed it, and a failed save then lost the context)."""
    from shapley_svc.contexts.service import LEFTOVER_SECONDS, _hidden, _remove_leftovers
    from shapley_svc.estimator.persistence import _unique

    folder = tmp_path / "contexts"
    folder.mkdir()
    context_id = "ctx-" + "a" * 40

    def make(name):
        (folder / name).mkdir()
        (folder / name / ARRAYS).write_bytes(b"x" * 10)
        return name

    make(_unique(context_id, "partial"))  # left by killed saves and deletes
    make(_hidden(context_id, "deleted"))
    time.sleep(0.05)
    cut = time.time()
    time.sleep(0.05)
    young = make(_unique(context_id, "partial"))  # a save under way on another replica
    moved = make(_unique(context_id, "replaced"))  # moved aside just now, modified long ago
    an_hour_ago = time.time() - LEFTOVER_SECONDS - 60
    os.utime(folder / moved, (an_hour_ago, an_hour_ago))
    kept = [make(".keep"), make(f".{context_id}.notes"), make(context_id)]  # not ours, or saved
    _remove_leftovers(folder, cut)
    assert sorted(os.listdir(folder)) == sorted([young, moved, *kept])
    # At start, what is an hour old goes.
    caplog.set_level(logging.INFO, logger="shapley_svc.contexts")
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + LEFTOVER_SECONDS + 60)
    ContextService(LIMITS, 1, context_dir=folder).shutdown()
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == sorted(kept)
    assert "removed 2 leftovers" in caplog.text


def test_a_delete_through_one_replica_reaches_the_others_that_loaded_it(replicas, tmp_path):
    """With a shared directory, a replica that had loaded a context went on serving it (and
    listing it) after a DeleteContext through another. The saved copy is what says it exists:
    gone, the others drop theirs; asked to create it again, they fit it again."""
    first, second = replicas
    entry, _ = first.get_or_create(ContextSpec(X, P))
    loaded = second.get(entry.context_id)
    assert [held.context_id for held in second.held()[0]] == [entry.context_id]
    first.delete(entry.context_id)
    with pytest.raises(NotFoundError, match="is not held by this server"):
        second.get(entry.context_id)
    assert second.held() == ([], 0)
    again, created = second.get_or_create(ContextSpec(X, P))
    assert created and again is not loaded and second.contexts_fitted == 1
    assert (tmp_path / "contexts" / entry.context_id / ARRAYS).exists()
    # A context this replica holds but could not save is its own to serve: nothing to check.
    (tmp_path / "contexts" / entry.context_id / ARRAYS).unlink()
    again.saved = False
    assert second.get(entry.context_id) is again


def test_a_context_dropped_for_a_delete_elsewhere_frees_its_bytes(replicas):
    first, second = replicas
    entry, _ = first.get_or_create(ContextSpec(X, P))
    second.get(entry.context_id)
    assert second.store.total_bytes > 0
    first.delete(entry.context_id)
    assert second.held() == ([], 0) and second.store.total_bytes == 0


def test_a_held_context_whose_copy_a_save_moves_aside_stays_held(replicas, tmp_path):
    """A save replacing the shared copy moves it aside for a moment; a replica that held the
    context gave it 20 ms to come back and dropped it as deleted when the saving thread was
    held off the CPU longer. It now waits while a save is under way."""
    first, second = replicas
    entry, _ = first.get_or_create(ContextSpec(X, P))
    held = second.get(entry.context_id)
    copy = tmp_path / "contexts" / entry.context_id
    aside = copy.with_name(f".{entry.context_id}.1.2.0a0b0c0d.replaced")
    os.rename(copy, aside)
    putting_back = threading.Timer(0.2, os.rename, (aside, copy))
    putting_back.start()
    try:
        assert second.get(entry.context_id) is held
    finally:
        putting_back.join()
    # Deleted for good (no save under way): dropped at once.
    first.delete(entry.context_id)
    with pytest.raises(NotFoundError, match="is not held by this server"):
        second.get(entry.context_id)
