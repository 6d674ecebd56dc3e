"""The command line: what each command imports, where `health` looks, how `serve` starts."""

import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import shapley_svc
import shapley_svc.server
from shapley_svc import _numba_cache
from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.cli import health_target, main

HEAVY_MODULES = {"numba", "shapley_svc.kernels", "shapley_svc.estimator", "sklearn"}
# Runs the command in a fresh interpreter, then lists the heavy modules it imported.
IMPORTS_OF = f"""
import sys
from shapley_svc.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print("exit", code, "imported", sorted({sorted(HEAVY_MODULES)!r} & sys.modules.keys()))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["serve", "--help"], 0),
        (["health", "--help"], 0),
        (["health", "--timeout", "0.5"], 1),  # nothing listens there
    ],
)
def test_help_and_health_never_import_the_kernels(argv, code):
    env = os.environ | {"SHAPLEY_SVC_ADDRESS": f"127.0.0.1:{_free_port()}"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert f"exit {code} imported []" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("0.0.0.0:50051", "127.0.0.1:50051"),
        ("[::]:7000", "[::1]:7000"),
        (":7000", "127.0.0.1:7000"),
        ("10.1.2.3:7000", "10.1.2.3:7000"),
        ("localhost:7000", "localhost:7000"),
    ],
)
def test_health_target_maps_wildcard_hosts_to_loopback(address, target):
    assert health_target(address) == target


@pytest.fixture
def healthy_server():
    """A bare gRPC server whose health service says SERVING: no estimator needed."""
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    servicer.set("shapley.v1.Shapley", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("0.0.0.0:0")
    server.start()
    yield port
    server.stop(None)


def test_health_checks_the_address_serve_reads(healthy_server, monkeypatch, capsys):
    # As in the container: the server listens on the wildcard address its variable names.
    monkeypatch.setenv("SHAPLEY_SVC_ADDRESS", f"0.0.0.0:{healthy_server}")
    assert main(["health"]) == 0
    assert capsys.readouterr().out == f"127.0.0.1:{healthy_server}: SERVING\n"
    monkeypatch.setenv("SHAPLEY_SVC_ADDRESS", f"127.0.0.1:{_free_port()}")
    assert main(["health", "--address", f"127.0.0.1:{healthy_server}"]) == 0  # the flag wins
    assert main(["health", "--timeout", "0.5"]) == 1


def test_health_checks_the_servers_health_port_first(healthy_server, monkeypatch, capsys):
    """SHAPLEY_SVC_HEALTH_ADDRESS, the server's plaintext health port, is what the image's
    HEALTHCHECK checks when it is set: it answers while the handler threads are busy."""
    monkeypatch.setenv("SHAPLEY_SVC_ADDRESS", f"127.0.0.1:{_free_port()}")  # nothing there
    monkeypatch.setenv("SHAPLEY_SVC_HEALTH_ADDRESS", f"0.0.0.0:{healthy_server}")
    assert main(["health"]) == 0
    assert capsys.readouterr().out == f"127.0.0.1:{healthy_server}: SERVING\n"


def test_health_reports_a_bad_address_variable(monkeypatch, capsys):
    monkeypatch.setenv("SHAPLEY_SVC_GRACE_SECONDS", "soon")
    assert main(["health"]) == 2
    assert "SHAPLEY_SVC_GRACE_SECONDS='soon'" in capsys.readouterr().err


class ServeProcess:
    """``shapley-svc serve`` in a child process; its log lines with their arrival times."""

    def __init__(self, env: dict[str, str], metrics_address: str = ""):
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shapley_svc.cli", "serve", "--address", "127.0.0.1:0",
             "--metrics-address", metrics_address],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            with self._changed:
                self.lines.append((time.perf_counter() - self.started, line))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> tuple[float, re.Match]:
        """Seconds after the start at which a line matched ``pattern``, and the match."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for seconds, line in self.lines:
                    found = re.search(pattern, line)
                    if found:
                        return seconds, found
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    break
                self._changed.wait(left)
        log = "".join(line for _, line in self.lines)
        raise AssertionError(f"no line matched {pattern!r} within {timeout} s:\n{log}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def test_serve_logs_the_metrics_port_it_bound():
    """With port 0 the system picks the metrics port: the log names the one bound, and
    /metrics answers there (it logged the requested :0 before)."""
    server = ServeProcess(dict(os.environ), metrics_address="127.0.0.1:0")
    try:
        _, found = server.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", timeout=30)
        port = int(found.group(1))
        assert port != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            assert b"# TYPE" in response.read()
    finally:
        # Stopped while starting (130) or after (0): either way it stops cleanly.
        assert server.stop() in (0, 130), "".join(line for _, line in server.lines)


@pytest.mark.slow
def test_a_first_serve_answers_health_while_compiling_and_caches_outside_the_package(tmp_path):
    """A real first start: an empty per-user cache, so numba compiles every kernel (about a
    minute on 2 cores). The port answers from the start: health NOT_SERVING, the Shapley service
    UNAVAILABLE; then SERVING; the compiled kernels land in the user's cache, not the package."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    package = Path(shapley_svc.__file__).parent
    began = time.time()
    server = ServeProcess(env)
    try:
        listening, found = server.wait_for(r"listening on [\d.]+:(\d+)", timeout=30)
        # Order, not seconds, is the property: health and UNAVAILABLE answer while compiling.
        print(f"listening {listening:.1f} s after the start")
        channel = grpc.insecure_channel(f"127.0.0.1:{found.group(1)}")
        check = health_pb2_grpc.HealthStub(channel).Check
        request = health_pb2.HealthCheckRequest(service="shapley.v1.Shapley")
        info = shapley_pb2_grpc.ShapleyStub(channel).GetServerInfo
        assert check(request, timeout=10).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as refused:
            info(pb.GetServerInfoRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "starting" in refused.value.details()
        _, found = server.wait_for(r"artifact verified in ([\d.]+) s", timeout=600)
        serving, _ = server.wait_for("SERVING after", timeout=120)
        assert check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        assert info(pb.GetServerInfoRequest(), timeout=10).version
        channel.close()
        print(f"listening {listening:.1f} s, kernels {found.group(1)} s, SERVING {serving:.1f} s")
    finally:
        assert server.stop() == 0, "".join(line for _, line in server.lines)
    cached = list((tmp_path / "shapley-svc" / "numba").rglob("*.nbi"))
    assert cached, f"no numba index under {tmp_path}"
    # Cold, the kernel modules were compiled by processes side by side, one per core, into the
    # folder the server's import then read them from.
    log = "".join(line for _, line in server.lines)
    if len(os.sched_getaffinity(0)) >= 2:
        assert re.search(r"compiling them in \d+ processes side by side", log), log
    folder = _numba_cache.kernels_cache_folder(env)
    indexed = {path.name.split(".")[0] for path in folder.glob("*.nbi")}
    assert indexed == set(_numba_cache.KERNEL_COMPILE_SECONDS), (folder, indexed)
    written = [
        path
        for path in package.rglob("*.nb[ic]")
        if path.stat().st_mtime >= began  # older ones: caches of the checkout before the fix
    ]
    assert not written, f"numba cached into the package: {written[:3]}"


@pytest.fixture
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SHAPLEY_SVC_") or name in ("NUMBA_NUM_THREADS", "LOKY_MAX_CPU_COUNT"):
            monkeypatch.delenv(name)


def _must_not_serve(settings):
    raise AssertionError(f"refused settings reached serve: {settings}")


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad\n")
    (tmp_path / "notpem.txt").write_text("not pem\n")
    (tmp_path / "accented.txt").write_text("tok-first\nt\u00f6k\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--address", "127.0.0.1:99999"], "--address: port must be in 0-65535; got 99999"),
        (["--address", "127.0.0.1:-5"], "--address: port must be in 0-65535; got -5"),
        (["--drain-notice-seconds", "inf"], "--drain-notice-seconds must be in [0, 86400]"),
        (["--drain-notice-seconds", "nan"], "--drain-notice-seconds must be in [0, 86400]"),
        (["--grace-seconds", "1e300"], "--grace-seconds must be in [0, 86400]"),
        (["--grace-seconds", "nan"], "--grace-seconds must be in [0, 86400]"),
        (["--max-message-bytes", "99999999999"], "--max-message-bytes must be <= 2147483647"),
        (["--metrics-address", "garbage"], "--metrics-address: must be host:port"),
        (["--metrics-address", "127.0.0.1:99999"], "--metrics-address: port must be in 0-65535"),
        (["--tokens-file", "{tmp}/empty.txt"], "--tokens-file: {tmp}/empty.txt holds no token"),
        (["--tokens-file", "{tmp}/binary.txt"], "--tokens-file: {tmp}/binary.txt is not UTF-8"),
        (
            ["--tokens-file", "{tmp}/accented.txt"],
            "--tokens-file: {tmp}/accented.txt: token 2 holds '\u00f6', which no gRPC client",
        ),
        (
            ["--tls-cert", "{tmp}/notpem.txt", "--tls-key", "{tmp}/notpem.txt"],
            "--tls-cert: {tmp}/notpem.txt is not a valid PEM file",
        ),
        (["--worker-threads", "0"], "--worker-threads must be >= 1; got 0"),
    ],
)
def test_serve_refuses_bad_flags_in_one_line_naming_the_flag(
    flags, message, bad_files, clean_environment, monkeypatch, capsys
):
    monkeypatch.setattr(shapley_svc.server, "serve", _must_not_serve)
    argv = ["serve", "--address", "127.0.0.1:0", "--metrics-address", ""]
    argv += [flag.format(tmp=bad_files) for flag in flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"shapley-svc serve: {err.split(': ', 1)[1]}" and err.count("\n") == 1, err
    assert message.format(tmp=bad_files) in err


def test_serve_names_the_variable_a_bad_value_came_from(clean_environment, monkeypatch, capsys):
    monkeypatch.setattr(shapley_svc.server, "serve", _must_not_serve)
    monkeypatch.setenv("SHAPLEY_SVC_WORKER_THREADS", "0")
    monkeypatch.setenv("SHAPLEY_SVC_GRACE_SECONDS", "inf")
    assert main(["serve", "--grace-seconds", "1", "--metrics-address", ""]) == 2
    assert "SHAPLEY_SVC_WORKER_THREADS must be >= 1; got 0" in capsys.readouterr().err
    monkeypatch.delenv("SHAPLEY_SVC_WORKER_THREADS")
    assert main(["serve", "--metrics-address", ""]) == 2
    assert "SHAPLEY_SVC_GRACE_SECONDS must be in [0, 86400]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NUMBA_NUM_THREADS", "0", "NUMBA_NUM_THREADS='0' must be a whole number >= 1"),
        ("NUMBA_NUM_THREADS", "two", "NUMBA_NUM_THREADS='two' must be a whole number >= 1"),
        ("LOKY_MAX_CPU_COUNT", "1.5", "LOKY_MAX_CPU_COUNT='1.5' must be a whole number"),
        ("LOKY_MAX_CPU_COUNT", "", "LOKY_MAX_CPU_COUNT='' must be a whole number"),
    ],
)
def test_serve_refuses_thread_counts_its_libraries_would_fail_on(
    variable, value, message, clean_environment, monkeypatch, capsys
):
    """numba raised at the kernels' import and scikit-learn at the first fit, each with a
    traceback after the port was bound (QA, 2026-12-06)."""
    monkeypatch.setattr(shapley_svc.server, "serve", _must_not_serve)
    monkeypatch.setenv(variable, value)
    assert main(["serve", "--address", "127.0.0.1:0", "--metrics-address", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"shapley-svc serve: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--address", "127.0.0.1:99999"], "--address: port must be in 0-65535; got 99999"),
        (["--ca", "{tmp}/missing.pem"], "--ca: no such file: {tmp}/missing.pem"),
        (["--ca", "{tmp}"], "--ca: not a regular file: {tmp}"),
        (["--ca", "{tmp}/notpem.txt"], "--ca: {tmp}/notpem.txt is not a valid PEM file"),
    ],
)
def test_health_refuses_bad_flags_in_one_line_naming_the_flag(
    argv, message, bad_files, clean_environment, capsys
):
    argv = ["health", "--timeout", "0.5", *(arg.format(tmp=bad_files) for arg in argv)]
    if "--address" not in argv:
        argv += ["--address", f"127.0.0.1:{_free_port()}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"shapley-svc health: {message.format(tmp=bad_files)}"), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("rows", ["0", "-3", "1000", "43"])
def test_demo_refuses_rows_it_cannot_explain(rows, monkeypatch, capsys):
    def refuse(args):
        raise AssertionError("ran the demo before refusing --rows")

    monkeypatch.setattr("shapley_svc.cli._demo", refuse)
    with pytest.raises(SystemExit) as raised:
        main(["demo", "--rows", rows])
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("shapley-svc demo: error: argument --rows:"), error
