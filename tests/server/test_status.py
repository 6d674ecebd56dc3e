"""The edge's tables, without sockets: domain error -> status code, argument -> request field,
and the rich status a refusal carries."""

import inspect
import logging

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from shapley_svc import errors
from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc.server.rpcs import RPCS, handled
from shapley_svc.server.service import ShapleyService
from shapley_svc.server.status import (
    CONTEXT_FIELDS,
    QUERY_FIELDS,
    STATUS_CODES,
    abort,
    naming_request_fields,
    refusal,
    status_code,
)

DOMAIN_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.ShapleyError) and cls is not errors.ShapleyError
]


@pytest.mark.parametrize("error_class", DOMAIN_ERRORS, ids=lambda cls: cls.__name__)
def test_every_domain_error_has_its_status(error_class):
    assert error_class in STATUS_CODES
    assert status_code(error_class.__new__(error_class)) == STATUS_CODES[error_class]


def test_errors_outside_the_table_are_internal():
    assert status_code(RuntimeError("boom")) == grpc.StatusCode.INTERNAL
    assert status_code(ValueError("a bare ValueError is a bug")) == grpc.StatusCode.INTERNAL


def _rich(status: grpc.Status) -> status_pb2.Status:
    ((key, value),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"  # the standard key every gRPC library reads
    return status_pb2.Status.FromString(value)


def test_a_refusal_names_its_field_in_bad_request_details():
    status = refusal(errors.LimitExceededError("rows", "12 rows; the limit is 10"))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status.details == "rows: 12 rows; the limit is 10"
    rich = _rich(status)
    assert rich.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert rich.message == status.details
    bad_request = error_details_pb2.BadRequest()
    assert rich.details[0].Unpack(bad_request)
    (violation,) = bad_request.field_violations
    assert (violation.field, violation.description) == ("rows", "12 rows; the limit is 10")
    unnamed = refusal(errors.DeadlineExceededError("deadline expired"))
    assert unnamed.details == "deadline expired" and not _rich(unnamed).details


def test_estimator_arguments_become_request_fields_by_kind_of_call():
    def raised(fields, error):
        with pytest.raises(errors.ShapleyError) as caught, naming_request_fields(fields):
            raise error
        return caught.value.argument

    assert raised(CONTEXT_FIELDS, errors.InvalidArgumentError("predictions", "...")) == (
        "context.predictions"
    )
    # An ExplainRequest's own predictions field, named by the codec, stays what it is.
    assert raised(QUERY_FIELDS, errors.InvalidArgumentError("predictions", "...")) == "predictions"
    assert raised(QUERY_FIELDS, errors.InvalidArgumentError("X_query", "...")) == "rows"
    assert raised(CONTEXT_FIELDS, errors.NotFoundError("context_id", "...")) == "context_id"
    request_fields = {*pb.ContextSpec.DESCRIPTOR.fields_by_name}
    assert {field.removeprefix("context.") for field in CONTEXT_FIELDS.values()} <= request_fields
    assert set(QUERY_FIELDS.values()) <= {*pb.ExplainRequest.DESCRIPTOR.fields_by_name}


class _RecordingContext:
    """What a handler's ``abort`` calls on grpc's ServicerContext, recorded."""

    def __init__(self):
        self.aborted = None

    def abort(self, code, details):
        self.aborted = (code, details)
        raise Exception("aborted")

    def abort_with_status(self, status):
        self.aborted = (status.code, status.details)
        raise Exception("aborted")


def test_unexpected_failures_are_internal_with_a_correlation_id_and_no_text(caplog):
    context = _RecordingContext()
    with pytest.raises(Exception, match="aborted"):
        abort(context, KeyError("/secret/path/in/a/traceback"), "Explain")
    code, details = context.aborted
    assert code == grpc.StatusCode.INTERNAL and "secret" not in details
    correlation = details.split("correlation id ")[1].rstrip(")")
    assert correlation in caplog.text and "secret" in caplog.text  # the log keeps the cause
    with pytest.raises(Exception, match="aborted"):
        abort(context, errors.ArtifactError("weights at /secret are corrupted"), "Explain")
    assert context.aborted[0] == grpc.StatusCode.INTERNAL and "secret" not in context.aborted[1]


def test_the_handler_table_is_the_proto_s():
    methods = pb.DESCRIPTOR.services_by_name["Shapley"].methods
    assert set(RPCS) == {method.name for method in methods}
    for method in methods:
        rpc = RPCS[method.name]
        assert (rpc.request_streaming, rpc.response_streaming) == (
            method.client_streaming,
            method.server_streaming,
        )
        assert rpc.request_class.DESCRIPTOR is method.input_type
        assert inspect.isgeneratorfunction(getattr(ShapleyService, method.name)) == (
            method.server_streaming
        )


class _Aborted(Exception):
    """What grpc's ``ServicerContext.abort`` raises."""


class _CallerContext:
    """A ServicerContext whose caller is there (``remaining``: None) or has gone, leaving that
    many seconds before its deadline (0: the deadline passed)."""

    def __init__(self, remaining: float | None):
        self.remaining = remaining
        self.aborted = None
        self.callbacks = []

    def add_callback(self, callback) -> bool:
        self.callbacks.append(callback)
        return True

    def end(self) -> None:
        """The call ends: grpc runs the callbacks registered on it."""
        for callback in self.callbacks:
            callback()

    def is_active(self) -> bool:
        return self.remaining is None

    def time_remaining(self) -> float:
        # grpc's time left to a call without a deadline: a very long time.
        return 1e9 if self.remaining is None else self.remaining

    def abort(self, code, details):
        self.aborted = code
        raise _Aborted

    def abort_with_status(self, status):
        self.aborted = status.code
        raise _Aborted


class _Observed:
    def __init__(self):
        self.calls = []

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.calls.append((method, code))


def _left():
    """A client stream whose caller went away: grpc's request iterator raises an RpcError."""
    raise grpc.RpcError()
    yield  # pragma: no cover - a generator that raises when first asked


class _Servicer:
    """Two RPCs whose requests come from a stream (one answers once, one streams answers), and
    one that answers one request."""

    def __init__(self):
        self.metrics = _Observed()
        self.streams_read = 0

    @handled
    def CreateContextStream(self, request_iterator, context):
        list(request_iterator)
        self.streams_read += 1

    @handled
    def ExplainStream(self, request_iterator, context):
        for _ in request_iterator:
            yield pb.ExplainResponse()

    @handled
    def Explain(self, request, context):
        return pb.ExplainResponse()


@pytest.mark.parametrize("method", ["CreateContextStream", "ExplainStream"])
@pytest.mark.parametrize(
    ("remaining", "code"),
    [
        (0.0, "DEADLINE_EXCEEDED"),
        (0.05, "DEADLINE_EXCEEDED"),
        (30.0, "CANCELLED"),
        (1e9, "CANCELLED"),
    ],
)
def test_a_caller_that_went_away_is_counted_as_gone_not_as_a_bug(method, remaining, code, caplog):
    servicer, context = _Servicer(), _CallerContext(remaining)
    call = getattr(servicer, method)
    if RPCS[method].response_streaming:
        list(call(_left(), context))  # the stream just ends: there is nobody to send to
    else:
        with pytest.raises(_Aborted):  # grpc drops the status quietly: the caller has gone
            call(_left(), context)
        assert context.aborted == getattr(grpc.StatusCode, code)
    assert servicer.metrics.calls == [(method, code)]
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


class _CutOffContext(_CallerContext):
    """A call whose deadline has passed, before grpc marks it ended: its request stream ends as
    a closed one does, and the call still looks active."""

    def __init__(self):
        super().__init__(0.0)

    def is_active(self) -> bool:
        return True


@pytest.mark.parametrize("method", ["CreateContextStream", "ExplainStream"])
def test_a_stream_cut_off_at_its_deadline_is_not_taken_as_complete(method, caplog):
    caplog.set_level(logging.INFO, logger="shapley_svc.server")
    servicer, context = _Servicer(), _CutOffContext()
    call = getattr(servicer, method)
    if RPCS[method].response_streaming:
        assert len(list(call(iter([pb.ExplainRequest()]), context))) == 1
    else:
        with pytest.raises(_Aborted):
            call(iter([pb.CreateContextRequest()]), context)
        assert context.aborted == grpc.StatusCode.DEADLINE_EXCEEDED
        assert servicer.streams_read == 0  # nothing is fitted from what arrived
    assert servicer.metrics.calls == [(method, "DEADLINE_EXCEEDED")]
    assert f"{method} ended DEADLINE_EXCEEDED: the caller has gone" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_caller_still_there_is_told_and_a_bug_while_it_left_keeps_its_traceback(caplog):
    servicer, there = _Servicer(), _CallerContext(None)
    with pytest.raises(_Aborted):
        servicer.CreateContextStream(_left(), there)
    assert there.aborted == grpc.StatusCode.INTERNAL  # an RpcError while the caller is there
    assert servicer.metrics.calls == [("CreateContextStream", "INTERNAL")]

    def broken():
        raise KeyError("a bug")
        yield  # pragma: no cover

    gone = _CallerContext(30.0)
    with pytest.raises(_Aborted):
        servicer.CreateContextStream(broken(), gone)
    assert servicer.metrics.calls[-1] == ("CreateContextStream", "CANCELLED")
    (warning,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.exc_info[0] is KeyError and "ended CANCELLED" in warning.getMessage()


@pytest.mark.parametrize(
    ("remaining_at_end", "code"), [(None, "OK"), (5.0, "OK"), (0.0, "DEADLINE_EXCEEDED")]
)
def test_an_answered_call_is_counted_when_it_ends_by_what_ended_it(remaining_at_end, code):
    # A large answer can still be on its way when the caller's deadline passes: the caller sees
    # DEADLINE_EXCEEDED although the handler answered, and so must the metrics.
    servicer, context = _Servicer(), _CallerContext(None)
    assert servicer.Explain(pb.ExplainRequest(), context) == pb.ExplainResponse()
    assert servicer.metrics.calls == []  # the answer is not sent yet
    context.remaining = remaining_at_end
    context.end()
    assert servicer.metrics.calls == [("Explain", code)]


@pytest.mark.parametrize(("remaining", "code"), [(30.0, "CANCELLED"), (0.0, "DEADLINE_EXCEEDED")])
def test_a_call_whose_caller_left_while_it_worked_is_counted_as_what_ended_it(
    remaining, code, caplog
):
    # A handler that does not poll its caller runs to the end and returns an answer nobody
    # receives: it was counted OK.
    caplog.set_level(logging.INFO, logger="shapley_svc.server")
    servicer, context = _Servicer(), _CallerContext(remaining)
    servicer.Explain(pb.ExplainRequest(), context)
    assert servicer.metrics.calls == [("Explain", code)]
    assert f"Explain ended {code}: the caller has gone" in caplog.text
    assert context.callbacks == []
