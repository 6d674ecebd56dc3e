"""A fitted explainer on disk: arrays in ``.npz``, everything else in a JSON manifest. No pickle.

The saved state is what ``explain`` reads: the encoder, the standardiser, each output's prepared
surrogates (coefficients, spline bases, per-leaf TreeSHAP tables, background terms), the gate's
weights and uncertainty terms, and the diagnostics. The surrogates' scikit-learn models are not
saved: only their coefficients, or their trees already folded into tables. A loaded explainer
therefore explains bit for bit like the one saved, but cannot refit or predict with its members.

Objects are written as ``{"class": name, "fields": {...}}`` for the classes listed in
``_CLASSES`` alone, and read back only for those: a manifest cannot make ``load`` build anything
else. Arrays go by name into the ``.npz`` (read with ``allow_pickle=False``); the manifest holds
their sha256, each one's dtype and shape (``array_layout``), the format, the artifact's version
and checksum, and a sha256 of its own content (``manifest_sha256``, see ``manifest_sha256``).
``load`` refuses a directory that fails any of them, and any other damage it finds, with an
``InvalidArgumentError`` naming ``path``. Saves from before the manifest's checksum and layout
(no such fields) load as they did: their manifest is not checked against a checksum, and their
arrays only for the dtypes the readers take (and each TreeSHAP table for its length).

These checks catch damage (a flipped bit, a bad copy, a file rewritten by hand), not an
adversary, who can recompute the checksums: what keeps a manifest from running code is that it
can only name the classes below and arrays are never unpickled.

``save_explainer`` writes both files into a hidden directory beside ``path`` and renames it into
place, moving aside (then removing) a saved explainer's directory found there: a save that fails
part way, or saves into one path at once, leave the earlier save or one whole new one, never a
mix. ``load`` opens both files through one handle on the directory, so that it reads one save
whole while another is renamed into its place. A directory that also holds other files is written
into file by file with a rollback instead (see ``_write_in_place``): not atomic against other
saves, nor against loads, at the same time.
"""

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import threading
import time
import zipfile
from pathlib import Path
from typing import NoReturn

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
# Top-level fields of the manifest since 2026-12: readers before them ignore both (they read
# the fields they know by name), so saves carrying them keep their format version and still load
# on older servers; and saves without them still load here (``load_state``).
MANIFEST_SHA256 = "manifest_sha256"
ARRAY_LAYOUT = "array_layout"
# The dtypes the readers take (the numba kernels compile for these alone: a float32 or int32
# table made them raise TypeError at explain), and the only ones ``save`` has written. Checked for
# every array the state reads, with or without a recorded layout; the byte order is made native.
_ARRAY_DTYPES = frozenset({np.dtype(np.bool_), np.dtype(np.int64), np.dtype(np.float64)})

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
OPTIONAL_STATE = ("context_sha256_", "fidelity_floor_", "output_total_", "alias_sets_")
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


class _Damage(Exception):
    """What makes a saved state unreadable, found while reading it (``load_state`` refuses it)."""


class _Reader:
    def __init__(self, arrays):
        self.arrays = arrays
        self._objects: dict[int, object] = {}

    def array(self, name) -> np.ndarray:
        array = self.arrays[name]
        native = array.dtype.newbyteorder("=")
        if native not in _ARRAY_DTYPES:
            raise _Damage(
                f"{ARRAYS} holds {name} as {array.dtype}; saved explainers hold "
                f"{', '.join(sorted(map(str, _ARRAY_DTYPES)))} arrays alone"
            )
        return np.array(array, dtype=native)

    def value(self, value):
        if not isinstance(value, dict):
            if isinstance(value, list):
                return [self.value(item) for item in value]
            return value
        if "array" in value:
            return self.array(value["array"])
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
        if isinstance(obj, TreeBackground):
            _check_tables(obj)
        return obj


