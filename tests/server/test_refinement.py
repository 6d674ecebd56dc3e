"""Propose and Refine over gRPC, and the Python client's ``explain(model=...)``: the same rows
and answers as the estimator in process, exact efficiency, and every bad field named."""

import dataclasses
import hashlib
import re

import grpc
import numpy as np
import pytest
from shapley_client import ShapleyError

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.estimator import ZeroShotExplainer
from tests.server.conftest import make_task, refusal

BUDGET = 20


def model(X: np.ndarray) -> np.ndarray:
    """The classifier make_task's probabilities come from, to score proposed rows."""
    logits = X[:, 0] - 0.5 * X[:, 1] * X[:, 2] + 0.3 * X[:, 3]
    return 1.0 / (1.0 + np.exp(-logits))


def _tensor(array) -> pb.Tensor:
    array = np.ascontiguousarray(array, dtype="<f8")
    return pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=list(array.shape), data=array.tobytes())


def _array(tensor: pb.Tensor) -> np.ndarray:
    dtype = "<f8" if tensor.dtype == pb.DTYPE_FLOAT64 else "<f4"
    return np.frombuffer(tensor.data, dtype).reshape(tuple(tensor.shape))


@pytest.fixture(scope="module")
def task(client):
    X, p = make_task(seed=19)
    context = client.create_context(X, p)
    local = ZeroShotExplainer(random_state=0).fit(X, p)
    return context, local, X, p


def _requests(context_id, rows, predictions=None, budget=BUDGET, random_state=None):
    """A ProposeRequest and the RefineRequest (outputs still unset) with the same fields."""
    fields = {"context_id": context_id, "rows": _tensor(rows), "budget": budget}
    if predictions is not None:
        fields["predictions"] = _tensor(predictions)
    if random_state is not None:
        fields["random_state"] = random_state
    return pb.ProposeRequest(**fields), pb.RefineRequest(**fields)


@pytest.mark.parametrize("with_predictions", [True, False])
def test_propose_and_refine_equal_the_estimator_in_process(task, stub, with_predictions):
    context, local, X, p = task
    rows, predictions = X[:6], (p[:6] if with_predictions else None)
    propose, refine = _requests(context.context_id, rows, predictions)
    proposed = stub.Propose(propose)
    expected = local.propose(rows, BUDGET, predictions)
    assert proposed.context_id == context.context_id and proposed.artifact_version
    assert proposed.rows_per_query == expected.rows_per_query
    np.testing.assert_array_equal(_array(proposed.rows), expected.rows)  # bit for bit
    outputs = model(_array(proposed.rows))
    refine.outputs.CopyFrom(_tensor(outputs))
    answer = stub.Refine(refine)
    refined = local.refine(expected, outputs)
    for name in ("values", "uncertainty", "base_values"):
        np.testing.assert_array_equal(_array(getattr(answer, name)), getattr(refined, name))
    assert answer.model_rows == refined.model_rows == expected.rows_per_query
    assert answer.context.context_id == context.context_id
    # Exactly efficient: against the given predictions, or the model's on the rows themselves.
    total = p[:6] if with_predictions else outputs[:: expected.rows_per_query]
    values, base = _array(answer.values), _array(answer.base_values)
    np.testing.assert_allclose(values.sum(axis=1), total - base, rtol=0, atol=1e-12)
    # Refinement moved the answer away from the zero-shot one.
    assert not np.allclose(values, local.explain(rows, predictions).values)


def test_explain_answers_no_model_rows_and_the_seed_defaults_to_the_context(task, stub, client):
    context, _, X, p = task
    assert client.explain(context, X[:3], p[:3]).model_rows == 0
    default, _ = _requests(context.context_id, X[:3], p[:3])
    seeded, _ = _requests(context.context_id, X[:3], p[:3], random_state=0)
    other, _ = _requests(context.context_id, X[:3], p[:3], random_state=7)
    rows = [_array(stub.Propose(request).rows) for request in (default, seeded, other)]
    np.testing.assert_array_equal(rows[0], rows[1])
    assert not np.array_equal(rows[0], rows[2])


def test_json_callers_get_the_proposal_as_values(task, stub):
    context, _, X, p = task
    request, _ = _requests(context.context_id, X[:2], p[:2])
    request.output_values = True
    response = stub.Propose(request)
    assert not response.rows.data
    expected = _array(stub.Propose(_requests(context.context_id, X[:2], p[:2])[0]).rows)
    np.testing.assert_array_equal(np.reshape(response.rows.values, response.rows.shape), expected)


