"""The context service without a transport: ids, fits, explanations, limits, cancellation,
deadlines and refusals as domain errors naming the estimator's arguments. No sockets."""

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from shapley_svc.contexts import Caller, ContextLimits, ContextService, ContextSpec, content_id
from shapley_svc.errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    UnavailableError,
)
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.estimator.explainer import SERIAL_MAX_ROWS
from tests.server.conftest import make_task

LIMITS = ContextLimits(
    max_context_rows=1_000,
    max_features=8,
    max_outputs=3,
    max_explain_rows=500,
    max_answer_bytes=1 << 20,
    max_contexts=8,
    max_store_bytes=1 << 30,
)
X, P = make_task(n=150, d=4, seed=11)


def _service(**limits) -> ContextService:
    return ContextService(replace(LIMITS, **limits), compute_threads=1)


@pytest.fixture(scope="module")
def service():
    started = ContextService(
        LIMITS, compute_threads=1, describe=lambda entry: ("described", entry.context_id)
    )
    yield started
    started.shutdown()


@pytest.fixture(scope="module")
def held(service):
    return service.get_or_create(ContextSpec(X, P))[0]


def test_content_ids_are_the_server_s_sha256_addresses():
    """Ids computed by the server before the context service existed: clients keep them."""
    rows = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    predictions = np.array([0.1, 0.7, 0.3, 0.9])
    sha = "ab" * 32
    plain = ContextSpec(rows, predictions)
    assert content_id(plain, sha) == "ctx-3279d052cc846ca505db2f405fc3e5d4a0887a73"
    narrow = replace(plain, rows=rows.astype(np.float32))
    widened = replace(plain, rows=narrow.rows.astype(np.float64))
    assert content_id(narrow, sha) == content_id(widened, sha) != content_id(plain, sha)
    grouped = ContextSpec(
        rows,
        predictions,
        background=np.array([0, 2], dtype=np.int64),
        feature_names=("a", "b", "c"),
        random_state=7,
        groups=(("g", np.array([0, 1])), ("h", np.array([2]))),
    )
    assert content_id(grouped, sha) == "ctx-300e0e794a3ab89f0ce667c587428c6c25b04eea"
    assert content_id(plain, "cd" * 32) != content_id(plain, sha)


def test_negative_zero_and_nan_payloads_do_not_change_the_id():
    """Codes sent as int64 and the same codes rounded as floats got two ids, and two fits:
    np.round(-0.4) is -0.0 (QA 2026-12-06)."""
    rows = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    predictions = np.array([0.1, 0.7, 0.3, 0.9])
    sha = "ab" * 32
    zeros = rows.copy()
    zeros[0, 0], zeros[1, 1] = 0.0, np.nan
    signed = zeros.copy()
    signed[0, 0] = -0.0
    signed[1, 1] = np.frombuffer(np.uint64(0x7FF8000000000001).tobytes(), np.float64)[0]
    assert np.signbit(signed[0, 0]) and signed.tobytes() != zeros.tobytes()
    assert content_id(ContextSpec(signed, predictions), sha) == content_id(
        ContextSpec(zeros, predictions), sha
    )
    assert content_id(ContextSpec(rows, -predictions + 0.0), sha) != content_id(
        ContextSpec(rows, predictions), sha
    )


def test_names_holding_nul_hash_apart_and_other_names_keep_their_ids():
    """NUL separates the names in what is hashed: a NUL inside a name is escaped, so names that
    would join alike get ids of their own, and every name without NUL hashes as before."""
    rows = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    predictions = np.array([0.1, 0.7, 0.3, 0.9])
    sha = "ab" * 32

    def named(names, groups=()) -> str:
        return content_id(ContextSpec(rows, predictions, feature_names=names, groups=groups), sha)

    assert named(("a\0", "b", "c")) != named(("a", "\0b", "c"))
    assert named(("a\0\0", "b", "c")) != named(("a\0", "\0b", "c")) != named(("a", "\0\0b", "c"))
    # Ids computed before the escape, for names (and group names) without NUL: unchanged.
    unusual = (("g h", np.array([0, 1])), ("\u00fc", np.array([2])))
    assert (
        named(("alpha", "\u03b2", "c d"), unusual) == "ctx-5d189cf3002efec1a39203dfa6f40a961a9cfd63"
    )
    categorical = ContextSpec(rows, predictions, categorical_columns=np.array([0, 2]))
    assert content_id(categorical, sha) == "ctx-c0aabe389d885822d28569f73b555ec3cf346d10"


