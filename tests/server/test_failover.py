"""Replicated serving for real: three `shapley-svc serve` processes sharing a context directory
behind nginx's gRPC proxy on loopback. Clients create contexts and explain through the proxy
while one replica is killed (SIGKILL): no call fails, and every answer is the same."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shapley_client import ShapleyClient

from tests.server.conftest import make_task

pytestmark = pytest.mark.slow
SHAPLEY_SVC = str(Path(sys.executable).parent / "shapley-svc")
CLIENT_THREADS = 4
CALLS_PER_THREAD = 30


def _nginx() -> str:
    path = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if path is None:
        if os.environ.get("SHAPLEY_SVC_REQUIRE_PROXY") == "1":
            pytest.fail("nginx is required (SHAPLEY_SVC_REQUIRE_PROXY=1) and was not found")
        pytest.skip("nginx not installed (Debian: nginx-light)")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_serving(port: int, deadline: float) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"replica on port {port} never said SERVING")


def _counter(metrics_port: int, name: str) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    return int(float(re.search(rf"^shapley_{name} (\S+)$", text.decode(), re.M).group(1)))


NGINX_CONF = """
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 64m;
    upstream replicas {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://replicas;
            # A replica that refuses the connection is skipped before the call reaches it;
            # a call cut off mid-way comes back UNAVAILABLE and the client retries it.
            grpc_next_upstream error timeout;
            grpc_connect_timeout 2s;
            # nginx answers a failed upstream with HTTP 502, which gRPC reads as a response
            # already begun: not retryable. A Trailers-Only UNAVAILABLE is, by the clients'
            # retry policy.
            error_page 502 503 504 = /grpc-unavailable;
        }}
        location = /grpc-unavailable {{
            internal;
            default_type application/grpc;
            add_header grpc-status 14 always;
            add_header grpc-message "no replica answered" always;
            add_header content-length 0 always;
            return 204;
        }}
    }}
}}
"""


@pytest.fixture
def replicas(tmp_path):
    nginx = _nginx()
    context_dir = tmp_path / "contexts"
    ports = [(_free_port(), _free_port()) for _ in range(3)]
    processes = [
        subprocess.Popen(
            [
                SHAPLEY_SVC,
                "serve",
                "--address",
                f"127.0.0.1:{grpc_port}",
                "--metrics-address",
                f"127.0.0.1:{metrics_port}",
                "--context-dir",
                str(context_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"replica{i}.log", "w"),
        )
        for i, (grpc_port, metrics_port) in enumerate(ports)
    ]
    proxy_port = _free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(
        NGINX_CONF.format(
            prefix=prefix,
            port=proxy_port,
            user="user root;" if os.geteuid() == 0 else "",
            servers="\n".join(f"        server 127.0.0.1:{g};" for g, _ in ports),
        )
    )
    proxy = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        for grpc_port, _ in ports:
            _wait_serving(grpc_port, deadline)
        _wait_serving(proxy_port, deadline)
        yield processes, ports, proxy_port, context_dir
    finally:
        proxy.terminate()
        for process in processes:
            process.kill()
        for process in [proxy, *processes]:
            process.wait(timeout=30)


def test_a_killed_replica_costs_no_call_and_changes_no_answer(replicas):
    processes, ports, proxy_port, context_dir = replicas
    tasks = [make_task(n=300, d=5, seed=seed) for seed in (1, 2)]
    with ShapleyClient(f"127.0.0.1:{proxy_port}", timeout=60) as client:
        expected = []
        for X, p in tasks:
            context = client.create_context(X, p)
            expected.append(client.explain(context, X[:20], p[:20]).values)
    calls, failures, answers = [0], [], []
    lock = threading.Lock()
    halfway = threading.Event()

    def work(worker: int) -> None:
        X, p = tasks[worker % 2]
        with ShapleyClient(f"127.0.0.1:{proxy_port}", timeout=60) as client:
            for call in range(CALLS_PER_THREAD):
                try:
                    if call % 3 == 0:  # a context created (or found) now and then
                        context = client.create_context(X, p)
                    explanation = client.explain(context, X[:20], p[:20])
                    with lock:
                        answers.append((worker % 2, explanation.values))
                except Exception as error:  # every failure is counted and reported
                    with lock:
                        failures.append(repr(error))
                with lock:
                    calls[0] += 1
                    if calls[0] == CLIENT_THREADS * CALLS_PER_THREAD // 3:
                        halfway.set()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    halfway.wait(timeout=300)
    os.kill(processes[0].pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=600)
    fits = sum(_counter(m, "context_fits_total") for _, m in ports[1:])
    loads = sum(_counter(m, "context_loads_total") for _, m in ports[1:])
    print(
        f"\n{calls[0]} calls through the proxy, {len(failures)} failed; replica 0 killed after "
        f"{CLIENT_THREADS * CALLS_PER_THREAD // 3}; surviving replicas fitted {fits} and loaded "
        f"{loads} contexts; {len(list(context_dir.iterdir()))} saved"
    )
    assert failures == [], failures
    assert calls[0] == CLIENT_THREADS * CALLS_PER_THREAD
    for task, values in answers:
        assert np.array_equal(values, expected[task])
