"""Dense tensors as ``(dtype code, shape, raw little-endian bytes)``, decoded without copies.

The codes match ``shapley.v1.DType`` in ``protos/shapley/v1/shapley.proto``. Decoding checks
everything a hostile sender could get wrong before any allocation: the dtype, every axis length,
the element count against a limit, and the byte length against the shape.
"""

from collections.abc import Sequence

import numpy as np

DTYPE_FLOAT32 = 1
DTYPE_FLOAT64 = 2
_NUMPY_DTYPES = {DTYPE_FLOAT32: np.dtype("<f4"), DTYPE_FLOAT64: np.dtype("<f8")}


class TensorError(ValueError):
    """A tensor that cannot be decoded; ``field`` names it and ``limit`` marks a size limit."""

    def __init__(self, field: str, problem: str, *, limit: bool = False):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.limit = limit


def decode_tensor(
    field: str,
    dtype: int,
    shape: Sequence[int],
    data: bytes,
    *,
    ndims: tuple[int, ...],
    max_elements: int,
) -> np.ndarray:
    """A read-only float array viewing ``data``; raises :class:`TensorError` naming ``field``.

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
        raise TensorError(field, f"dtype must be DTYPE_FLOAT32 or DTYPE_FLOAT64; got code {dtype}")
    shape = tuple(int(n) for n in shape)
    if len(shape) not in ndims:
        expected = " or ".join(str(n) for n in ndims)
        raise TensorError(field, f"expected {expected} axes; got shape {list(shape)}")
    if any(n < 1 for n in shape):
        raise TensorError(field, f"every axis must have length >= 1; got shape {list(shape)}")
    elements = 1
    for n in shape:
        elements *= n  # Python integers: a huge declared shape cannot overflow
    if elements > max_elements:
        raise TensorError(
            field,
            f"shape {list(shape)} has {elements} elements; the limit is {max_elements}",
            limit=True,
        )
    numpy_dtype = _NUMPY_DTYPES[dtype]
    expected_bytes = elements * numpy_dtype.itemsize
    if len(data) != expected_bytes:
        raise TensorError(
            field,
            f"shape {list(shape)} of {numpy_dtype.name} needs {expected_bytes} bytes; "
            f"got {len(data)}",
        )
    array = np.frombuffer(data, dtype=numpy_dtype).reshape(shape)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise TensorError(
            field, f"values must be finite; found {array[tuple(bad)]} at {bad.tolist()}"
        )
    return array


def encode_tensor(array: np.ndarray, dtype: int = DTYPE_FLOAT64) -> tuple[int, list[int], bytes]:
    """``(dtype code, shape, bytes)`` of a float array, little-endian, row-major."""
    if dtype not in _NUMPY_DTYPES:
        raise TensorError("output_dtype", f"must be DTYPE_FLOAT32 or DTYPE_FLOAT64; got {dtype}")
    converted = np.ascontiguousarray(array, dtype=_NUMPY_DTYPES[dtype])
    return dtype, list(converted.shape), converted.tobytes()
