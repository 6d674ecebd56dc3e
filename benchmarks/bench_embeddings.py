"""Embedding inputs and feature groups: scale, memory and accuracy at d = 64 to 4,096.

Three parts, each on rows this script generates or that ship with scikit-learn:

1. Scale, in a child process so that its peak resident memory is its own: a d = 1,024,
   n = 10,000 context of embedding-like rows (a few latent factors through a random hidden layer
   and projection) and a random two-layer network's probabilities on them. ``fit`` time,
   ``explain`` rows/s on 2,000 rows, a single row's latency, the same with 16 groups, and the
   child's peak RSS. The full run also fits the largest context the server accepts
   (d = 4,096, n = 20,000).
2. Accuracy against truth, per dimension and with 16 groups, on scikit-learn's digits (d = 64;
   16 groups of 2 x 2 pixels) and synthetic embedding tasks at d = 384 and 1,024 (16 groups of
   contiguous dimensions). Models: a random forest (truth: interventional TreeSHAP, grouped with
   the group game's own leaf tables), a logistic regression explained on its logit (truth: the
   closed form; a group's value is the sum of its members') and an MLP's probability (truth:
   antithetic permutation sampling with its standard error recorded; for groups, the same sampler
   over the 16 groups). Pearson r over all values, top-k Jaccard per row (k = 10 dimensions,
   k = 4 groups).
3. KernelSHAP (shap's KernelExplainer, default budget 2d + 2048 coalitions, the same 100
   background rows) on a few of the MLP's rows at each d, for the time ratio. It is slow here, so
   only those rows are timed; its accuracy on them is reported too.

    python -m benchmarks.bench_embeddings            # full: about 15 minutes on 2 cores
    python -m benchmarks.bench_embeddings --quick    # smoke run: about a minute
    shapley-svc bench embeddings [--quick]           # the same, from a source checkout

Writes ``embeddings.{md,json}`` to ``benchmarks/results/`` (``*_quick.*`` in quick mode).
"""

import argparse
import itertools
import json
import multiprocessing
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from benchmarks._machine import machine_info
from benchmarks.accuracy_cases import pearson
from shapley_svc import ZeroShotExplainer
from shapley_svc.reference import TreeBackground, linear_shapley, sampled_shapley

RESULTS_DIR = Path(__file__).resolve().parent / "results"
README_START = "<!-- bench:embeddings:start -->"
README_END = "<!-- bench:embeddings:end -->"
SEED = 20_261_122
N_BACKGROUND = 100
N_GROUPS = 16
TOP_K_DIMENSIONS = 10
TOP_K_GROUPS = 4
FAMILIES = ("random_forest", "linear", "mlp")
# Forest depth keeps the grouped truth's leaf tables (2^k * k per leaf, k <= depth) in memory.
FOREST_DEPTH = 8
TRUTH_TABLE_ENTRIES = 60_000_000
# Sampled truth: pairs of antithetic permutations per row, per dimension and per group.
TRUTH_PAIRS = 16
GROUP_TRUTH_PAIRS = 64


@dataclass(frozen=True)
class Plan:
    mode: str
    scale: tuple[int, int]  # (n, d) of the scale context
    scale_explain_rows: int
    largest: tuple[int, int] | None  # (n, d) of the largest accepted context, or None
    synthetic_d: tuple[int, ...]
    synthetic_rows: int
    explained_rows: int
    kernel_rows: int
    digits_rows: int | None  # None: all 1,797


FULL = Plan("full", (10_000, 1024), 2000, (20_000, 4096), (384, 1024), 3000, 20, 2, None)
QUICK = Plan("quick", (1000, 96), 200, None, (96,), 600, 4, 1, 600)


