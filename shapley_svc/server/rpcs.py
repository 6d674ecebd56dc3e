"""The ``shapley.v1.Shapley`` RPCs as the proto descriptor declares them, and what every handler
shares: the lenient request parser, the status at the edge and the metrics.

Nothing here lists the RPCs by hand: names, message classes and whether requests or responses
stream come from ``shapley_pb2.DESCRIPTOR``, so a new RPC in the .proto needs only its method on
the servicer.
"""

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf import message_factory

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc.errors import InvalidArgumentError
from shapley_svc.server.status import abort, status_code

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

    def parsed(request_or_iterator):
        if rpc.request_streaming:
            return map(_parsed, request_or_iterator)
        return _parsed(request_or_iterator)

    if rpc.response_streaming:

        @functools.wraps(method)
        def streaming(self, request_or_iterator, context):
            start, code = time.perf_counter(), "OK"
            try:
                yield from method(self, parsed(request_or_iterator), context)
            except Exception as error:
                # A caller that went away is not told why: there is nobody to tell.
                code = status_code(error).name if context.is_active() else "CANCELLED"
                if code != "CANCELLED":
                    abort(context, error, name)
            finally:
                self.metrics.observe(name, code, time.perf_counter() - start)

        return streaming

    @functools.wraps(method)
    def unary(self, request_or_iterator, context):
        start, code = time.perf_counter(), "OK"
        try:
            return method(self, parsed(request_or_iterator), context)
        except Exception as error:
            code = status_code(error).name
            abort(context, error, name)
        finally:
            self.metrics.observe(name, code, time.perf_counter() - start)

    return unary
