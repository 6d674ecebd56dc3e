"""The Python client's channel: large calls are retried, and calls can be spread over replicas."""

import concurrent.futures
import threading

import grpc
import pytest
from shapley_client import ShapleyClient
from shapley_client._proto import shapley_pb2 as pb


class _FlakyReplicas:
    """Fake servers answering CreateContext (UNAVAILABLE on the first call of all, as a replica
    killed mid-call) and GetServerInfo; each counts the calls it received."""

    def __init__(self, count: int):
        self.calls: list[int] = [0] * count
        self._lock = threading.Lock()
        self._servers = []
        self.ports = []
        for index in range(count):
            server = grpc.server(
                concurrent.futures.ThreadPoolExecutor(2),
                options=[("grpc.max_receive_message_length", 64 << 20)],
            )
            server.add_generic_rpc_handlers((self._handler(index),))
            self.ports.append(server.add_insecure_port("127.0.0.1:0"))
            server.start()
            self._servers.append(server)

    def _handler(self, index: int) -> grpc.GenericRpcHandler:
        def create(request: pb.CreateContextRequest, context) -> pb.CreateContextResponse:
            with self._lock:
                self.calls[index] += 1
                first = sum(self.calls) == 1
            if first:
                context.abort(grpc.StatusCode.UNAVAILABLE, "replica stopping")
            return pb.CreateContextResponse(created=True)

        def info(request: pb.GetServerInfoRequest, context) -> pb.ServerInfo:
            with self._lock:
                self.calls[index] += 1
            return pb.ServerInfo(version="fake")

        return grpc.method_handlers_generic_handler(
            "shapley.v1.Shapley",
            {
                "CreateContext": grpc.unary_unary_rpc_method_handler(
                    create,
                    request_deserializer=pb.CreateContextRequest.FromString,
                    response_serializer=pb.CreateContextResponse.SerializeToString,
                ),
                "GetServerInfo": grpc.unary_unary_rpc_method_handler(
                    info,
                    request_deserializer=pb.GetServerInfoRequest.FromString,
                    response_serializer=pb.ServerInfo.SerializeToString,
                ),
            },
        )

    def stop(self) -> None:
        for server in self._servers:
            server.stop(None)


@pytest.fixture
def replicas():
    started = _FlakyReplicas(2)
    yield started
    started.stop()


def test_a_large_call_that_fails_unavailable_is_retried(replicas):
    """gRPC keeps a request for its retries only up to its retry buffer (256 KiB by default):
    a 4 MB CreateContext whose replica was killed failed UNAVAILABLE with no retry."""
    request = pb.CreateContextRequest(
        context=pb.ContextSpec(
            rows=pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[5000, 100], data=bytes(8 * 500_000))
        )
    )
    assert request.ByteSize() > 4_000_000
    with ShapleyClient(f"127.0.0.1:{replicas.ports[0]}", timeout=30) as client:
        answer = client._call(client._stub.CreateContext, request)
    assert answer.created and replicas.calls[0] == 2


def test_channel_options_spread_calls_over_the_addresses_of_a_target(replicas):
    """A dns:/// target of several addresses (a Kubernetes headless service) got every call on
    the first address; round_robin, given as a channel option, spreads them."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in replicas.ports)
    with ShapleyClient(target, timeout=30) as client:
        for _ in range(10):
            client._call(client._stub.GetServerInfo, pb.GetServerInfoRequest())
    assert sorted(replicas.calls) == [0, 10]  # gRPC's default: the first address
    replicas.calls[:] = [0, 0]
    balanced = [("grpc.lb_policy_name", "round_robin")]
    with ShapleyClient(target, timeout=30, channel_options=balanced) as client:
        for _ in range(10):
            client._call(client._stub.GetServerInfo, pb.GetServerInfoRequest())
    assert min(replicas.calls) >= 3, replicas.calls