def _check_tables(background: TreeBackground) -> None:
    """A TreeSHAP table holds exactly the entries its leaf paths index (``TreeBackground``
    makes it so): the kernel reads it unchecked, and read past its end it answered NaN (or
    other memory) with no error. A cheap check that saves without a recorded layout get too."""
    tables, paths = getattr(background, "tables", None), getattr(background, "paths", None)
    if tables is None or paths is None:
        return
    table_start = paths.table_start
    entries = None if table_start is None or table_start.size == 0 else int(table_start[-1])
    if tables.shape != (entries,):
        raise _Damage(
            f"a TreeSHAP table has shape {tables.shape} where its leaf paths index "
            f"{'no table' if entries is None else f'{entries} entries'}"
        )


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_sha256(manifest: dict) -> str:
    """The sha256 stored in a manifest's ``manifest_sha256``: of its canonical JSON (keys
    sorted, no spaces, ASCII) without that field. Any change a JSON reader sees changes it (a
    digit, an array's name, a field added or removed); re-indenting the file does not."""
    content = {key: value for key, value in manifest.items() if key != MANIFEST_SHA256}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _sha256(canonical.encode())


def _array_layout(arrays: dict[str, np.ndarray]) -> dict:
    """Each array's dtype and shape, as ``array_layout`` records them."""
    return {
        name: {"dtype": array.dtype.str, "shape": list(array.shape)}
        for name, array in arrays.items()
    }


def _layout_problem(held: dict[str, np.ndarray], layout) -> str | None:
    """How the arrays read from the ``.npz`` differ from the manifest's ``layout``; None when
    they do not."""
    actual = _array_layout(held)
    if actual == layout:
        return None
    if not isinstance(layout, dict) or sorted(actual) != sorted(layout):
        return f"{ARRAYS} does not hold the arrays its manifest lists"
    name = next(name for name in sorted(actual) if actual[name] != layout[name])
    return (
        f"{ARRAYS} holds {name} as {_described(actual[name])}; its manifest records "
        f"{_described(layout[name])}"
    )


def _described(entry) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("shape"), list):
        return f"{entry.get('dtype')} of shape {tuple(entry['shape'])}"
    return repr(entry)


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


def save_explainer(explainer, path: str | Path, *, keep_existing: bool = False) -> Path:
    """Write ``explainer``'s fitted state into the directory ``path`` (created if needed):
    ``manifest.json`` and ``arrays.npz``. Returns the directory. With ``keep_existing`` a saved
    explainer found at ``path`` is kept, not replaced (the context store's saves are content
    addressed: one there holds the same context, and replacing it leaves ``path`` missing for a
    moment to the replicas loading it)."""
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
        ARRAY_LAYOUT: _array_layout(writer.arrays),
        "state": state,
    }
    # Summed over the manifest as ``load`` will parse it, whatever types the state held.
    manifest[MANIFEST_SHA256] = manifest_sha256(json.loads(json.dumps(manifest)))
    directory = Path(path)
    try:
        _write_directory(directory, arrays, json.dumps(manifest).encode(), keep_existing)
    except OSError as error:
        # As ``load`` refuses a path it cannot read: a bare OSError is no ShapleyError, and the
        # server answered INTERNAL for it.
        _refuse(directory, f"cannot hold a saved explainer: {_os_problem(directory, error)}")
    return directory


def _os_problem(directory: Path, error: OSError) -> str:
    if isinstance(error, FileExistsError) and not directory.is_dir():
        return "it exists and is not a directory"
    return str(error)


# Saving (see the module's docstring). Besides its two files, a saved explainer's directory may
# hold ``<file>.<pid>.<thread>.partial``, left by a save from before 2026-12 that was killed: such a
# directory (or an empty one) is the save's own, and the next save replaces it whole.
_OWN_LEFTOVER = re.compile(rf"(?:{re.escape(ARRAYS)}|{re.escape(MANIFEST)})\.\d+\.\d+\.partial")
# Attempts at putting a save in place when another save's directory takes it each time between
# this one moving the previous copy aside and renaming its own in. Each failed attempt means
# another save was put in place during this one: after the last, that whole save stands (this one
# counts as made just before it).
_PUBLISH_ATTEMPTS = 10
# What the OS answers when an existing directory cannot be moved aside, or no directory made
# beside it (a mount point, a parent this process cannot write, another filesystem): its files are
# written in place instead.
_IN_PLACE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.EBUSY, errno.EXDEV})
_TAKEN_ERRNOS = frozenset({errno.EEXIST, errno.ENOTEMPTY})


