"""Feature groups and contexts larger than a message, end to end over loopback sockets."""

import grpc
import numpy as np
import pytest
from shapley_client import ShapleyError

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.estimator import ZeroShotExplainer
from tests.server.conftest import make_task, refusal

GROUPS = {"first": [0, 2], "second": [1], "rest": [3, 4]}


def _tensor(array):
    array = np.ascontiguousarray(array, dtype="<f8")
    return pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=list(array.shape), data=array.tobytes())


def test_groups_answer_one_exactly_efficient_value_per_group(client):
    X, p = make_task(seed=3)
    context = client.create_context(X, p, groups=GROUPS)
    assert context.attribution_names == list(GROUPS)
    assert [(g.name, list(g.columns)) for g in context.info.groups] == [
        (name, columns) for name, columns in GROUPS.items()
    ]
    remote = client.explain(context, X[:30], p[:30])
    assert remote.values.shape == (30, 3) and remote.attribution_names == list(GROUPS)
    np.testing.assert_allclose(remote.values.sum(axis=1), p[:30] - remote.base_values, atol=1e-12)
    local = ZeroShotExplainer().fit(X, p, groups=GROUPS).explain(X[:30], p[:30])
    np.testing.assert_allclose(remote.values, local.values, rtol=0, atol=1e-12)
    # The grouping is part of the content address; the same context without it is another one.
    assert client.create_context(X, p).context_id != context.context_id
    assert client.create_context(X, p, groups=GROUPS).context_id == context.context_id


@pytest.mark.parametrize(
    ("groups", "words"),
    [
        ({"a": [0, 1], "b": [1, 2, 3, 4]}, "column 1 is in both 'a' and 'b'"),
        ({"a": [0, 1], "b": [2, 3]}, "1 in no group (4)"),
        ({"a": [0, 1, 2, 3, 4, 5]}, "column 5, outside [0, 5)"),
        ({"a": [], "b": [0, 1, 2, 3, 4]}, "non-empty"),
        ({"": [0, 1, 2, 3, 4]}, "empty name"),
    ],
)
def test_bad_groups_are_invalid_arguments_naming_the_field(server, groups, words):
    X, p = make_task()
    spec = pb.ContextSpec(
        rows=_tensor(X),
        predictions=_tensor(p),
        groups=[pb.FeatureGroup(name=name, columns=columns) for name, columns in groups.items()],
    )
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    code, details, field = refusal(stub.CreateContext, pb.CreateContextRequest(context=spec))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field == "context.groups", details
    assert words in details


def test_a_context_larger_than_a_message_is_streamed_in_blocks(make_server):
    small = make_server(max_message_bytes=1 << 18)  # 256 KiB
    X, p = make_task(n=2000, d=40, seed=4)  # 640 KB of rows
    with small.client(timeout=120, max_message_bytes=1 << 18) as client:
        context = client.create_context(X, p, groups={"a": range(20), "b": range(20, 40)})
        assert context.info.n_rows == 2000 and context.attribution_names == ["a", "b"]
        answer = client.explain_stream(context, X[:500], p[:500])
        np.testing.assert_allclose(answer.values.sum(axis=1), p[:500] - answer.base_values)
    with make_server().client(timeout=120) as roomy:
        whole = roomy.create_context(X, p, groups={"a": range(20), "b": range(20, 40)})
    assert whole.context_id == context.context_id  # same spec, same id, streamed or not


