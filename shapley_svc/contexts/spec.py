"""What the context service takes and gives, as plain values: a context's spec, its content
address, the limits, and how long a caller waits. No estimator import, so that settings and the
servicer's message decoding load without the numba kernels."""

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shapley_svc.canonical import canonical_floats


@dataclass(frozen=True, eq=False)
class ContextSpec:
    """What a context is made of, as the estimator's ``fit`` takes it.

    rows : (n, d) float32 or float64.
    predictions : (n,) or (n, K) float32 or float64.
    background : int64 row indices into ``rows``; empty for the estimator's default sample.
    feature_names : d names, or empty for the estimator's defaults.
    random_state : the estimator's seed.
    groups : (name, int64 column indices) pairs, or empty for one attribution per feature.
    categorical_columns : int64 indices of the columns holding category codes; empty for none.
    """

    rows: np.ndarray
    predictions: np.ndarray
    background: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    feature_names: tuple[str, ...] = ()
    random_state: int = 0
    groups: tuple[tuple[str, np.ndarray], ...] = ()
    categorical_columns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


@dataclass(frozen=True)
class ContextLimits:
    """Sizes a context service refuses (LimitExceededError) before doing any work."""

    max_context_rows: int
    max_features: int
    max_outputs: int
    max_explain_rows: int
    max_answer_bytes: int
    max_contexts: int
    max_store_bytes: int
    # Most rows of the caller's model per explained row in a refinement's budget.
    max_budget: int = 65_536


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Caller:
    """How long the caller waits: ``deadline`` (a ``time.monotonic()`` value, None for no limit)
    and ``should_stop`` (True once the caller has gone away). Work on a compute thread polls
    both, so that it gives the thread back instead of finishing for nobody."""

    deadline: float | None = None
    should_stop: Callable[[], bool] = _never

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


PATIENT = Caller()  # waits as long as the work takes

# What work the server dropped as it stopped is told: a replica that is not stopping can do it
# (both clients retry UNAVAILABLE).
STOPPING = "the server is stopping: retry, another replica will answer"


def content_id(spec: ContextSpec, artifact_sha256: str) -> str:
    """The context's content address: the same data, settings and artifact give the same id,
    whatever float width the rows and predictions came in, with -0.0 as 0.0 and every NaN as
    one NaN (rows of int64 codes and the same codes rounded as floats got two ids and two fits,
    QA 2026-12-06: np.round(-0.4) is -0.0). Data without either hashes as it always did."""
    digest = hashlib.sha256(b"shapley.v1/context\0")
    digest.update(artifact_sha256.encode())
    for array in (spec.rows, spec.predictions):
        canonical = canonical_floats(array)
        digest.update(repr(canonical.shape).encode())
        digest.update(canonical.tobytes())
    digest.update(np.ascontiguousarray(spec.background, dtype="<i8").tobytes())
    names = spec.feature_names
    digest.update(b"\0".join(map(_name_bytes, names)) + b"\0" + repr(len(names)).encode())
    digest.update(spec.random_state.to_bytes(8, "little"))
    # Only contexts with groups hash them, so ids of contexts without groups are unchanged.
    for name, columns in spec.groups:
        digest.update(b"group\0" + _name_bytes(name) + b"\0")
        digest.update(repr(columns.size).encode() + np.ascontiguousarray(columns, "<i8").tobytes())
    # Likewise only contexts with categorical columns hash them.
    if spec.categorical_columns.size:
        digest.update(b"categorical\0")
        digest.update(np.ascontiguousarray(spec.categorical_columns, "<i8").tobytes())
    return "ctx-" + digest.hexdigest()[:40]


def _name_bytes(name: str) -> bytes:
    """A feature or group name as ``content_id`` hashes it: its UTF-8 bytes, each NUL written as
    NUL 0xFF. NUL separates the names, and UTF-8 never holds the byte 0xFF, so a NUL not followed
    by 0xFF is always a separator: ["a\\0", "b"] and ["a", "\\0b"] hash apart. Names without NUL
    hash as they always did, so their contexts keep their ids (and their saved copies)."""
    return name.encode().replace(b"\0", b"\0\xff")


def calibrated_id(
    context_id: str, budget: int, random_state: int, outputs_sha256: str, refitted: bool = False
) -> str:
    """The content address of ``context_id`` calibrated on the model's outputs (their sha256)
    on the proposal (``budget``, ``random_state``), its zoo ``refitted`` or its weights only:
    the same on any replica."""
    digest = hashlib.sha256(b"shapley.v1/calibrated\0")
    digest.update(context_id.encode() + b"\0")
    digest.update(int(budget).to_bytes(8, "little") + int(random_state).to_bytes(8, "little"))
    digest.update(outputs_sha256.encode())
    if refitted:  # only refitted calibrations hash it, so weight-only ids are unchanged
        digest.update(b"\0refitted")
    return "ctx-" + digest.hexdigest()[:40]
