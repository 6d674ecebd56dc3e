"""``shapley-svc train``: draw prior tasks, build examples, meta-train, write the artifact."""

import sys
import time
from pathlib import Path

import numpy as np

from shapley_svc.training.artifact import save_artifact
from shapley_svc.training.examples import build_examples
from shapley_svc.training.meta import evaluate, meta_train
from shapley_svc.training.prior import PriorConfig

# The smoke size: small tasks so that CI rebuilds an artifact in well under two minutes.
SMOKE_CONFIG = PriorConfig(
    max_features=8,
    max_rows=300,
    n_background=50,
    n_explained=12,
    embedding_share=0.25,
    embedding_min_features=16,
    embedding_max_features=24,
    embedding_max_rows=300,
)
VALIDATION_SHARE = 0.2
DEFAULT_OUT = Path("combiner.json")


def default_out(cwd: Path | None = None) -> Path:
    """Where ``shapley-svc train`` writes when not told: ``combiner.json`` in ``cwd`` (default:
    the current directory), but never inside the installed package, whose shipped artifact a
    smoke run would otherwise overwrite (pass ``--out`` explicitly to do that on purpose)."""
    out = (cwd or Path.cwd()) / DEFAULT_OUT
    package = Path(__file__).resolve().parents[1]
    if out.resolve().is_relative_to(package):
        raise SystemExit(
            f"refusing to write {out} inside the installed package {package}: pass --out "
            "explicitly to replace the shipped artifact"
        )
    return out


def validation_metrics(examples, parameters) -> dict:
    results = [evaluate(example, parameters) for example in examples]
    pearson = np.array([r["pearson"] for r in results])
    return {
        "examples": len(results),
        "mean_pearson": float(pearson.mean()),
        "median_pearson": float(np.median(pearson)),
        "coverage_80": float(np.mean([r["covered"] for r in results])),
    }


def train(
    n_tasks: int, seed: int, out: Path, config: PriorConfig, workers: int | None = None
) -> dict:
    """Meta-train on ``n_tasks`` prior tasks drawn from ``seed``; return validation metrics."""
    start = time.perf_counter()
    seeds = [seed * 1_000_000 + i for i in range(n_tasks)]
    sys.stderr.write(f"drawing and labelling {n_tasks} prior tasks\n")
    examples = build_examples(seeds, config, workers)
    n_validation = max(1, int(VALIDATION_SHARE * n_tasks))
    validation_seeds = set(seeds[-n_validation:])
    train_examples = [e for e in examples if e.seed not in validation_seeds]
    validation_examples = [e for e in examples if e.seed in validation_seeds]
    sys.stderr.write(
        f"meta-training on {len(train_examples)} examples, validating on "
        f"{len(validation_examples)}\n"
    )
    parameters = meta_train(train_examples, validation_examples)
    metrics = validation_metrics(validation_examples, parameters)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    save_artifact(out, parameters, config, seed, n_tasks, metrics)
    return metrics
