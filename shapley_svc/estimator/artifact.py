"""The shipped meta-learned artifact: ``.npz`` weights and a JSON manifest with their checksum.

No pickle anywhere: the weights load with ``allow_pickle=False`` and the manifest names the
zoo members and features in the order the arrays use, so a mismatch between the artifact and
this code fails loudly instead of silently weighing the wrong surrogate.
"""

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from shapley_svc.errors import ArtifactError
from shapley_svc.estimator.combiner import CombinerParameters
from shapley_svc.estimator.context import GLOBAL_FEATURES, SURROGATE_FEATURES
from shapley_svc.estimator.surrogates import ZOO

# 2: depth-capped tree surrogates, rescaled logistic, log-unexplained feature.
# 3: multinomial logistic members for class probabilities, held-out fit quality from 900 rows.
# 4: boosted-tree surrogate sees half the features per split.
# 5: wide inputs (splines on 64 screened columns, narrower forest splits), embedding prior tasks,
#    the log10(d / 32) hinge among the global features.
FORMAT_VERSION = 5
DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "combiner.json"


def code_schema() -> dict:
    """The manifest fields that must match this code: the zoo members and the features, in the
    order the arrays use."""
    return {
        "zoo": [kind.name for kind in ZOO],
        "global_features": list(GLOBAL_FEATURES),
        "surrogate_features": list(SURROGATE_FEATURES),
    }


def write_artifact(
    manifest_path: str | Path, parameters: CombinerParameters, provenance: dict
) -> Path:
    """Write ``<name>.npz`` (one array per ``CombinerParameters`` field) and its manifest
    ``<name>.json`` (format version, weights file and checksum, ``code_schema()``, then
    ``provenance``: how the weights were made); return the manifest path.

    Both are written in full beside their places first, then renamed into them, weights before
    manifest: a write that fails (a full disk) leaves an artifact already there as it was. Written
    in place, a cut-off ``.npz`` beside the old manifest made that artifact fail its sha256 check.
    """
    manifest_path = Path(manifest_path)
    if manifest_path.suffix != ".json":
        # Its weights are <name>.npz: named X.npz, the manifest overwrote its own weights.
        raise ValueError(f"an artifact's manifest is a .json file; got {manifest_path}")
    # A manifest path that is a symlink (current.json -> releases/v3.json) is written through:
    # the artifact goes where the link points, its weights beside the target under the target's
    # name, and the link is kept. Renamed onto the link, the link was lost; each path resolved
    # on its own, the target named the link's weights and did not load by its own path.
    place = manifest_path.resolve() if manifest_path.is_symlink() else manifest_path
    if place.suffix != ".json":
        raise ValueError(f"{manifest_path} links to {place}, which is not a .json file")
    place.parent.mkdir(parents=True, exist_ok=True)
    weights_path = place.with_suffix(".npz")
    partial = {
        path: path.with_name(f".{path.name}.{os.getpid()}.partial")
        for path in (weights_path, place)
    }
    try:
        with open(partial[weights_path], "wb") as stream:
            np.savez(
                stream,
                **{
                    f.name: np.asarray(getattr(parameters, f.name))
                    for f in fields(CombinerParameters)
                },
            )
        manifest = {
            "format_version": FORMAT_VERSION,
            "weights": weights_path.name,
            "sha256": sha256_of(partial[weights_path]),
            **code_schema(),
            **provenance,
        }
        partial[place].write_text(json.dumps(manifest, indent=2) + "\n")
        for path, written in partial.items():
            os.replace(written, path)
    finally:
        for written in partial.values():
            written.unlink(missing_ok=True)
    return manifest_path


@dataclass(frozen=True)
class Artifact:
    parameters: CombinerParameters
    manifest: dict

    @property
    def version(self) -> str:
        return f"{self.manifest['format_version']}:{self.manifest['sha256'][:12]}"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_artifact(manifest_path: str | Path = DEFAULT_ARTIFACT) -> Artifact:
    """Read and verify the artifact; raise :class:`ArtifactError` with the reason otherwise."""
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"artifact manifest not found: {manifest_path}") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"artifact manifest {manifest_path} is unreadable: {error}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact format {manifest.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; retrain with `shapley-svc train`"
        )
    for key, value in code_schema().items():
        if manifest.get(key) != value:
            raise ArtifactError(
                f"artifact {key} {manifest.get(key)} does not match this code's "
                f"{value}; retrain with `shapley-svc train`"
            )
    # Beside the file the manifest is, which a link to it is not.
    weights_path = manifest_path.resolve().parent / manifest["weights"]
    if not weights_path.exists():
        raise ArtifactError(f"artifact weights not found: {weights_path}")
    if sha256_of(weights_path) != manifest.get("sha256"):
        raise ArtifactError(
            f"artifact weights {weights_path} fail their sha256 check (corrupted or replaced)"
        )
    with np.load(weights_path, allow_pickle=False) as arrays:
        values = {}
        for field in fields(CombinerParameters):
            if field.name not in arrays:
                raise ArtifactError(f"artifact weights lack {field.name!r}")
            array = arrays[field.name]
            values[field.name] = float(array) if array.ndim == 0 else np.array(array)
    return Artifact(CombinerParameters(**values), manifest)
