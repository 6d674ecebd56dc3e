"""Each RPC and each error class, end to end over loopback sockets."""

import logging
import queue
import re
import threading
import time
import types
import urllib.request
from dataclasses import replace

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from shapley_client import ShapleyError, TlsConfig

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.server import messages, rpcs
from tests.server.conftest import make_task, refusal


def _raw_tensor(array, dtype=pb.DTYPE_FLOAT64, shape=None, data=None):
    array = np.ascontiguousarray(array, dtype="<f8" if dtype == pb.DTYPE_FLOAT64 else "<f4")
    return pb.Tensor(
        dtype=dtype,
        shape=list(array.shape) if shape is None else shape,
        data=array.tobytes() if data is None else data,
    )


def test_explain_matches_the_estimator_in_process_and_is_efficient(client):
    X, p = make_task()
    context = client.create_context(X, p, feature_names=list("abcde"))
    remote = client.explain(context, X[:20], p[:20])
    local = ZeroShotExplainer(random_state=0).fit(X, p, feature_names=list("abcde"))
    expected = local.explain(X[:20], p[:20])
    # Equal up to rounding: numpy may sum an unaligned wire buffer in another order.
    np.testing.assert_allclose(remote.values, expected.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.uncertainty, expected.uncertainty, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.values.sum(axis=1), p[:20] - remote.base_values, atol=1e-12)
    assert remote.feature_names == list("abcde")
    assert context.diagnostics[0]["surrogates"]["boosted_trees"]["weight"] >= 0


def test_context_ids_are_content_addresses(client):
    X, p = make_task(seed=1)
    X = X.astype(np.float32)
    first = client.create_context(X, p)  # sent as float32
    again = client.create_context(X.astype(np.float64), p)  # the same numbers as float64
    assert again.context_id == first.context_id and not first.info.n_rows == 0
    assert client.create_context(X, p, random_state=1).context_id != first.context_id
    assert client.create_context(X[:-1], p[:-1]).context_id != first.context_id


def test_multi_output_float32_and_inline_context(server):
    X, P = make_task(seed=2, outputs=3)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    spec = pb.ContextSpec(rows=_raw_tensor(X), predictions=_raw_tensor(P), random_state=3)
    response = stub.Explain(
        pb.ExplainRequest(
            context=spec,
            rows=_raw_tensor(X[:7], pb.DTYPE_FLOAT32),
            predictions=_raw_tensor(P[:7]),
            output_dtype=pb.DTYPE_FLOAT32,
        )
    )
    assert list(response.values.shape) == [7, 5, 3]
    assert response.values.dtype == pb.DTYPE_FLOAT32
    values = np.frombuffer(response.values.data, "<f4").reshape(7, 5, 3)
    base = np.frombuffer(response.base_values.data, "<f4").reshape(7, 3)
    np.testing.assert_allclose(values.sum(axis=1), P[:7] - base, atol=1e-5)
    assert response.context.n_outputs == 3 and not response.context.single_output
    held = stub.GetContext(pb.GetContextRequest(context_id=response.context_id))
    assert held.context_id == response.context_id and held.memory_bytes > 0


def test_stream_is_ordered_and_equals_unary(client):
    X, p = make_task(n=2500, seed=4)
    context = client.create_context(X[:500], p[:500])
    streamed = client.explain_stream(context, X, p, chunk_rows=600)
    unary = client.explain(context, X, p)
    np.testing.assert_array_equal(streamed.values, unary.values)
    np.testing.assert_array_equal(streamed.base_values, unary.base_values)


def test_stream_carries_a_batch_larger_than_the_message_limit(make_server):
    small = make_server(max_message_bytes=256 * 1024)
    X, p = make_task(n=6000, d=8, seed=5)
    assert X.nbytes > 256 * 1024
    with small.client(max_message_bytes=256 * 1024, timeout=120) as client:
        context = client.create_context(X[:400], p[:400])
        with pytest.raises(ShapleyError) as too_big:
            client.explain(context, X, p)
        assert too_big.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        streamed = client.explain_stream(context, X, p)
        assert streamed.values.shape == (6000, 8)
        np.testing.assert_allclose(streamed.values.sum(axis=1), p - streamed.base_values, atol=1e-9)
        again = client.explain(context, X[:100], p[:100])
        np.testing.assert_array_equal(streamed.values[:100], again.values)


