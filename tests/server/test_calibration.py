"""ProposeCalibration and Calibrate over gRPC, and the Python client's ``calibrate``: the same
rows and calibrated answers as the estimator in process, a content-addressed calibrated context
that every replica agrees on, and every bad field named."""

import dataclasses

import grpc
import numpy as np
import pytest
from shapley_client import Context, ShapleyError

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.estimator import ZeroShotExplainer
from tests.server.conftest import make_task, refusal
from tests.server.test_refinement import _array, _tensor, model


@pytest.fixture(scope="module")
def task(client):
    X, p = make_task(seed=31)
    context = client.create_context(X, p)
    local = ZeroShotExplainer(random_state=0).fit(X, p)
    return context, local, X, p


def _calibrate_request(context_id, outputs, budget=0, random_state=None) -> pb.CalibrateRequest:
    request = pb.CalibrateRequest(context_id=context_id, budget=budget)
    if outputs is not None:
        request.outputs.CopyFrom(_tensor(outputs))
    if random_state is not None:
        request.random_state = random_state
    return request


def test_calibration_over_grpc_equals_the_estimator_in_process(task, stub):
    context, local, X, p = task
    proposed = stub.ProposeCalibration(pb.ProposeCalibrationRequest(context_id=context.context_id))
    expected = local.propose_calibration()
    assert proposed.budget == expected.budget == 1_000  # 10 per background row
    np.testing.assert_array_equal(_array(proposed.rows), expected.rows)  # bit for bit
    # Sized for a refit: 20 per background row, the estimator's rows again.
    for_refit = stub.ProposeCalibration(
        pb.ProposeCalibrationRequest(context_id=context.context_id, refit=True)
    )
    assert for_refit.budget == local.propose_calibration(refit=True).budget == 2_000
    np.testing.assert_array_equal(
        _array(for_refit.rows), local.propose_calibration(refit=True).rows
    )
    outputs = model(expected.rows)
    answer = stub.Calibrate(_calibrate_request(context.context_id, outputs))
    calibrated = local.calibrate(expected, outputs)
    info = answer.context
    assert answer.created and info.context_id != context.context_id
    assert info.calibration_rows == 1_000 and info.fit_seconds > 0
    diagnostics = info.outputs[0]
    assert diagnostics.calibration.scale == calibrated.scales_[0]
    assert diagnostics.calibration.gap_r2_calibrated >= diagnostics.calibration.gap_r2_zero_shot
    weights = [s.weight for s in diagnostics.surrogates]
    available = calibrated.context_.outputs[0].features.available
    np.testing.assert_array_equal(weights, calibrated.weights_[0][available])
    explained = stub.Explain(
        pb.ExplainRequest(
            context_id=info.context_id, rows=_tensor(X[:5]), predictions=_tensor(p[:5])
        )
    )
    np.testing.assert_array_equal(_array(explained.values), calibrated.explain(X[:5], p[:5]).values)
    # The same outputs again: the same id, nothing rebuilt; the context it came from unchanged.
    again = stub.Calibrate(_calibrate_request(context.context_id, outputs, budget=1_000))
    assert again.context.context_id == info.context_id and not again.created
    base = stub.GetContext(pb.GetContextRequest(context_id=context.context_id))
    assert base.calibration_rows == 0 and not base.outputs[0].HasField("calibration")
    other = stub.Calibrate(_calibrate_request(context.context_id, outputs * 0.5 + 0.25))
    assert other.context.context_id not in (info.context_id, context.context_id)


