"""Benchmark ``shapley_svc.reference.tree_shapley`` against shap's C++ interventional TreeSHAP.

Both compute exact interventional Shapley values of a scikit-learn random forest, in the same
process, on the same rows and background. Run from the repository root:

    python -m benchmarks.bench_tree_shapley            # full run, about 3 minutes on 2 cores
    python -m benchmarks.bench_tree_shapley --quick    # smoke run, well under a minute

Writes ``benchmarks/results/tree_shapley[_quick].{json,md}`` and prints the same table.
"""

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numba
import numpy as np
import shap
from sklearn.base import is_classifier
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor

from benchmarks._machine import CPUS, machine_info, system_busy_seconds

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
N_FEATURES = 20
N_TRAIN = 2_000
SPEEDUP_TARGET = 1.5


@dataclass(frozen=True)
class Settings:
    n_trees: int
    n_explained: int
    n_background: int
    repeats: int
    depths: tuple[int, ...]
    classifier_depth: int | None
    single_thread: bool


FULL = Settings(
    n_trees=100,
    n_explained=1_000,
    n_background=100,
    repeats=3,
    depths=(6, 10),
    classifier_depth=6,
    single_thread=True,
)
QUICK = Settings(
    n_trees=20,
    n_explained=100,
    n_background=100,
    repeats=1,
    depths=(6, 10),
    classifier_depth=6,
    single_thread=False,
)


@dataclass
class Timing:
    """Seconds of repeated calls of one function, and the last result."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # this process's CPU seconds per call
    foreign_shares: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu_per_wall(self) -> float:
        """Busy threads during the fastest call: ~1 for serial code, ~n for n parallel threads."""
        fastest = int(np.argmin(self.walls))
        return self.cpus[fastest] / self.walls[fastest]

    def measure(self, fn: Callable[[], Any]) -> None:
        busy_start = system_busy_seconds()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        self.result = fn()
        wall = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start
        self.walls.append(wall)
        self.cpus.append(cpu)
        if busy_start is not None:
            foreign = system_busy_seconds() - busy_start - cpu
            self.foreign_shares.append(max(0.0, foreign) / (wall * CPUS))


def time_interleaved(fns: list[Callable[[], Any]], repeats: int) -> list[Timing]:
    """Time each function ``repeats`` times, alternating between them.

    Alternating spreads any burst of load from other processes over all contenders instead of
    charging it to whichever happened to run then.
    """
    timings = [Timing() for _ in fns]
    for _ in range(repeats):
        for fn, timing in zip(fns, timings, strict=True):
            timing.measure(fn)
    return timings


def make_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features and a target with interactions, so trees split on many features."""
    X = rng.normal(size=(n, N_FEATURES))
    y = (
        np.sin(2 * X[:, 0]) * X[:, 1]
        + X[:, 2] ** 2
        + np.tanh(X[:, 3] * X[:, 4])
        + 0.5 * np.abs(X[:, 5]) * (X[:, 6] > 0)
        + 0.3 * X[:, 7:12].sum(axis=1)
        + 0.1 * rng.normal(size=n)
    )
    return X, y


