"""Start-up in process: the port answers before the estimator is loaded; metrics describe
themselves."""

import re
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shapley_client import ShapleyClient, ShapleyError

from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.server.app import load_service, start_server, warm_up
from shapley_svc.server.metrics import STORE_METRICS, Metrics
from tests.server.conftest import LOOPBACK, make_task


def test_the_shapley_service_is_unavailable_until_the_estimator_is_loaded():
    running = start_server(LOOPBACK, load_estimator=False)
    try:
        target = f"127.0.0.1:{running.port}"
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
        request = health_pb2.HealthCheckRequest(service="shapley.v1.Shapley")
        X, p = make_task(n=200, d=4)
        # One attempt per call: the clients' retry policy would otherwise try UNAVAILABLE again.
        with ShapleyClient(target, timeout=30, max_attempts=1) as client:
            assert health.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING
            for call in (client.server_info, lambda: client.create_context(X, p)):
                with pytest.raises(ShapleyError) as refused:
                    call()
                assert refused.value.code == grpc.StatusCode.UNAVAILABLE
                assert "the server is starting" in str(refused.value)
            load_service(running)
            assert client.server_info().version  # served, if not yet warm
            assert client.create_context(X, p).context_id
            assert health.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING
            warm_up(running)
            assert health.Check(request).status == health_pb2.HealthCheckResponse.SERVING
        rendered = running.metrics.render()
        for method in ("GetServerInfo", "CreateContext"):
            assert f'shapley_requests_total{{method="{method}",code="UNAVAILABLE"}} 1' in rendered
    finally:
        running.stop(0)


def test_every_metric_has_help_and_a_type():
    metrics = Metrics()
    metrics.observe("Explain", "OK", 0.01)
    metrics.observe("Explain", "NOT_FOUND", 0.02)
    metrics.add_rows_explained(3)
    metrics.store_values = lambda: {"contexts_held": 2, "context_evictions_total": 5}
    lines = metrics.render().splitlines()
    helped = {line.split()[2] for line in lines if line.startswith("# HELP ")}
    types = dict(line.split()[2:4] for line in lines if line.startswith("# TYPE "))

    def family(sample: str) -> str:
        name = re.split(r"[{ ]", sample, maxsplit=1)[0]
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return base if types.get(base) == "histogram" else name

    families = {family(line) for line in lines if not line.startswith("#")}
    assert families == helped == types.keys(), (families, helped, types)
    assert "# TYPE shapley_context_evictions_total counter" in lines
    assert "shapley_context_evictions_total 5" in lines
    assert "shapley_context_store_bytes 0" in lines  # not reported by the store: zero
    assert {f"shapley_{name}" for name in STORE_METRICS} <= families


def test_the_client_retries_unavailable_by_its_service_config():
    running = start_server(LOOPBACK, load_estimator=False)
    try:
        with ShapleyClient(f"127.0.0.1:{running.port}", timeout=30) as client:
            with pytest.raises(ShapleyError) as refused:
                client.server_info()
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        # The server saw every attempt of gRPC's retry policy: five, the default.
        rendered = running.metrics.render()
        assert 'shapley_requests_total{method="GetServerInfo",code="UNAVAILABLE"} 5' in rendered
    finally:
        running.stop(0)


def _health(target: str, credentials=None, timeout: float = 1.0) -> str:
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def test_the_health_port_answers_while_every_handler_thread_is_taken(make_server):
    """Shapley handlers hold their threads while they wait (here a stream waiting for its
    messages; in production, fits queued on the compute threads), and the main port's health
    checks queue behind them: a liveness probe then restarts a busy, healthy replica. The health
    port answers from threads of its own, and says NOT_SERVING while the server drains."""
    server = make_server(worker_threads=1, health_address="127.0.0.1:0")
    health_target = f"127.0.0.1:{server.running.health_port}"
    assert _health(health_target) == "SERVING" == _health(server.target)
    channel = server.channel()
    done = threading.Event()

    def no_message_yet():
        done.wait()
        yield from ()

    stream = shapley_pb2_grpc.ShapleyStub(channel).ExplainStream(no_message_yet())
    try:
        time.sleep(0.5)  # the stream's handler now holds the one handler thread
        assert _health(server.target) == "DEADLINE_EXCEEDED"
        assert _health(health_target) == "SERVING"
    finally:
        done.set()
        stream.cancel()
        channel.close()
    stopping = threading.Thread(target=server.running.stop, args=(1.0, 1.0))
    stopping.start()
    time.sleep(0.3)  # within the drain notice
    assert _health(health_target) == "NOT_SERVING"
    stopping.join()
    assert _health(health_target) == "UNAVAILABLE"


def test_the_health_port_is_plaintext_beside_a_tls_port(make_server, certificates):
    """Kubernetes' gRPC probes and the image's HEALTHCHECK speak plaintext: with TLS on the main
    port, they check the health port."""
    server = make_server(
        tls_cert=str(certificates / "server.pem"),
        tls_key=str(certificates / "server.key"),
        health_address="127.0.0.1:0",
    )
    trusted = grpc.ssl_channel_credentials((certificates / "ca.pem").read_bytes())
    assert _health(server.target, trusted) == "SERVING"
    assert _health(f"127.0.0.1:{server.running.health_port}") == "SERVING"


def test_health_of_a_tls_server_says_how_to_check_it(certificates, monkeypatch, capsys):
    """The image's HEALTHCHECK (`shapley-svc health`, no arguments) checked a TLS port in
    plaintext and failed "Socket closed" forever: it now says what to pass or set."""
    from shapley_svc.cli import main

    monkeypatch.setenv("SHAPLEY_SVC_TLS_CERT", str(certificates / "server.pem"))
    monkeypatch.setenv("SHAPLEY_SVC_TLS_KEY", str(certificates / "server.key"))
    assert main(["health"]) == 2
    error = capsys.readouterr().err
    assert "serves TLS" in error and "--ca" in error and "SHAPLEY_SVC_HEALTH_ADDRESS" in error
