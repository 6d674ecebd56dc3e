"""Start-up in process: the port answers before the estimator is loaded; metrics describe
themselves."""

import re

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shapley_client import ShapleyClient, ShapleyError

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