def test_calibration_fields_are_checked_and_named(task, stub):
    context, local, _, _ = task
    cid = context.context_id
    good = model(local.propose_calibration(400).rows)
    cases = {
        "budget": [
            (stub.ProposeCalibration, pb.ProposeCalibrationRequest(context_id=cid, budget=399)),
            (stub.ProposeCalibration, pb.ProposeCalibrationRequest(context_id=cid, budget=-5)),
            (stub.Calibrate, _calibrate_request(cid, good, budget=150)),
        ],
        "random_state": [
            (
                stub.ProposeCalibration,
                pb.ProposeCalibrationRequest(context_id=cid, random_state=2**32),
            ),
            (stub.Calibrate, _calibrate_request(cid, good, budget=400, random_state=2**32)),
        ],
        "outputs": [
            (stub.Calibrate, _calibrate_request(cid, good[:-1], budget=400)),
            (stub.Calibrate, _calibrate_request(cid, np.full(400, np.nan), budget=400)),
            (stub.Calibrate, _calibrate_request(cid, None, budget=400)),
        ],
        "context_id": [
            (stub.ProposeCalibration, pb.ProposeCalibrationRequest()),
            (stub.Calibrate, _calibrate_request("", good, budget=400)),
        ],
    }
    for field, calls in cases.items():
        for call, request in calls:
            code, message, named = refusal(call, request)
            assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, field), message
    unknown = "ctx-" + "0" * 40
    for call, request in [
        (stub.ProposeCalibration, pb.ProposeCalibrationRequest(context_id=unknown)),
        (stub.Calibrate, _calibrate_request(unknown, good, budget=400)),
    ]:
        code, _, named = refusal(call, request)
        assert (code, named) == (grpc.StatusCode.NOT_FOUND, "context_id")


def test_a_context_whose_background_is_one_row_is_refused_calibration(client, stub):
    """Rows mixed from one background row are that row: calibrating on them set the scale to 0,
    and explain then answered zeros with NaN uncertainty and status OK (QA, 2026-12-05)."""
    X, p = make_task(n=60, seed=33)
    cid = client.create_context(X, p, background=[7]).context_id
    for call, request in [
        (stub.ProposeCalibration, pb.ProposeCalibrationRequest(context_id=cid)),
        (stub.Calibrate, _calibrate_request(cid, np.zeros(32), budget=32)),
    ]:
        code, message, named = refusal(call, request)
        assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, "context_id"), message
        assert "measure nothing" in message


def test_a_calibration_too_large_for_a_message_is_refused(make_server):
    limit = 64 << 10
    target = make_server(warm=False, max_message_bytes=limit)
    stub = shapley_pb2_grpc.ShapleyStub(target.channel())
    X, p = make_task(n=100, seed=32)
    with target.client(timeout=60, max_message_bytes=limit) as client:
        cid = client.create_context(X, p).context_id
    # 1,000 default rows x 5 features x 8 bytes = 40,000 bytes fit; 2,000 rows do not.
    assert stub.ProposeCalibration(pb.ProposeCalibrationRequest(context_id=cid)).budget == 1_000
    code, message, named = refusal(
        stub.ProposeCalibration, pb.ProposeCalibrationRequest(context_id=cid, budget=2_000)
    )
    assert (code, named) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget"), message
    # 65,536 // 40 = 1,638 rows, less the few the answer's framing and ids take.
    most = int(message.rsplit("the most is ", 1)[1])
    assert 1_630 <= most < 1_638
    proposed = stub.ProposeCalibration(pb.ProposeCalibrationRequest(context_id=cid, budget=most))
    assert proposed.budget == most
    code, message, named = refusal(
        stub.ProposeCalibration, pb.ProposeCalibrationRequest(context_id=cid, budget=most + 1)
    )
    assert (code, named) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget"), message


def test_calibrate_names_an_oversize_context_as_create_context_does(make_server):
    tight = make_server(warm=False, max_context_rows=250, max_features=8, max_outputs=2)
    stub = shapley_pb2_grpc.ShapleyStub(tight.channel())
    X, p = make_task(n=200, seed=34)
    spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(p))
    cid = stub.CreateContext(pb.CreateContextRequest(context=spec)).context.context_id
    rng = np.random.default_rng(34)
    oversize = {
        "context.rows": [
            (rng.normal(size=(300, 5)), rng.random(300)),  # n over 250
            (rng.normal(size=(50, 9)), rng.random(50)),  # d over 8
        ],
        "context.predictions": [(X, rng.random((200, 3)))],  # K over 2
    }
    for field, specs in oversize.items():
        for rows, predictions in specs:
            spec = pb.ContextSpec(rows=_tensor(rows), predictions=_tensor(predictions))
            created = refusal(stub.CreateContext, pb.CreateContextRequest(context=spec))
            request = _calibrate_request(cid, np.zeros(400), budget=400)
            request.context.CopyFrom(spec)
            calibrated = refusal(stub.Calibrate, request)
            assert created == calibrated, (created, calibrated)
            assert calibrated[::2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, field)