class _NotReplaceable(Exception):
    """The directory at ``path`` cannot be replaced whole: its files are written in place."""


def _write_directory(
    directory: Path, arrays: bytes, manifest: bytes, keep_existing: bool = False
) -> None:
    """``arrays`` and ``manifest`` into ``directory`` (made if needed, as are its parents): the
    directory holds the explainer saved there before or the new one, whole, whatever fails or
    whoever saves there at the same time (see above). On failure no hidden file or directory of
    this save is left, nor any parent it made."""
    files = {ARRAYS: arrays, MANIFEST: manifest}  # the arrays first, as ``_write_in_place`` writes
    target = _save_target(directory)
    made = [
        candidate
        for candidate in target.parents
        if not candidate.exists() and not candidate.is_symlink()
    ]
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_whole(target, files, _replaced_mode(target, directory), keep_existing)
        except _NotReplaceable:
            _write_in_place(target, files)
    except OSError:
        for made_directory in made:  # deepest first; only while empty (another save may use it)
            with contextlib.suppress(OSError):
                made_directory.rmdir()
        raise


def _save_target(directory: Path) -> Path:
    """The directory a save at ``directory`` writes: an existing one as the OS resolves it (a
    symlink to a directory stays a link, and the directory it names is saved into), a new one as
    given. OSError for a path that cannot be a directory: an existing file or dangling symlink
    (``FileExistsError``), a path under a file (``NotADirectoryError``)."""
    try:
        info = directory.stat()
    except FileNotFoundError:
        if not directory.is_symlink():
            return directory.absolute()
        info = None  # a link to nothing: refused, as ``mkdir`` refuses it
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(directory))
    return Path(os.path.realpath(directory))


def _replaced_mode(target: Path, directory: Path) -> int | None:
    """The mode of the saved explainer's directory (or empty one) that a save at ``target``
    replaces; None when there is none, or it went meanwhile (another save moved it aside).
    ``_NotReplaceable`` when it holds other files, is a mount point (which cannot be renamed) or
    this process's working directory (which a rename would leave removed); ``PermissionError``
    when this process cannot write it (a directory made read-only to keep its save stays so)."""
    try:
        info = target.stat()
        if not stat.S_ISDIR(info.st_mode):
            return None  # a file put there meanwhile: renaming onto it is refused
        if os.path.ismount(target) or _is_working_directory(info):
            raise _NotReplaceable
        if not _holds_a_save_alone(target):
            raise _NotReplaceable
    except FileNotFoundError:
        return None
    if not os.access(target, os.W_OK | os.X_OK) and _same_file(target, info):
        # (Not another save's directory in its place by now, which this process may write.)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(directory))
    return stat.S_IMODE(info.st_mode)


def _same_file(path: Path, info: os.stat_result) -> bool:
    try:
        now = path.stat()
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)


def _is_working_directory(info: os.stat_result) -> bool:
    return _same_file(Path(os.curdir), info)


def _holds_a_save_alone(directory: Path) -> bool:
    """Whether ``directory`` holds a saved explainer's files and nothing else (or nothing)."""
    with os.scandir(directory) as entries:
        return all(
            entry.is_file(follow_symlinks=False)
            and (entry.name in (ARRAYS, MANIFEST) or _OWN_LEFTOVER.fullmatch(entry.name))
            for entry in entries
        )


def _unique(name: str, purpose: str) -> str:
    """A hidden name for ``name``'s ``purpose`` that no other process or thread (nor another
    machine sharing the filesystem) takes."""
    token = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}"
    return f".{name[:100]}.{token}.{purpose}"


