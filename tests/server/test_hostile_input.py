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

_special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -3e38, 1e-45])


@st.composite
def tensors(draw):
    """A Tensor that is usually wrong: dtype, shape, byte length or values."""
    dtype = draw(st.sampled_from([0, 1, 2, 2, 2, 3, 77, -1]))
    shape = draw(
        st.lists(
            st.one_of(st.integers(-2, 6), st.sampled_from([0, 1 << 31, 1 << 62])),
            min_size=0,
            max_size=4,
        )
    )
    itemsize = 4 if dtype == 1 else 8
    elements = math.prod(max(n, 0) for n in shape)
    kind = draw(st.sampled_from(["exact", "short", "long", "random", "empty"]))
    if kind == "exact" and 0 < elements <= 64:
        values = draw(st.lists(st.one_of(st.floats(-3, 3), _special), min_size=elements,
                               max_size=elements))  # fmt: skip
        data = np.asarray(values, dtype="<f4" if dtype == 1 else "<f8").tobytes()
    elif kind == "short" and 0 < elements <= 64:
        data = b"\0" * (elements * itemsize - draw(st.integers(1, itemsize)))
    elif kind == "long":
        data = b"\0" * (min(elements, 64) * itemsize + draw(st.integers(1, 9)))
    elif kind == "random":
        data = draw(st.binary(max_size=96))
    else:
        data = b""
    return pb.Tensor(dtype=dtype, shape=shape, data=data)


@st.composite
def specs(draw):
    return pb.ContextSpec(
        rows=draw(tensors()),
        predictions=draw(tensors()),
        background=draw(st.lists(st.integers(-3, 8), max_size=5)),
        feature_names=draw(st.lists(st.sampled_from(["a", "b", "", "a"]), max_size=4)),
        random_state=draw(st.sampled_from([0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1])),
        groups=[
            pb.FeatureGroup(name=name, columns=columns)
            for name, columns in draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["g", "h", ""]),
                        st.lists(st.integers(-2, 6), max_size=4),
                    ),
                    max_size=3,
                )
            )
        ],
        categorical_columns=draw(st.lists(st.integers(0, 6), max_size=3)),
    )


@st.composite
def hostile_calls(draw, context_id: str):
    """(method, serialized request bytes)."""
    kind = draw(
        st.sampled_from(
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
    )
    if kind == "explain":
        request = pb.ExplainRequest(
            context_id=draw(st.sampled_from([context_id, context_id[:-1], "", "ctx-x" * 30])),
            rows=draw(tensors()),
            output_dtype=draw(st.sampled_from([0, 1, 2, 3, -5])),
        )
        if draw(st.booleans()):
            request.predictions.CopyFrom(draw(tensors()))
        return "Explain", request.SerializeToString()
    if kind in ("propose", "refine"):
        fields = {
            "context_id": draw(st.sampled_from([context_id, "", "ctx-" + "0" * 40])),
            "rows": draw(tensors()),
            "budget": draw(st.sampled_from([-(1 << 63), -1, 0, 4, 5, 9, 1 << 20, (1 << 63) - 1])),
        }
        if draw(st.booleans()):
            fields["predictions"] = draw(tensors())
        if draw(st.booleans()):
            fields["random_state"] = draw(st.sampled_from([0, 7, 1 << 32, (1 << 64) - 1]))
        if kind == "propose":
            return "Propose", pb.ProposeRequest(**fields).SerializeToString()
        request = pb.RefineRequest(**fields, output_dtype=draw(st.sampled_from([0, 1, 2, 3])))
        if draw(st.booleans()):
            request.outputs.CopyFrom(draw(tensors()))
        return "Refine", request.SerializeToString()
    if kind == "explain_inline":
        request = pb.ExplainRequest(context=draw(specs()), rows=draw(tensors()))
        return "Explain", request.SerializeToString()
    if kind == "create":
        return "CreateContext", pb.CreateContextRequest(context=draw(specs())).SerializeToString()
    if kind == "create_stream":
        blocks = draw(st.lists(specs(), max_size=3))
        return "CreateContextStream", [
            pb.CreateContextRequest(context=spec).SerializeToString() for spec in blocks
        ]
    if kind in ("get", "delete"):
        identifier = draw(st.text(max_size=40))
        message = pb.GetContextRequest if kind == "get" else pb.DeleteContextRequest
        method = "GetContext" if kind == "get" else "DeleteContext"
        return method, message(context_id=identifier).SerializeToString()
    if kind == "garbage":
        method = draw(
            st.sampled_from(
                ["Explain", "CreateContext", "GetContext", "ListContexts", "Propose", "Refine"]
            )
        )
        return method, draw(st.binary(min_size=1, max_size=200))
    blob = pb.Tensor(dtype=2, shape=[MESSAGE_LIMIT // 8 + 64], data=b"\0" * (MESSAGE_LIMIT + 512))
    return "Explain", pb.ExplainRequest(context_id=context_id, rows=blob).SerializeToString()


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
