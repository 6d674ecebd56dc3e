"""ListContexts in one answer or in pages: every held context listed once, within the message
limit, and bad paging arguments refused naming their field."""

from dataclasses import replace

import grpc
import pytest
from shapley_client import InvalidArgumentError as ClientInvalidArgumentError

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc

from .conftest import LOOPBACK, Server, make_task, refusal

LIMIT = 20_000
# Descriptions of about 3.2 KB each: six do not fit in one 20,000-byte message, two do.
NAME_CHARACTERS = 1_000
N_CONTEXTS = 6


@pytest.fixture(scope="module")
def crowded(request):
    """A server holding N_CONTEXTS contexts whose descriptions overflow one message."""
    server = Server(replace(LOOPBACK, max_message_bytes=LIMIT), warm=False)
    request.addfinalizer(server.stop)
    ids = []
    with server.client(timeout=120, max_message_bytes=LIMIT) as client:
        for seed in range(N_CONTEXTS):
            X, predictions = make_task(n=40, d=3, seed=seed)
            names = [f"{letter}" * NAME_CHARACTERS for letter in "abc"]
            ids.append(client.create_context(X, predictions, feature_names=names).context_id)
    return server, ids


def test_a_list_too_long_for_one_message_is_refused_naming_page_size(crowded):
    server, _ = crowded
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    code, message, field = refusal(stub.ListContexts, pb.ListContextsRequest())
    assert (code, field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "page_size")
    assert f"the {N_CONTEXTS} held contexts" in message


def test_pages_list_every_context_once_in_id_order_within_the_limit(crowded):
    server, ids = crowded
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    for page_size in (1, 2, 4, 2**31 - 1):
        listed, token, pages, totals = [], "", 0, set()
        while True:
            page = stub.ListContexts(pb.ListContextsRequest(page_size=page_size, page_token=token))
            assert page.ByteSize() <= LIMIT
            assert 1 <= len(page.contexts) <= page_size
            totals.add(page.total_bytes)
            listed += [info.context_id for info in page.contexts]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert listed == sorted(ids), page_size
        assert pages > 1  # the message limit splits even the largest pages
        assert len(totals) == 1 and totals.pop() > 0  # every held context's bytes, on each page


def test_a_context_deleted_between_pages_neither_stops_nor_repeats_the_listing(crowded):
    server, ids = crowded
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    with server.client(timeout=120, max_message_bytes=LIMIT) as client:
        extra = client.create_context(*make_task(n=40, d=3, seed=99)).context_id
        listed, token = [], ""
        while True:
            page = stub.ListContexts(pb.ListContextsRequest(page_size=1, page_token=token))
            listed += [info.context_id for info in page.contexts]
            if listed[-1] == extra:  # the next token points after a context that then goes
                client.delete_context(extra)
            token = page.next_page_token
            if not token:
                break
    assert listed == sorted([*ids, extra])


def test_the_python_client_lists_every_context_in_pages_when_one_message_cannot(crowded):
    server, ids = crowded
    with server.client(timeout=120, max_message_bytes=LIMIT) as client:
        assert [info.context_id for info in client.list_contexts()] == sorted(ids)
        assert [info.context_id for info in client.list_contexts(page_size=1)] == sorted(ids)
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ClientInvalidArgumentError) as caught:
                client.list_contexts(page_size=bad)
            assert caught.value.field == "page_size"


def test_a_short_list_comes_in_one_answer_most_recently_used_first(make_server):
    server = make_server(warm=False)
    with server.client(timeout=120) as client:
        created = [client.create_context(*make_task(n=40, d=3, seed=s)) for s in range(3)]
        client.get_context(created[0])  # now the most recently used
        expected = [created[0].context_id, created[2].context_id, created[1].context_id]
        assert [info.context_id for info in client.list_contexts()] == expected
        stub = shapley_pb2_grpc.ShapleyStub(server.channel())
        whole = stub.ListContexts(pb.ListContextsRequest())
        assert not whole.next_page_token
        assert whole.total_bytes == sum(info.memory_bytes for info in whole.contexts)


@pytest.mark.parametrize(
    "request_fields, field",
    [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "ctx-0123"}, "page_token"),
        ({"page_token": "after:"}, "page_token"),
        ({"page_size": 3, "page_token": "garbage"}, "page_token"),
    ],
)
def test_bad_paging_arguments_are_refused_naming_their_field(stub, request_fields, field):
    code, _, named = refusal(stub.ListContexts, pb.ListContextsRequest(**request_fields))
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, field)


def test_an_empty_store_lists_one_empty_page(make_server):
    server = make_server(warm=False)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    page = stub.ListContexts(pb.ListContextsRequest(page_size=5))
    assert not page.contexts and not page.next_page_token and page.total_bytes == 0
