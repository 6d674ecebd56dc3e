"""Malformed requests by the thousand: every one gets a proper status, never INTERNAL or UNKNOWN,
and the server stays SERVING and answers a valid request correctly afterwards.

The full run (marked slow) sends 10,000 requests; the default run sends a short sample of the
same generator.
"""

import collections
import math

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shapley_svc._proto import shapley_pb2 as pb
from tests.server.conftest import make_task

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
MESSAGE_LIMIT = 64 * 1024

# The strategies are built once, not per draw: building and validating them took most of the
# 10,000-request run (hypothesis drew 2,000 requests in 20 s with them built per draw).
_special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -3e38, 1e-45])
_value = st.one_of(st.floats(-3, 3), _special)
_dtype = st.sampled_from([0, 1, 2, 2, 2, 3, 77, -1])
_shape = st.lists(
    st.one_of(st.integers(-2, 6), st.sampled_from([0, 1 << 31, 1 << 62])), min_size=0, max_size=4
)
_data_kind = st.sampled_from(["exact", "short", "long", "random", "empty"])
_exact_values = [st.lists(_value, min_size=n, max_size=n) for n in range(65)]
_byte_cuts = {itemsize: st.integers(1, itemsize) for itemsize in (4, 8)}
_extra_bytes = st.integers(1, 9)
_random_bytes = st.binary(max_size=96)


@st.composite
def tensors(draw):
    """A Tensor that is usually wrong: dtype, shape, byte length or values."""
    dtype = draw(_dtype)
    shape = draw(_shape)
    itemsize = 4 if dtype == 1 else 8
    elements = math.prod(max(n, 0) for n in shape)
    kind = draw(_data_kind)
    if kind == "exact" and 0 < elements <= 64:
        values = draw(_exact_values[elements])
        data = np.asarray(values, dtype="<f4" if dtype == 1 else "<f8").tobytes()
    elif kind == "short" and 0 < elements <= 64:
        data = b"\0" * (elements * itemsize - draw(_byte_cuts[itemsize]))
    elif kind == "long":
        data = b"\0" * (min(elements, 64) * itemsize + draw(_extra_bytes))
    elif kind == "random":
        data = draw(_random_bytes)
    else:
        data = b""
    return pb.Tensor(dtype=dtype, shape=shape, data=data)


_tensor = tensors()
_background = st.lists(st.integers(-3, 8), max_size=5)
_feature_names = st.lists(st.sampled_from(["a", "b", "", "a"]), max_size=4)
_random_state = st.sampled_from([0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1])
_groups = st.lists(
    st.tuples(st.sampled_from(["g", "h", ""]), st.lists(st.integers(-2, 6), max_size=4)),
    max_size=3,
)
_categorical_columns = st.lists(st.integers(0, 6), max_size=3)


@st.composite
def specs(draw):
    return pb.ContextSpec(
        rows=draw(_tensor),
        predictions=draw(_tensor),
        background=draw(_background),
        feature_names=draw(_feature_names),
        random_state=draw(_random_state),
        groups=[pb.FeatureGroup(name=name, columns=columns) for name, columns in draw(_groups)],
        categorical_columns=draw(_categorical_columns),
    )


_call_kind = st.sampled_from(
    [
        "explain",
        "explain_inline",
        "propose",
        "refine",
        "create",
        "create_stream",
        "get",
        "delete",
        "garbage",
        "oversize",
    ]
)
_output_dtype = st.sampled_from([0, 1, 2, 3, -5])
_budget = st.sampled_from([-(1 << 63), -1, 0, 4, 5, 9, 1 << 20, (1 << 63) - 1])
_seed = st.sampled_from([0, 7, 1 << 32, (1 << 64) - 1])
_refine_dtype = st.sampled_from([0, 1, 2, 3])
_spec = specs()
_spec_blocks = st.lists(_spec, max_size=3)
_identifier = st.text(max_size=40)
_garbage_method = st.sampled_from(
    ["Explain", "CreateContext", "GetContext", "ListContexts", "Propose", "Refine"]
)
_garbage = st.binary(min_size=1, max_size=200)


