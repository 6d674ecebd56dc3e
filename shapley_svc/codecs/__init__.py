"""Wire formats, independent of gRPC and of the estimator: tensors as raw little-endian bytes."""

from shapley_svc.codecs.tensors import (
    DTYPE_FLOAT32,
    DTYPE_FLOAT64,
    decode_tensor,
    encode_tensor,
)

__all__ = [
    "DTYPE_FLOAT32",
    "DTYPE_FLOAT64",
    "decode_tensor",
    "encode_tensor",
]
