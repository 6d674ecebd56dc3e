"""Write the meta-learned artifact the estimator loads."""

import datetime
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from shapley_svc.estimator.artifact import FORMAT_VERSION, sha256_of
from shapley_svc.estimator.combiner import CombinerParameters
from shapley_svc.estimator.context import GLOBAL_FEATURES, SURROGATE_FEATURES
from shapley_svc.estimator.surrogates import ZOO
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
    manifest_path = Path(manifest_path)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    weights_path = manifest_path.with_suffix(".npz")
    np.savez(
        weights_path,
        **{f.name: np.asarray(getattr(parameters, f.name)) for f in fields(CombinerParameters)},
    )
    manifest = {
        "format_version": FORMAT_VERSION,
        "weights": weights_path.name,
        "sha256": sha256_of(weights_path),
        "zoo": [kind.name for kind in ZOO],
        "global_features": list(GLOBAL_FEATURES),
        "surrogate_features": list(SURROGATE_FEATURES),
        "prior_config": asdict(config),
        "seed": seed,
        "n_tasks": n_tasks,
        "training_metrics": metrics,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest_path
