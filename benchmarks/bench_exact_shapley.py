"""Benchmark ``shapley_svc.reference.exact_shapley``: throughput and peak memory.

Each configuration runs in a fresh interpreter (this script with ``--worker``), so its peak
resident set size is its own; the worker prints one JSON object on stdout. Run from the
repository root:

    python -m benchmarks.bench_exact_shapley            # full run, about 1 minute on 2 cores
    python -m benchmarks.bench_exact_shapley --quick    # smoke run, well under a minute

Writes ``benchmarks/results/exact_shapley[_quick].{json,md}`` and prints the same tables.
"""

import argparse
import inspect
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numba
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from benchmarks._machine import CPUS, machine_info, system_busy_seconds
from shapley_svc.reference import exact_shapley

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
MODULE = "benchmarks.bench_exact_shapley"
N_TRAIN = 2_000
MIB = 1024**2
CAPPED_MEMORY = 256 * MIB
DEFAULT_MAX_MEMORY = inspect.signature(exact_shapley).parameters["max_memory"].default


@dataclass(frozen=True)
class Config:
    model: str  # "numpy-relu" or "sklearn-mlp"
    d: int
    m: int
    n_background: int = 100
    max_memory: int | None = None  # None: exact_shapley's default budget
    repeats: int = 3
    seed: int = 0
    values_path: str | None = None  # where the worker saves its values, for comparisons

    @property
    def label(self) -> str:
        return (
            f"{self.model} d={self.d} m={self.m} bg={self.n_background} "
            f"max_memory={budget_label(self.max_memory)}"
        )


def budget_label(max_memory: int | None) -> str:
    if max_memory is None:
        return f"default ({DEFAULT_MAX_MEMORY // MIB} MiB)"
    return f"{max_memory // MIB} MiB"


class RandomReluNet:
    """A fixed random two-layer ReLU network in numpy: the cheap model.

    Cheap so that the engine's own work (building coalition rows, averaging, combining) is a
    visible share of the time. Not tanh: numpy's float64 tanh had no fast SIMD path on the
    machine this was first run on (AMD EPYC, numpy 2.4: ~16 ns per element), so a 32-unit tanh
    network cost ~30 ms per 65,536-row call, ~30x the engine's work per call, and the benchmark
    timed np.tanh. In-place steps avoid a fresh multi-megabyte temporary (and its page faults)
    per operation.
    """

    def __init__(self, d: int, hidden: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.normal(size=(d, hidden)) / np.sqrt(d)
        self.b1 = rng.normal(size=hidden)
        self.w2 = rng.normal(size=hidden) / np.sqrt(hidden)

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        hidden = Z @ self.w1
        hidden += self.b1
        np.maximum(hidden, 0.0, out=hidden)
        return hidden @ self.w2


class TimedPredict:
    """Wraps a model's predict and adds up the seconds spent inside it."""

    def __init__(self, predict: Any) -> None:
        self.predict = predict
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self.predict(Z)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def make_data(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, d))
    y = np.sin(2 * X[:, 0]) * X[:, 1] + X[:, 2] ** 2 + 0.3 * X.sum(axis=1)
    return X, y + 0.1 * rng.normal(size=n)


def build_predict(config: Config, X_train: np.ndarray, y_train: np.ndarray) -> Any:
    if config.model == "numpy-relu":
        return RandomReluNet(config.d, hidden=8, seed=config.seed)
    if config.model == "sklearn-mlp":
        with warnings.catch_warnings():
            # Fit quality is irrelevant here; only the predict cost matters.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPRegressor(
                hidden_layer_sizes=(32,), max_iter=200, random_state=config.seed
            ).fit(X_train, y_train)
        return model.predict
    raise ValueError(f"unknown model {config.model!r}")