def test_a_calibrated_context_saved_by_one_replica_is_loaded_by_another(make_server, tmp_path):
    X, p = make_task(n=120, seed=33)
    first = make_server(warm=False, context_dir=str(tmp_path))
    with first.client(timeout=60) as client:
        calibrated = client.calibrate(client.create_context(X, p), model)
        answer = client.explain(calibrated, X[:3], p[:3])
    second = make_server(warm=False, context_dir=str(tmp_path))
    with second.client(timeout=60) as client:
        again = client.explain(calibrated.context_id, X[:3], p[:3])
    np.testing.assert_array_equal(again.values, answer.values)
    assert again.diagnostics[0].calibration is not None


# --- the Python client -----------------------------------------------------------------------


def _counting():
    """A list of the row counts ``model`` was called with, and the model that fills it."""
    calls = []

    def counting(rows):
        calls.append(rows.shape[0])
        return model(rows)

    return calls, counting


def test_client_calibrates_in_one_call_and_explains_refines_against_it(task, client):
    context, local, X, p = task
    calls, counting = _counting()
    calibrated = client.calibrate(context, counting, budget=400, random_state=5)
    assert calls == [400] and calibrated.calibration_rows == 400
    assert calibrated.calibration_refitted  # the client held the context's data: sent along
    proposal = local.propose_calibration(400, random_state=5)
    expected = local.calibrate(proposal, model(proposal.rows), X, p)
    np.testing.assert_array_equal(
        client.explain(calibrated, X[:4], p[:4]).values, expected.explain(X[:4], p[:4]).values
    )
    refined = client.explain(calibrated, X[:4], p[:4], model=model, budget=20)
    refine = expected.propose(X[:4], 20, p[:4])
    np.testing.assert_array_equal(
        refined.values, expected.refine(refine, model(refine.rows)).values
    )
    diagnostics = calibrated.diagnostics[0]
    assert diagnostics.calibration.scale == pytest.approx(expected.scales_[0])
    assert context.calibration_rows == 0 and context.diagnostics[0].calibration is None


def test_client_recreates_a_lost_calibrated_context_without_calling_the_model(task, client):
    context, _, X, p = task
    calls, counting = _counting()
    calibrated = client.calibrate(context, counting)
    before = client.explain(calibrated, X[:3], p[:3]).values
    calibrated_id = calibrated.context_id
    client.delete_context(calibrated)
    client.delete_context(context)
    after = client.explain(calibrated, X[:3], p[:3]).values
    # The client held the data: a refit, on its default budget (20 per background row).
    assert calibrated.calibration_refitted
    assert calls == [2_000] and calibrated.context_id == calibrated_id
    np.testing.assert_array_equal(after, before)


def test_client_calibration_errors(task, client):
    context, _, _, _ = task
    with pytest.raises(TypeError, match="callable"):
        client.calibrate(context, "not a model")
    with pytest.raises(ShapleyError) as caught:
        client.calibrate(context, lambda rows: model(rows)[:-1])
    assert caught.value.field == "outputs"
    with pytest.raises(ShapleyError) as caught:
        client.calibrate(context, model, budget=10)
    assert caught.value.field == "budget" and "at least 400" in str(caught.value)


