"""Input checks for the reference engine: one place, clear messages naming the argument."""

from collections.abc import Callable

import numpy as np

from shapley_svc.errors import InvalidArgumentError

DEFAULT_MAX_MEMORY_BYTES = 2 * 1024**3
# The model's own working memory grows with the rows per call (an MLP's hidden layers, a forest's
# per-tree outputs); past a few ten thousand rows a call is no faster, so calls are capped here.
MAX_ROWS_PER_CALL = 1 << 16


def as_float_matrix(
    name: str, value: object, n_features: int | None = None, *, allow_nan: bool = False
) -> np.ndarray:
    """Return ``value`` as a C-contiguous, writeable float64 (n, d) array, or raise
    :class:`InvalidArgumentError` naming it.

    With ``allow_nan``, NaN passes as a missing value (for models that route it themselves);
    +-inf is refused either way.
    """
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(
            name, f"must be a numeric 2-D array; could not convert: {error}"
        ) from None
    if array.ndim != 2:
        raise InvalidArgumentError(name, f"must be 2-D (rows, features); got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidArgumentError(
            name, f"must have at least one row and one feature; got {array.shape}"
        )
    if n_features is not None and array.shape[1] != n_features:
        raise InvalidArgumentError(
            name, f"has {array.shape[1]} features; expected {n_features} like X"
        )
    bad_values = np.isinf(array) if allow_nan else ~np.isfinite(array)
    if bad_values.any():
        bad = np.argwhere(bad_values)[0]
        expected = "must be finite or NaN (missing)" if allow_nan else "must be finite"
        raise InvalidArgumentError(
            name, f"{expected}; found {array[tuple(bad)]}", row=int(bad[0]), column=int(bad[1])
        )
    # Writeable too: the compiled kernels' signatures take writeable arrays only, and read-only
    # ones are common (pandas 3's ``to_numpy()``, ``np.load(..., mmap_mode="r")``, buffers
    # from a message). Copied only when it is not so already.
    return np.require(array, requirements=("C", "W", "A"))


def check_rows_and_background(
    X: object, background: object, *, allow_nan: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (m, d) explained rows and (n_background, d) background rows (NaN allowed in
    both with ``allow_nan``)."""
    rows = as_float_matrix("X", X, allow_nan=allow_nan)
    return rows, as_float_matrix(
        "background", background, n_features=rows.shape[1], allow_nan=allow_nan
    )


def check_max_memory(max_memory: int) -> int:
    if not isinstance(max_memory, int | np.integer) or max_memory < 1024**2:
        raise InvalidArgumentError(
            "max_memory", f"must be an integer number of bytes >= 1 MiB; got {max_memory!r}"
        )
    return int(max_memory)


def evaluate(predict: Callable, inputs: np.ndarray) -> tuple[np.ndarray, bool]:
    """Call ``predict`` on ``inputs``.

    Returns the outputs as a finite float64 (n, K) array and whether ``predict`` returned one
    output per row (a 1-D array, reported to the caller as K = 1 without the trailing axis).
    """
    # A view: some models' predict marks the array it is given read-only (a CatBoost
    # classifier behind `benchmarks.real_tables`' wrapper did), and the engines go on to hand
    # these arrays to compiled kernels that take writeable ones only.
    raw = predict(inputs.view())
    try:
        outputs = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(
            "predict", f"must return numbers; could not convert: {error}"
        ) from None
    if outputs.ndim not in (1, 2) or outputs.shape[0] != inputs.shape[0]:
        raise InvalidArgumentError(
            "predict",
            f"must return shape ({inputs.shape[0]},) or ({inputs.shape[0]}, K) for "
            f"{inputs.shape[0]} input rows; got {outputs.shape}",
        )
    if not np.isfinite(outputs).all():
        raise InvalidArgumentError("predict", "returned non-finite outputs")
    return np.ascontiguousarray(outputs.reshape(inputs.shape[0], -1)), outputs.ndim == 1
