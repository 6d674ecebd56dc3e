"""Service load: a ``shapley-svc serve`` process on loopback against the same calls in process.

One context (n = 2,000, d = 20, a gradient-boosting classifier's probabilities) is created
through the Python client on a server running in its own process, and fitted in this process
with the same data. Then, at concurrency 1, 8 and 32 (one client and channel per worker thread):

- unary ``Explain`` of a single row;
- unary ``Explain`` of 1,000-row batches;
- ``ExplainStream`` of 100,000 rows in 10,000-row messages (``ShapleyClient.explain_stream``);
- refinement of 10 rows at a budget of 4d = 80 model rows each: ``ShapleyClient.explain`` with
  ``model=`` (``Propose``, the model on the proposed rows in the client, ``Refine``), against
  ``propose``, the model and ``refine`` in process. The model is the benchmark's classifier, so
  its time on the 800 rows counts on both sides, on the same cores as the server.

Every scenario is bounded in calls and in time (no call starts after the time bound). Reported:
p50/p95/p99 latency, rows/s, errors (must be zero: the exit status is 1 otherwise), the server's
peak resident memory (VmHWM from /proc) and its peak during each scenario, and the same calls in
process (``ZeroShotExplainer.explain`` from as many threads; streams one at a time) for the
overhead ratio. The earlier figures keep their JSON keys: single-row latency, with each call
taking turns with the same call in process, an echo by a grpcio server with no project code (the
transport's floor on this machine) and ``GetServerInfo``; one 10,000-row batch, the median of 7
taken in turns with the same batch in process. The server runs with
``--max-concurrent-streams 32 --worker-threads 48``: the defaults (16 streams, 16 handler
threads) would refuse half the streams at concurrency 32, by design.

    python -m benchmarks.bench_service [--quick] [--out-dir DIR]   # full: 7-10 minutes
    shapley-svc bench service [--quick]                             # the same, from a checkout
"""

import argparse
import functools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from benchmarks._machine import CPUS, machine_info, system_busy_seconds

RESULTS_DIR = Path(__file__).resolve().parent / "results"
README_START = "<!-- bench:service:start -->"
README_END = "<!-- bench:service:end -->"
CONCURRENCY = (1, 8, 32)
SERVER_FLAGS = ("--max-concurrent-streams", "32", "--worker-threads", "48")
CALL_TIMEOUT_SECONDS = 600.0
SERVE_COMMAND = (sys.executable, "-m", "shapley_svc.cli", "serve")


@dataclass(frozen=True)
class Plan:
    """How much load each scenario gets: calls and seconds bound every one."""

    single_calls: int
    single_seconds: float
    batch_rows: int
    batch_calls: int
    batch_seconds: float
    stream_rows: int
    stream_chunk_rows: int
    stream_calls_per_worker: int
    stream_seconds: float
    legacy_single_calls: int
    legacy_batch_rows: int
    legacy_batch_repeats: int
    refine_rows: int
    refine_calls: int
    refine_seconds: float


FULL = Plan(2000, 20.0, 1000, 400, 20.0, 100_000, 10_000, 1, 60.0, 1000, 10_000, 7, 10, 400, 20.0)
QUICK = Plan(100, 1.0, 1000, 20, 1.0, 2_000, 500, 1, 10.0, 50, 2_000, 1, 10, 20, 1.0)
# Refinement's budget in model rows per explained row, as a multiple of d (issue 19's 4d).
REFINE_BUDGET_PER_FEATURE = 4


class ServerProcess:
    """``shapley-svc serve`` in a child process on a free loopback port; its resident memory."""

    def __init__(self, flags: Sequence[str] = SERVER_FLAGS, start_timeout: float = 300.0):
        self.process = subprocess.Popen(
            [*SERVE_COMMAND, "--address", "127.0.0.1:0", "--metrics-address", "", *flags],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self.port: int | None = None
        self._serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(start_timeout):
            self.stop()
            raise RuntimeError("the server never reported SERVING:\n" + "".join(self.log[-30:]))
        self.target = f"127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r"listening on [\d.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
            if "SERVING after" in line:
                self._serving.set()

    def memory(self) -> dict[str, int]:
        """Resident memory now (VmRSS) and its peak since start (VmHWM), in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return {
            key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) * 1024
            for key in ("VmRSS", "VmHWM")
        }

    def cpu_seconds(self) -> float:
        """User and system CPU time the server has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


class RssSampler:
    """The largest VmRSS seen while a scenario runs (VmHWM only knows the whole life)."""

    def __init__(self, server: ServerProcess, interval: float = 0.05):
        self.server, self.interval = server, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.memory()["VmRSS"])
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.server.memory()["VmRSS"])


