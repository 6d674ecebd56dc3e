"""Wire formats, independent of gRPC and of the estimator: tensors as raw little-endian bytes
(or plain numbers, for JSON callers)."""

from shapley_svc.codecs.tensors import (
    DTYPE_FLOAT32,
    DTYPE_FLOAT64,
    DTYPE_UNSPECIFIED,
    decode_tensor,
    dtype_name,
    encode_tensor,
    encode_tensor_values,
    itemsize,
)

__all__ = [
    "DTYPE_FLOAT32",
    "DTYPE_FLOAT64",
    "DTYPE_UNSPECIFIED",
    "decode_tensor",
    "dtype_name",
    "encode_tensor",
    "encode_tensor_values",
    "itemsize",
]
