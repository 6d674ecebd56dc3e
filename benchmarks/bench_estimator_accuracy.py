"""Accuracy of ``ZeroShotExplainer`` against reference SHAP values, with the baseline it must beat.

Public cases: scikit-learn's bundled data sets x model families (``benchmarks/accuracy_cases.py``:
context = every row with the model's outputs, 100 background rows, 40 explained rows). Held-out
prior: tasks drawn from the synthetic prior with seeds the artifact never trained on. Metrics:
Pearson r over all cells, top-floor(d/3) Jaccard on |phi|, R^2, coverage of the 80 % intervals
from ``uncertainty`` (label error included), and predicted fidelity against measured r. The
baseline is the best single surrogate: boosted trees (scikit-learn's HistGradientBoosting with
default settings) fitted on (rows, outputs), explained by TreeSHAP, residual split equally.

    python -m benchmarks.bench_estimator_accuracy                  # public cases + 200 prior tasks
    python -m benchmarks.bench_estimator_accuracy --prior-tasks 0  # public cases only
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from benchmarks._machine import machine_info
from benchmarks.accuracy_cases import all_cases, pearson, r_squared, top_k_jaccard
from shapley_svc import ZeroShotExplainer
from shapley_svc.reference import tree_shapley

RESULTS_DIR = Path(__file__).resolve().parent / "results"
Z_80 = 1.2815515655446004
PRIOR_SEED_BASE = 987_000_000  # far from training seeds (seed * 1_000_000 + i, seed small)


def _as_3d(values: np.ndarray) -> np.ndarray:
    return values if values.ndim == 3 else values[:, :, None]


def boosted_tree_baseline(X, predictions, background, explained) -> np.ndarray:
    outputs = predictions if predictions.ndim == 2 else predictions[:, None]
    values = np.empty((explained.size, X.shape[1], outputs.shape[1]))
    for k in range(outputs.shape[1]):
        surrogate = HistGradientBoostingRegressor(random_state=0).fit(X, outputs[:, k])
        phi = tree_shapley(surrogate, X[explained], X[background]).values
        residual = outputs[explained, k] - outputs[background, k].mean() - phi.sum(axis=1)
        values[:, :, k] = phi + residual[:, None] / X.shape[1]
    return values if predictions.ndim == 2 else values[:, :, 0]


def score(name, family, d, explanation, truth, truth_error, baseline, seconds) -> dict:
    values, uncertainty = _as_3d(explanation.values), _as_3d(explanation.uncertainty)
    truth, truth_error = _as_3d(truth), _as_3d(truth_error)
    covered = np.abs(values - truth) <= Z_80 * np.sqrt(uncertainty**2 + truth_error**2)
    fidelity = np.mean([o.predicted_fidelity for o in explanation.diagnostics.outputs])
    r = pearson(values, truth)
    return {
        "case": name,
        "family": family,
        "d": d,
        "pearson": r,
        "jaccard": top_k_jaccard(values, truth),
        "r2": r_squared(values, truth),
        "coverage_80": float(covered.mean()),
        "predicted_fidelity": float(fidelity),
        "fidelity_error": float(abs(fidelity - r)),
        "baseline_pearson": pearson(_as_3d(baseline), truth) if baseline is not None else None,
        "seconds": seconds,
    }


def run_public(artifact: str | None) -> list[dict]:
    rows = []
    for case in all_cases():
        start = time.perf_counter()
        explainer = ZeroShotExplainer(random_state=0, artifact=artifact).fit(
            case.X, case.predictions, background=case.background, feature_names=case.feature_names
        )
        explanation = explainer.explain(case.X[case.explained], case.predictions[case.explained])
        seconds = time.perf_counter() - start
        baseline = boosted_tree_baseline(case.X, case.predictions, case.background, case.explained)
        rows.append(
            score(
                case.name,
                case.family,
                case.X.shape[1],
                explanation,
                case.truth,
                case.truth_error,
                baseline,
                seconds,
            )
        )
        row = rows[-1]
        print(
            f"{case.name:34s} r={row['pearson']:.3f} baseline={row['baseline_pearson']:.3f}"
            f" jaccard={row['jaccard']:.2f} coverage={row['coverage_80']:.2f}"
            f" fidelity={row['predicted_fidelity']:.2f}",
            flush=True,
        )
    return rows


def run_prior(artifact: str | None, n_tasks: int) -> list[dict]:
    from shapley_svc.training.prior import sample_task

    rows = []
    for i in range(n_tasks):
        task = sample_task(PRIOR_SEED_BASE + i)
        outputs = task.predictions if task.predictions.ndim == 2 else task.predictions[:, None]
        if np.any(outputs.std(axis=0) < 1e-9):
            continue  # a constant output: nothing to attribute, the explainer refuses it
        start = time.perf_counter()
        explainer = ZeroShotExplainer(random_state=0, artifact=artifact).fit(
            task.X, task.predictions, background=task.background
        )
        explanation = explainer.explain(task.X[task.explained], task.predictions[task.explained])
        rows.append(
            score(
                f"prior/{PRIOR_SEED_BASE + i}",
                task.family,
                task.X.shape[1],
                explanation,
                task.truth,
                task.truth_error,
                None,
                time.perf_counter() - start,
            )
        )
        if (i + 1) % 20 == 0:
            print(f"  prior tasks {i + 1}/{n_tasks}", flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    families = sorted({row["family"] for row in rows})
    baseline = [row["baseline_pearson"] for row in rows if row["baseline_pearson"] is not None]
    return {
        "cases": len(rows),
        "mean_pearson": float(np.mean([row["pearson"] for row in rows])),
        "mean_jaccard": float(np.mean([row["jaccard"] for row in rows])),
        "mean_r2": float(np.mean([row["r2"] for row in rows])),
        "mean_coverage_80": float(np.mean([row["coverage_80"] for row in rows])),
        "median_fidelity_error": float(np.median([row["fidelity_error"] for row in rows])),
        "baseline_mean_pearson": float(np.mean(baseline)) if baseline else None,
        "by_family": {
            family: float(np.mean([row["pearson"] for row in rows if row["family"] == family]))
            for family in families
        },
    }


def markdown(info: dict, public: dict, prior: dict | None, rows: list[dict]) -> str:
    lines = [
        "# ZeroShotExplainer accuracy",
        "",
        f"Machine: {', '.join(f'{k} {v}' for k, v in info.items())}",
        "",
        "| set | cases | mean r | mean Jaccard | mean R^2 | 80 % coverage | median fidelity error "
        "| boosted-tree baseline r |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, s in (("public", public), ("held-out prior", prior)):
        if s is None:
            continue
        base = "-" if s["baseline_mean_pearson"] is None else f"{s['baseline_mean_pearson']:.3f}"
        lines.append(
            f"| {label} | {s['cases']} | {s['mean_pearson']:.3f} | "
            f"{s['mean_jaccard']:.3f} | {s['mean_r2']:.3f} | {s['mean_coverage_80']:.3f}"
            f" | {s['median_fidelity_error']:.3f} | {base} |"
        )
    lines += [
        "",
        "Mean Pearson r by model family:",
        "",
        "| family | public | held-out prior |",
        "| --- | --- | --- |",
    ]
    families = sorted(set(public["by_family"]) | set((prior or {}).get("by_family", {})))
    for family in families:
        a = public["by_family"].get(family)
        b = (prior or {}).get("by_family", {}).get(family)
        lines.append(
            f"| {family} | {'-' if a is None else f'{a:.3f}'} | "
            f"{'-' if b is None else f'{b:.3f}'} |"
        )
    lines += [
        "",
        "Public cases:",
        "",
        "| case | r | baseline r | Jaccard | R^2 | coverage | predicted fidelity | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['pearson']:.3f} | {row['baseline_pearson']:.3f} | "
            f"{row['jaccard']:.2f} | {row['r2']:.3f} | {row['coverage_80']:.2f} | "
            f"{row['predicted_fidelity']:.2f} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", help="manifest of the artifact (default: the shipped one)")
    parser.add_argument("--prior-tasks", type=int, default=200)
    parser.add_argument("--name", default="estimator_accuracy", help="results file stem")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    info = machine_info()
    public_rows = run_public(args.artifact)
    prior_rows = run_prior(args.artifact, args.prior_tasks) if args.prior_tasks else []
    public, prior = summary(public_rows), (summary(prior_rows) if prior_rows else None)
    RESULTS_DIR.mkdir(exist_ok=True)
    payload = {
        "machine": info,
        "public": public,
        "prior": prior,
        "public_cases": public_rows,
        "prior_tasks": prior_rows,
    }
    (RESULTS_DIR / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    text = markdown(info, public, prior, public_rows)
    (RESULTS_DIR / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