def percentiles(seconds: Sequence[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    values = np.asarray(seconds) * 1000.0
    return {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 95, 99)}


def run_load(
    calls: Sequence[Callable[[], int]], max_calls: int, max_seconds: float
) -> dict[str, object]:
    """One thread per entry of ``calls`` (each returns the rows it explained), until
    ``max_calls`` have been started or ``max_seconds`` have passed; a call in flight finishes."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    started = 0
    rows = 0
    deadline = time.perf_counter() + max_seconds

    def worker(call: Callable[[], int]) -> None:
        nonlocal started, rows
        while True:
            with lock:
                if started >= max_calls or time.perf_counter() >= deadline:
                    return
                started += 1
            start = time.perf_counter()
            try:
                explained = call()
            except Exception as error:  # every failure is a counted error, never a crash
                with lock:
                    errors.append(f"{type(error).__name__}: {error}"[:300])
                continue
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                rows += explained

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "calls": len(latencies) + len(errors),
        "errors": len(errors),
        "error_samples": errors[:5],
        "rows": rows,
        "seconds": wall,
        "rows_per_second": rows / wall if wall > 0 else None,
        **percentiles(latencies),
    }


def make_task(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Callable]:
    """The context (n = 2,000, d = 20) and ``rows`` query rows with the model's probabilities,
    and the model as a function of rows (its probability of class 1)."""
    rng = np.random.default_rng(0)
    n, d = 2000, 20
    X = rng.normal(size=(n, d))
    logits = np.sin(X[:, 0]) * 2 + X[:, 1] * X[:, 2] + X[:, 3] - 0.5 * X[:, 4] ** 2
    y = (logits + rng.normal(size=n) > 0).astype(int)
    model = GradientBoostingClassifier(random_state=0).fit(X, y)
    query = rng.normal(size=(rows, d))

    def probability(rows: np.ndarray) -> np.ndarray:
        return model.predict_proba(rows)[:, 1]

    return X, probability(X), query, probability(query), probability


def _explain_in_chunks(local, rows: np.ndarray, predictions: np.ndarray, chunk: int) -> int:
    for start in range(0, len(rows), chunk):
        local.explain(rows[start : start + chunk], predictions[start : start + chunk])
    return len(rows)


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: int
    max_calls: int | None  # None: one call per worker (streams)
    max_seconds: float
    budget: int | None = None  # model rows per explained row: a refinement


def scenarios(plan: Plan, d: int) -> list[Scenario]:
    return [
        Scenario("unary_single_row", 1, plan.single_calls, plan.single_seconds),
        Scenario("unary_batch", plan.batch_rows, plan.batch_calls, plan.batch_seconds),
        Scenario("stream", plan.stream_rows, None, plan.stream_seconds),
        Scenario(
            "refine",
            plan.refine_rows,
            plan.refine_calls,
            plan.refine_seconds,
            REFINE_BUDGET_PER_FEATURE * d,
        ),
    ]


def _call(explain: Callable, scenario: Scenario, query, predictions, seed: int, chunk: int):
    """A callable making one call of the scenario through ``explain(rows, predictions)``
    (unary: a random slice of the query rows; refinement with ``budget=``) or, for streams,
    ``explain(rows, predictions, chunk)``; it returns the rows explained."""
    m = scenario.rows
    if scenario.name == "stream":
        return lambda: explain(query[:m], predictions[:m], chunk)
    rng = np.random.default_rng(seed)
    refine = {} if scenario.budget is None else {"budget": scenario.budget}

    def call() -> int:
        first = int(rng.integers(0, len(query) - m + 1))
        return explain(query[first : first + m], predictions[first : first + m], **refine)

    return call


def run_scenarios(server: ServerProcess, plan: Plan, concurrency: Sequence[int]) -> list[dict]:
    from shapley_client import ShapleyClient

    from shapley_svc import ZeroShotExplainer

    X, predictions, query, query_predictions, model = make_task(
        max(plan.stream_rows, plan.batch_rows)
    )
    with ShapleyClient(server.target, timeout=CALL_TIMEOUT_SECONDS) as setup:
        context = setup.create_context(X, predictions)
    local = ZeroShotExplainer(random_state=0).fit(X, predictions)
    local.explain(query[: plan.batch_rows], query_predictions[: plan.batch_rows])  # warm, untimed

    def remote_explain(client):
        def explain(rows, p, chunk=None, budget=None) -> int:
            if budget is not None:
                return len(client.explain(context, rows, p, model=model, budget=budget).values)
            if chunk is None:
                return len(client.explain(context, rows, p).values)
            return len(client.explain_stream(context, rows, p, chunk_rows=chunk).values)

        return explain

    def local_explain(rows, p, chunk=None, budget=None) -> int:
        if budget is not None:
            proposal = local.propose(rows, budget, p)
            return len(local.refine(proposal, model(proposal.rows)).values)
        if chunk is None:
            return len(local.explain(rows, p).values)
        return _explain_in_chunks(local, rows, p, chunk)

    results = []
    stream_local = None
    for scenario in scenarios(plan, X.shape[1]):
        for c in concurrency:
            # Streams: one per worker, and at least 3 so that one slow stream is not the p50.
            max_calls = scenario.max_calls or max(3, c * plan.stream_calls_per_worker)
            clients = [ShapleyClient(server.target, timeout=CALL_TIMEOUT_SECONDS) for _ in range(c)]
            # Warm the channels (and, once, the refinement's kernels on both sides): connection
            # set-up and compiling are not a call's latency.
            for client in clients:
                client.explain(context, query[:1], query_predictions[:1])
            if scenario.budget is not None:
                warm = _call(remote_explain(clients[0]), scenario, query, query_predictions, 0, 0)
                warm()
                _call(local_explain, scenario, query, query_predictions, 0, 0)()
            chunk = plan.stream_chunk_rows
            remote_calls = [
                _call(
                    remote_explain(client), scenario, query, query_predictions, 1000 * c + i, chunk
                )
                for i, client in enumerate(clients)
            ]
            with RssSampler(server) as sampler:
                remote = run_load(remote_calls, max_calls, scenario.max_seconds)
            for client in clients:
                client.close()
            # In process, streams are measured once, one at a time: more threads add no cores,
            # and 32 x 100,000 rows again would double the run for the same rows/s.
            local_c = 1 if scenario.name == "stream" else c
            if scenario.name != "stream" or stream_local is None:
                local_calls = [
                    _call(local_explain, scenario, query, query_predictions, 1000 * c + i, chunk)
                    for i in range(local_c)
                ]
                local_result = run_load(
                    local_calls, max_calls if local_c == c else 1, scenario.max_seconds
                )
                if scenario.name == "stream":
                    stream_local = local_result
            else:
                local_result = stream_local
            results.append(
                {
                    "scenario": scenario.name,
                    "rows_per_call": scenario.rows,
                    "budget": scenario.budget,
                    "concurrency": c,
                    "max_calls": max_calls,
                    "max_seconds": scenario.max_seconds,
                    "grpc": remote,
                    "in_process": local_result,
                    "in_process_concurrency": local_c,
                    "server_peak_rss_bytes": sampler.peak,
                    "p50_overhead_ratio": (
                        _ratio(remote["p50_ms"], local_result["p50_ms"]) if local_c == c else None
                    ),
                    "grpc_share_of_in_process_rows_per_second": _ratio(
                        remote["rows_per_second"], local_result["rows_per_second"]
                    ),
                }
            )
            print(
                f"{scenario.name:17s} c={c:2d}: {remote['calls']:5d} calls, "
                f"{remote['errors']} errors, p50 {_fmt(remote['p50_ms'])} ms "
                f"p99 {_fmt(remote['p99_ms'])} ms, {_fmt(remote['rows_per_second'], 0)} rows/s "
                f"(in process {_fmt(local_result['rows_per_second'], 0)} rows/s), server RSS "
                f"{sampler.peak / 2**20:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    return results


class EchoServer:
    """``benchmarks._echo_server`` in a child process: grpcio with no project code."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._echo_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        self.target = f"127.0.0.1:{int(self.process.stdout.readline())}"

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def single_row_latency(client, context, local, query, query_predictions, calls: int) -> dict:
    """One row at a time, four calls in turn so that all see the same state of the machine:
    ``Explain`` over gRPC, the same explanation in process, an echo of the same request's bytes
    by a grpcio server with no project code (the transport's floor), and ``GetServerInfo`` (this
    server's cheapest call). The order rotates every round; the first round is untimed."""
    import grpc
    from shapley_client._proto import shapley_pb2 as client_pb

    from benchmarks._echo_server import METHOD

    echo_server = EchoServer()
    channel = grpc.insecure_channel(echo_server.target)
    echo = channel.unary_unary(METHOD)
    info_request = client_pb.GetServerInfoRequest()
    latencies: dict[str, list[float]] = {"grpc": [], "in_process": [], "echo": [], "info": []}
    try:
        for i in range(calls + 1):
            row, p = query[i % len(query)][None], query_predictions[i % len(query)][None]
            request = client_pb.ExplainRequest(
                context_id=context.context_id,
                rows=client_pb.Tensor(dtype=client_pb.DTYPE_FLOAT64, shape=[1, row.shape[1]]),
                predictions=client_pb.Tensor(dtype=client_pb.DTYPE_FLOAT64, shape=[1]),
            )
            request.rows.data = row.tobytes()
            request.predictions.data = p.tobytes()
            payload = request.SerializeToString()
            calls_in_turn = {
                "grpc": functools.partial(client.explain, context, row, p),
                "in_process": functools.partial(local.explain, row, p),
                "echo": functools.partial(echo, payload, timeout=CALL_TIMEOUT_SECONDS),
                # The bare RPC, without the client's wrapping of the answer.
                "info": functools.partial(client._stub.GetServerInfo, info_request),
            }
            names = list(calls_in_turn)
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                start = time.perf_counter()
                calls_in_turn[name]()
                if i > 0:
                    latencies[name].append(time.perf_counter() - start)
    finally:
        channel.close()
        echo_server.stop()
    figures = {name: percentiles(values) for name, values in latencies.items()}
    return {
        "single_row_calls": calls,
        "single_row_grpc": figures["grpc"],
        "single_row_in_process": figures["in_process"],
        "single_row_p50_overhead_ms": figures["grpc"]["p50_ms"] - figures["in_process"]["p50_ms"],
        "grpcio_echo_floor": figures["echo"],
        "server_info_rpc": figures["info"],
    }


def legacy_figures(server: ServerProcess, plan: Plan) -> dict:
    """Single-row latency against in process and the floor; one large batch (earlier keys)."""
    from shapley_client import ShapleyClient

    from shapley_svc import ZeroShotExplainer

    X, predictions, query, query_predictions, _ = make_task(
        max(plan.legacy_batch_rows, plan.legacy_single_calls)
    )
    client = ShapleyClient(server.target, timeout=CALL_TIMEOUT_SECONDS)
    context = client.create_context(X, predictions)
    local = ZeroShotExplainer(random_state=0).fit(X, predictions)
    single = single_row_latency(
        client, context, local, query, query_predictions, plan.legacy_single_calls
    )
    query, query_predictions = (
        query[: plan.legacy_batch_rows],
        query_predictions[: plan.legacy_batch_rows],
    )
    # Untimed first: the first large batch in a process loads kernels the single rows did not use.
    client.explain(context, query, query_predictions)
    local.explain(query, query_predictions)
    remote_batch, local_batch = [], []
    for _ in range(plan.legacy_batch_repeats):
        start = time.perf_counter()
        remote = client.explain(context, query, query_predictions)
        remote_batch.append(time.perf_counter() - start)
        start = time.perf_counter()
        in_process = local.explain(query, query_predictions)
        local_batch.append(time.perf_counter() - start)
    client.close()
    # Not bit-identical in general: numpy may reduce an unaligned wire buffer in another order.
    disagreement = float(np.abs(remote.values - in_process.values).max())
    remote_rate = plan.legacy_batch_rows / float(np.median(remote_batch))
    local_rate = plan.legacy_batch_rows / float(np.median(local_batch))
    return {
        "context": {"n": len(X), "d": X.shape[1], "background_rows": 100},
        **single,
        "batch_rows": plan.legacy_batch_rows,
        "batch_grpc_rows_per_second": remote_rate,
        "batch_in_process_rows_per_second": local_rate,
        "batch_grpc_share_of_in_process": remote_rate / local_rate,
        "batch_max_abs_difference": disagreement,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _label(result: dict) -> str:
    """The scenario as the tables name it: a refinement with its budget."""
    name = result["scenario"].replace("_", " ")
    budget = result.get("budget")
    return name if budget is None else f"{name} at budget {budget}"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def single_row_sentence(payload: dict) -> str:
    """Single-row latency against in process, and how much of the difference is grpcio's."""
    single, local = payload["single_row_grpc"], payload["single_row_in_process"]
    echo, info = payload["grpcio_echo_floor"], payload["server_info_rpc"]
    return (
        f"A single row, one client, {payload['single_row_calls']:,} calls, each taking turns "
        f"with the same call in process and two bare round trips: p50 {single['p50_ms']:.2f} ms "
        f"and p99 {single['p99_ms']:.2f} ms over gRPC against p50 {local['p50_ms']:.2f} ms in "
        f"process ({payload['single_row_p50_overhead_ms']:.2f} ms more). The bare round trips: "
        f"p50 {echo['p50_ms']:.2f} ms for grpcio echoing the same request bytes with no project "
        f"code, {info['p50_ms']:.2f} ms for this server's cheapest call (`GetServerInfo`)."
    )


def markdown(payload: dict) -> str:
    info = payload["machine"]
    lines = ["# Service load: gRPC on loopback against in process", ""]
    if payload["mode"] != "full":
        lines += ["> **Quick mode**: short bounds and 2,000-row streams; a smoke run.", ""]
    lines += [
        f"Measured {info['date']} with `{payload['command']}`; server flags "
        f"`{' '.join(payload['server_flags'])}`.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "date"),
        "",
        f"Server resident memory: {payload['server_rss_after_warm_up_bytes'] / 2**20:.0f} MiB "
        f"after warm-up, peak {payload['server_peak_rss_bytes'] / 2**20:.0f} MiB (VmHWM). "
        f"Errors: {payload['total_errors']}.",
        "",
    ]
    share = payload.get("foreign_cpu_share")
    if share is not None:
        flag = (
            " (**more than 10 %: re-run on an idle machine before quoting**)" if share > 0.1 else ""
        )
        lines += [f"Other processes used {share:.0%} of the CPUs during the run{flag}.", ""]
    lines += [
        "| scenario | rows/call | concurrency | calls | errors | p50 ms | p95 ms | p99 ms | rows/s "
        "| in process: p50 ms | rows/s | p50 ratio | rows/s share | server peak RSS |",
        "|" + " --- |" * 14,
    ]
    for r in payload["scenarios"]:
        g, p = r["grpc"], r["in_process"]
        lines.append(
            f"| {_label(r)} | {r['rows_per_call']:,} | {r['concurrency']} | {g['calls']} | "
            f"{g['errors']} | {_fmt(g['p50_ms'])} | {_fmt(g['p95_ms'])} | {_fmt(g['p99_ms'])} | "
            f"{_fmt(g['rows_per_second'], 0)} | {_fmt(p['p50_ms'])} | "
            f"{_fmt(p['rows_per_second'], 0)} | {_fmt(r['p50_overhead_ratio'], 2)} | "
            f"{_fmt(r['grpc_share_of_in_process_rows_per_second'], 2)} | "
            f"{r['server_peak_rss_bytes'] / 2**20:.0f} MiB |"
        )
    lines += [
        "",
        "p50 ratio: gRPC median latency over the in-process median at the same concurrency "
        "(streams: only at concurrency 1); refine: propose, the model on the proposed rows and "
        "refine, the model called by the client (over gRPC) or in the same thread (in process); "
        "rows/s share: gRPC rows/s over in-process rows/s. In process, the same explainer is "
        "called from the same number of threads; a stream in process is the same rows explained "
        "in the same chunks, one stream at a time (more threads add no cores). Latency is per "
        "call (a whole stream for streams). The load generator is Python threads in one "
        "process: at high concurrency with single rows, its own GIL-bound client work counts.",
        "",
        single_row_sentence(payload),
        "",
        f"One {payload['batch_rows']:,}-row batch at "
        f"{payload['batch_grpc_rows_per_second']:,.0f} rows/s, "
        f"{payload['batch_grpc_share_of_in_process']:.0%} of in process.",
        "",
    ]
    return "\n".join(lines)


def readme_block(payload: dict, json_path: str) -> str:
    """The README's service figures, generated from the report's JSON."""
    info = payload["machine"]
    lines = [
        README_START,
        f"<!-- generated by scripts/update_readme_benchmarks.py from {json_path}; do not edit -->",
        "",
    ]
    if payload["mode"] != "full":
        lines += ["> **Quick mode, a smoke run**: not the benchmark's figures.", ""]
    lines += [
        f"Measured {info['date'][:10]} on {info['cpus_available']} CPUs with "
        f"`{payload['command']}`: {payload['total_errors']} errors; server resident memory "
        f"{payload['server_rss_after_warm_up_bytes'] / 2**20:.0f} MiB after warm-up, peak "
        f"{payload['server_peak_rss_bytes'] / 2**20:.0f} MiB.",
        "",
        "| scenario | concurrency | p50 ms | p95 ms | p99 ms | rows/s "
        "| share of in-process rows/s |",
        "|" + " --- |" * 7,
    ]
    for r in payload["scenarios"]:
        g = r["grpc"]
        lines.append(
            f"| {_label(r)}, {r['rows_per_call']:,} "
            f"row{'s' if r['rows_per_call'] > 1 else ''} | "
            f"{r['concurrency']} | {_fmt(g['p50_ms'])} | {_fmt(g['p95_ms'])} | "
            f"{_fmt(g['p99_ms'])} | {_fmt(g['rows_per_second'], 0)} | "
            f"{_fmt(r['grpc_share_of_in_process_rows_per_second'], 2)} |"
        )
    lines += [
        "",
        single_row_sentence(payload),
        "",
        f"One {payload['batch_rows']:,}-row batch: "
        f"{payload['batch_grpc_rows_per_second']:,.0f} rows/s, "
        f"{payload['batch_grpc_share_of_in_process']:.0%} of in process. Full table: "
        f"[{Path(json_path).with_suffix('.md').as_posix()}]"
        f"({Path(json_path).with_suffix('.md').as_posix()}).",
        README_END,
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_service", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="short bounds: a smoke run")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    parser.add_argument("--command", help=argparse.SUPPRESS)  # how the CLI names itself
    args = parser.parse_args(argv)
    from shapley_svc.cli import unwritable_dir

    if (problem := unwritable_dir(args.out_dir)) is not None:
        parser.error(f"argument --out-dir: {problem}")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = args.command or f"python -m benchmarks.bench_service {shlex.join(argv)}".strip()
    try:
        import shapley_client  # noqa: F401
    except ImportError:
        raise SystemExit(
            "the service benchmark needs the Python client: pip install ./clients/python"
        ) from None
    warnings.filterwarnings("ignore")
    plan = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    info = machine_info()
    started = time.perf_counter()
    busy, cpu = system_busy_seconds(), time.process_time()
    server = ServerProcess()
    try:
        after_warm_up = server.memory()["VmRSS"]
        legacy = legacy_figures(server, plan)
        results = run_scenarios(server, plan, CONCURRENCY)
        peak = server.memory()["VmHWM"]
        ours = time.process_time() - cpu + server.cpu_seconds()
    finally:
        code = server.stop()
    elapsed = time.perf_counter() - started
    foreign = None
    if busy is not None:
        # Other processes' share of the CPUs: the figures are only clean near zero.
        foreign = max(0.0, system_busy_seconds() - busy - ours) / (elapsed * CPUS)
    total_errors = sum(r["grpc"]["errors"] + r["in_process"]["errors"] for r in results)
    payload = {
        "benchmark": "service",
        "mode": mode,
        "command": command,
        "machine": info,
        "server_flags": ["shapley-svc", "serve", "--address", "127.0.0.1:0", *SERVER_FLAGS],
        "server_exit_code": code,
        "elapsed_seconds": elapsed,
        "foreign_cpu_share": foreign,
        "server_rss_after_warm_up_bytes": after_warm_up,
        "server_peak_rss_bytes": peak,
        "total_errors": total_errors,
        "plan": plan.__dict__,
        **legacy,
        "scenarios": results,
    }
    suffix = "" if mode == "full" else "_quick"
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / f"service{suffix}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / f"service{suffix}.md").write_text(markdown(payload))
    print(markdown(payload))
    if total_errors:
        print(f"{total_errors} calls failed: see error_samples in the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
