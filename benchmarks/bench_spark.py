"""Spark: rows/s of ``shapley_svc.spark.explain_dataframe`` on ``local[2]`` against the
in-process ``explain`` on the same context, how the context is shipped, and a long run's
executor memory over time.

The context: n = 2,000 rows, d = 20 (5 % missing in one column), a smooth model's outputs. The
query rows are generated inside Spark (``spark.range`` plus seeded ``randn`` columns), so the
driver never holds them; each run ends in the ``noop`` sink, which reads every row and writes
nothing. While Spark works, a thread samples the resident memory of the Python workers (the
``pyspark.daemon`` processes) and of the JVM every half second.

    python -m benchmarks.bench_spark                      # rate on 1,000,000 rows, shipping
    python -m benchmarks.bench_spark --rows 10000000      # plus a 10-million-row run's memory
    python -m benchmarks.bench_spark --rows 10000000 --long-only   # only the long run
    python -m benchmarks.bench_spark --quick              # 20,000 rows, a smoke run

It also refines a twentieth as many rows (2,000 at least) with the same model at a budget of
4d = 80 model rows per explained row, in process and with ``explain_dataframe(...,
model=model, budget=80)``.

Writes ``spark.{md,json}`` to ``benchmarks/results/`` (``spark_quick.*`` in quick mode,
``spark_long.*`` with ``--long-only``). Needs
pyspark, pyarrow, pandas and Java (``pip install -e '.[spark]'``).
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks._machine import machine_info, package_version, system_busy_seconds
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.spark import explain_dataframe
from shapley_svc.spark._worker import rows_per_model_call

RESULTS_DIR = Path(__file__).resolve().parent / "results"
N_CONTEXT, D = 2_000, 20
MISSING = 0.05  # share of x1 that is missing
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def model(X: np.ndarray) -> np.ndarray:
    """The outputs the context logs (numpy); ``model_column`` is the same in Spark SQL."""
    return (
        np.tanh(X[:, 0])
        + np.nan_to_num(X[:, 1]) * X[:, 2]
        + 0.5 * X[:, 3] ** 2
        + 0.1 * X[:, 4:].sum(axis=1)
    )


def context_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D))
    X[rng.random(n) < MISSING, 1] = np.nan
    return X


def spark_rows(spark, rows: int, partitions: int):
    """``rows`` query rows made by the executors: id, x0..x19 (x1 null 5 % of the time), pred."""
    import pyspark.sql.functions as F

    columns = [F.randn(seed=1_000 + j).alias(f"x{j}") for j in range(D)]
    columns[1] = F.when(F.rand(seed=999) < MISSING, F.lit(None)).otherwise(F.randn(seed=1_001))
    df = spark.range(0, rows, numPartitions=partitions).select(
        "id", *[column.alias(f"x{j}") for j, column in enumerate(columns)]
    )
    x = [F.col(f"x{j}") for j in range(D)]
    prediction = (
        F.tanh(x[0])
        + F.coalesce(x[1], F.lit(0.0)) * x[2]
        + 0.5 * x[3] * x[3]
        + 0.1 * sum(x[4:], F.lit(0.0))
    )
    return df.withColumn("pred", prediction)


class MemorySampler(threading.Thread):
    """Resident memory of the Python workers and the JVM, sampled every ``period`` seconds."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[dict] = []
        self._done = threading.Event()

    @staticmethod
    def _processes() -> dict[str, list[int]]:
        found = {"python_workers": [], "jvm": []}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                command = (Path("/proc") / entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"pyspark.daemon" in command or b"pyspark/daemon.py" in command:
                found["python_workers"].append(int(entry))
            elif b"org.apache.spark.deploy.SparkSubmit" in command and b"java" in command:
                found["jvm"].append(int(entry))
        return found

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                return int(statm.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def run(self) -> None:
        start = time.perf_counter()
        while not self._done.is_set():
            processes = self._processes()
            workers = [self._rss(pid) for pid in processes["python_workers"]]
            self.samples.append(
                {
                    "t": round(time.perf_counter() - start, 2),
                    "worker_max_mib": round(max(workers, default=0) / 2**20, 1),
                    "workers_sum_mib": round(sum(workers) / 2**20, 1),
                    "workers": len(workers),
                    "jvm_mib": round(sum(self._rss(p) for p in processes["jvm"]) / 2**20, 1),
                }
            )
            self._done.wait(self.period)

    def stop(self) -> list[dict]:
        self._done.set()
        self.join()
        return self.samples


def timed_noop(df) -> dict:
    """Run ``df`` into the noop sink: wall seconds and the CPU seconds the machine spent."""
    busy = system_busy_seconds()
    start = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - start
    after = system_busy_seconds()
    cores = None if busy is None else (after - busy) / seconds
    return {"seconds": seconds, "machine_busy_cores": cores}


def in_process_rate(explainer, rows: int) -> dict:
    X = context_rows(rows, seed=1)
    predictions = model(X)
    explainer.explain(X[:100], predictions[:100])  # the kernels are loaded
    busy = system_busy_seconds()
    cpu = time.process_time()
    start = time.perf_counter()
    explainer.explain(X, predictions)
    seconds = time.perf_counter() - start
    own = time.process_time() - cpu
    others = None if busy is None else (system_busy_seconds() - busy - own) / seconds
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "others_cores": others}


# Refinement: the model rows each explained row may use (4d, issue 19's budget of reference).
REFINE_BUDGET = 4 * D


def in_process_refine_rate(explainer, rows: int) -> dict:
    """Propose, score with ``model``, refine: the whole round trip on ``rows`` rows, in the
    slices ``explain_dataframe(..., model=model, budget=REFINE_BUDGET)`` takes."""
    X = context_rows(rows, seed=1)
    predictions = model(X)
    proposal = explainer.propose(X[:100], REFINE_BUDGET, predictions[:100])
    explainer.refine(proposal, model(proposal.rows))  # the kernels are loaded
    step = rows_per_model_call(REFINE_BUDGET, D)
    start = time.perf_counter()
    for first in range(0, rows, step):
        part = slice(first, first + step)
        proposal = explainer.propose(X[part], REFINE_BUDGET, predictions[part])
        explainer.refine(proposal, model(proposal.rows))
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def summarise_memory(samples: list[dict], seconds: float) -> dict:
    """Peak worker RSS, and the median over the run's second quarter against its last."""
    active = [sample for sample in samples if sample["workers"]]
    if not active:
        return {"samples": 0}
    quarter = [
        [s["worker_max_mib"] for s in active if lo * seconds <= s["t"] < hi * seconds]
        for lo, hi in ((0.25, 0.5), (0.75, 1.01))
    ]
    return {
        "samples": len(active),
        "peak_worker_mib": max(s["worker_max_mib"] for s in active),
        "peak_workers_sum_mib": max(s["workers_sum_mib"] for s in active),
        "peak_jvm_mib": max(s["jvm_mib"] for s in active),
        "median_worker_mib_second_quarter": float(np.median(quarter[0])) if quarter[0] else None,
        "median_worker_mib_last_quarter": float(np.median(quarter[1])) if quarter[1] else None,
    }


def session():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("shapley-svc-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate-rows", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=0, help="a long run's rows (0: none)")
    parser.add_argument("--rows-per-partition", type=int, default=50_000)
    parser.add_argument("--long-only", action="store_true", help="skip the rate and shipping")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="The copy keyword is deprecated")
    rate_rows = 20_000 if args.quick else args.rate_rows
    ship_partitions, ship_rows_per_partition = (8, 50) if args.quick else (100, 100)

    X = context_rows(N_CONTEXT, seed=0)
    explainer = ZeroShotExplainer(random_state=0).fit(X, model(X))
    directory = Path(tempfile.mkdtemp(prefix="shapley-svc-bench-spark-"))
    explainer.save(directory)
    context_bytes = sum(path.stat().st_size for path in directory.iterdir())
    features = [f"x{j}" for j in range(D)]
    result = {
        "machine": machine_info(),
        "pyspark": package_version("pyspark"),
        "pyarrow": package_version("pyarrow"),
        "pandas": package_version("pandas"),
        "master": "local[2]",
        "n_context": N_CONTEXT,
        "d": D,
        "context_bytes": context_bytes,
        "load_average_at_start": os.getloadavg(),
    }
    print(f"context: {context_bytes / 2**20:.1f} MiB saved", flush=True)
    if args.long_only:
        if not args.rows:
            parser.error("--long-only needs --rows")
        long_only(result, directory, features, args)
        return
    result["in_process"] = in_process_rate(explainer, min(rate_rows, 100_000))
    print(f"in-process: {result['in_process']['rows_per_s']:,.0f} rows/s", flush=True)

    spark = session()
    try:
        # Warm-up: the Python workers start, import the package and load the context.
        warm = explain_dataframe(spark_rows(spark, 4_000, 2), str(directory), features, "pred")
        result["warm_up_seconds"] = timed_noop(warm)["seconds"]

        # Each way twice, alternating, so neither always runs first; the faster run counts.
        shipping = {}
        for how in ("broadcast", "closure", "broadcast", "closure"):
            df = spark_rows(spark, ship_partitions * ship_rows_per_partition, ship_partitions)
            run = timed_noop(explain_dataframe(df, str(directory), features, "pred", shipping=how))
            if how not in shipping or run["seconds"] < shipping[how]["seconds"]:
                shipping[how] = run | {
                    "tasks": ship_partitions,
                    "rows_per_task": ship_rows_per_partition,
                }
            print(f"shipping by {how}: {run['seconds']:.1f} s", flush=True)
        result["shipping"] = shipping

        partitions = max(2, -(-rate_rows // args.rows_per_partition))
        rate = timed_noop(
            explain_dataframe(
                spark_rows(spark, rate_rows, partitions), str(directory), features, "pred"
            )
        )
        rate |= {"rows": rate_rows, "partitions": partitions}
        rate["rows_per_s"] = rate_rows / rate["seconds"]
        result["spark"] = rate
        result["spark_over_in_process"] = rate["rows_per_s"] / result["in_process"]["rows_per_s"]
        print(f"spark local[2]: {rate['rows_per_s']:,.0f} rows/s", flush=True)

        refine_rows = max(2_000, rate_rows // 20)
        inside = in_process_refine_rate(explainer, refine_rows)
        partitions = max(2, -(-refine_rows // (args.rows_per_partition // 20)))
        refined = explain_dataframe(
            spark_rows(spark, refine_rows, partitions),
            str(directory),
            features,
            "pred",
            model=model,
            budget=REFINE_BUDGET,
        )
        run = timed_noop(refined) | {"rows": refine_rows, "partitions": partitions}
        run["rows_per_s"] = refine_rows / run["seconds"]
        result["refine"] = {"budget": REFINE_BUDGET, "in_process": inside, "spark": run}
        print(
            f"refined at budget {REFINE_BUDGET}: in process {inside['rows_per_s']:,.0f} rows/s, "
            f"spark local[2] {run['rows_per_s']:,.0f} rows/s",
            flush=True,
        )

        if args.rows:
            result["long_run"] = long_run(spark, directory, features, args)
    finally:
        spark.stop()
    result["load_average_at_end"] = os.getloadavg()
    write_reports(result, quick=args.quick)


def long_run(spark, directory: Path, features: list[str], args) -> dict:
    """``args.rows`` rows made and explained by the executors, memory sampled meanwhile."""
    partitions = max(2, -(-args.rows // args.rows_per_partition))
    df = explain_dataframe(
        spark_rows(spark, args.rows, partitions), str(directory), features, "pred"
    )
    sampler = MemorySampler()
    sampler.start()
    run = timed_noop(df)
    samples = sampler.stop()
    run |= {"rows": args.rows, "partitions": partitions}
    run["rows_per_s"] = args.rows / run["seconds"]
    run["memory"] = summarise_memory(samples, run["seconds"])
    step = max(1, len(samples) // 200)  # enough points to draw the curve
    run["memory_samples"] = samples[::step]
    print(
        f"long run: {args.rows:,} rows in {run['seconds']:.0f} s, "
        f"peak worker RSS {run['memory'].get('peak_worker_mib')} MiB",
        flush=True,
    )
    return run


def long_only(result: dict, directory: Path, features: list[str], args) -> None:
    spark = session()
    try:
        warm = explain_dataframe(spark_rows(spark, 4_000, 2), str(directory), features, "pred")
        result["warm_up_seconds"] = timed_noop(warm)["seconds"]
        result["long_run"] = long_run(spark, directory, features, args)
    finally:
        spark.stop()
    result["load_average_at_end"] = os.getloadavg()
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "spark_long.json").write_text(json.dumps(result, indent=2) + "\n")
    run, memory = result["long_run"], result["long_run"]["memory"]
    lines = [
        "# Spark: a long `explain_dataframe` run on local[2], executor memory over time",
        "",
        f"{result['machine']['date']}, {result['machine']['cpus_available']} CPUs, pyspark "
        f"{result['pyspark']}; load average at start {result['load_average_at_start'][0]:.1f}, "
        f"at end {result['load_average_at_end'][0]:.1f}. Context n = {result['n_context']:,}, "
        f"d = {result['d']}; rows with logged predictions, made by the executors.",
        "",
        f"{run['rows']:,} rows in {run['partitions']} partitions: {run['seconds']:.0f} s, "
        f"{run['rows_per_s']:,.0f} rows/s. Peak Python worker RSS {memory['peak_worker_mib']:.0f}"
        f" MiB (all workers {memory['peak_workers_sum_mib']:.0f} MiB), JVM "
        f"{memory['peak_jvm_mib']:.0f} MiB; median worker RSS in the run's second quarter "
        f"{memory['median_worker_mib_second_quarter']:.0f} MiB, in its last "
        f"{memory['median_worker_mib_last_quarter']:.0f} MiB ({memory['samples']} samples).",
    ]
    (RESULTS_DIR / "spark_long.md").write_text("\n".join(lines) + "\n")


def write_reports(result: dict, quick: bool) -> None:
    stem = "spark_quick" if quick else "spark"
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    machine = result["machine"]
    inside, spark = result["in_process"], result["spark"]
    lines = [
        "# Spark: `explain_dataframe` on local[2] against in-process `explain`",
        "",
        f"{machine['date']}, {machine['cpus_available']} CPUs, pyspark {result['pyspark']}, "
        f"pyarrow {result['pyarrow']}, pandas {result['pandas']}; load average at start "
        f"{result['load_average_at_start'][0]:.1f}, at end {result['load_average_at_end'][0]:.1f}.",
        f"Context n = {result['n_context']:,}, d = {result['d']}, "
        f"{result['context_bytes'] / 2**20:.1f} MiB saved; rows with logged predictions.",
        "",
        "| run | rows | seconds | rows/s |",
        "| --- | --- | --- | --- |",
        f"| in-process `explain` (2 numba threads) | {inside['rows']:,} | "
        f"{inside['seconds']:.1f} | {inside['rows_per_s']:,.0f} |",
        f"| Spark local[2], {spark['partitions']} partitions (1 thread a task) | "
        f"{spark['rows']:,} | {spark['seconds']:.1f} | {spark['rows_per_s']:,.0f} |",
    ]
    refine = result.get("refine")
    if refine:
        lines += [
            f"| in-process propose + model + refine, budget {refine['budget']} (2 numba threads) "
            f"| {refine['in_process']['rows']:,} | {refine['in_process']['seconds']:.1f} | "
            f"{refine['in_process']['rows_per_s']:,.0f} |",
            f"| Spark local[2] refined, budget {refine['budget']}, "
            f"{refine['spark']['partitions']} partitions | {refine['spark']['rows']:,} | "
            f"{refine['spark']['seconds']:.1f} | {refine['spark']['rows_per_s']:,.0f} |",
        ]
    long_run = result.get("long_run")
    if long_run:
        lines.append(
            f"| Spark local[2], {long_run['partitions']} partitions | {long_run['rows']:,} | "
            f"{long_run['seconds']:.1f} | {long_run['rows_per_s']:,.0f} |"
        )
    lines += [
        "",
        f"Spark over in-process: {result['spark_over_in_process']:.2f}x. "
        f"Warm-up (workers start, import, load the context): {result['warm_up_seconds']:.1f} s.",
        "",
        "Shipping the context (the faster of two runs each), "
        + ", ".join(
            f"{how}: {run['tasks']} tasks of {run['rows_per_task']} rows in {run['seconds']:.1f} s"
            for how, run in result["shipping"].items()
        )
        + ".",
    ]
    if long_run and long_run["memory"].get("samples"):
        memory = long_run["memory"]
        lines += [
            "",
            f"Long run memory ({memory['samples']} samples every 0.5 s): peak Python worker RSS "
            f"{memory['peak_worker_mib']:.0f} MiB (all workers {memory['peak_workers_sum_mib']:.0f}"
            f" MiB), JVM {memory['peak_jvm_mib']:.0f} MiB; median worker RSS in the run's second "
            f"quarter {memory['median_worker_mib_second_quarter']:.0f} MiB, in its last "
            f"{memory['median_worker_mib_last_quarter']:.0f} MiB.",
        ]
    (RESULTS_DIR / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