def _refine_request(context_id, rows, predictions, outputs, **fields):
    _, request = _requests(context_id, rows, predictions, **fields)
    request.outputs.CopyFrom(_tensor(outputs))
    return request


def test_bad_fields_are_named(task, stub):
    context, local, X, p = task
    cid = context.context_id
    R = local.propose(X[:2], BUDGET, p[:2]).rows_per_query
    good = model(local.propose(X[:2], BUDGET, p[:2]).rows)
    cases = {
        "budget": [
            (stub.Propose, _requests(cid, X[:2], p[:2], budget=3)[0]),  # 4 is the least
            (stub.Propose, _requests(cid, X[:2], budget=4)[0]),  # 5 without predictions
            (stub.Refine, _refine_request(cid, X[:2], p[:2], good, budget=-1)),
        ],
        "random_state": [(stub.Propose, _requests(cid, X[:2], p[:2], random_state=2**32)[0])],
        "rows": [(stub.Propose, _requests(cid, X[:2, :4], p[:2])[0])],
        "predictions": [(stub.Propose, _requests(cid, X[:2], p[:3])[0])],
        "outputs": [
            (stub.Refine, _refine_request(cid, X[:2], p[:2], good[:-1])),
            (stub.Refine, _refine_request(cid, X[:2], p[:2], np.full(2 * R, np.inf))),
            (stub.Refine, _refine_request(cid, X[:2], p[:2], np.full(2 * R, np.nan))),
            (stub.Refine, _requests(cid, X[:2], p[:2])[1]),  # no outputs at all
        ],
        "context_id": [(stub.Propose, pb.ProposeRequest(rows=_tensor(X[:2]), budget=BUDGET))],
    }
    for field, calls in cases.items():
        for call, request in calls:
            code, message, named = refusal(call, request)
            assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, field), message
            assert "predictions_query" not in message  # the estimator's name for the field
    unknown = "ctx-" + "0" * 40
    for call, request in [
        (stub.Propose, _requests(unknown, X[:2], p[:2])[0]),
        (stub.Refine, _refine_request(unknown, X[:2], p[:2], good)),
    ]:
        code, _, named = refusal(call, request)
        assert (code, named) == (grpc.StatusCode.NOT_FOUND, "context_id")


def test_budget_limits(make_server):
    limit = 64 << 10
    target = make_server(warm=False, max_budget=50, max_message_bytes=limit, max_explain_rows=40)
    stub = shapley_pb2_grpc.ShapleyStub(target.channel())
    assert stub.GetServerInfo(pb.GetServerInfoRequest()).limits.max_budget == 50
    X, p = make_task(n=100, seed=20)
    with target.client(timeout=60, max_message_bytes=limit) as client:
        context = client.create_context(X, p)
    cid = context.context_id
    # Over max_budget: never acceptable, whatever the rows.
    code, message, named = refusal(stub.Propose, _requests(cid, X[:1], p[:1], budget=51)[0])
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, "budget"), message
    assert "50" in message
    # 30 rows x 50 proposed rows x 5 features x 8 bytes = 60,000 bytes: fits in 64 KiB.
    assert stub.Propose(_requests(cid, X[:30], p[:30], budget=50)[0]).rows_per_query == 50
    # 34 rows: 68,000 bytes, over the message limit; fewer rows or a lower budget would do.
    for call, request in [
        (stub.Propose, _requests(cid, X[:34], p[:34], budget=50)[0]),
        (stub.Refine, _refine_request(cid, X[:34], p[:34], np.zeros(34 * 50), budget=50)),
    ]:
        code, message, named = refusal(call, request)
        assert (code, named) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget"), message
        assert "at most 32 rows" in message
    code, _, named = refusal(stub.Propose, _requests(cid, X[:41], p[:41], budget=4)[0])
    assert (code, named) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rows")


def test_a_context_says_what_it_holds_after_refinement_grew_it(make_server):
    """Refine keeps the tree members' background masks it made: GetContext and ListContexts
    then say the bytes the store counts, not the fit's."""
    target = make_server(warm=False)
    stub = shapley_pb2_grpc.ShapleyStub(target.channel())
    X, p = make_task(n=300, seed=22)
    with target.client(timeout=60) as client:
        created = client.create_context(X, p)
    cid = created.context_id
    propose, refine = _requests(cid, X[:4], p[:4])
    refine.outputs.CopyFrom(_tensor(model(_array(stub.Propose(propose).rows))))
    stub.Refine(refine)
    described = stub.GetContext(pb.GetContextRequest(context_id=cid))
    listed = stub.ListContexts(pb.ListContextsRequest())
    assert described.memory_bytes > created.info.memory_bytes
    assert described.memory_bytes == listed.total_bytes == listed.contexts[0].memory_bytes


