"""gRPC overhead: the same explanations through a loopback server and in process.

A server is started in this process on port 0 with default settings; one context (n = 2,000,
d = 20, a gradient-boosting classifier's probabilities) is created through the Python client and
fitted in process with the same data. Then:

- single-row Explain: p50/p99 latency over ``--single-calls`` calls, against the in-process
  ``explain`` of the same row;
- a 10,000-row batch (d = 20) in one unary call: rows/s against in process (median of 3).

    python -m benchmarks.bench_service [--single-calls 300] [--batch-rows 10000]
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from benchmarks._machine import machine_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000.0
    return {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 95, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single-calls", type=int, default=300)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--out", default="service.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from shapley_client import ShapleyClient

    from shapley_svc import ZeroShotExplainer
    from shapley_svc.server import Settings, start_server, warm_up

    rng = np.random.default_rng(0)
    n, d = 2000, 20
    X = rng.normal(size=(n, d))
    logits = np.sin(X[:, 0]) * 2 + X[:, 1] * X[:, 2] + X[:, 3] - 0.5 * X[:, 4] ** 2
    y = (logits + rng.normal(size=n) > 0).astype(int)
    model = GradientBoostingClassifier(random_state=0).fit(X, y)
    predictions = model.predict_proba(X)[:, 1]
    query = rng.normal(size=(args.batch_rows, d))
    query_predictions = model.predict_proba(query)[:, 1]

    running = start_server(Settings(address="127.0.0.1:0", metrics_address=""))
    warm_up(running)
    client = ShapleyClient(f"127.0.0.1:{running.port}")
    context = client.create_context(X, predictions)
    local = ZeroShotExplainer(random_state=0).fit(X, predictions)

    remote_single, local_single = [], []
    for i in range(args.single_calls):
        row, p = query[i % len(query)][None], query_predictions[i % len(query)][None]
        start = time.perf_counter()
        client.explain(context, row, p)
        remote_single.append(time.perf_counter() - start)
        start = time.perf_counter()
        local.explain(row, p)
        local_single.append(time.perf_counter() - start)

    remote_batch, local_batch = [], []
    for _ in range(3):
        start = time.perf_counter()
        remote = client.explain(context, query, query_predictions)
        remote_batch.append(time.perf_counter() - start)
        start = time.perf_counter()
        in_process = local.explain(query, query_predictions)
        local_batch.append(time.perf_counter() - start)
    # Not bit-identical in general: numpy may reduce an unaligned wire buffer in another order.
    disagreement = float(np.abs(remote.values - in_process.values).max())
    client.close()
    running.stop(1.0)

    remote_rate = args.batch_rows / float(np.median(remote_batch))
    local_rate = args.batch_rows / float(np.median(local_batch))
    single_remote, single_local = _percentiles(remote_single), _percentiles(local_single)
    result = {
        "machine": machine_info(),
        "context": {"n": n, "d": d, "background_rows": 100},
        "single_row_calls": args.single_calls,
        "single_row_grpc": single_remote,
        "single_row_in_process": single_local,
        "single_row_p50_overhead_ms": single_remote["p50_ms"] - single_local["p50_ms"],
        "batch_rows": args.batch_rows,
        "batch_grpc_rows_per_second": remote_rate,
        "batch_in_process_rows_per_second": local_rate,
        "batch_grpc_share_of_in_process": remote_rate / local_rate,
        "batch_max_abs_difference": disagreement,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
