"""Assemble and run the server: the Shapley service, health, reflection, auth, TLS, metrics.

Start-up order: bind and answer health with NOT_SERVING (the Shapley service answers UNAVAILABLE),
import the estimator (the first time after an install numba compiles its kernels first, in
processes side by side: 47 s on 2 idle cores against 92 s in one process, 2026-12-05; seconds from
numba's on-disk cache after), load and verify
the artifact, warm up with a small fit and explanation, then SERVING. Importing the estimator
only after binding is what lets a first start answer health at once (0.7 s after the start,
measured on the busy cores) instead of opening its port after the compile.
SIGTERM or SIGINT flips health to NOT_SERVING first and keeps accepting calls for a short notice
period (so that health checkers see it and stop routing), then refuses new calls and lets
in-flight requests finish within the grace period.
"""

import concurrent.futures
import functools
import hmac
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shapley_svc._numba_threads import cap_numba_threads, usable_cpus
from shapley_svc.server.metrics import Metrics, serve_metrics
from shapley_svc.server.reflection import add_reflection
from shapley_svc.server.rpcs import SERVICE_NAME, method_handler
from shapley_svc.server.settings import Settings

if TYPE_CHECKING:  # the service module imports the estimator: see load_service
    from shapley_svc.server.service import ShapleyService

log = logging.getLogger("shapley_svc.server")
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
# Threads of the --health-address server: its calls answer from the health servicer's table.
HEALTH_THREADS = 2


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

        # The denial has the kind of the handler it replaces (for Shapley's, the descriptor's).
        return method_handler(
            deny_stream if handler.response_streaming else deny,
            handler.request_streaming,
            handler.response_streaming,
            handler.request_deserializer,
            handler.response_serializer,
        )


class ShapleyGate(grpc.GenericRpcHandler):
    """The Shapley service's place in the server from the start: every call answers UNAVAILABLE
    until :meth:`open`, then goes to the handlers that ``add_to_server`` gave it.

    ``add_to_server(service, gate)`` registers through the gate as it would on a server: grpc
    takes no registered-method handlers once started (it logs a warning and drops them), and the
    generic handler serves the same methods.
    """

    def __init__(self, metrics: Metrics):
        self._metrics = metrics
        self._prefix = f"/{SERVICE_NAME}/"
        self._handlers: tuple[grpc.GenericRpcHandler, ...] = ()
        self._open = threading.Event()

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self._handlers += tuple(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: dict) -> None:
        """Registered methods are only a faster lookup of the generic handlers' methods."""

    def open(self) -> None:
        self._open.set()

    def is_open(self) -> bool:
        return self._open.is_set()

    def service(self, handler_call_details) -> grpc.RpcMethodHandler | None:
        if not handler_call_details.method.startswith(self._prefix):
            return None
        if not self.is_open():
            # One handler kind fits every method: on the wire a unary call is a stream of one
            # message, and the refusal reads no request.
            name = handler_call_details.method[len(self._prefix) :]
            return grpc.stream_stream_rpc_method_handler(functools.partial(self._refuse, name))
        for handlers in self._handlers:
            found = handlers.service(handler_call_details)
            if found is not None:
                return found
        return None

    def _refuse(self, name: str, request_iterator, context: grpc.ServicerContext) -> None:
        self._metrics.observe(name, "UNAVAILABLE", 0.0)
        context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "the server is starting: it is loading the estimator and its numba kernels (health "
            "reports NOT_SERVING until it is ready); retry shortly",
        )


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    settings: Settings
    metrics: Metrics
    gate: ShapleyGate
    health: health.HealthServicer
    metrics_port: int | None
    _metrics_server: object | None
    health_port: int | None = None  # of --health-address
    _health_server: grpc.Server | None = None
    service: "ShapleyService | None" = None  # set by load_service

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
        if self._health_server is not None:  # NOT_SERVING there until the drain is over
            self._health_server.stop(None)
        if self.service is not None:
            self.service.shutdown()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()