def test_a_single_attribution_has_nothing_to_refine(task, stub, client):
    _, _, X, p = task
    one = client.create_context(X, p, groups={"all": [0, 1, 2, 3, 4]})
    for predictions in (p[:2], None):
        request, _ = _requests(one.context_id, X[:2], predictions)
        code, message, named = refusal(stub.Propose, request)
        assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, "budget"), message
        assert "single attribution" in message


def test_a_context_saved_by_another_replica_is_loaded(make_server, tmp_path):
    X, p = make_task(n=120, seed=21)
    first = make_server(warm=False, context_dir=str(tmp_path))
    with first.client(timeout=60) as client:
        context_id = client.create_context(X, p).context_id
        proposed = client.propose(context_id, X[:3], p[:3], budget=8)
    second = make_server(warm=False, context_dir=str(tmp_path))
    with second.client(timeout=60) as client:
        again = client.propose(context_id, X[:3], p[:3], budget=8)
        np.testing.assert_array_equal(again.rows, proposed.rows)
        refined = client.refine(context_id, X[:3], model(again.rows), p[:3], budget=8)
    assert refined.model_rows == 8 and refined.values.shape == (3, 5)


# --- the Python client -----------------------------------------------------------------------


def test_client_model_path_equals_the_estimator_in_process(task, client):
    context, local, X, p = task
    scored = []

    def counting(rows):
        scored.append(rows.shape[0])
        return model(rows)

    for predictions in (p[:8], None):
        answer = client.explain(context, X[:8], predictions, model=counting, budget=BUDGET)
        proposal = local.propose(X[:8], BUDGET, predictions)
        expected = local.refine(proposal, model(proposal.rows))
        np.testing.assert_array_equal(answer.values, expected.values)
        np.testing.assert_array_equal(answer.uncertainty, expected.uncertainty)
        np.testing.assert_array_equal(answer.base_values, expected.base_values)
        assert answer.model_rows == proposal.rows_per_query <= BUDGET
        assert scored[-1] == 8 * proposal.rows_per_query
        np.testing.assert_array_equal(answer.data, X[:8])
    by_id = client.explain(context.context_id, X[:8], p[:8], model=model, budget=BUDGET)
    first = client.explain(context, X[:8], p[:8], model=model, budget=BUDGET)
    np.testing.assert_array_equal(by_id.values, first.values)
    seeded = client.explain(context, X[:8], p[:8], model=model, budget=BUDGET, random_state=5)
    proposal = local.propose(X[:8], BUDGET, p[:8], random_state=5)
    np.testing.assert_array_equal(
        seeded.values, local.refine(proposal, model(proposal.rows)).values
    )


def test_client_refines_in_chunks_that_fit_a_message(make_server):
    limit = 32 << 10
    target = make_server(warm=False, max_message_bytes=limit)
    X, p = make_task(n=100, seed=22)
    calls = []

    def counting(rows):
        calls.append(rows.shape[0])
        return model(rows)

    with target.client(timeout=60, max_message_bytes=limit) as client:
        context = client.create_context(X, p)
        answer = client.explain(context, X, p, model=counting, budget=40)
        whole = ZeroShotExplainer(random_state=0).fit(X, p)
        proposal = whole.propose(X, 40, p)
        expected = whole.refine(proposal, model(proposal.rows))
    assert len(calls) > 1 and sum(calls) == 100 * 40  # 100 x 40 x 5 x 8 = 160 kB: chunked
    # Rows draw their coalitions by their own values: chunks change nothing.
    np.testing.assert_array_equal(answer.values, expected.values)
    np.testing.assert_allclose(answer.values.sum(axis=1), p - answer.base_values, atol=1e-12)


def test_client_refines_in_chunks_within_the_servers_row_limit(make_server):
    target = make_server(warm=False, max_explain_rows=30)
    X, p = make_task(n=100, seed=24)
    calls = []

    def counting(rows):
        calls.append(rows.shape[0])
        return model(rows)

    # The client's message limit (64 MiB) would take all 100 rows at once: the server's limit
    # on rows per request, which it states in its ServerInfo, sizes the chunks.
    with target.client(timeout=60) as client:
        context = client.create_context(X, p)
        answer = client.explain(context, X, p, model=counting, budget=BUDGET)
    whole = ZeroShotExplainer(random_state=0).fit(X, p)
    proposal = whole.propose(X, BUDGET, p)
    expected = whole.refine(proposal, model(proposal.rows))
    per_row = proposal.rows_per_query
    assert calls == [30 * per_row, 30 * per_row, 30 * per_row, 10 * per_row]
    np.testing.assert_array_equal(answer.values, expected.values)
    np.testing.assert_array_equal(answer.uncertainty, expected.uncertainty)