def test_a_stream_refusal_says_where_its_message_starts_in_the_stream(client, stub):
    """A position in a later message is that message's own: the refusal says where its rows
    start in the stream (row 2 of message 1 is the stream's row 7), as CreateContextStream's
    refusals do for its blocks."""
    X, p = make_task(n=60, seed=34)
    cid = client.create_context(X, p).context_id
    bad = X[:4].copy()
    bad[2, 1] = np.inf
    chunks = [
        pb.ExplainRequest(context_id=cid, rows=_raw_tensor(X[:5])),
        pb.ExplainRequest(rows=_raw_tensor(bad)),
    ]
    code, message, named = refusal(lambda: list(stub.ExplainStream(iter(chunks))))
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, "rows"), message
    assert "found inf at [2, 1]" in message, message
    assert "in message 1, whose first row is row 5 of the stream" in message, message


def test_a_context_too_long_to_describe_in_a_message_is_refused_before_its_fit(make_server):
    """Five names of 10,100 characters fit a 100,000-byte request (about 60 KB with the rows),
    but not the ContextInfo that names them twice: the server fitted and kept such a context,
    then could answer neither CreateContext nor Explain ('Sent message larger than max', no
    field). The bound is computed from the spec, before the fit; a description it lets through
    is within it."""
    limit = 100_000
    small = make_server(max_message_bytes=limit, warm=False)
    stub = shapley_pb2_grpc.ShapleyStub(small.channel())
    X, p = make_task(n=200, d=5, seed=22)

    def spec(name_length: int, **groups) -> pb.ContextSpec:
        names = [f"{j} " + "n" * name_length for j in range(5)]
        return pb.ContextSpec(
            rows=_raw_tensor(X), predictions=_raw_tensor(p), feature_names=names, **groups
        )

    request = pb.CreateContextRequest(context=spec(10_100))
    code, message, named = refusal(stub.CreateContext, request)
    assert (code, named) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "context.feature_names"), message
    assert "more than a message's 100000" in message
    assert not stub.ListContexts(pb.ListContextsRequest()).contexts  # nothing fitted or kept
    # Group names come twice too (the groups, and the attributions they name).
    long_groups = [pb.FeatureGroup(name=f"{g} " + "g" * 12_000, columns=[g]) for g in range(5)]
    request = pb.CreateContextRequest(context=spec(10, groups=long_groups))
    code, message, named = refusal(stub.CreateContext, request)
    assert (code, named) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "context.groups"), message
    two_groups = [
        pb.FeatureGroup(name="ab", columns=[0, 1]),
        pb.FeatureGroup(name="rest", columns=[2, 3, 4]),
    ]
    for fitting in (spec(4_000), spec(10, groups=two_groups)):
        answer = stub.CreateContext(pb.CreateContextRequest(context=fitting))
        bound = messages.description_bound(
            messages.context_spec(fitting, 10**9), answer.context.artifact_version
        )
        assert answer.ByteSize() <= bound <= limit


def _most_advertised(message: str) -> int:
    """The most rows (or calibration budget) a size refusal says would fit."""
    return int(re.search(r"(?:at most|the most is) (\d+)", message).group(1))