def test_a_context_is_fitted_once_described_once_and_explained_like_the_estimator(service, held):
    again, created = service.get_or_create(ContextSpec(X.copy(), P.copy()))
    assert again is held and not created
    assert held.description == ("described", held.context_id)
    assert service.get(held.context_id) is held
    local = ZeroShotExplainer(random_state=0).fit(X, P)
    many = SERIAL_MAX_ROWS + 1  # explained on the compute thread; fewer rows inline
    for rows in (X[:5], X[:many]):
        remote = service.explain(held, rows, P[: len(rows)])
        np.testing.assert_allclose(remote.values, local.explain(rows, P[: len(rows)]).values)


def test_a_weights_only_calibration_shares_the_members_and_their_bytes():
    """Counted once, with the background masks the calibration's pair gaps made and keep."""
    service = _service()
    try:
        entry, _ = service.get_or_create(ContextSpec(X, P))
        fitted = entry.memory_bytes
        proposal = entry.explainer.propose_calibration()
        outputs = np.sin(proposal.rows[:, 0]) + proposal.rows[:, 1]
        calibrated, built = service.calibrate(entry, None, None, outputs)
        assert built and calibrated.explainer.context_ is entry.explainer.context_
        grown = entry.explainer.pair_cache_bytes()
        assert grown > 0 and calibrated.grown_bytes == grown
        held = service.store.total_bytes
        # Both say what the store counts once for the members they share.
        assert held == fitted + grown == entry.memory_bytes == calibrated.memory_bytes
        # A new measure of the calibration finds as much, up to the objects around the arrays.
        assert abs(calibrated.explainer.memory_bytes() - held) < 4096
        assert service.delete(entry.context_id)[1] == 0
        assert service.store.total_bytes == held
        assert service.delete(calibrated.context_id)[1] == held
        assert service.store.total_bytes == 0
    finally:
        service.shutdown()


def test_what_refinement_keeps_of_a_context_is_counted_in_the_store_once():
    """The tree members' background masks are made by the first propose or refine that needs
    them: the store counts them then, once, a context never refined holds none, and the
    context is described again with what it now holds."""
    described = []

    def describe(entry):
        described.append(entry.memory_bytes)
        return ("described", entry.memory_bytes)

    service = ContextService(LIMITS, compute_threads=1, describe=describe)
    try:
        entry, _ = service.get_or_create(ContextSpec(X, P))
        assert entry.explainer.pair_cache_bytes() == 0
        fitted = entry.memory_bytes
        assert service.store.total_bytes == fitted and described == [fitted]
        rows = X[:5]
        proposal = service.propose(entry, rows, P[:5], 12)
        outputs = np.sin(proposal.rows[:, 0]) + proposal.rows[:, 1]
        for _ in range(2):
            service.refine(entry, rows, P[:5], 12, None, outputs)
        grown = entry.explainer.pair_cache_bytes()
        assert grown > 0
        assert service.store.total_bytes == fitted + grown == entry.memory_bytes
        assert entry.grown_bytes == grown
        assert entry.description == ("described", fitted + grown)
        # Described again once: the propose made the masks, the refines found them made.
        assert described == [fitted, fitted + grown]
        # What a new measure finds, up to the Python objects around the arrays.
        assert abs(service.store.total_bytes - entry.explainer.memory_bytes()) < 4096
    finally:
        service.shutdown()