def test_calibrate_with_the_context_refits_the_zoo_as_in_process(task, stub):
    context, local, X, p = task
    proposal = local.propose_calibration(refit=True)
    outputs = model(proposal.rows)
    # Budget 0 with the context: the refit's default, 20 rows per background row.
    request = _calibrate_request(context.context_id, outputs)
    request.context.CopyFrom(context.spec)
    answer = stub.Calibrate(request)
    assert answer.context.calibration_refitted and answer.context.calibration_rows == 2_000
    # Without it, budget 0 is the weights' default (1,000): these outputs are another budget's.
    code, message, named = refusal(stub.Calibrate, _calibrate_request(context.context_id, outputs))
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, "outputs"), message
    assert "has 2000 rows; the calibration proposal for budget 1000 has 1000" in message
    assert "budget 0 is the weights' default" in message and "refit proposes 2000" in message
    # The other way round: a weights-only proposal's outputs sent with the context.
    weights_outputs = model(local.propose_calibration().rows)
    mixed = _calibrate_request(context.context_id, weights_outputs)
    mixed.context.CopyFrom(context.spec)
    code, message, named = refusal(stub.Calibrate, mixed)
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, "outputs"), message
    assert "budget 0 is a refit's default" in message and "refit proposes 1000" in message
    # A budget the caller chose is named as such, without the defaults.
    explicit = _calibrate_request(context.context_id, weights_outputs, budget=1_500)
    code, message, named = refusal(stub.Calibrate, explicit)
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, "outputs"), message
    assert "has 1000 rows; the calibration proposal for budget 1500 has 1400" in message
    assert "default" not in message
    weights_only = stub.Calibrate(
        _calibrate_request(context.context_id, outputs, budget=2_000)
    ).context
    assert not weights_only.calibration_refitted
    assert weights_only.context_id != answer.context.context_id
    expected = local.calibrate(proposal, outputs, X, p)
    explained = stub.Explain(
        pb.ExplainRequest(
            context_id=answer.context.context_id, rows=_tensor(X[:5]), predictions=_tensor(p[:5])
        )
    )
    np.testing.assert_array_equal(_array(explained.values), expected.explain(X[:5], p[:5]).values)
    other = pb.ContextSpec()
    other.CopyFrom(context.spec)
    other.random_state = 9  # another context's spec
    request.context.CopyFrom(other)
    code, message, named = refusal(stub.Calibrate, request)
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, "context"), message


def test_client_refits_when_it_holds_the_data_and_is_told_otherwise(task, client):
    context, _, _, _ = task
    assert not client.calibrate(context.context_id, model).calibration_refitted
    assert not client.calibrate(context, model, refit=False).calibration_refitted
    with pytest.raises(ValueError, match="not an id"):
        client.calibrate(context.context_id, model, refit=True)


def test_a_refit_beyond_the_largest_context_is_refused_and_the_client_reweighs(make_server):
    target = make_server(warm=False, max_context_rows=1_000)
    stub = shapley_pb2_grpc.ShapleyStub(target.channel())
    X, p = make_task(n=300, seed=34)
    with target.client(timeout=120) as client:
        context = client.create_context(X, p)
        proposal = client.propose_calibration(context)  # the default: 1,000 rows
        request = _calibrate_request(context.context_id, model(proposal.rows))
        request.context.CopyFrom(context.spec)
        code, message, named = refusal(stub.Calibrate, request)
        assert (code, named) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget"), message
        # Budget 0 with the context is the refit's default (2,000 rows).
        assert "2300 in all; the limit is 1000 (a budget of at most 700" in message
        # Without the context the weights alone are refitted; the client chooses that itself.
        assert not stub.Calibrate(
            _calibrate_request(context.context_id, model(proposal.rows))
        ).context.calibration_refitted
        assert not client.calibrate(context, model).calibration_refitted
        with pytest.raises(ShapleyError) as caught:
            client.calibrate(context, model, refit=True)
        assert caught.value.field == "budget"
        assert client.calibrate(context, model, budget=700).calibration_refitted


def test_the_client_refits_on_the_weights_budget_where_the_refits_does_not_fit(make_server):
    target = make_server(warm=False, max_context_rows=1_500)
    X, p = make_task(n=300, seed=35)
    with target.client(timeout=120) as client:
        context = client.create_context(X, p)
        # 300 + 2,000 rows would pass the limit, 300 + 1,000 do not: by default and when told
        # to refit.
        for refit in (None, True):
            calls, counting = _counting()
            calibrated = client.calibrate(context, counting, refit=refit)
            assert calls == [1_000]
            assert calibrated.calibration_refitted and calibrated.calibration_rows == 1_000