def test_a_request_at_the_most_a_refusal_advertises_gets_its_answer(make_server):
    """The size checks count what is sent (the protobuf framing, the ids, and the context's
    description that Explain's answer carries: long feature names here), so the most rows a
    refusal names get their answer and one more row is refused, naming the field."""
    limit = 100_000
    small = make_server(max_message_bytes=limit, warm=False)
    stub = shapley_pb2_grpc.ShapleyStub(small.channel())
    X, p = make_task(n=200, d=5, seed=21)
    names = [f"feature {j} " + "n" * 200 for j in range(5)]
    spec = pb.ContextSpec(rows=_raw_tensor(X), predictions=_raw_tensor(p), feature_names=names)
    cid = stub.CreateContext(pb.CreateContextRequest(context=spec)).context.context_id
    # 1,200 rows, whose answer of (2 x 5 + 1) float64s each is over the limit.
    many, predictions = np.repeat(X, 6, axis=0), np.repeat(p, 6)
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED

    def explain(m: int, **fields) -> pb.ExplainRequest:
        return pb.ExplainRequest(context_id=cid, rows=_raw_tensor(many[:m]), **fields)

    def stream(first: int, *later: int) -> list[pb.ExplainResponse]:
        chunks = [explain(first)] + [pb.ExplainRequest(rows=_raw_tensor(many[:m])) for m in later]
        return list(stub.ExplainStream(iter(chunks)))

    code, message, named = refusal(stub.Explain, explain(len(many)))
    assert (code, named) == (exhausted, "rows"), message
    most = _most_advertised(message)
    for fields in ({}, {"output_values": True}):
        assert stub.Explain(explain(most, **fields)).values.shape[0] == most
        code, message, named = refusal(stub.Explain, explain(most + 1, **fields))
        assert (code, named, _most_advertised(message)) == (exhausted, "rows", most), message
    # In a stream only the first answer describes the context: later chunks may hold more rows.
    code, message, named = refusal(stream, most, len(many))
    assert (code, named) == (exhausted, "rows"), message
    later = _most_advertised(message)
    assert later > most
    assert [answer.values.shape[0] for answer in stream(most, later)] == [most, later]
    code, message, named = refusal(stream, most + 1)
    assert (code, named, _most_advertised(message)) == (exhausted, "rows", most), message

    def propose(m: int) -> pb.ProposeRequest:
        rows, outputs = _raw_tensor(many[:m]), _raw_tensor(predictions[:m])
        return pb.ProposeRequest(context_id=cid, rows=rows, predictions=outputs, budget=20)

    code, message, named = refusal(stub.Propose, propose(200))
    assert (code, named) == (exhausted, "budget"), message
    most = _most_advertised(message)
    proposal = stub.Propose(propose(most))
    assert proposal.rows.shape[0] == most * proposal.rows_per_query
    code, message, named = refusal(stub.Propose, propose(most + 1))
    assert (code, named, _most_advertised(message)) == (exhausted, "budget", most), message

    def propose_calibration(budget: int) -> pb.ProposeCalibrationRequest:
        return pb.ProposeCalibrationRequest(context_id=cid, budget=budget)

    code, message, named = refusal(stub.ProposeCalibration, propose_calibration(4_000))
    assert (code, named) == (exhausted, "budget"), message
    most = _most_advertised(message)
    assert stub.ProposeCalibration(propose_calibration(most)).budget == most
    code, message, named = refusal(stub.ProposeCalibration, propose_calibration(most + 1))
    assert (code, named, _most_advertised(message)) == (exhausted, "budget", most), message


def test_contexts_whose_feature_names_join_alike_are_two_contexts(stub):
    """A NUL inside a name is not taken for the separator between names."""
    X, p = make_task(n=120, d=3, seed=22)
    ids = []
    for names in (["a\0", "b", "c"], ["a", "\0b", "c"]):
        spec = pb.ContextSpec(rows=_raw_tensor(X), predictions=_raw_tensor(p), feature_names=names)
        answer = stub.CreateContext(pb.CreateContextRequest(context=spec))
        assert answer.created and list(answer.context.feature_names) == names
        ids.append(answer.context.context_id)
    assert ids[0] != ids[1]