def test_bad_context_streams_name_the_field(make_server):
    server = make_server(max_context_rows=250, warm=False)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    X, p = make_task(n=300)

    def block(start, stop, **settings):
        spec = pb.ContextSpec(rows=_tensor(X[start:stop]), predictions=_tensor(p[start:stop]))
        for name, value in settings.items():
            if name in ("random_state", "total_rows"):
                setattr(spec, name, value)
            else:
                getattr(spec, name).extend(value)
        return pb.CreateContextRequest(context=spec)

    narrow = pb.CreateContextRequest(
        context=pb.ContextSpec(rows=_tensor(X[100:200, :3]), predictions=_tensor(p[100:200]))
    )
    short = pb.CreateContextRequest(
        context=pb.ContextSpec(rows=_tensor(X[100:200]), predictions=_tensor(p[100:150]))
    )
    cases = [
        ([block(0, 100), block(100, 200, background=[1])], "context.background", "INVALID"),
        ([block(0, 100), block(100, 200, random_state=3)], "context.random_state", "INVALID"),
        (
            [block(0, 100), block(100, 200, categorical_columns=[0])],
            "context.categorical_columns",
            "INVALID",
        ),
        ([block(0, 100), narrow], "context.rows", "INVALID"),
        ([block(0, 100), short], "context.predictions", "INVALID"),
        ([block(0, 100), block(100, 200), block(200, 300)], "context.rows", "RESOURCE"),
        ([], "context", "INVALID"),
        ([block(0, 100), block(100, 200, total_rows=200)], "context.total_rows", "INVALID"),
        # A stream that ends short of the rows its first message declared (a caller that
        # cancelled, which gRPC can end as if closed) is refused, not fitted.
        ([block(0, 100, total_rows=200)], "context.total_rows", "INVALID"),
        ([block(0, 100, total_rows=150), block(100, 200)], "context.total_rows", "INVALID"),
    ]
    for messages, field, code_name in cases:
        code, details, named = refusal(stub.CreateContextStream, iter(messages))
        assert code.name.startswith(code_name) and named == field, (field, details)
    # An infinite value is reported where it is in the context, not only in its block (NaN is a
    # missing value, accepted).
    poisoned = X[100:200].copy()
    poisoned[49, 2] = np.inf
    late_nan = pb.CreateContextRequest(
        context=pb.ContextSpec(rows=_tensor(poisoned), predictions=_tensor(p[100:200]))
    )
    code, details, named = refusal(stub.CreateContextStream, iter([block(0, 100), late_nan]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named == "context.rows", details
    assert "[49, 2]" in details and "message 1, whose first row is row 100" in details, details


def test_a_declared_row_count_is_checked_and_not_part_of_the_context(make_server):
    server = make_server(warm=False)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    X, p = make_task(n=200)

    def spec(**settings):
        return pb.ContextSpec(rows=_tensor(X), predictions=_tensor(p), **settings)

    code, details, named = refusal(
        stub.CreateContext, pb.CreateContextRequest(context=spec(total_rows=201))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named == "context.total_rows", details
    assert "is 201; the context has 200 rows" in details
    declared = stub.CreateContext(pb.CreateContextRequest(context=spec(total_rows=200)))
    plain = stub.CreateContext(pb.CreateContextRequest(context=spec()))
    streamed = stub.CreateContextStream(
        iter(
            [
                pb.CreateContextRequest(
                    context=pb.ContextSpec(
                        rows=_tensor(X[:120]), predictions=_tensor(p[:120]), total_rows=200
                    )
                ),
                pb.CreateContextRequest(
                    context=pb.ContextSpec(rows=_tensor(X[120:]), predictions=_tensor(p[120:]))
                ),
            ]
        )
    )
    assert declared.context.context_id == plain.context.context_id
    assert streamed.context.context_id == plain.context.context_id and not plain.created


def test_the_client_declares_a_streamed_contexts_rows_in_its_first_message(make_server):
    server = make_server(max_message_bytes=1 << 16, warm=False)
    X, p = make_task(n=1000, d=20)
    with server.client(timeout=30, max_message_bytes=1 << 16) as client:
        spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(p))
        blocks = [request.context for request in client._context_blocks(spec)]
    assert len(blocks) > 1 and sum(block.rows.shape[0] for block in blocks) == 1000
    assert [block.total_rows for block in blocks] == [1000] + [0] * (len(blocks) - 1)


def test_the_client_refuses_to_split_predictions_of_another_length(make_server):
    server = make_server(max_message_bytes=1 << 16, warm=False)
    X, p = make_task(n=1000, d=20)
    with server.client(timeout=30, max_message_bytes=1 << 16) as client:
        with pytest.raises(ValueError, match=r"predictions must have shape \(1000,\)"):
            client.create_context(X, np.concatenate([p, p[:5]]))


def test_groups_reach_the_client_error_with_the_field(client):
    X, p = make_task()
    with pytest.raises(ShapleyError) as caught:
        client.create_context(X, p, groups={"a": [0, 1]})
    assert caught.value.field == "context.groups"