def test_client_calibrates_a_calibrated_context_with_the_defaults(task, client, stub):
    context, _, _, _ = task
    once = client.calibrate(context, model, budget=400)
    assert once.calibration_refitted
    calls, counting = _counting()
    twice = client.calibrate(once, counting)
    # The server refits only the context whose content address its spec is, and a calibrated
    # context's id is no spec's: by default the weights are calibrated again, on their budget.
    # Their members are still the refit's, and the rows of both calibrations are counted.
    assert calls == [1_000]
    assert twice.calibration_refitted and twice.calibration_rows == once.calibration_rows + 1_000
    proposal = stub.ProposeCalibration(pb.ProposeCalibrationRequest(context_id=once.context_id))
    by_hand = stub.Calibrate(_calibrate_request(once.context_id, model(_array(proposal.rows))))
    assert twice.context_id == by_hand.context.context_id
    assert [kept.context_id for kept in twice.calibrations] == [
        context.context_id,
        once.context_id,
    ]
    calls.clear()
    with pytest.raises(ValueError, match="refit=True") as refused:
        client.calibrate(once, counting, refit=True)
    assert f"{once.context_id} is a calibrated context" in str(refused.value)
    assert calls == []  # refused before the model is called


def test_client_recreates_a_context_calibrated_twice_as_it_was(task, client):
    context, _, X, p = task
    calls, counting = _counting()
    once = client.calibrate(context, counting, budget=400)
    twice = client.calibrate(once, counting, budget=400)
    twice_id = twice.context_id
    before = client.explain(twice, X[:3], p[:3])
    for lost in (twice, once, context):  # a restart, or another replica
        client.delete_context(lost)
    after = client.explain(twice, X[:3], p[:3])  # every calibration replayed, in order
    assert twice.context_id == after.context_id == before.context_id == twice_id
    np.testing.assert_array_equal(after.values, before.values)
    assert after.diagnostics == before.diagnostics
    client.delete_context(twice)
    streamed = client.explain_stream(twice, X[:3], p[:3], chunk_rows=2)
    assert streamed.context_id == twice_id
    np.testing.assert_array_equal(streamed.values, before.values)
    assert calls == [400, 400]  # from the outputs the Context keeps


def test_client_refuses_a_context_that_comes_back_under_another_id(client):
    X, p = make_task(n=120, seed=36)
    context = client.create_context(X, p)
    calibrated = client.calibrate(context, model, budget=400, refit=False)
    # What a server with another artifact does: other contexts from the same data. Here the
    # data the Context keeps is changed instead.
    other_spec = pb.ContextSpec()
    other_spec.CopyFrom(context.spec)
    other_spec.random_state = 5
    other_outputs = pb.CalibrateRequest()
    other_outputs.CopyFrom(calibrated.calibration)
    other_outputs.outputs.CopyFrom(_tensor(_array(other_outputs.outputs) * 0.5))
    cases = [
        ("its spec", context.context_id, other_spec, ()),
        ("calibration 1 of 1", calibrated.context_id, context.spec, (other_outputs,)),
    ]
    for step, context_id, spec, calibrations in cases:
        kept = Context(context_id, pb.ContextInfo(context_id=context_id), spec, {}, calibrations)
        client.delete_context(context_id)
        with pytest.raises(ShapleyError) as caught:
            client.explain(kept, X[:3], p[:3])
        error = caught.value
        assert (error.code, error.field) == (grpc.StatusCode.NOT_FOUND, "context_id")
        assert f"{step} gave ctx-" in error.details and f"not {context_id}" in error.details
        assert kept.context_id == context_id  # never another context in its place


def test_a_replica_that_cannot_replay_a_calibration_says_which(client, make_server):
    X, p = make_task(n=120, seed=37)
    calibrated = client.calibrate(client.create_context(X, p), model, budget=400, refit=True)
    # Another replica takes the context's 120 rows, but not a refit of them with 400 more.
    replica = make_server(warm=False, max_context_rows=500)
    with replica.client(timeout=60) as other:
        with pytest.raises(ShapleyError) as caught:
            other.explain(calibrated, X[:3], p[:3])
    error = caught.value
    assert (error.code, error.field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "context_id")
    assert calibrated.context_id in error.details
    assert "calibration 1 of 1 was refused (RESOURCE_EXHAUSTED: budget: " in error.details