def test_client_recreates_a_context_the_server_lost(task, client):
    context, local, X, p = task
    client.delete_context(context)
    answer = client.explain(context, X[:4], p[:4], model=model, budget=BUDGET)
    proposal = local.propose(X[:4], BUDGET, p[:4])
    np.testing.assert_array_equal(
        answer.values, local.refine(proposal, model(proposal.rows)).values
    )
    with pytest.raises(ShapleyError) as caught:
        client.propose("ctx-" + "1" * 40, X[:4], p[:4], budget=BUDGET)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and caught.value.field == "context_id"


def test_client_model_and_budget_go_together(task, client):
    context, _, X, p = task
    with pytest.raises(ValueError, match="budget"):
        client.explain(context, X[:2], p[:2], model=model)
    with pytest.raises(ValueError, match="model"):
        client.explain(context, X[:2], p[:2], budget=BUDGET)
    with pytest.raises(ValueError, match="random_state"):
        client.explain(context, X[:2], p[:2], random_state=3)
    with pytest.raises(ShapleyError) as caught:
        client.explain(context, X[:2], p[:2], model=lambda rows: model(rows)[:-1], budget=BUDGET)
    assert caught.value.field == "outputs"


def test_multi_output_refinement_equals_the_estimator_in_process(client):
    X, _ = make_task(n=150, seed=23, outputs=3)

    def scores(rows):  # any model with K = 3 outputs (not class probabilities)
        return np.stack([model(rows), 1 - model(rows), np.tanh(rows[:, 4])], axis=1)

    # The context is the same model's: outputs on another scale are refused (QA F8).
    context = client.create_context(X, scores(X))
    local = ZeroShotExplainer(random_state=0).fit(X, scores(X))
    answer = client.explain(context, X[:4], scores(X[:4]), model=scores, budget=12)
    proposal = local.propose(X[:4], 12, scores(X[:4]))
    expected = local.refine(proposal, scores(proposal.rows))
    assert answer.values.shape == (4, 5, 3) and answer.model_rows == 12
    np.testing.assert_array_equal(answer.values, expected.values)
    np.testing.assert_array_equal(answer.uncertainty, expected.uncertainty)


@pytest.mark.parametrize("with_predictions", [True, False], ids=["predictions", "no predictions"])
def test_at_the_most_rows_propose_allows_the_refine_and_its_answer_fit(
    make_server, with_predictions
):
    """Propose counted its own answer only: at d = K = 8 and a 100,000-byte limit it took 97
    rows whose Refine (111,831 bytes), or whose Refine's answer (106,958 bytes), was then
    refused, after the model had scored every proposed row (QA, 2026-12-05)."""
    limit = 100_000
    server = make_server(warm=False, max_message_bytes=limit)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    rng = np.random.default_rng(0)
    d = k = 8
    X = rng.normal(size=(60, d))
    P = X @ rng.normal(size=(d, k))
    spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(P))
    context_id = stub.CreateContext(pb.CreateContextRequest(context=spec)).context.context_id

    def fields(rows):
        given = {"predictions": _tensor(P[rows])} if with_predictions else {}
        return dict(context_id=context_id, rows=_tensor(X[rows]), budget=16, **given)

    code, message, field = refusal(stub.Propose, pb.ProposeRequest(**fields(np.arange(400) % 60)))
    assert (code, field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget")
    most = int(re.search(r"send at most (\d+) rows", message).group(1))
    rows = np.arange(most) % 60
    proposal = stub.Propose(pb.ProposeRequest(**fields(rows)))
    assert proposal.ByteSize() <= limit
    proposed = _array(proposal.rows)
    request = pb.RefineRequest(
        outputs=_tensor(proposed @ rng.normal(size=(d, k))),
        proposal_sha256=proposal.proposal_sha256,
        **fields(rows),
    )
    assert request.ByteSize() <= limit
    refined = stub.Refine(request)
    assert refined.ByteSize() <= limit and list(refined.values.shape) == [most, d, k]


def test_propose_answers_the_proposals_sha256_and_refine_refuses_outputs_of_another(task, stub):
    """The server keeps no proposal: Refine rebuilds it from the request's fields. A replica of
    another version (whose draws differ: they changed when they stopped following the columns'
    order) rebuilt other rows and read the outputs as their scores, silently. Given the
    proposal's sha256, Refine refuses outputs scored on rows other than the ones it rebuilds."""
    context, local, X, p = task
    rows = X[:4]
    propose, refine = _requests(context.context_id, rows, p[:4])
    proposed = stub.Propose(propose)
    scored = _array(proposed.rows)
    expected = hashlib.sha256(np.asarray(scored.shape, dtype="<i8").tobytes())
    expected.update(scored.astype("<f8").tobytes())
    assert proposed.proposal_sha256 == expected.hexdigest()
    assert proposed.proposal_sha256 == local.propose(rows, BUDGET, p[:4]).rows_sha256
    refine.outputs.CopyFrom(_tensor(model(scored)))
    unchecked = stub.Refine(refine)
    for digest in (proposed.proposal_sha256, proposed.proposal_sha256.upper()):
        refine.proposal_sha256 = digest
        checked = stub.Refine(refine)
        np.testing.assert_array_equal(_array(checked.values), _array(unchecked.values))
    # Outputs scored on another proposal of the same rows (here another seed's; an older
    # replica's draws are another proposal the same way): refused, naming the field.
    other = stub.Propose(_requests(context.context_id, rows, p[:4], random_state=7)[0])
    assert other.proposal_sha256 != proposed.proposal_sha256
    refine.proposal_sha256 = other.proposal_sha256
    code, message, field = refusal(stub.Refine, refine)
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "proposal_sha256")
    assert proposed.proposal_sha256 in message and "call Propose again" in message
    for malformed in ("abc", "g" * 64, proposed.proposal_sha256 + "0"):
        refine.proposal_sha256 = malformed
        code, message, field = refusal(stub.Refine, refine)
        assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "proposal_sha256"), message
        assert "64 hexadecimal digits" in message