def embedding_rows(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like rows (n, d) and the latent factors (n, 8) behind them."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 8))
    hidden = np.tanh(latent @ rng.normal(size=(8, 32)) / np.sqrt(8))
    rows = hidden @ rng.normal(size=(32, d)) / np.sqrt(32)
    rows = rows + 0.1 * rows.std() * rng.normal(size=(n, d))
    return rows, latent


def random_network(rows: np.ndarray, seed: int) -> np.ndarray:
    """A random two-layer tanh network's probabilities: the scale part's stand-in model."""
    rng = np.random.default_rng(seed)
    d = rows.shape[1]
    hidden = np.tanh(rows @ rng.normal(size=(d, 64)) / np.sqrt(d))
    return 1.0 / (1.0 + np.exp(-(hidden @ rng.normal(size=64) / 2)))


def contiguous_groups(d: int, n_groups: int = N_GROUPS) -> dict[str, list[int]]:
    edges = np.linspace(0, d, n_groups + 1).astype(int)
    return {f"dims {a}-{b - 1}": list(range(a, b)) for a, b in itertools.pairwise(edges)}


def pixel_block_groups() -> dict[str, list[int]]:
    """digits' 8 x 8 pixels as 16 blocks of 2 x 2."""
    groups = {}
    for block_row in range(4):
        for block_col in range(4):
            pixels = [
                (2 * block_row + r) * 8 + 2 * block_col + c for r in range(2) for c in range(2)
            ]
            groups[f"block {block_row},{block_col}"] = pixels
    return groups


# --- part 1: scale ----------------------------------------------------------------------------


def _scale_child(n: int, d: int, explain_rows: int, queue) -> None:
    rows, _ = embedding_rows(n, d, SEED)
    predictions = random_network(rows, SEED + 1)
    result: dict = {"n": n, "d": d}
    start = time.perf_counter()
    explainer = ZeroShotExplainer().fit(rows, predictions)
    result["fit_seconds"] = time.perf_counter() - start
    if explain_rows:
        query = rows[:explain_rows]
        explainer.explain(query[:1], predictions[:1])  # warm-up: the timings below are warm
        start = time.perf_counter()
        explanation = explainer.explain(query, predictions[:explain_rows])
        result["explain_rows_per_second"] = explain_rows / (time.perf_counter() - start)
        single = []
        for i in range(20):
            start = time.perf_counter()
            explainer.explain(query[i : i + 1], predictions[i : i + 1])
            single.append(time.perf_counter() - start)
        result["single_row_ms"] = 1000 * float(np.median(single))
        gap = explanation.values.sum(axis=1) - (
            predictions[:explain_rows] - explanation.base_values
        )
        result["efficiency_gap"] = float(np.abs(gap).max())
        start = time.perf_counter()
        grouped = ZeroShotExplainer().fit(rows, predictions, groups=contiguous_groups(d))
        result["grouped_fit_seconds"] = time.perf_counter() - start
        grouped.explain(query[:1], predictions[:1])
        start = time.perf_counter()
        grouped.explain(query, predictions[:explain_rows])
        result["grouped_explain_rows_per_second"] = explain_rows / (time.perf_counter() - start)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def measure_scale(n: int, d: int, explain_rows: int) -> dict:
    """Fit and explain in a fresh process; its peak RSS covers the data, the fit and the explain."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_scale_child, args=(n, d, explain_rows, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


# --- part 2: accuracy -------------------------------------------------------------------------


@dataclass
class Task:
    name: str
    rows: np.ndarray
    labels: np.ndarray
    groups: dict[str, list[int]]


def tasks(plan: Plan) -> list[Task]:
    digits = load_digits()
    rows, labels = digits.data.astype(float), (digits.target >= 5).astype(int)
    keep = slice(plan.digits_rows)
    found = [Task("digits", rows[keep], labels[keep], pixel_block_groups())]
    for d in plan.synthetic_d:
        rows, latent = embedding_rows(plan.synthetic_rows, d, SEED + d)
        signal = latent[:, 0] + np.sin(2 * latent[:, 1]) + latent[:, 2] * latent[:, 3]
        labels = (signal > np.median(signal)).astype(int)
        found.append(Task(f"synthetic d={d}", rows, labels, contiguous_groups(d)))
    return found


def fitted_model(family: str, rows: np.ndarray, labels: np.ndarray):
    """The model and the output explained: forest and MLP probabilities, the linear logit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if family == "random_forest":
            model = RandomForestClassifier(50, max_depth=FOREST_DEPTH, random_state=0)
            model.fit(rows, labels)
            return model, lambda x: model.predict_proba(x)[:, 1]
        if family == "linear":
            model = LogisticRegression(C=0.05, max_iter=3000).fit(rows, labels)
            return model, lambda x: model.decision_function(x)
        model = MLPClassifier((64,), alpha=1e-3, max_iter=300, random_state=0)
        model.fit(rows / rows.std(), labels)
        scale = rows.std()
        return model, lambda x: model.predict_proba(x / scale)[:, 1]


def group_index(groups: dict[str, list[int]], d: int) -> np.ndarray:
    of_feature = np.empty(d, dtype=np.int64)
    for g, columns in enumerate(groups.values()):
        of_feature[columns] = g
    return of_feature


def grouped_sampled_truth(output, query, background, groups, seed):
    """The sampler over the group game: each group's columns come from x or z together.

    A lifted row holds, per group, the index of the row its columns are taken from; the lifted
    model assembles the full row and calls the model, so the reference sampler (one player per
    column) samples the game whose players are the groups.
    """
    source = np.vstack([query, background])
    columns = list(groups.values())
    n_groups = len(columns)

    def lifted(pointers: np.ndarray) -> np.ndarray:
        full = np.empty((pointers.shape[0], source.shape[1]))
        for g, members in enumerate(columns):
            full[:, members] = source[pointers[:, g].astype(int)][:, members]
        return output(full)

    lifted_query = np.repeat(np.arange(len(query), dtype=float)[:, None], n_groups, axis=1)
    lifted_background = np.repeat(
        np.arange(len(query), len(source), dtype=float)[:, None], n_groups, axis=1
    )
    budget = 2 * GROUP_TRUTH_PAIRS * (n_groups - 1)
    return sampled_shapley(lifted, lifted_query, lifted_background, budget, seed)


def truth_of(family, model, output, query, background, groups):
    """(per-dimension values, their standard errors, grouped values, their errors, method)."""
    d = query.shape[1]
    of_feature = group_index(groups, d)
    if family == "random_forest":
        per_dimension = TreeBackground(model, background).values(query)[:, :, 1]
        grouped = TreeBackground(
            model, background, TRUTH_TABLE_ENTRIES, player_of_feature=of_feature
        ).values(query)[:, :, 1]
        zeros = np.zeros_like
        return per_dimension, zeros(per_dimension), grouped, zeros(grouped), "TreeSHAP"
    if family == "linear":
        values = linear_shapley(model.coef_[0], model.intercept_[0], query, background).values
        grouped = np.stack([values[:, g].sum(axis=1) for g in groups.values()], axis=1)
        zeros = np.zeros_like
        return values, zeros(values), grouped, zeros(grouped), "closed form"
    sampled = sampled_shapley(output, query, background, 2 * TRUTH_PAIRS * (d - 1), SEED)
    grouped = grouped_sampled_truth(output, query, background, groups, SEED)
    return (
        sampled.values,
        sampled.uncertainty,
        grouped.values,
        grouped.uncertainty,
        "permutation sampling",
    )


def top_k_jaccard(estimate: np.ndarray, truth: np.ndarray, k: int) -> float:
    scores = []
    for row_estimate, row_truth in zip(estimate, truth, strict=True):
        ours = set(np.argsort(-np.abs(row_estimate), kind="stable")[:k])
        true = set(np.argsort(-np.abs(row_truth), kind="stable")[:k])
        scores.append(len(ours & true) / len(ours | true))
    return float(np.mean(scores))


def noise_share(truth: np.ndarray, errors: np.ndarray) -> float:
    """The truth's mean standard error relative to the spread of its values."""
    spread = truth.std()
    return float(errors.mean() / spread) if spread > 0 else 0.0


def kernel_shap_row_seconds(output, query, background) -> tuple[float, np.ndarray]:
    """Seconds per row of KernelExplainer at its default budget, and its values."""
    import shap

    explainer = shap.KernelExplainer(output, background)
    np.random.seed(0)  # noqa: NPY002 - KernelExplainer draws from numpy's global generator
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = np.asarray(explainer.shap_values(query, silent=True, l1_reg=False))
    return (time.perf_counter() - start) / len(query), values.reshape(len(query), -1)


def evaluate_task(task: Task, family: str, plan: Plan, progress) -> dict:
    rng = np.random.default_rng(SEED)
    n, d = task.rows.shape
    order = rng.permutation(n)
    train = order[: n // 2]
    background = order[n // 2 : n // 2 + N_BACKGROUND]
    explained = order[n // 2 + N_BACKGROUND : n // 2 + N_BACKGROUND + plan.explained_rows]
    model, output = fitted_model(family, task.rows[train], task.labels[train])
    predictions = output(task.rows)
    query, background_rows = task.rows[explained], task.rows[background]
    start = time.perf_counter()
    truth, truth_errors, grouped_truth, grouped_errors, method = truth_of(
        family, model, output, query, background_rows, task.groups
    )
    truth_seconds = time.perf_counter() - start
    result = {
        "task": task.name,
        "family": family,
        "d": d,
        "n": n,
        "truth": method,
        "truth_seconds": truth_seconds,
        "truth_noise_share": noise_share(truth, truth_errors),
        "grouped_truth_noise_share": noise_share(grouped_truth, grouped_errors),
    }
    for label, groups, k, target in (
        ("dimensions", None, TOP_K_DIMENSIONS, truth),
        ("groups", task.groups, TOP_K_GROUPS, grouped_truth),
    ):
        start = time.perf_counter()
        explainer = ZeroShotExplainer().fit(
            task.rows, predictions, background=np.sort(background), groups=groups
        )
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        explanation = explainer.explain(query, predictions[explained])
        explain_seconds = time.perf_counter() - start
        result[label] = {
            "pearson": pearson(explanation.values, target),
            "jaccard": top_k_jaccard(explanation.values, target, k),
            "predicted_fidelity": explainer.diagnostics_.outputs[0].predicted_fidelity,
            "fit_seconds": fit_seconds,
            "explain_ms_per_row": 1000 * explain_seconds / len(query),
        }
    if family == "mlp" and plan.kernel_rows:
        rows = query[: plan.kernel_rows]
        seconds, values = kernel_shap_row_seconds(output, rows, background_rows)
        result["kernelshap"] = {
            "rows": len(rows),
            "seconds_per_row": seconds,
            "pearson": pearson(values, truth[: len(rows)]),
            "ours_fit_seconds": result["dimensions"]["fit_seconds"],
            "ours_explain_ms_per_row": result["dimensions"]["explain_ms_per_row"],
        }
    progress(
        f"{task.name:16s} {family:13s} r {result['dimensions']['pearson']:.3f} "
        f"(groups {result['groups']['pearson']:.3f})"
    )
    return result


def summarise(results: list[dict]) -> dict:
    summary: dict = {}
    for label in ("dimensions", "groups"):
        by_family = {
            family: {
                "pearson": float(
                    np.mean([r[label]["pearson"] for r in results if r["family"] == family])
                ),
                "jaccard": float(
                    np.mean([r[label]["jaccard"] for r in results if r["family"] == family])
                ),
            }
            for family in FAMILIES
        }
        summary[label] = {
            "pearson": float(np.mean([r[label]["pearson"] for r in results])),
            "jaccard": float(np.mean([r[label]["jaccard"] for r in results])),
            "by_family": by_family,
        }
    return summary


# --- report -----------------------------------------------------------------------------------


def _scale_lines(scale: dict, largest: dict | None) -> list[str]:
    lines = [
        "| context | fit | explain | single row | peak memory |",
        "| --- | --- | --- | --- | --- |",
        f"| n = {scale['n']:,}, d = {scale['d']:,} | {scale['fit_seconds']:.1f} s | "
        f"{scale['explain_rows_per_second']:,.0f} rows/s | {scale['single_row_ms']:.1f} ms | "
        f"{scale['peak_rss_mib']:,.0f} MiB |",
        f"| same, {N_GROUPS} groups | {scale['grouped_fit_seconds']:.1f} s | "
        f"{scale['grouped_explain_rows_per_second']:,.0f} rows/s | - | (same process) |",
    ]
    if largest:
        lines.append(
            f"| n = {largest['n']:,}, d = {largest['d']:,} (the largest accepted) | "
            f"{largest['fit_seconds']:.1f} s | - | - | {largest['peak_rss_mib']:,.0f} MiB |"
        )
    return lines


def _accuracy_lines(payload: dict) -> list[str]:
    lines = [
        "| task | family | truth | r | Jaccard | r, 16 groups | Jaccard, groups | fit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in payload["results"]:
        noise = f" (noise {r['truth_noise_share']:.2f})" if r["truth_noise_share"] else ""
        lines.append(
            f"| {r['task']} | {r['family']} | {r['truth']}{noise} | "
            f"{r['dimensions']['pearson']:.3f} | {r['dimensions']['jaccard']:.2f} | "
            f"{r['groups']['pearson']:.3f} | {r['groups']['jaccard']:.2f} | "
            f"{r['dimensions']['fit_seconds']:.1f} s |"
        )
    s = payload["summary"]
    lines.append(
        f"| **mean** | | | **{s['dimensions']['pearson']:.3f}** | "
        f"**{s['dimensions']['jaccard']:.2f}** | **{s['groups']['pearson']:.3f}** | "
        f"**{s['groups']['jaccard']:.2f}** | |"
    )
    return lines


def _kernel_lines(payload: dict) -> list[str]:
    lines = [
        "| task | KernelSHAP rows timed | KernelSHAP per row | its r | ours: fit | "
        "ours: explain per row | ratio (per row, explain) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in payload["results"]:
        k = r.get("kernelshap")
        if not k:
            continue
        ratio = 1000 * k["seconds_per_row"] / k["ours_explain_ms_per_row"]
        lines.append(
            f"| {r['task']} (MLP) | {k['rows']} | {k['seconds_per_row']:.1f} s | "
            f"{k['pearson']:.3f} | {k['ours_fit_seconds']:.1f} s | "
            f"{k['ours_explain_ms_per_row']:.2f} ms | {ratio:,.0f}x |"
        )
    return lines


def readme_block(payload: dict, json_path: str) -> str:
    """What goes between the README's markers: generated from the JSON, never typed."""
    info = payload["machine"]
    lines = [
        README_START,
        f"<!-- generated by scripts/update_readme_benchmarks.py from {json_path}; do not edit -->",
    ]
    if payload["mode"] != "full":
        lines += ["", "> **quick run**: not the benchmark's figures; regenerate from a full run."]
    lines += [
        "",
        f"`{payload['command']}` on {info['cpus_available']} CPUs, {info['date'][:10]} "
        f"({payload['seconds'] / 60:.1f} min).",
        "",
        *_scale_lines(payload["scale"], payload.get("largest")),
        "",
        *_accuracy_lines(payload),
        "",
        *_kernel_lines(payload),
        README_END,
    ]
    return "\n".join(lines)


def markdown(payload: dict) -> str:
    info = payload["machine"]
    return "\n".join(
        [
            "# Embedding inputs and feature groups",
            "",
            f"Command: `{payload['command']}`; {payload['mode']} run, {info['date']}, "
            f"{info['cpus_available']} CPUs, {info['platform']}; "
            f"{payload['seconds'] / 60:.1f} min.",
            "",
            "## Scale (child process, peak RSS of that process)",
            "",
            *_scale_lines(payload["scale"], payload.get("largest")),
            "",
            "## Accuracy against truth",
            "",
            f"{payload['explained_rows']} explained rows per task, {N_BACKGROUND} background "
            f"rows; top-{TOP_K_DIMENSIONS} Jaccard over dimensions, top-{TOP_K_GROUPS} over "
            f"{N_GROUPS} groups. Noise: the sampled truth's mean standard error over the spread "
            "of its values.",
            "",
            *_accuracy_lines(payload),
            "",
            "## KernelSHAP at its default budget (2d + 2048 coalitions), a few rows",
            "",
            *_kernel_lines(payload),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    parser.add_argument("--command", help=argparse.SUPPRESS)  # how the CLI names itself
    args = parser.parse_args(argv)
    from shapley_svc.cli import unwritable_dir

    if (problem := unwritable_dir(args.out_dir)) is not None:
        parser.error(f"argument --out-dir: {problem}")
    default_command = "python -m benchmarks.bench_embeddings" + (" --quick" if args.quick else "")
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    progress(f"scale: n = {plan.scale[0]:,}, d = {plan.scale[1]:,}")
    scale = measure_scale(*plan.scale, plan.scale_explain_rows)
    progress(f"  fit {scale['fit_seconds']:.1f} s, peak {scale['peak_rss_mib']:.0f} MiB")
    largest = None
    if plan.largest:
        progress(f"largest: n = {plan.largest[0]:,}, d = {plan.largest[1]:,}")
        largest = measure_scale(*plan.largest, 0)
        progress(f"  fit {largest['fit_seconds']:.1f} s, peak {largest['peak_rss_mib']:.0f} MiB")
    results = [
        evaluate_task(task, family, plan, progress) for task in tasks(plan) for family in FAMILIES
    ]
    payload = {
        "benchmark": "embeddings",
        "mode": plan.mode,
        "command": args.command or default_command,
        "machine": machine_info(),
        "seconds": time.perf_counter() - started,
        "explained_rows": plan.explained_rows,
        "scale": scale,
        "largest": largest,
        "results": results,
        "summary": summarise(results),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "embeddings" if plan.mode == "full" else "embeddings_quick"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(payload))
    progress(f"wrote {args.out_dir / stem}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