def _unique_names(name: str, purpose: str) -> re.Pattern:
    """What ``_unique(name, purpose)`` gives in any process or thread."""
    return re.compile(rf"\.{re.escape(name[:100])}\.\d+\.\d+\.[0-9a-f]+\.{purpose}")


def _write_whole(
    target: Path, files: dict[str, bytes], replaced_mode: int | None, keep_existing: bool = False
) -> None:
    """``files`` written into a hidden directory beside ``target`` (its mode set to
    ``replaced_mode``, the mode of the directory replaced, if any), renamed into its place;
    with ``keep_existing``, only if no save is there."""
    partial = target.with_name(_unique(target.name, "partial"))
    try:
        partial.mkdir()
    except OSError as error:
        if replaced_mode is not None and error.errno in _IN_PLACE_ERRNOS:
            raise _NotReplaceable from error
        raise
    try:
        for name, data in files.items():
            (partial / name).write_bytes(data)
        if replaced_mode is not None:
            os.chmod(partial, replaced_mode)
        _publish(partial, target, keep_existing)
    finally:
        if os.path.lexists(partial):
            shutil.rmtree(partial, ignore_errors=True)


def _publish(partial: Path, target: Path, keep_existing: bool = False) -> None:
    """Rename the directory ``partial`` to ``target`` (atomic). A saved explainer's directory
    found there is moved aside to a hidden name, ``partial`` renamed in, and the old one removed;
    if ``partial`` cannot go in, the old one is put back. Another save that takes the place in
    between is moved aside in turn (``_PUBLISH_ATTEMPTS``)."""
    for _ in range(_PUBLISH_ATTEMPTS):
        try:
            os.rename(partial, target)
            return
        except OSError as error:
            if error.errno in _IN_PLACE_ERRNOS and target.is_dir():
                raise _NotReplaceable from error
            if error.errno not in _TAKEN_ERRNOS:
                raise
        if keep_existing:
            return  # a save is there: kept (rename never replaces a directory with entries)
        try:
            if not _holds_a_save_alone(target):  # a user's files arrived meanwhile
                raise _NotReplaceable
        except FileNotFoundError:
            continue  # moved aside by another save meanwhile: try again
        aside = target.with_name(_unique(target.name, "replaced"))
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            continue
        except OSError as error:
            if error.errno in _IN_PLACE_ERRNOS:
                raise _NotReplaceable from error
            raise
        try:
            os.rename(partial, target)
        except OSError as error:
            if error.errno in _TAKEN_ERRNOS:
                # Another save went in meanwhile, whole: the one moved aside is older than it.
                _remove_save(aside)
                continue
            try:
                os.rename(aside, target)  # the previous save back in its place
            except OSError:
                if target.exists():  # another whole save is in its place: the old one goes
                    _remove_save(aside)
            raise
        _remove_save(aside)
        return


def _remove_save(directory: Path) -> None:
    """Remove a saved explainer's directory moved aside: its own files, then the directory if
    that leaves it empty (a file another program put there meanwhile is never removed)."""
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in list(entries):
            if entry.name in (ARRAYS, MANIFEST) or _OWN_LEFTOVER.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    with contextlib.suppress(OSError):
        directory.rmdir()


def _write_in_place(directory: Path, files: dict[str, bytes]) -> None:
    """``files`` into ``directory``, which holds other files too (or cannot be replaced whole):
    each written to a hidden file beside its name, then each old one renamed aside and the new one
    renamed in; any failure puts the old ones back. A reader (or another save) at the same time
    may see one file of each save."""
    staged = {name: directory / _unique(name, "partial") for name in files}
    aside = {name: directory / _unique(name, "replaced") for name in files}
    kept_aside: list[str] = []
    placed: list[str] = []
    try:
        for name, data in files.items():
            staged[name].write_bytes(data)
        for name in files:
            final = directory / name
            if final.is_dir() and not final.is_symlink():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(final))
            if os.path.lexists(final):
                os.replace(final, aside[name])
                kept_aside.append(name)
            os.replace(staged[name], final)
            placed.append(name)
    except BaseException:
        for name in reversed(files):
            with contextlib.suppress(OSError):
                if name in kept_aside:
                    os.replace(aside[name], directory / name)
                elif name in placed:
                    (directory / name).unlink()
        raise
    else:
        for name in kept_aside:
            with contextlib.suppress(OSError):
                aside[name].unlink()
    finally:
        for path in staged.values():
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _refuse(path: Path, problem: str) -> NoReturn:
    raise InvalidArgumentError("path", f"{path}: {problem}")


