"""A fitted explainer on disk: arrays in ``.npz``, everything else in a JSON manifest. No pickle.

The saved state is what ``explain`` reads: the encoder, the standardiser, each output's prepared
surrogates (coefficients, spline bases, per-leaf TreeSHAP tables, background terms), the gate's
weights and uncertainty terms, and the diagnostics. The surrogates' scikit-learn models are not
saved: only their coefficients, or their trees already folded into tables. A loaded explainer
therefore explains bit for bit like the one saved, but cannot refit or predict with its members.

Objects are written as ``{"class": name, "fields": {...}}`` for the classes listed in
``_CLASSES`` alone, and read back only for those: a manifest cannot make ``load`` build anything
else. Arrays go by name into the ``.npz`` (read with ``allow_pickle=False``); the manifest holds
their sha256, the format, and the artifact's version and checksum, and ``load`` refuses a file
that fails any of them.
"""

import dataclasses
import hashlib
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator.calibration import Calibration
from shapley_svc.estimator.context import (
    ContextFeatures,
    FittedContext,
    OutputContext,
    Standardiser,
)
from shapley_svc.estimator.encoding import ColumnCoding, TableEncoder
from shapley_svc.estimator.groups import Players
from shapley_svc.estimator.result import (
    CalibrationDiagnostics,
    Diagnostics,
    OutputDiagnostics,
    SurrogateDiagnostics,
)
from shapley_svc.estimator.surrogates import (
    ZOO,
    AdditiveBasis,
    BoostedTreesSurrogate,
    ClassView,
    FittedSurrogate,
    ForestSurrogate,
    RidgeSurrogate,
    SoftLogisticSurrogate,
    SoftMultinomialSurrogate,
    SplineSurrogate,
    UniformCubicSplines,
)
from shapley_svc.reference.trees import FlatEnsemble, LeafPaths, TreeBackground

FORMAT = "shapley-svc/fitted-explainer"
# Version 3 adds calibration (``scales_``, ``calibration_``) and is written for calibrated
# explainers alone: an uncalibrated one is still written as version 2, and an older server
# refuses a calibrated one instead of explaining it with its weights but without its scales.
# (Version 2 saves also carry the optional fields below, which servers older than them refuse.)
# Version 4 is written for explainers holding an in-class link member (``in_class``, with the
# calibration fields always present). Older servers would read it, but explain that member by
# the rescale rule instead of enumerating: on a logistic model at d = 9 their answers moved by
# up to 0.66 (r 0.962 against the newer ones), so they must refuse it instead.
# Version 5 is written for every calibrated explainer (in-class member or not): its
# ``Calibration`` holds ``lower_estimate_shares``, which refine's weights read. A server reading
# versions 2-4 alone would take that field for damage; it refuses the version instead. Calibrated
# saves of versions 3 and 4 are still read, and refine as they did when saved.
UNCALIBRATED_FORMAT_VERSION = 2
SHARELESS_CALIBRATED_FORMAT_VERSION = 3
IN_CLASS_FORMAT_VERSION = 4
CALIBRATED_FORMAT_VERSION = 5
READABLE_VERSIONS = (
    UNCALIBRATED_FORMAT_VERSION,
    SHARELESS_CALIBRATED_FORMAT_VERSION,
    IN_CLASS_FORMAT_VERSION,
    CALIBRATED_FORMAT_VERSION,
)
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"

# The explainer's state that ``explain`` and callers read, as set by ``fit``.
EXPLAINER_STATE = (
    "random_state",
    "artifact",
    "working_memory_bytes",
    "random_state_",
    "working_memory_bytes_",
    "background_",
    "background_rows_",
    "feature_names_",
    "categorical_",
    "categories_",
    "encoder_",
    "groups_",
    "attribution_names_",
    "single_output_",
    "n_rows_",
    "n_features_in_",
    "n_outputs_",
    "context_",
    "weights_",
    "uncertainty_terms_",
    "diagnostics_",
)
CALIBRATION_STATE = ("scales_", "calibration_")
# Read when present, in either format: explainers saved before they existed lack them (and
# then calibrate only by re-weighting, see ``ZeroShotExplainer.calibrate``; and state the
# combiner's uncertainty without the fidelity floor). Fields a later version adds are skipped
# (``load_state``), so such additions must be safe to ignore; state that changes the answers
# when absent comes with a new format version instead. Servers from before that rule refuse a
# save holding an optional field they do not know, and fit the context again.
OPTIONAL_STATE = ("context_sha256_", "fidelity_floor_")
_KNOWN_STATE = frozenset(EXPLAINER_STATE + CALIBRATION_STATE + OPTIONAL_STATE)


@dataclasses.dataclass(frozen=True)
class LinearCoefficients:
    """A fitted linear (or logistic) model's coefficients: what its surrogate's attributions
    read of it once the background is folded in."""

    coef_: np.ndarray
    intercept_: np.ndarray | float

    def predict(self, design: np.ndarray) -> np.ndarray:
        return design @ self.coef_ + self.intercept_