def test_a_context_whose_cache_alone_passes_the_store_limit_releases_it():
    """Refinement's cache is counted when made and evicts other contexts, never the one that
    grew: a 106 MiB context with 8 outputs grew to 509 MiB in a 300 MiB store. Past the limit
    with nothing else to evict, the cache goes (made again when needed), and the answers are
    the same."""
    roomy = ContextService(LIMITS, compute_threads=1)
    try:
        entry, _ = roomy.get_or_create(ContextSpec(X, P))
        fitted = entry.memory_bytes
        rows = X[:5]
        proposal = roomy.propose(entry, rows, P[:5], 12)
        outputs = np.sin(proposal.rows[:, 0]) + proposal.rows[:, 1]
        expected = roomy.refine(entry, rows, P[:5], 12, None, outputs)
        grown = entry.explainer.pair_cache_bytes()
    finally:
        roomy.shutdown()
    tight = ContextService(replace(LIMITS, max_store_bytes=fitted + grown // 2), compute_threads=1)
    try:
        entry, _ = tight.get_or_create(ContextSpec(X, P))
        assert tight.propose(entry, rows, P[:5], 12).rows.tobytes() == proposal.rows.tobytes()
        # The propose's masks (the background's, 2 MB here) would pass the limit: released.
        assert entry.explainer.pair_cache_bytes() == 0
        assert tight.store.total_bytes == fitted == entry.memory_bytes
        for _ in range(2):  # the refine's own, smaller, fit and are kept
            refined = tight.refine(entry, rows, P[:5], 12, None, outputs)
            assert np.array_equal(refined.values, expected.values)
            assert np.array_equal(refined.uncertainty, expected.uncertainty)
            assert tight.store.total_bytes == entry.memory_bytes <= tight.store.max_bytes
            assert tight.get(entry.context_id) is entry
    finally:
        tight.shutdown()


def test_a_cache_too_large_to_keep_neither_refuses_a_calibration_nor_evicts_others():
    """A weights-only calibration shares its base's members, and was measured with the cache
    its own pairs had just made: refused as larger than the store, every time. And other
    contexts were evicted for a cache then released anyway."""
    roomy = ContextService(LIMITS, compute_threads=1)
    try:
        entry, _ = roomy.get_or_create(ContextSpec(X, P))
        fitted = entry.memory_bytes
        proposal = entry.explainer.propose_calibration()
        outputs = np.sin(proposal.rows[:, 0]) + proposal.rows[:, 1]
        expected, _ = roomy.calibrate(entry, None, None, outputs)
        grown = entry.explainer.pair_cache_bytes()
        other, _ = roomy.get_or_create(ContextSpec(X[:60, :2].copy(), P[:60]))
        small = other.memory_bytes
    finally:
        roomy.shutdown()
    assert grown > small
    tight = ContextService(
        replace(LIMITS, max_store_bytes=fitted + small + grown // 2), compute_threads=1
    )
    try:
        entry, _ = tight.get_or_create(ContextSpec(X, P))
        other, _ = tight.get_or_create(ContextSpec(X[:60, :2].copy(), P[:60]))
        for _ in range(2):
            calibrated, _ = tight.calibrate(entry, None, None, outputs)
            assert calibrated.context_id == expected.context_id
            assert np.array_equal(
                tight.explain(calibrated, X[:5], P[:5]).values,
                expected.explainer.explain(X[:5], P[:5]).values,
            )
            assert tight.store.total_bytes == fitted + small and tight.store.evictions == 0
            assert tight.get(other.context_id) is other
    finally:
        tight.shutdown()


def test_unknown_contexts_are_not_found(service):
    for call in (service.get, service.delete):
        with pytest.raises(NotFoundError) as missing:
            call("ctx-unknown")
        assert missing.value.argument == "context_id"


@pytest.mark.parametrize(
    ("rows", "predictions", "argument", "words"),
    [
        (np.zeros((1001, 2)), np.zeros(1001), "X", "1001 rows; the limit is 1000"),
        (np.zeros((10, 9)), np.zeros(10), "X", "9 features; the limit is 8"),
        (np.zeros((10, 2)), np.zeros((10, 4)), "predictions", "4 outputs; the limit is 3"),
    ],
)
def test_contexts_over_the_limits_are_refused_before_any_fit(
    service, rows, predictions, argument, words
):
    with pytest.raises(LimitExceededError) as refused:
        service.get_or_create(ContextSpec(rows, predictions))
    assert refused.value.argument == argument and words in refused.value.problem


def test_a_streamed_block_counts_the_rows_received_before_it(service):
    service.check_size(np.zeros((500, 2)), np.zeros(500), rows_before=500)
    with pytest.raises(LimitExceededError, match="1001 rows"):
        service.check_size(np.zeros((501, 2)), np.zeros(501), rows_before=500)


def test_explanations_over_the_limits_are_refused(service, held):
    with pytest.raises(LimitExceededError) as too_many:
        service.explain(held, np.zeros((501, 4)))
    assert too_many.value.argument == "X_query" and "the limit is 500" in too_many.value.problem
    bytes_per_row = (1 << 20) // 10
    service.explain(held, X[:10], answer_bytes_per_row=bytes_per_row)
    with pytest.raises(LimitExceededError) as too_large:
        service.explain(held, X[:11], answer_bytes_per_row=bytes_per_row)
    assert too_large.value.argument == "X_query"
    assert "send at most 10 rows" in too_large.value.problem
    # What the answer holds besides its rows counts too, and the most rows advertised pass.
    beside = {"answer_bytes_per_row": bytes_per_row, "answer_fixed_bytes": bytes_per_row // 2}
    with pytest.raises(LimitExceededError) as crowded:
        service.explain(held, X[:10], **beside)
    assert "send at most 9 rows" in crowded.value.problem
    service.explain(held, X[:9], **beside)
    with pytest.raises(LimitExceededError) as no_room:
        service.explain(held, X[:1], answer_bytes_per_row=8, answer_fixed_bytes=(1 << 20) - 7)
    assert "no row fits" in no_room.value.problem


def test_refusals_name_the_estimator_s_argument(service, held):
    too_few_columns = (("a", np.array([0])),)
    cases = [
        (lambda: service.get_or_create(ContextSpec(X, P, groups=too_few_columns)), "groups"),
        (lambda: service.get_or_create(ContextSpec(X, np.full_like(P, 0.5))), "predictions"),
        (lambda: service.get_or_create(ContextSpec(X, P, feature_names=("a",))), "feature_names"),
        (lambda: service.explain(held, X[:3, :2]), "X_query"),
        (lambda: service.explain(held, X[:3], P[:2]), "predictions_query"),
    ]
    for call, argument in cases:
        with pytest.raises(InvalidArgumentError) as refused:
            call()
        assert refused.value.argument == argument, refused.value


def test_should_stop_cancels_a_fit_and_an_explanation(service, held):
    gone = Caller(should_stop=lambda: True)
    with pytest.raises(CancelledError):
        service.get_or_create(ContextSpec(X, P, random_state=5), gone)
    with pytest.raises(NotFoundError):
        service.get(service.content_id(ContextSpec(X, P, random_state=5)))
    for rows in (X[:3], X[: SERIAL_MAX_ROWS + 1]):  # inline, and on the compute thread
        with pytest.raises(CancelledError):
            service.explain(held, rows, caller=gone)


def test_a_passed_deadline_refuses_before_any_work(service):
    late = Caller(deadline=time.monotonic() - 1.0)
    with pytest.raises(DeadlineExceededError):
        service.get_or_create(ContextSpec(X, P, random_state=6), late)
    with pytest.raises(NotFoundError):
        service.get(service.content_id(ContextSpec(X, P, random_state=6)))


def test_work_past_its_deadline_is_told_to_stop_and_queued_work_never_starts(monkeypatch):
    """One compute thread, held by a fit: a second call waits in the queue past its deadline;
    the first call's deadline passes too, and its fit stops at its next poll."""
    service = _service()
    fit, fitting, release, fits = service._fit, threading.Event(), threading.Event(), []

    def held_fit(spec, *args):
        fits.append(spec.random_state)
        fitting.set()
        release.wait(30)
        return fit(spec, *args)

    monkeypatch.setattr(service, "_fit", held_fit)
    outcome = {}

    def first_call() -> None:
        try:
            service.get_or_create(
                ContextSpec(X, P, random_state=1), Caller(deadline=time.monotonic() + 0.5)
            )
        except DeadlineExceededError as error:
            outcome["first"] = error

    caller = threading.Thread(target=first_call)
    caller.start()
    assert fitting.wait(30)  # the fit holds the compute thread
    with pytest.raises(DeadlineExceededError, match="while the context was being built"):
        service.get_or_create(
            ContextSpec(X, P, random_state=2), Caller(deadline=time.monotonic() + 0.1)
        )
    caller.join()
    assert isinstance(outcome.get("first"), DeadlineExceededError)
    release.set()
    service.shutdown()  # waits for the first fit's end
    assert fits == [1], "the queued fit started after its caller had gone"
    assert len(service.store) == 0, "the abandoned fit ran to its end"


def test_work_queued_or_asked_for_as_the_service_stops_is_refused_unavailable():
    # What shutdown dropped from the queue, or what came after it, failed with the executor's
    # own CancelledError or RuntimeError: INTERNAL, and a warning with a traceback in the log.
    stopping = _service()
    entry = stopping.get_or_create(ContextSpec(X, P))[0]
    started, release = threading.Event(), threading.Event()

    def busy(*args):
        started.set()
        release.wait(30)

    queued = {}
    stopping._compute.submit(busy)
    assert started.wait(30)

    def ask():
        try:
            stopping.explain(entry, X[: SERIAL_MAX_ROWS + 1])
        except UnavailableError as error:
            queued["error"] = error

    asker = threading.Thread(target=ask)
    asker.start()
    time.sleep(0.2)  # the explanation waits in the queue behind the busy thread
    shutting = threading.Thread(target=stopping.shutdown)
    shutting.start()
    time.sleep(0.2)
    release.set()
    shutting.join(30)
    asker.join(30)
    assert "the server is stopping" in str(queued["error"])
    with pytest.raises(UnavailableError, match="the server is stopping"):
        stopping.explain(entry, X[: SERIAL_MAX_ROWS + 1])


def test_a_fit_goes_on_for_a_caller_still_waiting_when_the_first_caller_leaves(monkeypatch):
    """The first caller's deadline passed during its fit while a second caller waited for the
    same context: the fit was told to stop (thrown away when past its last poll) and the
    second caller fitted the context again (QA, 2026-12-05: 2 of 9 trials over gRPC)."""
    service = _service()
    fit, fitting, release, fits = service._fit, threading.Event(), threading.Event(), []

    def held_fit(*args):
        fits.append(1)
        fitting.set()
        release.wait(30)
        return fit(*args)

    monkeypatch.setattr(service, "_fit", held_fit)
    spec = ContextSpec(X, P, random_state=3)
    waited = {}

    def patient() -> None:
        waited["entry"] = service.get_or_create(spec, Caller(deadline=time.monotonic() + 60))

    def impatient() -> None:
        with pytest.raises(DeadlineExceededError):
            service.get_or_create(spec, Caller(deadline=time.monotonic() + 0.3))
        waited["first"] = "left"

    try:
        first = threading.Thread(target=impatient)
        first.start()
        assert fitting.wait(30)
        second = threading.Thread(target=patient)
        second.start()
        first.join(10)
        assert waited.get("first") == "left"
        release.set()  # the fit ends after its first caller has gone
        second.join(60)
        entry, created = waited["entry"]
        assert fits == [1], "the context was fitted twice"
        # Created during its call: the server did not hold it when the call came, though
        # another call started the fit (the proto's ``created``).
        assert created and service.get(entry.context_id) is entry
        assert service.contexts_fitted == 1
    finally:
        release.set()
        service.shutdown()
