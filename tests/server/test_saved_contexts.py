"""Servers with a --context-dir, end to end over loopback: what they answer when the directory
fails them, for a context only saved there, and for a context too large to hold."""

import logging
import urllib.request

import grpc
import numpy as np

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.contexts import ContextSpec
from shapley_svc.estimator import ZeroShotExplainer
from tests.server.conftest import make_task, refusal


def _tensor(array) -> pb.Tensor:
    array = np.ascontiguousarray(array, dtype="<f8")
    return pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=list(array.shape), data=array.tobytes())


def _create(X, p) -> pb.CreateContextRequest:
    return pb.CreateContextRequest(context=pb.ContextSpec(rows=_tensor(X), predictions=_tensor(p)))


def _metric(server, name: str) -> str:
    port = server.running.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return next(line.split()[1] for line in text.splitlines() if line.startswith(name + " "))


def test_a_context_the_server_cannot_save_is_created_and_served(make_server, tmp_path, caplog):
    """A --context-dir that could not be written (a read-only volume, the directory pruned)
    made every CreateContext fail INTERNAL after its fit, and the context was thrown away."""
    folder = tmp_path / "contexts"
    server = make_server(warm=False, context_dir=str(folder))
    folder.rmdir()
    folder.write_text("the volume is gone")  # nothing can be saved there, even by root
    caplog.set_level(logging.WARNING, logger="shapley_svc.contexts")
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    X, p = make_task(n=150, d=4, seed=40)
    answer = stub.CreateContext(_create(X, p), timeout=120)
    context_id = answer.context.context_id
    assert answer.created
    assert stub.CreateContext(_create(X, p), timeout=120).created is False  # held: no refit
    assert stub.GetContext(pb.GetContextRequest(context_id=context_id)).context_id == context_id
    explained = stub.Explain(pb.ExplainRequest(context_id=context_id, rows=_tensor(X[:3])))
    assert list(explained.values.shape) == [3, 4]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings  # one failed save, logged once
    assert f"{context_id} is held but was not saved in {folder / context_id}" in warnings[0]
    assert "Not a directory" in warnings[0]
    assert _metric(server, "shapley_context_fits_total") == "1"
    assert _metric(server, "shapley_context_saves_failed_total") == "1"


def test_delete_of_a_context_only_saved_answers_ok_with_its_id(make_server, tmp_path):
    """Saved but not held (another replica fitted it, or this one evicted it): DeleteContext
    removed the saved copy, then answered NOT_FOUND."""
    folder = tmp_path / "contexts"
    X, p = make_task(n=150, d=4, seed=41)
    server = make_server(warm=False, context_dir=str(folder), max_contexts=1)
    context_id = server.running.service.contexts.content_id(ContextSpec(X, p))
    ZeroShotExplainer().fit(X, p).save(folder / context_id)  # as another replica saved it
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    deleted = stub.DeleteContext(pb.DeleteContextRequest(context_id=context_id))
    assert deleted.context_id == context_id and deleted.freed_bytes == 0
    assert not (folder / context_id).exists()
    code, _, field = refusal(stub.DeleteContext, pb.DeleteContextRequest(context_id=context_id))
    assert (code, field) == (grpc.StatusCode.NOT_FOUND, "context_id")
    # Held, then evicted by another context (max_contexts=1): only its saved copy is left.
    evicted = stub.CreateContext(_create(X, p), timeout=120).context.context_id
    stub.CreateContext(_create(X[:120], p[:120]), timeout=120)
    held = [c.context_id for c in stub.ListContexts(pb.ListContextsRequest()).contexts]
    assert evicted not in held and (folder / evicted).is_dir()
    deleted = stub.DeleteContext(pb.DeleteContextRequest(context_id=evicted))
    assert deleted.context_id == evicted and deleted.freed_bytes == 0
    assert not (folder / evicted).exists()


def test_a_context_larger_than_the_store_is_refused_before_it_is_saved(make_server, tmp_path):
    """It was fitted, saved and counted, then refused naming `context`; asked for by id later,
    loaded again each time and refused naming `context`, which GetContextRequest lacks."""
    folder = tmp_path / "contexts"
    server = make_server(warm=False, context_dir=str(folder), max_context_store_bytes=1000)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    X, p = make_task(n=150, d=4, seed=42)
    for _ in range(2):
        code, details, field = refusal(stub.CreateContext, _create(X, p))
        assert (code, field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "context"), details
        assert "the store holds at most 1000" in details
    assert list(folder.iterdir()) == []
    assert _metric(server, "shapley_context_fits_total") == "0"
    # Saved by a replica with a larger store, then asked for here by id.
    context_id = server.running.service.contexts.content_id(ContextSpec(X, p))
    ZeroShotExplainer().fit(X, p).save(folder / context_id)
    for call, request in (
        (stub.GetContext, pb.GetContextRequest(context_id=context_id)),
        (stub.Explain, pb.ExplainRequest(context_id=context_id, rows=_tensor(X[:2]))),
    ):
        code, details, field = refusal(call, request)
        assert (code, field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "context_id"), details
        assert details.startswith(f"context_id: {context_id} needs ")
    assert _metric(server, "shapley_context_loads_total") == "0"