def max_rss_kib() -> int:
    # Linux reports ru_maxrss in KiB (macOS in bytes; this benchmark targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(config: Config) -> dict[str, Any]:
    """Run one configuration in this (fresh) process and measure it."""
    rss_after_imports = max_rss_kib()
    rng = np.random.default_rng(config.seed)
    X_train, y_train = make_data(rng, N_TRAIN, config.d)
    X = make_data(rng, config.m, config.d)[0]
    background = X_train[rng.choice(N_TRAIN, config.n_background, replace=False)]
    predict = TimedPredict(build_predict(config, X_train, y_train))
    kwargs = {} if config.max_memory is None else {"max_memory": config.max_memory}

    # Warm-up on a tiny problem, so one-off costs (numba cache load, first BLAS call) and the
    # model's fit stay out of both the timing and the memory increase.
    exact_shapley(predict, X[:1, :], background[:2], **kwargs)
    rss_baseline = max_rss_kib()

    walls, cpus, model_seconds, foreign_shares, result = [], [], [], [], None
    for _ in range(config.repeats):
        predict.seconds, predict.calls = 0.0, 0
        busy_start = system_busy_seconds()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        result = exact_shapley(predict, X, background, **kwargs)
        walls.append(time.perf_counter() - wall_start)
        cpus.append(time.process_time() - cpu_start)
        model_seconds.append(predict.seconds)
        if busy_start is not None:
            foreign = system_busy_seconds() - busy_start - cpus[-1]
            foreign_shares.append(max(0.0, foreign) / (walls[-1] * CPUS))
    rss_peak = max_rss_kib()
    if config.values_path is not None:
        np.save(config.values_path, result.values)

    best = int(np.argmin(walls))
    coalitions = config.m * 2**config.d
    return {
        "config": asdict(config),
        "label": config.label,
        "seconds_best": walls[best],
        "seconds_median": statistics.median(walls),
        "model_seconds_best": model_seconds[best],
        "engine_share": 1.0 - model_seconds[best] / walls[best],
        "cpu_per_wall": cpus[best] / walls[best],
        "max_foreign_cpu_share": max(foreign_shares) if foreign_shares else None,
        "model_calls": predict.calls,
        "coalitions": coalitions,
        "coalitions_per_second": coalitions / walls[best],
        "model_evaluations": result.model_evaluations,
        "model_rows_per_second": result.model_evaluations / walls[best],
        "efficiency_gap": result.efficiency_gap,
        "rss_after_imports_kib": rss_after_imports,
        "rss_baseline_kib": rss_baseline,
        "rss_peak_kib": rss_peak,
        "rss_increase_kib": rss_peak - rss_baseline,
        "numba_threads": numba.get_num_threads(),
    }


