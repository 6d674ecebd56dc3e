"""Dense tensors as ``(dtype code, shape, raw little-endian bytes)``, decoded without copies, or
as plain numbers for callers that speak JSON.

The codes match ``shapley.v1.DType`` in ``protos/shapley/v1/shapley.proto``. Decoding checks
everything a hostile sender could get wrong before any allocation: the dtype, every axis length,
the element count against a limit, and the byte (or number) count against the shape.
"""

from collections.abc import Sequence

import numpy as np

from shapley_svc.errors import InvalidArgumentError, LimitExceededError

DTYPE_UNSPECIFIED = 0
DTYPE_FLOAT32 = 1
DTYPE_FLOAT64 = 2
_NUMPY_DTYPES = {DTYPE_FLOAT32: np.dtype("<f4"), DTYPE_FLOAT64: np.dtype("<f8")}
_DTYPE_NAMES = {
    DTYPE_UNSPECIFIED: "DTYPE_UNSPECIFIED",
    DTYPE_FLOAT32: "DTYPE_FLOAT32",
    DTYPE_FLOAT64: "DTYPE_FLOAT64",
}


def itemsize(code: int) -> int:
    """Bytes per element of a ``DType`` code with raw data (4 or 8); KeyError for others."""
    return _NUMPY_DTYPES[code].itemsize


def dtype_name(code: int) -> str:
    """``DTYPE_FLOAT32`` for 1, ..., ``code 7`` for a code the contract does not define."""
    return _DTYPE_NAMES.get(code, f"code {code}")


def decode_tensor(
    field: str,
    dtype: int,
    shape: Sequence[int],
    data: bytes,
    *,
    ndims: tuple[int, ...],
    max_elements: int,
    values: Sequence[float] = (),
    allow_nan: bool = False,
) -> np.ndarray:
    """A read-only float array viewing ``data``, or a float64 array of ``values``.

    Raises :class:`InvalidArgumentError` (or :class:`LimitExceededError` for ``max_elements``)
    whose ``argument`` is ``field``.

    Parameters
    ----------
    field : the request field, for messages ("rows", "context.predictions", ...).
    dtype : a ``DType`` code; with ``values``, ``DTYPE_FLOAT64`` or ``DTYPE_UNSPECIFIED``.
    shape : axis lengths, each >= 1.
    data : exactly ``prod(shape) * itemsize`` bytes, or empty when ``values`` carries the numbers.
    ndims : the numbers of axes accepted.
    max_elements : the largest element count accepted (checked before anything is allocated).
    values : exactly ``prod(shape)`` numbers in row-major order, or empty when ``data`` is used.
    allow_nan : NaN is a value (a missing cell of a row); +-inf is refused all the same.
    """
    plain = len(values) > 0
    if plain and len(data) > 0:
        raise InvalidArgumentError(
            field, f"sets both data ({len(data)} bytes) and values ({len(values)}); set one"
        )
    accepted = (DTYPE_UNSPECIFIED, DTYPE_FLOAT64) if plain else (DTYPE_FLOAT32, DTYPE_FLOAT64)
    if dtype not in accepted:
        expected = " or ".join(dtype_name(code) for code in accepted)
        carrier = "with values" if plain else "with data"
        raise InvalidArgumentError(
            field, f"dtype must be {expected} {carrier}; got {dtype_name(dtype)}"
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
    if plain:
        if len(values) != elements:
            raise InvalidArgumentError(
                field, f"shape {list(shape)} needs {elements} values; got {len(values)}"
            )
        array = np.asarray(values, dtype=np.float64).reshape(shape)
    else:
        numpy_dtype = _NUMPY_DTYPES[dtype]
        expected_bytes = elements * numpy_dtype.itemsize
        if len(data) != expected_bytes:
            raise InvalidArgumentError(
                field,
                f"shape {list(shape)} of {numpy_dtype.name} needs {expected_bytes} bytes; "
                f"got {len(data)}",
            )
        array = np.frombuffer(data, dtype=numpy_dtype).reshape(shape)
    refused = np.isinf(array) if allow_nan else ~np.isfinite(array)
    if refused.any():
        bad = np.argwhere(refused)[0]
        expected = "finite or NaN (missing)" if allow_nan else "finite"
        raise InvalidArgumentError(
            field, f"values must be {expected}; found {array[tuple(bad)]} at {bad.tolist()}"
        )
    return array


def encode_tensor(array: np.ndarray, dtype: int = DTYPE_FLOAT64) -> tuple[int, list[int], bytes]:
    """``(dtype code, shape, bytes)`` of a float array, little-endian, row-major."""
    if dtype not in _NUMPY_DTYPES:
        raise InvalidArgumentError(
            "output_dtype", f"must be DTYPE_FLOAT32 or DTYPE_FLOAT64; got {dtype_name(dtype)}"
        )
    converted = np.ascontiguousarray(array, dtype=_NUMPY_DTYPES[dtype])
    return dtype, list(converted.shape), converted.tobytes()


def encode_tensor_values(
    array: np.ndarray, dtype: int = DTYPE_FLOAT64
) -> tuple[int, list[int], list[float]]:
    """``(dtype code, shape, numbers)``: the numbers rounded to ``dtype``, as Python floats in
    row-major order (the ``values`` form of a tensor, for JSON callers)."""
    code, shape, raw = encode_tensor(array, dtype)
    return code, shape, np.frombuffer(raw, dtype=_NUMPY_DTYPES[code]).astype(float).tolist()