def test_a_caller_leaving_a_context_stream_is_counted_as_gone_not_internal(
    make_server, monkeypatch, caplog
):
    """Cancelled, or past its deadline, while the server waits for its next block: counted and
    logged as CANCELLED or DEADLINE_EXCEEDED, never as an internal error."""
    server = make_server(warm=False)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    caplog.set_level(logging.INFO, logger="shapley_svc.server")
    ended: queue.Queue[str] = queue.Queue()
    observe = server.running.metrics.observe

    def observed(method: str, code: str, seconds: float) -> None:
        observe(method, code, seconds)
        if method == "CreateContextStream":
            ended.put(code)

    monkeypatch.setattr(server.running.metrics, "observe", observed)
    received = threading.Event()
    contexts = server.running.service.contexts
    check_size = contexts.check_size

    def check_and_tell(*args) -> None:
        check_size(*args)
        received.set()

    monkeypatch.setattr(contexts, "check_size", check_and_tell)
    X, p = make_task(n=100, seed=23)
    leave = threading.Event()

    def blocks():
        yield pb.CreateContextRequest(
            context=pb.ContextSpec(rows=_raw_tensor(X), predictions=_raw_tensor(p))
        )
        leave.wait(120)  # the next block never comes: the caller goes away first

    try:
        cancelled = stub.CreateContextStream.future(blocks())
        assert received.wait(60), "the server never received the first block"
        cancelled.cancel()
        assert ended.get(timeout=60) == "CANCELLED"
        late = stub.CreateContextStream.future(blocks(), timeout=1.0)
        assert ended.get(timeout=60) == "DEADLINE_EXCEEDED"
        assert late.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        leave.set()
    assert "internal error" not in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert "CreateContextStream ended CANCELLED" in caplog.text
    assert "CreateContextStream ended DEADLINE_EXCEEDED" in caplog.text
    port = server.running.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'shapley_requests_total{method="CreateContextStream",code="CANCELLED"} 1' in text
    assert 'shapley_requests_total{method="CreateContextStream",code="DEADLINE_EXCEEDED"} 1' in text
    assert 'code="INTERNAL"' not in text


def _observed(server, monkeypatch, method: str) -> "queue.Queue[str]":
    """The status codes ``method``'s calls are counted with, as the server counts them."""
    ended: queue.Queue[str] = queue.Queue()
    observe = server.running.metrics.observe

    def observed(name: str, code: str, seconds: float) -> None:
        observe(name, code, seconds)
        if name == method:
            ended.put(code)

    monkeypatch.setattr(server.running.metrics, "observe", observed)
    return ended


def test_a_stream_cancelled_while_an_answer_is_sent_is_counted_cancelled(
    make_server, monkeypatch, caplog
):
    """When the call ends while an answer is being sent, grpc closes the response generator
    where it waits, at its ``yield``: GeneratorExit, no Exception, and the call was counted OK
    (9 client cancels in 10)."""
    contexts, answers, sending = [], [], threading.Event()

    def serialize(response) -> bytes:
        answers.append(response)
        if len(answers) == 2:  # the second answer is sent once the server saw the cancel
            sending.set()
            deadline = time.monotonic() + 30
            while contexts[0].is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
        return response.SerializeToString()

    stream = rpcs.RPCS["ExplainStream"]
    serializer = types.SimpleNamespace(SerializeToString=serialize)
    monkeypatch.setitem(rpcs.RPCS, "ExplainStream", replace(stream, response_class=serializer))
    server = make_server(warm=False)  # registers its handlers with the serializer above
    service = server.running.service
    explain = service._explain

    def explain_keeping_the_call(entry, request, context, first_row, described):
        contexts.append(context)
        return explain(entry, request, context, first_row, described)

    monkeypatch.setattr(service, "_explain", explain_keeping_the_call)
    ended = _observed(server, monkeypatch, "ExplainStream")
    caplog.set_level(logging.INFO, logger="shapley_svc.server")
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    X, p = make_task(n=120, d=3, seed=24)
    spec = pb.ContextSpec(rows=_raw_tensor(X), predictions=_raw_tensor(p))
    context_id = stub.CreateContext(pb.CreateContextRequest(context=spec)).context.context_id
    leave = threading.Event()

    def requests():
        for _ in range(3):
            yield pb.ExplainRequest(context_id=context_id, rows=_raw_tensor(X[:4]))
        leave.wait(60)

    try:
        call = stub.ExplainStream(requests(), timeout=60)
        next(call)
        assert sending.wait(30), "the server never sent a second answer"
        call.cancel()
        assert ended.get(timeout=30) == "CANCELLED"
    finally:
        leave.set()
    assert "ExplainStream ended CANCELLED: the caller has gone (GeneratorExit)" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    rendered = server.running.metrics.render()
    assert 'shapley_requests_total{method="ExplainStream",code="CANCELLED"} 1' in rendered
    assert 'shapley_errors_total{code="CANCELLED"} 1' in rendered
    assert 'method="ExplainStream",code="OK"' not in rendered


