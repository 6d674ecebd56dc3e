"""gRPC server reflection, v1 and v1alpha, serving the proto's comments to generic clients.

grpcio-reflection registers only ``grpc.reflection.v1alpha`` and serialises descriptors with
``CopyToProto``, which drops their source info: grpcurl's ``describe`` then shows no comments.
This servicer answers from the ``FileDescriptorSet`` that ``scripts/generate_protos.py`` writes
with source info (``_proto/descriptors.binpb``) and from the default pool for every other file
(health, reflection itself). The v1 and v1alpha protocols are the same messages under two
package names, so one implementation with grpcio-reflection's message classes serves both.
"""

from collections.abc import Iterable, Iterator
from importlib import resources

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as messages

SERVICE_NAMES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
_METHOD = "ServerReflectionInfo"


def _commented_files() -> dict[str, bytes]:
    """Serialised ``FileDescriptorProto`` with source info, by file name."""
    data = resources.files("shapley_svc._proto").joinpath("descriptors.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {file.name: file.SerializeToString() for file in files}


class ReflectionService:
    """Answers ``ServerReflectionInfo`` streams for the services in ``service_names``."""

    def __init__(self, service_names: Iterable[str]):
        self._service_names = tuple(sorted({*service_names, *SERVICE_NAMES}))
        self._pool = descriptor_pool.Default()
        _add_reflection_v1(self._pool)
        self._commented = _commented_files()

    def _file_containing(self, symbol: str):
        """The file defining ``symbol``: a type, or a service's method, which the protocol
        allows and grpcurl asks for (``describe shapley.v1.Shapley.Explain``) but the pool
        does not index."""
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            service = self._pool.FindServiceByName(service_name)  # KeyError: not found
            if method not in service.methods_by_name:
                raise
            return service.file

    def _serialised(self, file) -> bytes:
        commented = self._commented.get(file.name)
        if commented is not None:
            return commented
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        return proto.SerializeToString()

    def _with_dependencies(self, file) -> list[bytes]:
        """The file and everything it imports, the file first (what clients expect)."""
        seen, order, pending = set(), [], [file]
        while pending:
            current = pending.pop()
            if current.name in seen:
                continue
            seen.add(current.name)
            order.append(current)
            pending.extend(current.dependencies)
        return [self._serialised(f) for f in order]

    def _answer(self, request) -> messages.ServerReflectionResponse:
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                services = [messages.ServiceResponse(name=name) for name in self._service_names]
                return messages.ServerReflectionResponse(
                    original_request=request,
                    list_services_response=messages.ListServiceResponse(service=services),
                )
            if kind == "file_by_filename":
                file = self._pool.FindFileByName(request.file_by_filename)
            elif kind == "file_containing_symbol":
                file = self._file_containing(request.file_containing_symbol)
            elif kind == "file_containing_extension":
                extension = request.file_containing_extension
                message = self._pool.FindMessageTypeByName(extension.containing_type)
                file = self._pool.FindExtensionByNumber(message, extension.extension_number).file
            elif kind == "all_extension_numbers_of_type":
                message = self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                numbers = [e.number for e in self._pool.FindAllExtensions(message)]
                return messages.ServerReflectionResponse(
                    original_request=request,
                    all_extension_numbers_response=messages.ExtensionNumberResponse(
                        base_type_name=message.full_name, extension_number=numbers
                    ),
                )
            else:
                return _error(request, grpc.StatusCode.INVALID_ARGUMENT, "unknown request kind")
        except KeyError:
            return _error(request, grpc.StatusCode.NOT_FOUND, "not found")
        return messages.ServerReflectionResponse(
            original_request=request,
            file_descriptor_response=messages.FileDescriptorResponse(
                file_descriptor_proto=self._with_dependencies(file)
            ),
        )

    def ServerReflectionInfo(self, request_iterator, context) -> Iterator:
        for request in request_iterator:
            yield self._answer(request)


def _add_reflection_v1(pool: descriptor_pool.DescriptorPool) -> None:
    """Put ``grpc.reflection.v1``'s file in ``pool``, so that reflection describes the service
    it lists. grpcio-reflection ships only v1alpha's; v1 is the same file under another package
    (grpc/reflection/v1/reflection.proto upstream)."""
    name = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(name)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    messages.DESCRIPTOR.CopyToProto(proto)
    alpha = ".grpc.reflection.v1alpha."
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(alpha, ".grpc.reflection.v1.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(alpha, ".grpc.reflection.v1.")
            method.output_type = method.output_type.replace(alpha, ".grpc.reflection.v1.")
    proto.name = name
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()  # v1alpha's java_package and friends
    pool.AddSerializedFile(proto.SerializeToString())


def _error(request, code: grpc.StatusCode, message: str):
    return messages.ServerReflectionResponse(
        original_request=request,
        error_response=messages.ErrorResponse(error_code=code.value[0], error_message=message),
    )


def add_reflection(server: grpc.Server, service_names: Iterable[str]) -> None:
    """Register reflection v1 and v1alpha for ``service_names`` (plus reflection itself)."""
    service = ReflectionService(service_names)
    handler = grpc.stream_stream_rpc_method_handler(
        service.ServerReflectionInfo,
        request_deserializer=messages.ServerReflectionRequest.FromString,
        response_serializer=messages.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, {_METHOD: handler}) for name in SERVICE_NAMES]
    )
