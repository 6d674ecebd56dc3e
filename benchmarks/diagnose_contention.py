"""Refinement's latency when another process keeps a core busy: by calling thread and by the
OpenMP settings numba's parallel kernels run under.

numba runs the estimator's parallel kernels on OpenMP (libgomp) teams. A call of refine here is
``propose``, the model on the proposed rows and ``refine`` for 10 rows at a budget of 4d = 80
(``bench_service``'s task: n = 2,000, d = 20, a gradient-boosting classifier's probabilities),
enough rows for the kernels to run in parallel. Each environment runs in a child process, since
libgomp reads its settings once, when it loads:

- ``defaults``: none of the variables below set;
- ``GOMP_SPINCOUNT=1000``: libgomp's idle threads spin briefly before they sleep;
- ``OMP_WAIT_POLICY=PASSIVE``: they sleep at once;
- ``NUMBA_NUM_THREADS=1``: the kernels run on the calling thread alone.

Each child times the calls from the process's main thread, then from another thread, quiet and
then with one busy-loop process (``while True: pass``) started beside it.

    python -m benchmarks.diagnose_contention            # about 3 minutes
    python -m benchmarks.diagnose_contention --quick    # 15 calls per line

Writes ``contention.{md,json}`` to ``benchmarks/results/`` (``contention_quick.*``).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._machine import machine_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROWS = 10
BUDGET_PER_FEATURE = 4
WARM_UP_CALLS = 5
ENVIRONMENTS = {
    "defaults": {},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "NUMBA_NUM_THREADS=1": {"NUMBA_NUM_THREADS": "1"},
}
CALLERS = ("main thread", "another thread")
CHILD_COMMAND = (sys.executable, "-m", "benchmarks.diagnose_contention", "--child")


def timed_calls(calls: int) -> dict:
    """In this process: the budget, and per caller the p50 / p95 / max milliseconds of ``calls``
    refinements (after ``WARM_UP_CALLS`` untimed ones)."""
    from benchmarks.bench_service import make_task
    from shapley_svc import ZeroShotExplainer

    X, predictions, query, query_predictions, model = make_task(2_000)
    explainer = ZeroShotExplainer(random_state=0).fit(X, predictions)
    budget = BUDGET_PER_FEATURE * X.shape[1]
    found: dict = {"budget": budget}

    def run(caller: str) -> None:
        seconds = []
        for i in range(WARM_UP_CALLS + calls):
            first = (17 * i) % (len(query) - ROWS)
            rows, given = query[first : first + ROWS], query_predictions[first : first + ROWS]
            start = time.perf_counter()
            proposal = explainer.propose(rows, budget, given)
            explainer.refine(proposal, model(proposal.rows))
            seconds.append(time.perf_counter() - start)
        ms = 1000 * np.array(seconds[WARM_UP_CALLS:])
        found[caller] = {
            "p50_ms": float(np.median(ms)),
            "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max()),
        }

    run(CALLERS[0])
    other = threading.Thread(target=run, args=(CALLERS[1],))
    other.start()
    other.join()
    return found


def child_environment(settings: dict[str, str]) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMBA_NUM_THREADS")
    }
    return environment | settings


def measure(calls: int) -> list[dict]:
    """Every environment, quiet and beside a busy process, each in a child process."""
    rows = []
    for busy in (False, True):
        spinner = None
        if busy:
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for name, settings in ENVIRONMENTS.items():
                completed = subprocess.run(
                    [*CHILD_COMMAND, "--calls", str(calls)],
                    cwd=Path(__file__).resolve().parents[1],
                    env=child_environment(settings),
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=False,
                )
                if completed.returncode != 0:
                    raise SystemExit(f"the child under {name} failed:\n{completed.stderr[-3000:]}")
                found = json.loads(completed.stdout.strip().splitlines()[-1])
                rows.append({"busy_process": busy, "environment": name, **found})
                print(f"{'busy' if busy else 'quiet'} {name}: {found}", file=sys.stderr)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    return rows


def markdown(payload: dict) -> str:
    info = payload["machine"]
    lines = ["# Refinement under a busy core: by calling thread and OpenMP settings", ""]
    if payload["mode"] != "full":
        lines += ["> **Quick mode**: a smoke run, not the diagnostic's figures.", ""]
    lines += [
        f"Measured {info['date']} with `{payload['command']}` on {info['cpus_available']} CPUs "
        f"(numba threading layer {info['numba_threading_layer']}). Per line, {payload['calls']} "
        f"calls of propose + model + refine for {ROWS} rows at budget {payload['budget']}, "
        "from the main thread and then from another thread of the same process.",
        "",
        "| beside the process | environment | main thread p50 ms | p95 | max "
        "| another thread p50 ms | p95 | max |",
        "|" + " --- |" * 8,
    ]
    for row in payload["rows"]:
        keys = ("p50_ms", "p95_ms", "max_ms")
        cells = [f"{row[caller][key]:.1f}" for caller in CALLERS for key in keys]
        where = "one busy-loop process" if row["busy_process"] else "nothing"
        lines.append(f"| {where} | `{row['environment']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.diagnose_contention", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="15 calls per line: a smoke run")
    parser.add_argument("--calls", type=int, default=80, help="timed calls per line")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    calls = 15 if args.quick else args.calls
    if args.child:
        print(json.dumps(timed_calls(calls)))
        return 0
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    payload = {
        "benchmark": "contention",
        "mode": "quick" if args.quick else "full",
        "command": f"python -m benchmarks.diagnose_contention {shlex.join(argv)}".strip(),
        "machine": machine_info(),
        "calls": calls,
    }
    payload["rows"] = measure(calls)
    payload["budget"] = payload["rows"][0]["budget"]
    payload["seconds"] = time.perf_counter() - started
    suffix = "_quick" if args.quick else ""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"contention{suffix}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / f"contention{suffix}.md").write_text(markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
