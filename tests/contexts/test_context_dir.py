"""Contexts saved in a shared directory: another service (a replica, a restarted server) loads
them instead of refitting or answering not found."""

import numpy as np
import pytest

from shapley_svc.contexts import ContextService, ContextSpec
from shapley_svc.errors import NotFoundError
from shapley_svc.estimator.persistence import ARRAYS
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