def test_client_model_path_sends_the_proposals_sha256(task, client, monkeypatch):
    """``explain(model=...)`` hands Refine the sha256 Propose answered: a proposal whose rows
    the refining server would not propose is refused, not refined."""
    context, _, X, p = task
    propose = client.propose

    def another_version(*args, **kwargs):
        proposal = propose(*args, **kwargs)
        return dataclasses.replace(proposal, proposal_sha256="0" * 64)

    monkeypatch.setattr(client, "propose", another_version)
    with pytest.raises(ShapleyError) as caught:
        client.explain(context, X[:3], p[:3], model=model, budget=BUDGET)
    assert caught.value.field == "proposal_sha256"


def _aliased_model(X: np.ndarray) -> np.ndarray:
    return 3.0 * X[:, 0] + np.tanh(X[:, 2]) * X[:, 3]


def test_pooled_refine_equals_the_estimators_pooled_refine_in_process(stub, client):
    # Columns 0 and 1 nearly copies: a row's own pairs barely tell them apart, the other
    # rows' pairs do (tests/estimator/test_pooled_refinement.py).
    rng = np.random.default_rng(23)
    X = rng.normal(size=(600, 6))
    X[:, 1] = X[:, 0] + 0.05 * rng.normal(size=600)
    p = _aliased_model(X)
    context = client.create_context(X, p)
    local = ZeroShotExplainer(random_state=0).fit(X, p)
    rows, predictions = X[:10], p[:10]
    proposal = local.propose(rows, BUDGET, predictions)
    outputs = _aliased_model(proposal.rows)
    request = _refine_request(context.context_id, rows, predictions, outputs)
    request.pool_rows = True
    answer = stub.Refine(request)
    pooled = local.refine(proposal, outputs, pool_rows=True)
    alone = local.refine(proposal, outputs)
    assert not np.array_equal(pooled.values, alone.values)  # the other rows moved the answer
    for name in ("values", "uncertainty", "base_values"):
        np.testing.assert_array_equal(_array(getattr(answer, name)), getattr(pooled, name))
    # The client's one call pools the rows of its chunk (all ten here).
    via_client = client.explain(
        context, rows, predictions, model=_aliased_model, budget=BUDGET, pool_rows=True
    )
    np.testing.assert_array_equal(via_client.values, pooled.values)
    np.testing.assert_array_equal(via_client.uncertainty, pooled.uncertainty)


@pytest.mark.parametrize(
    "arguments",
    [
        {"pool_rows": True},  # nothing to pool without a refinement
        {"pool_rows": "yes", "model": model, "budget": BUDGET},
        {"pool_rows": 1, "model": model, "budget": BUDGET},
    ],
)
def test_client_pool_rows_is_a_refinements_bool(task, client, arguments):
    context, _, X, p = task
    with pytest.raises(ShapleyError) as error:
        client.explain(context, X[:3], p[:3], **arguments)
    assert error.value.field == "pool_rows"
    # A refusal of the argument's type is still the TypeError it is.
    assert isinstance(error.value, TypeError) == (arguments["pool_rows"] is not True)