def fit_serial(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """Fit on all cores, then restore the default ``n_jobs=None`` that the model is used with.

    A forest keeps ``n_jobs`` for ``predict``, which our timing includes (predictions and base
    values) and shap's does not; with ``n_jobs=-1`` every call would pay joblib's thread
    start-up, tens of milliseconds, a cost of the model and not of either engine.
    """
    model.set_params(n_jobs=-1).fit(X, y)
    return model.set_params(n_jobs=None)


def measure_startup(module_name: str, cold_cache: bool = True) -> dict[str, float | None]:
    """Import time of the engine with a warm and (when ``cold_cache``) with an empty numba cache,
    and a first call.

    The kernels carry explicit signatures, so numba compiles them (or loads them from its cache)
    when the module is imported, not on the first call: the import is the compile cost.
    """
    start = time.perf_counter()
    module = importlib.import_module(module_name)
    import_seconds = time.perf_counter() - start

    rng = np.random.default_rng(1)
    X, y = make_data(rng, 50)
    tiny = DecisionTreeRegressor(max_depth=2, random_state=0).fit(X, y)
    start = time.perf_counter()
    module.tree_shapley(tiny, X[:2], X[2:5])
    first_call_seconds = time.perf_counter() - start

    if not cold_cache:
        return {
            "import_seconds": import_seconds,
            "first_call_seconds": first_call_seconds,
            "cold_cache_import_seconds": None,
        }
    # A fresh interpreter with an empty cache directory pays the full numba compilation.
    probe = (
        "import time, numpy, numba; t = time.perf_counter(); "
        f"import {module_name}; print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        completed = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return {
        "import_seconds": import_seconds,
        "first_call_seconds": first_call_seconds,
        "cold_cache_import_seconds": float(completed.stdout.strip().splitlines()[-1]),
    }


def shap_as_ours(values: Any) -> np.ndarray:
    """shap's values in our layout: (m, d) for one output, (m, d, K) for K outputs.

    shap >= 0.45 already returns a single array in that layout (a regressor gives (m, d), a
    classifier (m, d, n_classes) of class-probability attributions, as ``model_output="raw"``
    of a random forest classifier is the averaged leaf probabilities). Older shap returned a
    list of K (m, d) arrays for classifiers; stacking them on a last axis gives the same layout.
    """
    if isinstance(values, list):
        return np.stack(values, axis=-1)
    return np.asarray(values)


def run_case(
    name: str,
    model: Any,
    X: np.ndarray,
    background: np.ndarray,
    settings: Settings,
    tree_shapley: Callable,
    flatten_ensemble: Callable,
) -> dict:
    output = model.predict_proba if is_classifier(model) else model.predict
    start = time.perf_counter()
    explainer = shap.TreeExplainer(
        model, data=background, feature_perturbation="interventional", model_output="raw"
    )
    shap_setup_seconds = time.perf_counter() - start

    def ours() -> Any:
        return tree_shapley(model, X, background)

    def theirs() -> Any:
        return explainer.shap_values(X, check_additivity=False)

    def ours_one_thread() -> Any:
        # shap's kernel is serial; this separates per-core speed from parallel speed-up.
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return ours()
        finally:
            numba.set_num_threads(threads)

    contenders = [ours, theirs] + ([ours_one_thread] if settings.single_thread else [])
    timings = time_interleaved(contenders, settings.repeats)
    ours_timing, shap_timing = timings[:2]
    one_thread = timings[2] if settings.single_thread else None

    # The parts of our end-to-end time that are not the TreeSHAP kernel.
    start = time.perf_counter()
    ensemble, _ = flatten_ensemble(model)
    flatten_seconds = time.perf_counter() - start
    start = time.perf_counter()
    output(X)
    output(background)
    predict_seconds = time.perf_counter() - start

    ours_values = ours_timing.result.values
    shap_values = shap_as_ours(shap_timing.result)
    if shap_values.shape != ours_values.shape:
        raise RuntimeError(f"{name}: shap gave {shap_values.shape}, ours {ours_values.shape}")
    predictions = np.asarray(output(X), dtype=np.float64)
    shap_gap = shap_values.sum(axis=1) - (predictions - np.asarray(explainer.expected_value))
    foreign = [share for timing in timings for share in timing.foreign_shares]
    return {
        "case": name,
        "model": type(model).__name__,
        "n_trees": len(model.estimators_),
        "max_depth_requested": model.max_depth,
        "max_depth_actual": ensemble.max_depth,
        "mean_leaves_per_tree": int((ensemble.left < 0).sum()) / len(model.estimators_),
        "n_explained": X.shape[0],
        "n_background": background.shape[0],
        "values_shape": list(ours_values.shape),
        "ours_seconds": ours_timing.walls,
        "ours_seconds_best": ours_timing.best,
        "ours_seconds_median": ours_timing.median,
        "ours_cpu_per_wall": ours_timing.cpu_per_wall,
        "ours_flatten_seconds": flatten_seconds,
        "ours_model_predict_seconds": predict_seconds,
        "ours_1thread_seconds": one_thread.walls if one_thread else None,
        "ours_1thread_seconds_best": one_thread.best if one_thread else None,
        "shap_setup_seconds": shap_setup_seconds,
        "shap_seconds": shap_timing.walls,
        "shap_seconds_best": shap_timing.best,
        "shap_seconds_median": shap_timing.median,
        "shap_cpu_per_wall": shap_timing.cpu_per_wall,
        "speedup_best": shap_timing.best / ours_timing.best,
        "speedup_median": shap_timing.median / ours_timing.median,
        "speedup_1thread_best": shap_timing.best / one_thread.best if one_thread else None,
        "max_foreign_cpu_share": max(foreign) if foreign else None,
        "max_abs_diff": float(np.max(np.abs(ours_values - shap_values))),
        "max_abs_value": float(np.max(np.abs(ours_values))),
        "ours_efficiency_gap": ours_timing.result.efficiency_gap,
        "shap_efficiency_gap": float(np.max(np.abs(shap_gap))),
        "base_value_diff": float(
            np.max(np.abs(ours_timing.result.base_values[0] - np.asarray(explainer.expected_value)))
        ),
    }


def _optional(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(cases: list[dict]) -> str:
    header = (
        "| case | ours s (best / median) | shap s (best / median) | speedup best / median "
        "| ours 1-thread s (speedup) | ours CPU/wall | others' CPU | max abs diff "
        "| ours eff. gap | shap eff. gap |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for c in cases:
        one_thread = (
            f"{c['ours_1thread_seconds_best']:.3f} ({c['speedup_1thread_best']:.2f}x)"
            if c["ours_1thread_seconds_best"] is not None
            else "-"
        )
        lines.append(
            f"| {c['case']} | {c['ours_seconds_best']:.3f} / {c['ours_seconds_median']:.3f} "
            f"| {c['shap_seconds_best']:.3f} / {c['shap_seconds_median']:.3f} "
            f"| {c['speedup_best']:.2f}x / {c['speedup_median']:.2f}x | {one_thread} "
            f"| {c['ours_cpu_per_wall']:.2f} | {_optional(c['max_foreign_cpu_share'], '.0%')} "
            f"| {c['max_abs_diff']:.2e} | {c['ours_efficiency_gap']:.2e} "
            f"| {c['shap_efficiency_gap']:.2e} |"
        )
    return "\n".join(lines)


def format_details(cases: list[dict]) -> str:
    return "\n".join(
        f"- {c['case']}: {c['model']}, {c['n_trees']} trees, depth {c['max_depth_actual']}, "
        f"{c['mean_leaves_per_tree']:.0f} leaves/tree, values {tuple(c['values_shape'])}; "
        f"ours includes flattening {c['ours_flatten_seconds']:.3f} s and model predictions "
        f"{c['ours_model_predict_seconds']:.3f} s; shap CPU/wall {c['shap_cpu_per_wall']:.2f}, "
        f"TreeExplainer setup {c['shap_setup_seconds']:.3f} s (not in its time); "
        f"max |value| {c['max_abs_value']:.3g}, base value diff {c['base_value_diff']:.1e}"
        for c in cases
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 20 trees, 100 explained rows, one repeat"
    )
    parser.add_argument(
        "--no-classifier", action="store_true", help="skip the RandomForestClassifier case"
    )
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.repeats is not None:
        settings = replace(settings, repeats=args.repeats)

    # The cold-cache compile takes most of a quick run's time; a smoke run skips it.
    startup = measure_startup("shapley_svc.reference", cold_cache=not args.quick)
    from shapley_svc.reference import tree_shapley
    from shapley_svc.reference.trees import flatten_ensemble

    info = machine_info()
    # Only known once a parallel kernel has run (the warm-up call in measure_startup).
    info["numba_threading_layer"] = numba.threading_layer()

    rng = np.random.default_rng(args.seed)
    X_train, y_train = make_data(rng, N_TRAIN)
    X_explain, _ = make_data(rng, settings.n_explained)
    background = X_train[rng.choice(N_TRAIN, settings.n_background, replace=False)]

    models = [
        (
            f"RF regressor depth {depth}",
            fit_serial(
                RandomForestRegressor(settings.n_trees, max_depth=depth, random_state=args.seed),
                X_train,
                y_train,
            ),
        )
        for depth in settings.depths
    ]
    if settings.classifier_depth is not None and not args.no_classifier:
        # Three classes from the target's terciles: shap returns (m, d, 3) probabilities.
        labels = np.digitize(y_train, np.quantile(y_train, [1 / 3, 2 / 3]))
        models.append(
            (
                f"RF classifier depth {settings.classifier_depth} (3 classes, proba)",
                fit_serial(
                    RandomForestClassifier(
                        settings.n_trees,
                        max_depth=settings.classifier_depth,
                        random_state=args.seed,
                    ),
                    X_train,
                    labels,
                ),
            )
        )

    cases = []
    for name, model in models:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        cases.append(
            run_case(name, model, X_explain, background, settings, tree_shapley, flatten_ensemble)
        )

    table = format_table(cases)
    machine = ", ".join(f"{key} {value}" for key, value in info.items())
    cold = startup["cold_cache_import_seconds"]
    cold_text = "not measured in a quick run" if cold is None else f"{cold:.2f} s"
    startup_line = (
        f"startup: import shapley_svc.reference {startup['import_seconds']:.3f} s with the numba "
        f"cache, {cold_text} with an empty cache (compiles all kernels); first tree_shapley "
        f"call afterwards {startup['first_call_seconds']:.4f} s"
    )
    verdicts = [
        f"{c['case']}: speedup {c['speedup_best']:.2f}x (median {c['speedup_median']:.2f}x) "
        f"{'meets' if c['speedup_median'] >= SPEEDUP_TARGET else 'MISSES'} the "
        f"{SPEEDUP_TARGET}x target (judged on the median)"
        for c in cases
    ]
    if args.quick:
        verdicts = ["quick run: far too small to judge the speedup target"]
    contended = [c["case"] for c in cases if (c["max_foreign_cpu_share"] or 0.0) > 0.1]
    if contended:
        verdicts.append(
            "WARNING: other processes used over 10% of the machine's CPU during "
            f"{', '.join(contended)}; those timings understate a parallel kernel"
        )
    setup_line = (
        f"d = {N_FEATURES}, {N_TRAIN} training rows, {settings.n_background} background rows, "
        f"{settings.n_explained} explained rows, {settings.n_trees} trees, best and median of "
        f"{settings.repeats} interleaved repeat(s); speedup = shap seconds / ours; ours is end "
        "to end (flattening, kernel, predictions), shap is shap_values() after TreeExplainer "
        "setup; 1-thread speedup = shap / ours with numba.set_num_threads(1) (shap's kernel is "
        "serial); CPU/wall = busy threads; others' CPU = largest share of all cores that other "
        "processes used during any timed call"
    )
    report = (
        "\n\n".join(
            [
                "# tree_shapley vs shap TreeExplainer (interventional)"
                + (" - quick" if args.quick else ""),
                f"Machine: {machine}",
                setup_line,
                table,
                format_details(cases),
                startup_line,
                "\n".join(f"- {verdict}" for verdict in verdicts),
            ]
        )
        + "\n"
    )
    print(report)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = "tree_shapley_quick" if args.quick else "tree_shapley"
    payload = {
        "machine": info,
        "settings": asdict(settings),
        "seed": args.seed,
        "startup": startup,
        "cases": cases,
    }
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS_DIR / f"{stem}.md").write_text(report)
    print(f"wrote {RESULTS_DIR / stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
