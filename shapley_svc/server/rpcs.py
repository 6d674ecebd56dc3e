"""The ``shapley.v1.Shapley`` RPCs as the proto descriptor declares them, and what every handler
shares: the lenient request parser, the status at the edge and the metrics.

Nothing here lists the RPCs by hand: names, message classes and whether requests or responses
stream come from ``shapley_pb2.DESCRIPTOR``, so a new RPC in the .proto needs only its method on
the servicer.
"""

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from google.protobuf import message_factory

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc.errors import InvalidArgumentError, ShapleyError
from shapley_svc.server.status import abort, status_code

log = logging.getLogger("shapley_svc.server")

SERVICE = pb.DESCRIPTOR.services_by_name["Shapley"]
SERVICE_NAME = SERVICE.full_name


@dataclass(frozen=True)
class Rpc:
    request_streaming: bool
    response_streaming: bool
    request_class: type
    response_class: type


RPCS: dict[str, Rpc] = {
    method.name: Rpc(
        method.client_streaming,
        method.server_streaming,
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )
    for method in SERVICE.methods
}

_HANDLER_MAKERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def method_handler(
    behaviour: Callable,
    request_streaming: bool,
    response_streaming: bool,
    request_deserializer: Callable | None,
    response_serializer: Callable | None,
) -> grpc.RpcMethodHandler:
    """grpc's method handler of the given kind (one of its four constructors)."""
    return _HANDLER_MAKERS[(request_streaming, response_streaming)](
        behaviour,
        request_deserializer=request_deserializer,
        response_serializer=response_serializer,
    )


class MalformedRequest:
    """Bytes that did not parse as the request message (gRPC would answer INTERNAL)."""

    def __init__(self, message: str, size: int):
        self.message, self.size = message, size


def _lenient(message_class: type) -> Callable[[bytes], object]:
    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except Exception:  # protobuf's DecodeError and friends: all mean "not this message"
            return MalformedRequest(message_class.DESCRIPTOR.full_name, len(data))

    return parse


def _parsed(request):
    if isinstance(request, MalformedRequest):
        raise InvalidArgumentError(
            "", f"{request.size} bytes do not parse as a {request.message} message"
        )
    return request