def run_in_subprocess(config: Config) -> dict[str, Any]:
    print(f"running {config.label} ...", file=sys.stderr, flush=True)
    completed = subprocess.run(
        [sys.executable, "-m", MODULE, "--worker", json.dumps(asdict(config))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"worker for {config.label} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _optional(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def throughput_table(rows: list[dict]) -> str:
    lines = [
        "| model | d | m | coalitions | s (best / median) | coalitions/s | model rows/s "
        "| engine share | CPU/wall | others' CPU | eff. gap | peak RSS MiB | increase MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["config"]
        lines.append(
            f"| {c['model']} | {c['d']} | {c['m']} | {r['coalitions']:,} "
            f"| {r['seconds_best']:.2f} / {r['seconds_median']:.2f} "
            f"| {r['coalitions_per_second']:,.0f} | {r['model_rows_per_second']:,.0f} "
            f"| {r['engine_share']:.0%} | {r['cpu_per_wall']:.2f} "
            f"| {_optional(r['max_foreign_cpu_share'], '.0%')} | {r['efficiency_gap']:.1e} "
            f"| {r['rss_peak_kib'] / 1024:.0f} | {r['rss_increase_kib'] / 1024:.1f} |"
        )
    return "\n".join(lines)


def memory_table(pairs: list[tuple[dict, dict, float]]) -> str:
    lines = [
        "| configuration | max_memory | s (best) | peak RSS MiB | baseline MiB | increase MiB "
        "| max abs diff vs default |",
        "|---|---|---|---|---|---|---|",
    ]
    for default, capped, diff in pairs:
        for r, shown_diff in ((default, "-"), (capped, f"{diff:.1e}")):
            c = r["config"]
            budget = budget_label(c["max_memory"])
            lines.append(
                f"| {c['model']} d={c['d']} m={c['m']} bg={c['n_background']} | {budget} "
                f"| {r['seconds_best']:.2f} | {r['rss_peak_kib'] / 1024:.0f} "
                f"| {r['rss_baseline_kib'] / 1024:.0f} | {r['rss_increase_kib'] / 1024:.1f} "
                f"| {shown_diff} |"
            )
    return "\n".join(lines)


def contention_warning(rows: list[dict]) -> list[str]:
    contended = [row["label"] for row in rows if (row["max_foreign_cpu_share"] or 0.0) > 0.1]
    if not contended:
        return []
    return [
        "WARNING: other processes used over 10% of the machine's CPU during "
        f"{'; '.join(contended)}; those timings are pessimistic"
    ]


def plan(quick: bool, seed: int) -> tuple[list[Config], list[tuple[int | Config, Config]]]:
    """Throughput configurations, and (default budget, 256 MiB budget) pairs for memory.

    A pair's first element is either an index into the throughput configurations (reused, not
    rerun) or a configuration of its own.
    """
    repeats = 1 if quick else 3
    # Equal coalition counts per size (m * 2**d), about a second per run for the MLP.
    sizes = ((10, 4), (12, 2)) if quick else ((10, 128), (12, 32), (14, 8))
    throughput = [
        Config(model, d, m, repeats=repeats, seed=seed)
        for model in ("numpy-relu", "sklearn-mlp")
        for d, m in sizes
    ]
    largest = len(sizes) - 1  # the numpy-relu run with the largest d
    # The second pair is sized so that the default budget needs well over 256 MiB (the
    # coalition tables grow with m * 2**d) while staying fast: a one-row background (baseline
    # Shapley) makes the model rows equal the coalitions.
    d_big, m_big = (12, 4_096) if quick else (14, 2_048)
    big = Config("numpy-relu", d_big, m_big, n_background=1, repeats=1, seed=seed)
    return throughput, [
        (largest, replace(throughput[largest], max_memory=CAPPED_MEMORY)),
        (big, replace(big, max_memory=CAPPED_MEMORY)),
    ]


def run_keeping_values(config: Config, directory: Path) -> tuple[dict[str, Any], np.ndarray]:
    path = directory / f"values_{uuid.uuid4().hex}.npy"
    row = run_in_subprocess(replace(config, values_path=str(path)))
    return row, np.load(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small m, one repeat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", metavar="CONFIG_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(Config(**json.loads(args.worker)))))
        return

    throughput_configs, memory_plan = plan(args.quick, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        throughput = [run_keeping_values(config, Path(tmp)) for config in throughput_configs]
        pairs = []
        for default, capped in memory_plan:
            default_row, default_values = (
                throughput[default]
                if isinstance(default, int)
                else run_keeping_values(default, Path(tmp))
            )
            capped_row, capped_values = run_keeping_values(capped, Path(tmp))
            diff = float(np.max(np.abs(default_values - capped_values)))
            pairs.append((default_row, capped_row, diff))
    throughput_rows = [row for row, _ in throughput]

    info = machine_info()
    machine = ", ".join(f"{key} {value}" for key, value in info.items())
    report = (
        "\n\n".join(
            [
                "# exact_shapley throughput and memory" + (" - quick" if args.quick else ""),
                f"Machine: {machine}",
                "Each row is a fresh process; times are best and median of "
                f"{throughput_configs[0].repeats} run(s). coalitions = m * 2**d; model rows = "
                "rows passed to the model (m * (2**d - 2) * n_background + m + n_background); "
                "engine share = 1 - time inside predict / total; the RSS increase is over a "
                "baseline taken after imports, model fit and a tiny warm-up call. Models: "
                "numpy-relu is a fixed random d-8-1 ReLU network in numpy; sklearn-mlp is "
                "MLPRegressor(hidden_layer_sizes=(32,)) fitted on synthetic data, called through "
                ".predict.",
                throughput_table(throughput_rows),
                "Peak memory, default budget vs max_memory=256 MiB (values compared with the "
                "default run's):",
                memory_table(pairs),
                *contention_warning(throughput_rows + [row for pair in pairs for row in pair[:2]]),
            ]
        )
        + "\n"
    )
    print(report)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = "exact_shapley_quick" if args.quick else "exact_shapley"
    payload = {
        "machine": info,
        "throughput": throughput_rows,
        "memory": [{"default": d, "capped": c, "max_abs_diff": diff} for d, c, diff in pairs],
    }
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS_DIR / f"{stem}.md").write_text(report)
    print(f"wrote {RESULTS_DIR / stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
