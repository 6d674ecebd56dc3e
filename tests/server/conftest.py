"""Real servers on loopback (port 0), real sockets, the real Python client."""

import subprocess
from dataclasses import replace

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from shapley_client import ShapleyClient

from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.server import Settings, start_server, warm_up

LOOPBACK = Settings(address="127.0.0.1:0", metrics_address="127.0.0.1:0", grace_seconds=5.0)


def make_task(n=300, d=5, seed=0, outputs=None):
    """Rows and a smooth classifier's probabilities (or K softmax outputs)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    logits = X[:, 0] - 0.5 * X[:, 1] * X[:, 2] + 0.3 * X[:, 3 % d]
    if outputs is None:
        return X, 1.0 / (1.0 + np.exp(-logits))
    scores = np.stack([logits * (k - 1) + 0.2 * k * X[:, k % d] for k in range(outputs)], axis=1)
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return X, scores / scores.sum(axis=1, keepdims=True)


def refusal(call, *args) -> tuple[grpc.StatusCode, str, str | None]:
    """The status code, message and field at fault of a call that must fail, read as any client
    can: the field from the standard ``google.rpc.BadRequest`` details of its rich status."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    return caught.value.code(), caught.value.details(), field_at_fault(caught.value)


def field_at_fault(error: grpc.RpcError) -> str | None:
    """The one field a BadRequest detail names, or None when the status carries no BadRequest."""
    status = rpc_status.from_call(error)
    fields = []
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    assert len(fields) <= 1, f"a refusal names one field; got {fields}"
    return fields[0] if fields else None


class Server:
    """A started, warmed-up server and a client bound to it."""

    def __init__(self, settings: Settings, warm: bool = True):
        self.running = start_server(settings)
        self.target = f"127.0.0.1:{self.running.port}"
        if warm:
            warm_up(self.running)

    def client(self, **kwargs) -> ShapleyClient:
        return ShapleyClient(self.target, **kwargs)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def stop(self, grace: float = 1.0) -> None:
        self.running.stop(grace)


@pytest.fixture(scope="session")
def server():
    started = Server(LOOPBACK)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def client(server):
    with server.client(timeout=120) as connected:
        yield connected


@pytest.fixture(scope="session")
def stub(server):
    """A raw stub on the shared server, for requests the client would refuse or fill in."""
    return shapley_pb2_grpc.ShapleyStub(server.channel())


@pytest.fixture
def make_server():
    """Start extra servers with other settings; all stopped at the end of the test."""
    started = []

    def make(warm: bool = True, **overrides) -> Server:
        started.append(Server(replace(LOOPBACK, **overrides), warm=warm))
        return started[-1]

    yield make
    for each in started:
        each.stop()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl)."""
    folder = tmp_path_factory.mktemp("pki")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        extra = ["-extfile", "server.ext"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra)  # fmt: skip
    return folder
