"""Write the meta-learned artifact the estimator loads, with how it was made."""

import datetime
from dataclasses import asdict
from pathlib import Path

from shapley_svc.estimator.artifact import write_artifact
from shapley_svc.estimator.combiner import CombinerParameters
from shapley_svc.training.prior import PriorConfig


def save_artifact(
    manifest_path: Path,
    parameters: CombinerParameters,
    config: PriorConfig,
    seed: int,
    n_tasks: int,
    metrics: dict,
) -> Path:
    """Write ``<name>.npz`` and its manifest ``<name>.json``; return the manifest path."""
    provenance = {
        "prior_config": asdict(config),
        "seed": seed,
        "n_tasks": n_tasks,
        "training_metrics": metrics,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return write_artifact(manifest_path, parameters, provenance)