def test_a_proposal_whose_outputs_would_not_fit_in_a_message_is_refused_naming_budget(make_server):
    """At d = 3 and K = 40 the proposal's rows fit where their outputs do not: ProposeCalibration
    took a budget of 600, the model scored 600 rows, then Calibrate (192 KB of outputs) was
    refused by gRPC with no field (QA, 2026-12-05). Propose for refine likewise."""
    limit = 80_000
    server = make_server(warm=False, max_message_bytes=limit)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    scores = X[:, :1] * np.arange(1, 41) / 10 - X[:, 1:2]
    probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(probabilities))
    context_id = stub.CreateContext(pb.CreateContextRequest(context=spec)).context.context_id
    # 600 rows of 40 outputs: 192,000 bytes; 240 (the least budget here), 76,800.
    for budget, allowed in ((600, False), (240, True)):
        request = pb.ProposeCalibrationRequest(context_id=context_id, budget=budget)
        if allowed:
            proposal = stub.ProposeCalibration(request)
            outputs = np.full((len(_array(proposal.rows)), 40), 1 / 40)
            assert _tensor(outputs).ByteSize() < limit  # what Calibrate carries back fits
        else:
            code, message, field = refusal(stub.ProposeCalibration, request)
            assert (code, field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget")
            assert "each row's 40 outputs" in message and "the most is 24" in message
    propose = pb.ProposeRequest(context_id=context_id, rows=_tensor(X[:20]), budget=16)
    code, message, field = refusal(stub.Propose, propose)
    assert (code, field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget")
    assert "40 outputs a row back in Refine" in message


def test_calibrate_refuses_outputs_scored_on_rows_it_would_not_propose(task, stub):
    """Calibrate rebuilds the proposal from (context, budget, random_state): a replica of
    another version (its draws differ) calibrated on outputs of other rows, silently, and a
    client recreating a calibrated context replays kept outputs on whatever replica it reaches.
    Given the proposal's sha256 back, the calibration is refused instead."""
    context, local, _, _ = task
    proposed = stub.ProposeCalibration(
        pb.ProposeCalibrationRequest(context_id=context.context_id, budget=400, random_state=11)
    )
    assert proposed.proposal_sha256 == local.propose_calibration(400, random_state=11).rows_sha256
    outputs = model(_array(proposed.rows))
    other = stub.ProposeCalibration(
        pb.ProposeCalibrationRequest(context_id=context.context_id, budget=400, random_state=12)
    )
    request = _calibrate_request(context.context_id, outputs, budget=400, random_state=11)
    request.proposal_sha256 = other.proposal_sha256
    code, message, field = refusal(stub.Calibrate, request)
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "proposal_sha256")
    assert "call ProposeCalibration again" in message
    request.proposal_sha256 = "not a digest"
    code, _, field = refusal(stub.Calibrate, request)
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "proposal_sha256")
    request.proposal_sha256 = proposed.proposal_sha256
    calibrated = stub.Calibrate(request).context
    expected = local.calibrate(local.propose_calibration(400, random_state=11), outputs)
    info = stub.Explain(
        pb.ExplainRequest(context_id=calibrated.context_id, rows=_tensor(_array(proposed.rows)[:3]))
    )
    np.testing.assert_array_equal(
        _array(info.values), expected.explain(_array(proposed.rows)[:3]).values
    )


def test_client_calibrate_sends_the_proposals_sha256(task, client, monkeypatch):
    """``calibrate`` hands Calibrate the sha256 ProposeCalibration answered (and keeps it in the
    request it replays): rows the server would not propose are refused, not calibrated on."""
    context, _, _, _ = task
    propose = client.propose_calibration

    def another_version(*args, **kwargs):
        return dataclasses.replace(propose(*args, **kwargs), proposal_sha256="f" * 64)

    monkeypatch.setattr(client, "propose_calibration", another_version)
    with pytest.raises(ShapleyError) as caught:
        client.calibrate(context, model, budget=400, random_state=13, refit=False)
    assert caught.value.field == "proposal_sha256"
    monkeypatch.setattr(client, "propose_calibration", propose)
    calibrated = client.calibrate(context, model, budget=400, random_state=13, refit=False)
    assert len(calibrated.calibrations[-1].proposal_sha256) == 64