# What reading a damaged state raises on the way (a missing key, a field of the wrong type, an
# unknown class name, nesting past the recursion limit, an array numpy will not read back): each
# is refused as damage naming ``path``, never passed on bare.
_READ_ERRORS = (
    ArithmeticError,
    AttributeError,
    LookupError,
    TypeError,
    ValueError,
    RecursionError,
    EOFError,
    OSError,
    zipfile.BadZipFile,
)


def load_state(path: str | Path, artifact) -> dict:
    """The saved explainer state in directory ``path``, checked against ``artifact`` (the
    loaded ``Artifact`` the explainer will use); refused with the reason otherwise."""
    directory = Path(path)
    try:
        manifest_bytes, arrays = _read_files(directory)
    except FileNotFoundError as error:
        if error.filename is None or Path(error.filename) == directory:
            _refuse(directory, "does not exist")
        _refuse(directory, f"is not a saved explainer ({Path(error.filename).name} is missing)")
    except OSError as error:
        _refuse(directory, f"cannot be read ({error})")
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting too deep to parse
        _refuse(directory, f"is damaged: its manifest does not parse ({error})")
    if not isinstance(manifest, dict):
        kinds = {list: "an array", str: "a string", type(None): "null"}
        kind = kinds.get(type(manifest), "a number")
        _refuse(directory, f"is damaged: its manifest is {kind}, not a JSON object")
    # Format and artifact before the checksum: a later format (which may sum its manifest
    # otherwise) or another artifact is refused as such, and fitted again.
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
    # Saves from before the checksum have none and are read as before.
    if MANIFEST_SHA256 in manifest:
        try:
            intact = manifest[MANIFEST_SHA256] == manifest_sha256(manifest)
        except RecursionError:  # parsed, but nested too deep to write again
            _refuse(directory, "is damaged: its manifest is nested too deeply to read")
        if not intact:
            _refuse(directory, f"is damaged: {MANIFEST} fails its sha256 check")
    if _sha256(arrays) != manifest.get("arrays_sha256"):
        _refuse(directory, f"is damaged: {ARRAYS} fails its sha256 check")
    try:
        return _read_state(manifest, arrays)
    except _Damage as damage:
        _refuse(directory, f"is damaged: {damage}")
    except _READ_ERRORS as error:
        _refuse(directory, f"is damaged: its state does not read back ({error!r})")


# A save renamed into place while a load reads the one before: read again (each attempt sees
# one whole save, so two suffice unless saves keep replacing each other).
_READ_ATTEMPTS = 3
_REREAD_SECONDS = 0.01
# While a save's previous copy is moved aside (``_publish``'s first rename done, its second not
# yet) the directory is missing: a load waits for the new one this long. The window is
# microseconds, but a loaded machine can hold the saving thread off the CPU for longer than the
# three quick attempts (20 ms): a load then said "does not exist" (one fresh-clone CI run of
# 1,213 tests). Only a save that died between its renames leaves a load waiting it out.
_REPLACING_WAIT_SECONDS = 2.0
_DIRECTORY_HANDLES = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")