# What a prepared tree surrogate's ``TreeBackground`` needs to answer ``trusted_values`` (its
# model, output function and background rows stay behind).
_TREE_BACKGROUND_STATE = ("ensemble", "paths", "tables", "n_features", "n_outputs", "n_players")


_SURROGATES_WITH_COEFFICIENTS = (
    RidgeSurrogate,
    SplineSurrogate,
    SoftLogisticSurrogate,
    SoftMultinomialSurrogate,
)
_CLASSES = {
    cls.__name__: cls
    for cls in (
        FittedContext,
        Standardiser,
        OutputContext,
        ContextFeatures,
        Players,
        TableEncoder,
        ColumnCoding,
        Diagnostics,
        OutputDiagnostics,
        SurrogateDiagnostics,
        Calibration,
        CalibrationDiagnostics,
        LinearCoefficients,
        AdditiveBasis,
        UniformCubicSplines,
        ClassView,
        BoostedTreesSurrogate,
        ForestSurrogate,
        TreeBackground,
        FlatEnsemble,
        LeafPaths,
        *_SURROGATES_WITH_COEFFICIENTS,
    )
}
_KINDS = {kind.name: kind for kind in ZOO}


class _Writer:
    """Turns the state into JSON-able values, collecting arrays; shared objects stay shared."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self._seen: dict[int, int] = {}
        self._keep_alive: list = []

    def value(self, value):
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, np.ndarray):
            key = f"a{len(self.arrays)}"
            self.arrays[key] = value
            return {"array": key}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, tuple):
            return {"tuple": [self.value(item) for item in value]}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {"dict": [[self.value(k), self.value(v)] for k, v in value.items()]}
        if isinstance(value, FittedSurrogate):
            return {
                "surrogate": [value.kind.name, self.value(value.model), self.value(value.oof_r2)]
            }
        return self._object(value)

    def _object(self, obj):
        if id(obj) in self._seen:
            return {"ref": self._seen[id(obj)]}
        name = type(obj).__name__
        if _CLASSES.get(name) is not type(obj):
            raise TypeError(f"{type(obj).__qualname__} is not part of a saved explainer")
        self._seen[id(obj)] = len(self._seen)
        self._keep_alive.append(obj)  # ids stay unique while the writer lives
        return {"class": name, "id": self._seen[id(obj)], "fields": self._fields(obj)}

    def _fields(self, obj) -> dict:
        if isinstance(obj, TreeBackground):
            attributes = {name: getattr(obj, name) for name in _TREE_BACKGROUND_STATE}
        elif dataclasses.is_dataclass(obj):
            attributes = {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}
        else:
            attributes = dict(vars(obj))
        if isinstance(obj, _SURROGATES_WITH_COEFFICIENTS):
            model = attributes["model_"]
            attributes["model_"] = LinearCoefficients(
                np.asarray(model.coef_), np.asarray(model.intercept_)
            )
        if isinstance(obj, BoostedTreesSurrogate | ForestSurrogate):
            attributes.pop("model_", None)
        return {name: self.value(value) for name, value in attributes.items()}


class _Reader:
    def __init__(self, arrays):
        self.arrays = arrays
        self._objects: dict[int, object] = {}

    def value(self, value):
        if not isinstance(value, dict):
            if isinstance(value, list):
                return [self.value(item) for item in value]
            return value
        if "array" in value:
            return np.array(self.arrays[value["array"]])
        if "tuple" in value:
            return tuple(self.value(item) for item in value["tuple"])
        if "dict" in value:
            return {_hashable(self.value(k)): self.value(v) for k, v in value["dict"]}
        if "surrogate" in value:
            name, model, oof_r2 = value["surrogate"]
            return FittedSurrogate(_KINDS[name], self.value(model), self.value(oof_r2))
        if "ref" in value:
            return self._objects[value["ref"]]
        return self._object(value)

    def _object(self, value):
        cls = _CLASSES[value["class"]]
        if dataclasses.is_dataclass(cls):
            # Fields are read first: a shared object is always written before its references.
            obj = cls(**{name: self.value(v) for name, v in value["fields"].items()})
            self._objects[value["id"]] = obj
            return obj
        obj = cls.__new__(cls)
        self._objects[value["id"]] = obj
        for name, field_value in value["fields"].items():
            setattr(obj, name, self.value(field_value))
        return obj


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _holds_in_class_member(explainer) -> bool:
    """Whether any output's members include an in-class refit (see ``IN_CLASS_FORMAT_VERSION``)."""
    for output in explainer.context_.outputs:
        for fitted in output.surrogates if output is not None else ():
            # A class's view stands for its softmax parent.
            model = getattr(fitted.model, "parent", fitted.model) if fitted is not None else None
            if getattr(model, "in_class", False):
                return True
    return False


