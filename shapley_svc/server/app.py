"""Assemble and run the server: the Shapley service, health, reflection, auth, TLS, metrics.

Start-up order: bind, report NOT_SERVING, load and verify the artifact, warm the numba kernels
(a small fit and explanation, read from numba's on-disk cache when present), then SERVING.
SIGTERM or SIGINT flips health to NOT_SERVING first and keeps accepting calls for a short notice
period (so that health checkers see it and stop routing), then refuses new calls and lets
in-flight requests finish within the grace period.
"""

import concurrent.futures
import hmac
import logging
import signal
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.server.metrics import Metrics, serve_metrics
from shapley_svc.server.reflection import add_reflection
from shapley_svc.server.service import SERVICE_NAME, ShapleyService, add_to_server
from shapley_svc.server.settings import Settings

log = logging.getLogger("shapley_svc.server")
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def package_version() -> str:
    try:
        return version("shapley-svc")
    except PackageNotFoundError:
        return "unknown"


class TokenAuth(grpc.ServerInterceptor):
    """Bearer-token auth on every method but health checks; tokens compared in constant time."""

    def __init__(self, tokens: tuple[bytes, ...], metrics: Metrics):
        self._tokens = tokens
        self._metrics = metrics

    def _accepted(self, metadata) -> bool:
        header = b""
        for key, value in metadata or ():
            if key == "authorization":
                header = value.encode() if isinstance(value, str) else value
        scheme, _, presented = header.partition(b" ")
        matched = False
        for token in self._tokens:  # no early exit: time does not depend on which token matched
            matched |= hmac.compare_digest(presented, token)
        return scheme.lower() == b"bearer" and matched

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(_HEALTH_PREFIX) or self._accepted(
            handler_call_details.invocation_metadata
        ):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        name = method.rsplit("/", 1)[-1]
        metrics = self._metrics

        def deny(request_or_iterator, context):
            metrics.observe(name, "UNAUTHENTICATED", 0.0)
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or invalid bearer token (metadata 'authorization: Bearer <token>')",
            )

        def deny_stream(request_or_iterator, context):
            deny(request_or_iterator, context)
            yield  # pragma: no cover - deny always aborts

        kind = (handler.request_streaming, handler.response_streaming)
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[kind]
        return make(
            deny_stream if handler.response_streaming else deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    service: ShapleyService
    health: health.HealthServicer
    metrics_port: int | None
    _metrics_server: object | None

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def stop(self, grace: float, notice: float = 0.0) -> None:
        """Report NOT_SERVING, keep serving for ``notice`` seconds so that health checkers see
        it, then refuse new calls and finish in-flight ones for up to ``grace`` seconds."""
        self.set_serving(False)
        if notice > 0:
            time.sleep(notice)
        self.server.stop(grace).wait()
        self.service.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert:
        return None
    key = Path(settings.tls_key).read_bytes()
    chain = Path(settings.tls_cert).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def start_server(settings: Settings) -> RunningServer:
    """Bind and start; health stays NOT_SERVING until :func:`warm_up` succeeds."""
    metrics = Metrics()
    service = ShapleyService(settings, metrics, package_version())
    metrics.gauges = lambda: {
        "contexts_held": len(service.store),
        "context_store_bytes": service.store.total_bytes,
        "context_evictions_total": service.store.evictions,
    }
    options = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    tokens = settings.tokens()
    interceptors = [TokenAuth(tokens, metrics)] if tokens else []
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="grpc"),
        options=options,
        interceptors=interceptors,
    )
    add_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_reflection(server, (SERVICE_NAME, health.SERVICE_NAME))
    credentials = _credentials(settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(settings.address)
        else:
            port = server.add_secure_port(settings.address, credentials)
    except RuntimeError:  # grpc's "Failed to bind": in use, or not an address of this host
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {settings.address} (--address): the port is in use or the "
            "address is not one of this host's"
        )
    metrics_server, metrics_port = None, None
    if settings.metrics_address:
        try:
            metrics_server = serve_metrics(metrics, settings.metrics_address)
        except OSError as error:
            server.stop(None)
            raise OSError(
                f"cannot serve metrics on {settings.metrics_address} (--metrics-address): "
                f"{error.strerror or error}"
            ) from None
        metrics_port = metrics_server.server_address[1]
    running = RunningServer(server, port, service, health_servicer, metrics_port, metrics_server)
    running.set_serving(False)
    server.start()
    return running


def warm_up(running: RunningServer) -> float:
    """Compile (or load from cache) every kernel the estimator uses, then report SERVING."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for d in (4, 9):  # exact and rescaled logistic surrogates; trees and splines either way
        X = rng.normal(size=(64, d))
        probabilities = 1.0 / (1.0 + np.exp(-(X[:, 0] + X[:, 1] * X[:, 2])))
        explainer = ZeroShotExplainer(artifact=running.service.artifact_path)
        explainer.fit(X, probabilities).explain(X[:3], probabilities[:3])
    running.set_serving(True)
    return time.perf_counter() - start


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain within ``settings.grace_seconds``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    running = start_server(settings)
    host = settings.address.rpartition(":")[0]
    log.info("listening on %s:%d (NOT_SERVING while warming up)", host, running.port)
    if running.metrics_port is not None:
        log.info("metrics on http://%s/metrics", settings.metrics_address)
    seconds = warm_up(running)
    log.info("SERVING after %.1f s warm-up; artifact %s", seconds, running.service.artifact_version)
    stopping = threading.Event()

    def request_stop(signum, frame) -> None:
        log.info(
            "signal %d: NOT_SERVING; still accepting calls for %.1f s, then draining for up to "
            "%.0f s",
            signum,
            settings.drain_notice_seconds,
            settings.grace_seconds,
        )
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stopping.wait()
    running.stop(settings.grace_seconds, settings.drain_notice_seconds)
    log.info("stopped")