def _health_server(address: str, servicer: health.HealthServicer) -> tuple[grpc.Server, int]:
    """A plaintext server of ``servicer`` alone on ``address``, and its port (0: not bound).

    The Shapley handlers block their threads while a fit runs on the compute threads, and the
    main server's health checks wait in the same thread pool: with the default 16 handler threads
    and 20 fits asked for, 10 of 10 one-second probes timed out (QA, 2026-12-05), which a
    Kubernetes liveness probe answers by killing the busy replica. Here the same statuses answer
    from threads no Shapley call takes, and without TLS, which Kubernetes' gRPC probes lack.
    """
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(HEALTH_THREADS, thread_name_prefix="health"),
        options=[("grpc.so_reuseport", 0)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    return server, port


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


def start_server(settings: Settings, *, load_estimator: bool = True) -> RunningServer:
    """Bind and start with health NOT_SERVING until :func:`warm_up` succeeds.

    With ``load_estimator=False`` it returns within a second of binding and the Shapley service
    answers UNAVAILABLE until :func:`load_service` (``serve`` does this so that a first start
    answers health while numba compiles); by default it loads the service before returning.
    """
    metrics = Metrics()
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
    gate = ShapleyGate(metrics)
    server.add_generic_rpc_handlers((gate,))
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
        tls = (
            ", or --tls-cert and --tls-key are not a valid certificate chain and its private key"
            if credentials is not None
            else ""
        )
        raise OSError(
            f"cannot listen on {settings.address} (--address): the port is in use or the "
            f"address is not one of this host's{tls}"
        )
    health_server, health_port = None, None
    if settings.health_address:
        health_server, health_port = _health_server(settings.health_address, health_servicer)
        if health_port == 0:
            server.stop(None)
            raise OSError(
                f"cannot serve health on {settings.health_address} (--health-address): the port "
                "is in use or the address is not one of this host's"
            )
    metrics_server, metrics_port = None, None
    if settings.metrics_address:
        try:
            metrics_server = serve_metrics(metrics, settings.metrics_address)
        except OSError as error:
            server.stop(None)
            if health_server is not None:
                health_server.stop(None)
            raise OSError(
                f"cannot serve metrics on {settings.metrics_address} (--metrics-address): "
                f"{error.strerror or error}"
            ) from None
        metrics_port = metrics_server.server_address[1]
    running = RunningServer(
        server,
        port,
        settings,
        metrics,
        gate,
        health_servicer,
        metrics_port,
        metrics_server,
        health_port,
        health_server,
    )
    running.set_serving(False)
    server.start()
    if health_server is not None:
        health_server.start()
    if load_estimator:
        try:
            load_service(running)
        except BaseException:
            running.stop(0)
            raise
    return running


def compile_cold_kernels() -> None:
    """Before the estimator's import: the kernel modules numba has not cached yet are compiled
    in processes side by side, at most one per usable CPU (its CPU quota counted), so that the
    import reads them all from the cache."""
    from shapley_svc._numba_cache import cold_kernel_groups, compile_in_processes

    groups = cold_kernel_groups(usable_cpus())
    if not groups:
        return
    log.info(
        "numba's cache lacks %d kernel modules: compiling them in %d processes side by side",
        sum(len(names) for names in groups),
        len(groups),
    )
    for failure in compile_in_processes(groups):
        log.warning("a kernel-compiling process failed (the import compiles it): %s", failure)


def load_service(running: RunningServer) -> float:
    """Import the estimator (numba compiles its kernels then, or reads them from its cache),
    verify the artifact and open the Shapley service; returns the seconds taken. Raises
    :class:`~shapley_svc.errors.ArtifactError` for a missing or altered artifact."""
    start = time.perf_counter()
    compile_cold_kernels()
    from shapley_svc.server.service import ShapleyService, add_to_server

    service = ShapleyService(running.settings, running.metrics, package_version())
    running.metrics.store_values = lambda: {
        "contexts_held": len(service.contexts.store),
        "context_store_bytes": service.contexts.store.total_bytes,
        "context_evictions_total": service.contexts.store.evictions,
        "context_fits_total": service.contexts.contexts_fitted,
        "context_loads_total": service.contexts.contexts_loaded,
        "context_calibrations_total": service.contexts.contexts_calibrated,
        "context_saves_failed_total": service.contexts.contexts_unsaved,
    }
    add_to_server(service, running.gate)
    running.service = service
    running.gate.open()
    return time.perf_counter() - start


def warm_up(running: RunningServer) -> float:
    """Load the service if :func:`load_service` has not, run every kernel the estimator uses
    once, then report SERVING; returns the seconds taken."""
    start = time.perf_counter()
    if running.service is None:
        load_service(running)
    import numpy as np

    from shapley_svc.estimator import ZeroShotExplainer
    from shapley_svc.estimator.threading_layer import (
        kernels_thread_safe,
        serialised,
        threading_layer,
    )

    rng = np.random.default_rng(0)
    # Calls are served meanwhile: the warm-up takes its turn with them where it must.
    with serialised():
        for d in (4, 9):  # exact and rescaled logistic surrogates; trees and splines either way
            X = rng.normal(size=(64, d))
            probabilities = 1.0 / (1.0 + np.exp(-(X[:, 0] + X[:, 1] * X[:, 2])))
            explainer = ZeroShotExplainer(artifact=running.service.contexts.artifact_path)
            explainer.fit(X, probabilities).explain(X[:3], probabilities[:3])
            # Refinement's kernels (Propose, Refine), with and without the rows' predictions.
            for given in (probabilities[:3], None):
                proposal = explainer.propose(X[:3], 9, given)
                explainer.refine(proposal, rng.random(proposal.rows.shape[0]))
    if not kernels_thread_safe():
        log.warning(
            "numba's threading layer is %s, which cannot run kernels for several calls at once: "
            "calls take turns on the kernels. Install libgomp1 (Debian, Ubuntu) or the tbb "
            "package for concurrent calls",
            threading_layer(),
        )
    running.set_serving(True)
    return time.perf_counter() - start


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain within ``settings.grace_seconds``.

    A signal before the Shapley service opens ends start-up at once with KeyboardInterrupt:
    it has refused every call so far, so there is nothing to drain.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.perf_counter()
    capped = cap_numba_threads()
    if capped is not None:
        log.info(
            "numba's kernels run on %d thread%s (NUMBA_NUM_THREADS): the CPUs this process's "
            "CPU quota allows",
            capped,
            "" if capped == 1 else "s",
        )
    stopping = threading.Event()
    running = start_server(settings, load_estimator=False)

    def request_stop(signum, frame) -> None:
        if not running.gate.is_open():
            raise KeyboardInterrupt(f"signal {signum} while starting")
        log.info(
            "signal %d: NOT_SERVING; still accepting calls for %.1f s, then draining for up to "
            "%.0f s",
            signum,
            settings.drain_notice_seconds,
            settings.grace_seconds,
        )
        stopping.set()

    # Installed before SERVING is reported: a signal right after it must drain, not kill.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    host = settings.address.rpartition(":")[0]
    log.info("listening on %s:%d (health NOT_SERVING until warmed up)", host, running.port)
    if running.metrics_port is not None:
        # The bound port: with port 0 the system picks one, which only the log can tell.
        metrics_host = settings.metrics_address.rpartition(":")[0]
        log.info("metrics on http://%s:%d/metrics", metrics_host, running.metrics_port)
    if running.health_port is not None:
        health_host = settings.health_address.rpartition(":")[0]
        log.info("health (plaintext, for probes) on %s:%d", health_host, running.health_port)
    log.info(
        "loading the estimator: numba compiles its kernels on the first start after an install "
        "(about a minute on 2 cores) and reads them from its cache in %s after",
        os.environ.get("NUMBA_CACHE_DIR", "numba's default place"),
    )
    try:
        loading = load_service(running)
        log.info("kernels compiled or loaded and artifact verified in %.1f s", loading)
        warming = warm_up(running)
    except BaseException:
        running.stop(0)
        raise
    log.info(
        "SERVING after %.1f s (estimator and kernels %.1f s, warm-up %.1f s); artifact %s",
        time.perf_counter() - started,
        loading,
        warming,
        running.service.contexts.artifact_version,
    )
    wait_for(stopping)
    running.stop(settings.grace_seconds, settings.drain_notice_seconds)
    log.info("stopped")


# How often the main thread, waiting for a stop signal, returns to the interpreter: at most this
# long passes between a signal's arrival and its handler's run.
SIGNAL_CHECK_SECONDS = 0.1


def wait_for(event: threading.Event) -> None:
    """Wait in the main thread until ``event`` is set by a signal handler.

    A process-directed signal (``kill``, an orchestrator's SIGTERM) may be delivered to any
    thread; when it lands on one of grpc's or the compute threads, Python only notes it, and runs
    the handler when the main thread next returns to the interpreter. An untimed ``wait()`` parks
    the main thread in the C library (``sem_wait``), which that signal does not interrupt: the
    handler never ran and SIGTERM was lost (about 1 in 3 while a fit ran). Short timed waits
    bring the main thread back to the interpreter, so the handler runs within
    ``SIGNAL_CHECK_SECONDS`` of the signal whichever thread received it.
    """
    while not event.wait(SIGNAL_CHECK_SECONDS):
        pass
