"""``shapley-svc train``: draw prior tasks, build examples, meta-train, write the artifact."""

import sys
import time
from collections import Counter
from dataclasses import replace
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
# Share of tasks drawn on the development tables in a full run (``--real-share``).
DEFAULT_REAL_SHARE = 0.4
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
    """Accuracy and coverage on held-out examples: all of them, and the real-table ones alone
    (their tables were held out of training as a whole)."""
    results = [evaluate(example, parameters) for example in examples]
    pearson = np.array([r["pearson"] for r in results])
    metrics = {
        "examples": len(results),
        "mean_pearson": float(pearson.mean()),
        "median_pearson": float(np.median(pearson)),
        "coverage_80": float(np.mean([r["covered"] for r in results])),
    }
    real = np.array([example.table is not None for example in examples])
    if real.any():
        metrics["real_table_examples"] = int(real.sum())
        metrics["real_table_mean_pearson"] = float(pearson[real].mean())
        metrics["real_table_coverage_80"] = float(
            np.mean([r["covered"] for r, is_real in zip(results, real, strict=True) if is_real])
        )
    return metrics


def tasks_drawn(examples: list) -> dict:
    """What ``examples`` came from: tasks by model family and by target (regression, binary,
    multiclass), and the development tables drawn, each with its count of tasks."""
    tasks = {example.seed: example for example in examples}.values()  # one per task
    return {
        "tasks": len(tasks),
        "by_family": dict(sorted(Counter(example.family for example in tasks).items())),
        "by_target": dict(sorted(Counter(example.task for example in tasks).items())),
        "tables": dict(
            sorted(Counter(example.table for example in tasks if example.table).items())
        ),
    }


def split_tables(config: PriorConfig, seed: int) -> tuple[PriorConfig, PriorConfig]:
    """(training, validation) configs: a seeded ``VALIDATION_SHARE`` of the real tables is held
    out whole, so validation measures the combiner on tables it never trained on."""
    if not config.real_tables:
        return config, config
    if len(config.real_tables) < 2:
        raise ValueError(
            f"real_tables: holding tables out whole for validation needs at least 2, got "
            f"{list(config.real_tables)}"
        )
    tables = np.array(sorted(config.real_tables))
    order = np.random.default_rng([seed, 4]).permutation(tables.size)
    n_validation = min(max(1, round(VALIDATION_SHARE * tables.size)), tables.size - 1)
    held_out = tuple(tables[order[:n_validation]].tolist())
    kept = tuple(tables[order[n_validation:]].tolist())
    return replace(config, real_tables=kept), replace(config, real_tables=held_out)


def train(
    n_tasks: int, seed: int, out: Path, config: PriorConfig, workers: int | None = None
) -> dict:
    """Meta-train on ``n_tasks`` prior tasks drawn from ``seed``; return validation metrics."""
    start = time.perf_counter()
    seeds = [seed * 1_000_000 + i for i in range(n_tasks)]
    n_validation = max(1, int(VALIDATION_SHARE * n_tasks))
    train_config, validation_config = split_tables(config, seed)
    sys.stderr.write(f"drawing and labelling {n_tasks} prior tasks\n")
    train_examples = build_examples(seeds[:-n_validation], train_config, workers)
    validation_examples = build_examples(seeds[-n_validation:], validation_config, workers)
    sys.stderr.write(
        f"meta-training on {len(train_examples)} examples, validating on "
        f"{len(validation_examples)}\n"
    )
    parameters = meta_train(train_examples, validation_examples)
    metrics = validation_metrics(validation_examples, parameters)
    metrics["validation_tables"] = list(validation_config.real_tables)
    # What the tasks drew, not only what they could draw from (the config lists every table).
    metrics["tasks_drawn"] = {
        "training": tasks_drawn(train_examples),
        "validation": tasks_drawn(validation_examples),
    }
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    save_artifact(out, parameters, train_config, seed, n_tasks, metrics)
    return metrics