def test_a_call_waiting_for_another_s_fit_keeps_its_own_deadline_and_leaves_when_cancelled(
    make_server, monkeypatch
):
    """A second CreateContext of the same context waits for the first one's fit; it waited for
    the whole fit whatever its deadline, or its client cancelling, holding a handler thread
    (with a few of them, health checks went unanswered) and counted OK at the end."""
    server = make_server(warm=False)
    contexts = server.running.service.contexts
    fit, fitting, release = contexts._fit, threading.Event(), threading.Event()

    def held_fit(*args):
        fitting.set()
        release.wait(60)
        return fit(*args)

    get_or_build, waiting = contexts.store.get_or_build, queue.Queue()

    def get_or_build_telling(*args):
        waiting.put(True)
        return get_or_build(*args)

    monkeypatch.setattr(contexts, "_fit", held_fit)
    monkeypatch.setattr(contexts.store, "get_or_build", get_or_build_telling)
    ended = _observed(server, monkeypatch, "CreateContext")
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    X, p = make_task(n=150, d=4, seed=25)
    request = pb.CreateContextRequest(
        context=pb.ContextSpec(rows=_raw_tensor(X), predictions=_raw_tensor(p))
    )
    try:
        patient = stub.CreateContext.future(request, timeout=120)
        assert fitting.wait(30) and waiting.get(timeout=5)
        # Long enough to reach the store on a loaded machine (0.5 s passed before the call got
        # there in one CI run beside the container build: the test's race, not the server's),
        # short against the fit, which is held.
        code, _, _ = refusal(lambda: stub.CreateContext(request, timeout=3))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        waiting.get(timeout=5)
        assert ended.get(timeout=10) == "DEADLINE_EXCEEDED"  # while the fit is still held
        leaving = stub.CreateContext.future(request, timeout=120)
        waiting.get(timeout=30)
        leaving.cancel()
        assert ended.get(timeout=10) == "CANCELLED"
    finally:
        release.set()
    assert patient.result().created
    assert ended.get(timeout=30) == "OK"


def test_context_lifecycle_list_delete_and_transparent_recreate(server, client):
    X, p = make_task(seed=6)
    context = client.create_context(X, p)
    assert context.context_id in [c.context_id for c in client.list_contexts()]
    before = client.explain(context, X[:5], p[:5])
    assert client.delete_context(context) > 0
    with pytest.raises(ShapleyError) as gone:
        client.delete_context(context)
    assert gone.value.code == grpc.StatusCode.NOT_FOUND
    after = client.explain(context, X[:5], p[:5])  # recreated from the data it kept
    np.testing.assert_array_equal(before.values, after.values)
    with pytest.raises(ShapleyError) as unknown:
        client.explain(context.context_id + "0", X[:5])
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    code, _, field = refusal(stub.GetContext, pb.GetContextRequest(context_id="ctx-unknown"))
    assert code == grpc.StatusCode.NOT_FOUND and field == "context_id"


def test_server_info_reports_artifact_and_limits(client):
    info = client.server_info()
    assert info.artifact_version.split(":")[1] == info.artifact_sha256[:12]
    assert info.limits.max_message_bytes == 64 << 20
    assert info.version


BAD_CONTEXTS = [
    ("rows", lambda X, p: dict(rows=_raw_tensor(X, data=b"\0" * 7))),
    ("rows", lambda X, p: dict(rows=_raw_tensor(X, dtype=0))),
    ("rows", lambda X, p: dict(rows=_raw_tensor(X[0]))),
    ("rows", lambda X, p: dict(rows=_raw_tensor(X, shape=[0, 5], data=b""))),
    ("rows", lambda X, p: dict(rows=_raw_tensor(X, shape=[300, -5]))),
    ("rows", lambda X, p: dict(rows=_raw_tensor(np.where(X > 2, np.inf, X)))),
    ("rows", lambda X, p: dict(rows=_raw_tensor(X[:1]), predictions=_raw_tensor(p[:1]))),
    ("predictions", lambda X, p: dict(predictions=_raw_tensor(p[:-1]))),
    ("predictions", lambda X, p: dict(predictions=_raw_tensor(np.full_like(p, 0.3)))),
    ("predictions", lambda X, p: dict(predictions=_raw_tensor(np.inf * p))),
    ("background", lambda X, p: dict(background=[0, 1, 300])),
    ("background", lambda X, p: dict(background=[4, 4])),
    ("feature_names", lambda X, p: dict(feature_names=["a", "b"])),
    ("feature_names", lambda X, p: dict(feature_names=list("aabcd"))),
    ("random_state", lambda X, p: dict(random_state=2**40)),
]