def hostile_calls(context_id: str):
    """A strategy of (method, serialized request bytes)."""
    explained_id = st.sampled_from([context_id, context_id[:-1], "", "ctx-x" * 30])
    refined_id = st.sampled_from([context_id, "", "ctx-" + "0" * 40])

    @st.composite
    def calls(draw):
        kind = draw(_call_kind)
        if kind == "explain":
            request = pb.ExplainRequest(
                context_id=draw(explained_id), rows=draw(_tensor), output_dtype=draw(_output_dtype)
            )
            if draw(st.booleans()):
                request.predictions.CopyFrom(draw(_tensor))
            return "Explain", request.SerializeToString()
        if kind in ("propose", "refine"):
            fields = {
                "context_id": draw(refined_id),
                "rows": draw(_tensor),
                "budget": draw(_budget),
            }
            if draw(st.booleans()):
                fields["predictions"] = draw(_tensor)
            if draw(st.booleans()):
                fields["random_state"] = draw(_seed)
            if kind == "propose":
                return "Propose", pb.ProposeRequest(**fields).SerializeToString()
            request = pb.RefineRequest(**fields, output_dtype=draw(_refine_dtype))
            if draw(st.booleans()):
                request.outputs.CopyFrom(draw(_tensor))
            return "Refine", request.SerializeToString()
        if kind == "explain_inline":
            request = pb.ExplainRequest(context=draw(_spec), rows=draw(_tensor))
            return "Explain", request.SerializeToString()
        if kind == "create":
            return "CreateContext", pb.CreateContextRequest(context=draw(_spec)).SerializeToString()
        if kind == "create_stream":
            return "CreateContextStream", [
                pb.CreateContextRequest(context=spec).SerializeToString()
                for spec in draw(_spec_blocks)
            ]
        if kind in ("get", "delete"):
            message = pb.GetContextRequest if kind == "get" else pb.DeleteContextRequest
            method = "GetContext" if kind == "get" else "DeleteContext"
            return method, message(context_id=draw(_identifier)).SerializeToString()
        if kind == "garbage":
            return draw(_garbage_method), draw(_garbage)
        blob = pb.Tensor(
            dtype=2, shape=[MESSAGE_LIMIT // 8 + 64], data=b"\0" * (MESSAGE_LIMIT + 512)
        )
        return "Explain", pb.ExplainRequest(context_id=context_id, rows=blob).SerializeToString()

    return calls()


def _run_hostile(make_server, n_requests: int) -> collections.Counter:
    target = make_server(max_message_bytes=MESSAGE_LIMIT, max_context_rows=200)
    X, p = make_task(n=120, d=3)
    with target.client(timeout=60, max_message_bytes=MESSAGE_LIMIT) as client:
        context = client.create_context(X, p)
    channel = grpc.insecure_channel(
        target.target,
        options=[("grpc.max_send_message_length", 4 * MESSAGE_LIMIT)],
    )
    calls = {
        method: channel.unary_unary(
            f"/shapley.v1.Shapley/{method}",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        for method in (
            "Explain",
            "CreateContext",
            "GetContext",
            "DeleteContext",
            "ListContexts",
            "Propose",
            "Refine",
        )
    }
    calls["CreateContextStream"] = lambda blocks, timeout: channel.stream_unary(
        "/shapley.v1.Shapley/CreateContextStream",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )(iter(blocks), timeout=timeout)
    outcomes: collections.Counter = collections.Counter()

    @settings(
        max_examples=n_requests,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_calls(context.context_id))
    def send(call):
        method, payload = call
        try:
            calls[method](payload, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert code in ALLOWED, f"{method}: {code.name}: {error.details()}"
        outcomes[code.name] += 1

    send()
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    with target.client(timeout=60, max_message_bytes=MESSAGE_LIMIT) as client:
        again = client.create_context(X, p)  # recreated if a hostile DeleteContext hit it
        explanation = client.explain(again, X[:5], p[:5])
    np.testing.assert_allclose(
        explanation.values.sum(axis=1), p[:5] - explanation.base_values, atol=1e-9
    )
    return outcomes


def test_malformed_requests_sample(make_server):
    outcomes = _run_hostile(make_server, 300)
    assert sum(outcomes.values()) == 300 and outcomes["INVALID_ARGUMENT"] > 100


@pytest.mark.slow
def test_ten_thousand_malformed_requests(make_server):
    outcomes = _run_hostile(make_server, 10_000)
    print("outcomes by status:", dict(outcomes))
    assert sum(outcomes.values()) == 10_000