def _read_files(directory: Path) -> tuple[bytes, bytes]:
    """The manifest and arrays of one save in ``directory``. Both are opened through one handle
    on the directory, so that a save renamed into its place meanwhile (``_publish``) is never
    read half from the old and half from the new one. When the old one's files were removed
    before they were opened, or the directory is missing while a save replaces it, the directory
    at ``directory`` is read again."""
    if not _DIRECTORY_HANDLES:  # no dir_fd (Windows): by path, as a best effort
        return (directory / MANIFEST).read_bytes(), (directory / ARRAYS).read_bytes()
    attempts_left = _READ_ATTEMPTS
    replacing_deadline = time.monotonic() + _REPLACING_WAIT_SECONDS

    def may_read_again() -> bool:
        return attempts_left > 0 or (
            time.monotonic() < replacing_deadline and _being_replaced(directory)
        )

    while True:
        attempts_left -= 1
        try:
            handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if not may_read_again():
                raise
            time.sleep(_REREAD_SECONDS)
            continue
        try:
            return _read_at(handle, directory, MANIFEST), _read_at(handle, directory, ARRAYS)
        except FileNotFoundError:
            if not (_moved(directory, handle) and may_read_again()):
                raise
        finally:
            os.close(handle)


def wait_while_replaced(path: str | Path) -> bool:
    """Whether a saved explainer's directory is at ``path``, once any save replacing it has put
    its own in place: while ``path`` is missing and the previous copy stands moved aside, wait
    (at most ``_REPLACING_WAIT_SECONDS``, as a load does). A caller that finds ``path`` missing
    asks this before it takes the save for deleted."""
    path = Path(path)
    deadline = time.monotonic() + _REPLACING_WAIT_SECONDS
    while not path.is_dir() and _being_replaced(path) and time.monotonic() < deadline:
        time.sleep(_REREAD_SECONDS)
    return path.is_dir()


def _being_replaced(directory: Path) -> bool:
    """Whether a save's previous copy of ``directory`` stands moved aside beside it (the hidden
    name ``_publish`` gives it), i.e. a save is putting its own in place."""
    aside = _unique_names(directory.name, "replaced")
    try:
        with os.scandir(directory.parent) as entries:
            return any(aside.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


def _read_at(handle: int, directory: Path, name: str) -> bytes:
    try:
        file = os.open(name, os.O_RDONLY, dir_fd=handle)
    except FileNotFoundError as error:
        # The error names the file as a path-based read would (its message says which is missing).
        raise FileNotFoundError(error.errno, error.strerror, str(directory / name)) from None
    with os.fdopen(file, "rb") as stream:
        return stream.read()


def _moved(directory: Path, handle: int) -> bool:
    """Whether ``directory`` is no longer the directory ``handle`` was opened on."""
    try:
        now = os.stat(directory)
    except FileNotFoundError:
        return True
    opened = os.fstat(handle)
    return (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino)


def _read_state(manifest: dict, arrays: bytes) -> dict:
    """The state a checked manifest and its arrays hold; ``_Damage`` (or any of
    ``_READ_ERRORS``) when they cannot be an explainer's."""
    with np.load(io.BytesIO(arrays), allow_pickle=False) as stored:
        held = {name: stored[name] for name in stored.files}
    # Saves from before the layout have none: their arrays are checked for dtype alone (by
    # ``_Reader.array``), and tree tables for their length (``_check_tables``).
    if ARRAY_LAYOUT in manifest:
        problem = _layout_problem(held, manifest[ARRAY_LAYOUT])
        if problem is not None:
            raise _Damage(problem)
    reader = _Reader(held)
    state = {
        name: reader.value(value)
        for name, value in manifest["state"].items()
        if name in _KNOWN_STATE
    }
    version = manifest["format_version"]
    expected = EXPLAINER_STATE + (
        CALIBRATION_STATE if version != UNCALIBRATED_FORMAT_VERSION else ()
    )
    if sorted(name for name in state if name not in OPTIONAL_STATE) != sorted(expected):
        raise _Damage("its state does not hold the fields of its format")
    if version == CALIBRATED_FORMAT_VERSION and not _holds_shares(state):
        raise _Damage("its calibration does not hold a share in [0, 1] per output")
    if version == UNCALIBRATED_FORMAT_VERSION:
        state["scales_"] = [1.0] * len(state["weights_"])
        state["calibration_"] = None
    return state