def add_to_server(service: object, server: grpc.Server) -> None:
    """Register like the generated ``add_ShapleyServicer_to_server``, but with deserializers
    that let malformed bytes reach the handler, which answers INVALID_ARGUMENT."""
    handlers = {
        name: method_handler(
            getattr(service, name),
            rpc.request_streaming,
            rpc.response_streaming,
            _lenient(rpc.request_class),
            rpc.response_class.SerializeToString,
        )
        for name, rpc in RPCS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def handled(method: Callable) -> Callable:
    """An RPC method of a servicer with a ``metrics`` attribute: requests arrive parsed (or the
    call is refused), errors leave as statuses (:mod:`shapley_svc.server.status`), and every call
    is counted with its status code and latency."""
    name = method.__name__
    rpc = RPCS[name]

    def parsed(request_or_iterator, context):
        if rpc.request_streaming:
            return _whole_stream(map(_parsed, request_or_iterator), context)
        return _parsed(request_or_iterator)

    if rpc.response_streaming:

        @functools.wraps(method)
        def streaming(self, request_or_iterator, context):
            start, code = time.perf_counter(), "OK"
            try:
                yield from method(self, parsed(request_or_iterator, context), context)
            except GeneratorExit as closed:
                # grpc closes the generator at its ``yield`` when the call ended while an answer
                # was being sent (the client cancelled, or its deadline passed): not an
                # Exception, and not a success either.
                code = _gone(context, closed, name) or "CANCELLED"
                raise
            except Exception as error:
                gone = _gone(context, error, name)
                code = gone or status_code(error).name
                if gone is None:
                    abort(context, error, name)
            finally:
                self.metrics.observe(name, code, time.perf_counter() - start)

        return streaming

    @functools.wraps(method)
    def unary(self, request_or_iterator, context):
        start = time.perf_counter()
        try:
            answer = method(self, parsed(request_or_iterator, context), context)
        except Exception as error:
            gone = _gone(context, error, name)
            code = gone or status_code(error).name
            self.metrics.observe(name, code, time.perf_counter() - start)
            if gone is None:
                abort(context, error, name)
            # Nobody receives this status; without it grpc would try to serialize no response
            # and log that as an error.
            context.abort(grpc.StatusCode[gone], "the caller has gone")
        if not context.is_active():  # the caller went away while the work went on
            code = _ending(context)
            log.info("%s ended %s: the caller has gone (the answer is dropped)", name, code)
            self.metrics.observe(name, code, time.perf_counter() - start)
            return answer  # grpc drops it
        # The answer is still to be sent, and a large one can outlast the caller's deadline:
        # counted when the call ends, by what ended it.
        if not context.add_callback(lambda: _observe_answered(self.metrics, name, context, start)):
            _observe_answered(self.metrics, name, context, start)
        return answer

    return unary


class StreamCutOffError(grpc.RpcError):
    """A request stream that ended because its deadline passed, not because the caller closed it.

    grpc's request iterator ends a stream whose call ended as it ends a closed one, a plain
    StopIteration, when it looks before it has marked the call ended: a stream cut off after its
    first block was taken as complete, and its context fitted for nobody (a CI run at 82f9bfd).
    A stream the caller cancels can be cut off the same way, and nothing here tells the two
    apart while the call still looks active: a stream whose first message declares its
    ``total_rows`` (both clients' do) is then refused for ending short
    (``messages.streamed_context_spec``); one without is fitted under the content id of the
    blocks that arrived (no other data's), and the answer dropped.
    """


def _whole_stream(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
    """The requests of a client stream, ending in :class:`StreamCutOffError` where the stream
    ended at the call's deadline."""
    yield from requests
    if _ending(context) == "DEADLINE_EXCEEDED":
        raise StreamCutOffError()


def _observe_answered(metrics, method: str, context: grpc.ServicerContext, start: float) -> None:
    """Count a unary call whose handler answered: OK, unless the call ended after its deadline.

    The server's deadline is the caller's shifted by the request's trip, and the call ends here
    once the answer is handed to the transport, before the caller reads it: a call that ends
    past the server's deadline reached its caller past the caller's, which saw
    DEADLINE_EXCEEDED (seen with a 38 MB answer; grpc gives the handler no final status).
    """
    code = "DEADLINE_EXCEEDED" if context.time_remaining() <= 0 else "OK"
    metrics.observe(method, code, time.perf_counter() - start)


# A caller's deadline ends its call from both sides at about the same moment: the caller's grpc
# cancels at its deadline, and the server's at the same deadline shifted by the request's trip
# (the timeout travels as a duration). Whichever comes first, a call that ends this close to its
# deadline ended because of it.
_DEADLINE_SLACK_SECONDS = 0.1


def _ending(context: grpc.ServicerContext) -> str:
    """How a call whose caller has gone ended: DEADLINE_EXCEEDED at its deadline, else
    CANCELLED."""
    remaining = context.time_remaining()
    deadline_passed = remaining is not None and remaining <= _DEADLINE_SLACK_SECONDS
    return "DEADLINE_EXCEEDED" if deadline_passed else "CANCELLED"


def _gone(context: grpc.ServicerContext, error: BaseException, method: str) -> str | None:
    """None while the caller is there to be told why its call failed; else the status code its
    call ended with, CANCELLED or DEADLINE_EXCEEDED.

    A caller that went away is not told why: there is nobody to tell. What its going away raises
    in the handler (grpc's RpcError from a client stream's request iterator, the work's
    CancelledError, the GeneratorExit that closes a response stream at its ``yield``) is no bug
    of the server's and is logged as what it was; anything else keeps its traceback in the log,
    as a bug would, but the call is still counted as what ended it.
    """
    if context.is_active() and not isinstance(error, StreamCutOffError):
        return None
    code = _ending(context)
    expected = isinstance(error, grpc.RpcError | GeneratorExit) or (
        isinstance(error, ShapleyError) and status_code(error) != grpc.StatusCode.INTERNAL
    )
    log.log(
        logging.INFO if expected else logging.WARNING,
        "%s ended %s: the caller has gone (%s)",
        method,
        code,
        type(error).__name__,
        exc_info=None if expected else error,
    )
    return code
