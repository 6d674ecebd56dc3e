"""Dense tensors as ``(dtype code, shape, raw little-endian bytes)``, decoded without copies.

The codes match ``shapley.v1.DType`` in ``protos/shapley/v1/shapley.proto``. Decoding checks
everything a hostile sender could get wrong before any allocation: the dtype, every axis length,
the element count against a limit, and the byte length against the shape.
"""

from collections.abc import Sequence

import numpy as np

from shapley_svc.errors import InvalidArgumentError, LimitExceededError

DTYPE_FLOAT32 = 1
DTYPE_FLOAT64 = 2
_NUMPY_DTYPES = {DTYPE_FLOAT32: np.dtype("<f4"), DTYPE_FLOAT64: np.dtype("<f8")}


def decode_tensor(
    field: str,
    dtype: int,
    shape: Sequence[int],
    data: bytes,
    *,
    ndims: tuple[int, ...],
    max_elements: int,
) -> np.ndarray:
    """A read-only float array viewing ``data``.

    Raises :class:`InvalidArgumentError` (or :class:`LimitExceededError` for ``max_elements``)
    whose ``argument`` is ``field``.

    Parameters
    ----------
    field : the request field, for messages ("rows", "context.predictions", ...).
    dtype : a ``DType`` code.
    shape : axis lengths, each >= 1.
    data : exactly ``prod(shape) * itemsize`` bytes.
    ndims : the numbers of axes accepted.
    max_elements : the largest element count accepted (checked before anything is allocated).
    """
    if dtype not in _NUMPY_DTYPES:
        raise InvalidArgumentError(
            field, f"dtype must be DTYPE_FLOAT32 or DTYPE_FLOAT64; got code {dtype}"
        )
    shape = tuple(int(n) for n in shape)
    if len(shape) not in ndims:
        expected = " or ".join(str(n) for n in ndims)
        raise InvalidArgumentError(field, f"expected {expected} axes; got shape {list(shape)}")
    if any(n < 1 for n in shape):
        raise InvalidArgumentError(
            field, f"every axis must have length >= 1; got shape {list(shape)}"
        )
    elements = 1
    for n in shape:
        elements *= n  # Python integers: a huge declared shape cannot overflow
    if elements > max_elements:
        raise LimitExceededError(
            field, f"shape {list(shape)} has {elements} elements; the limit is {max_elements}"
        )
    numpy_dtype = _NUMPY_DTYPES[dtype]
    expected_bytes = elements * numpy_dtype.itemsize
    if len(data) != expected_bytes:
        raise InvalidArgumentError(
            field,
            f"shape {list(shape)} of {numpy_dtype.name} needs {expected_bytes} bytes; "
            f"got {len(data)}",
        )
    array = np.frombuffer(data, dtype=numpy_dtype).reshape(shape)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise InvalidArgumentError(
            field, f"values must be finite; found {array[tuple(bad)]} at {bad.tolist()}"
        )
    return array


def encode_tensor(array: np.ndarray, dtype: int = DTYPE_FLOAT64) -> tuple[int, list[int], bytes]:
    """``(dtype code, shape, bytes)`` of a float array, little-endian, row-major."""
    if dtype not in _NUMPY_DTYPES:
        raise InvalidArgumentError(
            "output_dtype", f"must be DTYPE_FLOAT32 or DTYPE_FLOAT64; got {dtype}"
        )
    converted = np.ascontiguousarray(array, dtype=_NUMPY_DTYPES[dtype])
    return dtype, list(converted.shape), converted.tobytes()