def _holds_shares(state: dict) -> bool:
    """Whether a version-5 state's calibration holds one ``lower_estimate_shares`` per output,
    each a number in [0, 1]."""
    calibration = state["calibration_"]
    shares = getattr(calibration, "lower_estimate_shares", None)
    return (
        isinstance(shares, tuple)
        and len(shares) == len(state["weights_"])
        and all(
            isinstance(share, int | float) and not isinstance(share, bool) and 0 <= share <= 1
            for share in shares
        )
    )


def save_explainer(explainer, path: str | Path) -> Path:
    """Write ``explainer``'s fitted state into the directory ``path`` (created if needed):
    ``manifest.json`` and ``arrays.npz``. Returns the directory."""
    writer = _Writer()
    calibrated = explainer.calibration_ is not None
    in_class = _holds_in_class_member(explainer)
    if calibrated:
        version = CALIBRATED_FORMAT_VERSION
    else:
        version = IN_CLASS_FORMAT_VERSION if in_class else UNCALIBRATED_FORMAT_VERSION
    names = EXPLAINER_STATE + (CALIBRATION_STATE if calibrated or in_class else ())
    names += tuple(name for name in OPTIONAL_STATE if hasattr(explainer, name))
    state = {name: writer.value(getattr(explainer, name)) for name in names}
    buffer = io.BytesIO()
    np.savez(buffer, **writer.arrays)
    arrays = buffer.getvalue()
    artifact = explainer.artifact_
    manifest = {
        "format": FORMAT,
        "format_version": version,
        "artifact_version": artifact.version,
        "artifact_sha256": artifact.manifest["sha256"],
        "arrays": ARRAYS,
        "arrays_sha256": _sha256(arrays),
        "state": state,
    }
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    # The arrays first, the manifest last: a reader never sees a manifest whose arrays are not
    # all written, and a crash leaves a directory that fails its checksum instead of a half one.
    _write_atomically(directory / ARRAYS, arrays)
    _write_atomically(directory / MANIFEST, json.dumps(manifest).encode())
    return directory


def _write_atomically(path: Path, data: bytes) -> None:
    # Replicas sharing a directory may save the same context at once: each writes its own file
    # and renames it into place (the same content either way).
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def _refuse(path: Path, problem: str):
    raise InvalidArgumentError("path", f"{path}: {problem}")


def load_state(path: str | Path, artifact) -> dict:
    """The saved explainer state in directory ``path``, checked against ``artifact`` (the
    loaded ``Artifact`` the explainer will use); refused with the reason otherwise."""
    directory = Path(path)
    try:
        manifest = json.loads((directory / MANIFEST).read_bytes())
        arrays = (directory / ARRAYS).read_bytes()
    except FileNotFoundError as error:
        _refuse(directory, f"is not a saved explainer ({Path(error.filename).name} is missing)")
    except (OSError, ValueError) as error:
        _refuse(directory, f"is damaged: its manifest does not parse ({error})")
    if not isinstance(manifest, dict):
        kinds = {list: "an array", str: "a string", type(None): "null"}
        kind = kinds.get(type(manifest), "a number")
        _refuse(directory, f"is damaged: its manifest is {kind}, not a JSON object")
    if manifest.get("format") != FORMAT:
        _refuse(directory, f"is not a saved explainer (format {manifest.get('format')!r})")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        _refuse(
            directory,
            f"was saved in format version {manifest.get('format_version')!r}; this code reads "
            f"{' and '.join(map(str, READABLE_VERSIONS))}: fit the context again",
        )
    if manifest.get("artifact_sha256") != artifact.manifest["sha256"]:
        _refuse(
            directory,
            f"was fitted with artifact {manifest.get('artifact_version')!r}; this explainer "
            f"uses {artifact.version!r}: fit the context again",
        )
    if _sha256(arrays) != manifest.get("arrays_sha256"):
        _refuse(directory, f"is damaged: {ARRAYS} fails its sha256 check")
    try:
        with np.load(io.BytesIO(arrays), allow_pickle=False) as stored:
            reader = _Reader({name: stored[name] for name in stored.files})
            state = {
                name: reader.value(value)
                for name, value in manifest["state"].items()
                if name in _KNOWN_STATE
            }
    except (AttributeError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as error:
        _refuse(directory, f"is damaged: its state does not read back ({error!r})")
    expected = EXPLAINER_STATE + (
        CALIBRATION_STATE if manifest["format_version"] != UNCALIBRATED_FORMAT_VERSION else ()
    )
    if sorted(name for name in state if name not in OPTIONAL_STATE) != sorted(expected):
        _refuse(directory, "is damaged: its state does not hold the fields of its format")
    if manifest["format_version"] == CALIBRATED_FORMAT_VERSION and not _holds_shares(state):
        _refuse(directory, "is damaged: its calibration does not hold a share in [0, 1] per output")
    if manifest["format_version"] == UNCALIBRATED_FORMAT_VERSION:
        state["scales_"] = [1.0] * len(state["weights_"])
        state["calibration_"] = None
    return state