@pytest.mark.parametrize(("field", "change"), BAD_CONTEXTS)
def test_bad_contexts_are_invalid_arguments_naming_the_field(server, field, change):
    X, p = make_task()
    parts = dict(rows=_raw_tensor(X), predictions=_raw_tensor(p)) | change(X, p)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    request = pb.CreateContextRequest(context=pb.ContextSpec(**parts))
    code, details, named = refusal(stub.CreateContext, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert named == f"context.{field}" and details.startswith(f"context.{field}: ")


def test_bad_explain_requests(server, client):
    X, p = make_task()
    context = client.create_context(X, p)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())

    def explain(**parts):
        return stub.Explain(pb.ExplainRequest(context_id=context.context_id, **parts))

    cases = [
        (dict(rows=_raw_tensor(X[:4, :3])), "rows", "has 3 features"),
        (dict(rows=_raw_tensor(X[:4]), predictions=_raw_tensor(p[:3])), "predictions", "shape"),
        (dict(rows=_raw_tensor(X[:4]), predictions=_raw_tensor(X[:4, :2])), "predictions", ""),
        (dict(rows=_raw_tensor(X[:4], data=b"abc")), "rows", "needs 160 bytes"),
        (dict(), "rows", "is required"),
        (dict(rows=_raw_tensor(X[:4]), output_dtype=7), "output_dtype", ""),
    ]
    for parts, field, words in cases:
        code, details, named = refusal(lambda parts=parts: explain(**parts))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert named == field and words in details, details
    code, _, named = refusal(stub.Explain, pb.ExplainRequest(rows=_raw_tensor(X[:4])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named == "context_id"


def test_limits_are_resource_exhausted(make_server):
    tight = make_server(max_context_rows=100, max_features=4, max_explain_rows=10, warm=False)
    stub = shapley_pb2_grpc.ShapleyStub(tight.channel())
    X, p = make_task(n=300, d=5)
    for rows, predictions in ((X, p), (X[:50], p[:50])):
        request = pb.CreateContextRequest(
            context=pb.ContextSpec(rows=_raw_tensor(rows), predictions=_raw_tensor(predictions))
        )
        code, details, named = refusal(stub.CreateContext, request)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and named == "context.rows", details
    huge = pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[1 << 40, 1 << 30], data=b"")
    code, details, _ = refusal(
        stub.CreateContext,
        pb.CreateContextRequest(context=pb.ContextSpec(rows=huge, predictions=_raw_tensor(p))),
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "elements" in details


def test_store_evicts_least_recently_used(make_server):
    small = make_server(max_contexts=2, warm=False)
    with small.client(timeout=120) as client:
        contexts = [client.create_context(*make_task(n=120, seed=s)) for s in range(3)]
        held = [c.context_id for c in client.list_contexts()]
        assert held == [contexts[2].context_id, contexts[1].context_id]
        info = client.server_info()
        assert info.contexts_held == 2


def test_a_late_or_cancelled_fit_gives_its_compute_thread_back(make_server):
    # One compute thread: a fit that kept running would make the probe wait for it.
    server = make_server(compute_threads=1)
    X, p = make_task(n=4000, d=12, seed=7)
    small = make_task(n=200, d=3, seed=70)
    with server.client(timeout=120) as client:
        held = client.create_context(*small)
        start = time.perf_counter()
        client.delete_context(client.create_context(X, p))
        full = time.perf_counter() - start

        def probe_seconds() -> float:
            start = time.perf_counter()
            client.explain(held, small[0][:1])
            return time.perf_counter() - start

        client.timeout = 0.2 * full
        with pytest.raises(ShapleyError) as late:
            client.create_context(X, p)
        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        client.timeout = 120
        # The fit stops at its next surrogate refit, well before the full fit's end.
        assert probe_seconds() < 0.6 * full, f"the full fit took {full:.2f} s"
        assert [c.context_id for c in client.list_contexts()] == [held.context_id]

        stub = shapley_pb2_grpc.ShapleyStub(server.channel())
        request = pb.CreateContextRequest(
            context=pb.ContextSpec(rows=_raw_tensor(X * 1.5), predictions=_raw_tensor(p))
        )
        call = stub.CreateContext.future(request, timeout=120)
        time.sleep(0.2 * full)
        call.cancel()
        assert probe_seconds() < 0.6 * full, f"the full fit took {full:.2f} s"
        assert [c.context_id for c in client.list_contexts()] == [held.context_id]


def test_token_auth(make_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("first-secret\nsecond-secret\n")
    guarded = make_server(tokens_file=str(tokens), warm=False)
    X, p = make_task(n=120)
    for token in (None, "wrong", "first-secre"):
        with guarded.client(token=token) as client, pytest.raises(ShapleyError) as denied:
            client.create_context(X, p)
        assert denied.value.code == grpc.StatusCode.UNAUTHENTICATED
    with guarded.client(token="second-secret") as client:
        assert client.server_info().version
    # Health checks stay open for load balancers and container probes.
    health = health_pb2_grpc.HealthStub(guarded.channel())
    status = health.Check(health_pb2.HealthCheckRequest()).status  # not warmed up: NOT_SERVING
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_tls_and_mutual_tls(make_server, certificates):
    ca = (certificates / "ca.pem").read_bytes()
    tls = make_server(
        tls_cert=str(certificates / "server.pem"),
        tls_key=str(certificates / "server.key"),
        warm=False,
    )
    with tls.client(tls=TlsConfig(root_certificates=ca)) as client:
        assert client.server_info().version
    mutual = make_server(
        tls_cert=str(certificates / "server.pem"),
        tls_key=str(certificates / "server.key"),
        tls_client_ca=str(certificates / "ca.pem"),
        warm=False,
    )
    with mutual.client(tls=TlsConfig(root_certificates=ca), timeout=10) as client:
        with pytest.raises(ShapleyError) as refused:
            client.server_info()
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    identity = TlsConfig(
        root_certificates=ca,
        private_key=(certificates / "client.key").read_bytes(),
        certificate_chain=(certificates / "client.pem").read_bytes(),
    )
    with mutual.client(tls=identity) as client:
        assert client.server_info().version


def test_health_transitions_and_graceful_shutdown(make_server):
    fresh = make_server(warm=False, grace_seconds=30)
    health = health_pb2_grpc.HealthStub(fresh.channel())
    request = health_pb2.HealthCheckRequest(service="shapley.v1.Shapley")
    assert health.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING
    from shapley_svc.server import warm_up

    warm_up(fresh.running)
    assert health.Check(request).status == health_pb2.HealthCheckResponse.SERVING

    X, p = make_task(n=4000, d=10, seed=8)
    outcome = {}

    def slow_call():
        with fresh.client(timeout=120) as client:
            outcome["context"] = client.create_context(X, p)

    worker = threading.Thread(target=slow_call)
    worker.start()
    time.sleep(0.5)  # the fit is under way
    stopper = threading.Thread(target=fresh.running.stop, args=(30, 1.5))
    stopper.start()
    time.sleep(0.3)
    # The drain notice: health already says NOT_SERVING while calls are still accepted.
    assert health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
    with fresh.client(timeout=30) as late_client:
        assert late_client.server_info().version
    time.sleep(1.5)  # the notice is over: the listener refuses new calls
    with pytest.raises(grpc.RpcError) as refused:
        health.Check(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    worker.join(60)
    stopper.join(60)
    assert outcome["context"].info.n_rows == 4000  # the in-flight request finished


def test_metrics_endpoint(server, client):
    X, p = make_task(seed=9)
    client.explain(client.create_context(X, p), X[:3], p[:3])
    with pytest.raises(ShapleyError):
        client.explain("ctx-unknown", X[:3])
    port = server.running.metrics_port
    # An answered call is counted when it ends on the server, a moment after the caller may
    # have read its answer.
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
        if 'shapley_requests_total{method="Explain",code="OK"}' in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert 'shapley_errors_total{code="NOT_FOUND"}' in text
    assert "shapley_request_seconds_bucket" in text and "shapley_contexts_held" in text
    rows = [line for line in text.splitlines() if line.startswith("shapley_rows_explained_total")]
    assert int(rows[0].split()[1]) >= 3


def test_reflection_lists_the_services(server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel())
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert {"shapley.v1.Shapley", "grpc.health.v1.Health"} <= names


def test_unparseable_bytes_are_invalid_arguments_not_internal(server):
    channel = server.channel()
    for method in ("Explain", "CreateContext", "GetContext"):
        call = channel.unary_unary(
            f"/shapley.v1.Shapley/{method}",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        code, details, _ = refusal(call, b"\xff\xff\xff\xff garbage")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "do not parse" in details


def test_store_evicts_by_bytes_and_refuses_a_context_larger_than_the_store(make_server):
    X, p = make_task(n=150, seed=20)
    with make_server(warm=False).client(timeout=120) as probe:
        one = probe.create_context(X, p).info.memory_bytes
    budget = int(2.5 * one)
    small = make_server(max_context_store_bytes=budget, warm=False)
    with small.client(timeout=120) as client:
        for seed in range(4):
            client.create_context(*make_task(n=150, seed=20 + seed))
        info = client.server_info()
        assert info.context_store_bytes <= budget and info.contexts_held == 2
    tiny = make_server(max_context_store_bytes=one // 2, warm=False)
    with tiny.client(timeout=120) as client, pytest.raises(ShapleyError) as refused:
        client.create_context(X, p)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the store holds at most" in refused.value.details


def test_a_generic_client_reads_the_field_from_the_standard_rich_status(server):
    """Any gRPC client with google.rpc support (grpcurl, grpc-status in other languages) sees the
    field in BadRequest details; the message repeats it for people."""
    X, p = make_task()
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    spec = pb.ContextSpec(rows=_raw_tensor(X), predictions=_raw_tensor(p), background=[0, 0])
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateContext(pb.CreateContextRequest(context=spec))
    status = rpc_status.from_call(caught.value)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    (detail,) = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request), detail.type_url
    (violation,) = bad_request.field_violations
    assert violation.field == "context.background"
    assert "distinct" in violation.description
    assert status.message == f"context.background: {violation.description}"
    assert not [key for key, _ in caught.value.trailing_metadata() if key == "shapley-error-field"]


def test_refusals_without_a_field_carry_no_bad_request(server):
    channel = server.channel()
    call = channel.unary_unary(
        "/shapley.v1.Shapley/GetServerInfo",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\xff\xff")
    status = rpc_status.from_call(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and not status.details


def test_predictions_on_another_scale_than_the_contexts_probabilities_name_the_field(client):
    """Log-odds sent for a context of class probabilities are refused naming the request's
    field, in Explain and in Refine's and Calibrate's scored outputs (QA F8: they were taken
    silently)."""
    X, p = make_task(n=300, outputs=3, seed=8)
    context = client.create_context(X, p)
    with pytest.raises(ShapleyError) as caught:
        client.explain(context, X[:5], np.log(p[:5]))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field == "predictions" and "context's scale" in str(caught.value)
    with pytest.raises(ShapleyError) as caught:
        client.explain(
            context, X[:2], p[:2], model=lambda rows: np.log(_softmax_of(rows)), budget=20
        )
    assert caught.value.field == "outputs", caught.value
    for refit in (False, True):  # Calibrate's scored outputs, weights or zoo refitted
        with pytest.raises(ShapleyError) as caught:
            client.calibrate(context, lambda rows: np.log(_softmax_of(rows)), refit=refit)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.field == "outputs", caught.value


def _softmax_of(rows: np.ndarray) -> np.ndarray:
    """make_task's three class probabilities of ``rows``."""
    logits = rows[:, 0] - 0.5 * rows[:, 1] * rows[:, 2] + 0.3 * rows[:, 3]
    scores = np.stack([logits * (k - 1) + 0.2 * k * rows[:, k] for k in range(3)], axis=1)
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)
