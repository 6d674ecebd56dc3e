"""The Python client's calls that go in chunks, against a server with small limits: their chunks
keep within every limit the server states (rows per request, bytes per message), and the whole
call's arguments are checked before the first chunk goes, refused as ``explain`` refuses them."""

from dataclasses import replace

import grpc
import numpy as np
import pytest
from shapley_client import InvalidArgumentError, ShapleyError

from tests.server.conftest import LOOPBACK, Server, make_task
from tests.server.test_refinement import model

ROW_LIMIT = 40
MESSAGE_LIMIT = 16 << 10


@pytest.fixture(scope="module")
def limited():
    """A server that explains at most ROW_LIMIT rows per request, in messages of at most
    MESSAGE_LIMIT bytes."""
    settings = replace(LOOPBACK, max_explain_rows=ROW_LIMIT, max_message_bytes=MESSAGE_LIMIT)
    server = Server(settings, warm=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(limited):
    """A client left at its default message limit (64 MiB): it learns the server's limits."""
    with limited.client(timeout=60) as connected:
        yield connected


@pytest.fixture(scope="module")
def task(client):
    X, p = make_task(n=150, seed=41)
    return client.create_context(X[:100], p[:100]), X, p


@pytest.fixture
def chunks(client, monkeypatch):
    """The rows of each chunk the client streams."""
    sent = []
    stream = client._stub.ExplainStream

    def recording(requests, **kwargs):
        return stream((sent.append(r.rows.shape[0]) or r for r in requests), **kwargs)

    monkeypatch.setattr(client._stub, "ExplainStream", recording)
    return sent


def test_a_stream_is_chunked_within_the_servers_row_limit(client, task, chunks):
    context, X, p = task
    # 150 rows of 5 features: a few kB, one message's worth; the server explains 40 per request.
    streamed = client.explain_stream(context, X, p)
    assert chunks == [40, 40, 40, 30]
    for start in range(0, 150, ROW_LIMIT):
        part = client.explain(context, X[start : start + ROW_LIMIT], p[start : start + ROW_LIMIT])
        np.testing.assert_array_equal(streamed.values[start : start + ROW_LIMIT], part.values)


def test_a_stream_without_predictions_is_sized_by_the_contexts_outputs(client, chunks):
    X, P = make_task(n=60, d=20, seed=42, outputs=3)
    context = client.create_context(X, P)
    # No predictions, yet each row's answer holds K = 3 outputs: (2 * 20 + 1) * 3 float64s,
    # 984 bytes; 12 rows fit the server's 16 kB messages, the 30 sized for one output do not.
    streamed = client.explain_stream(context, X)
    assert chunks == [12] * 5
    assert streamed.values.shape == (60, 20, 3)
    np.testing.assert_array_equal(streamed.values[:12], client.explain(context, X[:12]).values)


@pytest.mark.parametrize(
    "predictions",
    [np.arange(45.0), np.arange(20.0), np.ones((30, 2, 2)), np.ones((30, 0))],
    ids=["longer", "shorter", "three axes", "empty axis"],
)
def test_stream_predictions_are_checked_for_the_whole_call_as_explain_does(
    client, task, chunks, predictions
):
    context, X, _ = task
    rows = X[:30]
    with pytest.raises(ShapleyError) as whole:
        client.explain(context, rows, predictions)
    expected = (grpc.StatusCode.INVALID_ARGUMENT, "predictions", whole.value.details)
    assert (whole.value.code, whole.value.field) == expected[:2]
    # Sent chunk by chunk, 45 predictions in chunks of 15 rows would lose 15 unseen, and in
    # chunks of 20 be refused for one chunk's 10 rows: the whole call is checked instead.
    calls = {f"chunk_rows={n}": {"chunk_rows": n} for n in (15, 20, None)}
    calls["refined"] = {"model": model, "budget": 8}
    for name, arguments in calls.items():
        method = client.explain if "model" in arguments else client.explain_stream
        with pytest.raises(InvalidArgumentError) as caught:
            method(context, rows, predictions, **arguments)
        refused = caught.value
        assert isinstance(refused, ValueError), name
        assert (refused.code, refused.field, refused.details) == expected, name
    assert chunks == []  # refused before the stream opened


def test_chunk_rows_must_be_a_positive_int(client, task):
    context, X, p = task
    # Refused naming chunk_rows; a TypeError (a non-int) or a ValueError (0) as before.
    for chunk_rows, kind, problem in [
        (2.5, TypeError, "must be an int; got 2.5"),
        (True, TypeError, "must be an int; got True"),
        (0, ValueError, "must be >= 1; got 0"),
    ]:
        with pytest.raises(InvalidArgumentError) as caught:
            client.explain_stream(context, X[:4], p[:4], chunk_rows=chunk_rows)
        refused = caught.value
        assert isinstance(refused, kind), chunk_rows
        assert (refused.field, refused.violations[0].description) == ("chunk_rows", problem)
    answer = client.explain_stream(context, X[:4], p[:4], chunk_rows=np.int64(3))
    assert answer.values.shape == (4, 5)
