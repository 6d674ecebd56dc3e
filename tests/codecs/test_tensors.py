"""Tensors on the wire: every accepted array round-trips exactly, every refusal names the field."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shapley_svc.codecs import (
    DTYPE_FLOAT32,
    DTYPE_FLOAT64,
    DTYPE_UNSPECIFIED,
    decode_tensor,
    encode_tensor,
    encode_tensor_values,
    itemsize,
)
from shapley_svc.errors import InvalidArgumentError, LimitExceededError

LIMIT = 10_000
finite_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    elements={"allow_nan": False, "allow_infinity": False},
)


@given(finite_arrays)
def test_raw_bytes_round_trip_exactly(array):
    code = DTYPE_FLOAT32 if array.dtype == np.float32 else DTYPE_FLOAT64
    dtype, shape, data = encode_tensor(array, code)
    assert len(data) == array.size * itemsize(dtype)
    decoded = decode_tensor("rows", dtype, shape, data, ndims=(array.ndim,), max_elements=LIMIT)
    assert decoded.dtype == array.dtype and not decoded.flags.writeable
    np.testing.assert_array_equal(decoded, array)


@given(finite_arrays)
def test_plain_values_round_trip_exactly(array):
    dtype, shape, values = encode_tensor_values(array)
    assert all(type(value) is float for value in values)
    assert dtype == DTYPE_FLOAT64
    for declared in (dtype, DTYPE_UNSPECIFIED):  # JSON callers may leave dtype out
        decoded = decode_tensor(
            "rows", declared, shape, b"", ndims=(array.ndim,), max_elements=LIMIT, values=values
        )
        np.testing.assert_array_equal(decoded, array.astype(np.float64))


def test_plain_values_are_rounded_to_the_asked_dtype():
    _, _, values = encode_tensor_values(np.array([0.1]), DTYPE_FLOAT32)
    assert values == [float(np.float32(0.1))] and values != [0.1]


ONE = np.ones(1, "<f8").tobytes()
# (dtype, shape, data, values, ndims, error class, words of the problem)
REFUSALS = [
    (DTYPE_UNSPECIFIED, [1], ONE, (), (1,), InvalidArgumentError, "got DTYPE_UNSPECIFIED"),
    (7, [1], ONE, (), (1,), InvalidArgumentError, "got code 7"),
    (DTYPE_FLOAT32, [1], b"", (1.0,), (1,), InvalidArgumentError, "with values"),
    (DTYPE_FLOAT64, [1], ONE, (1.0,), (1,), InvalidArgumentError, "set one"),
    (DTYPE_FLOAT64, [1, 1], ONE, (), (1,), InvalidArgumentError, "expected 1 axes"),
    (DTYPE_FLOAT64, [0], b"", (), (1,), InvalidArgumentError, "length >= 1"),
    (DTYPE_FLOAT64, [LIMIT + 1], b"", (), (1,), LimitExceededError, "the limit is 10000"),
    (DTYPE_FLOAT64, [2], ONE, (), (1,), InvalidArgumentError, "needs 16 bytes; got 8"),
    (DTYPE_FLOAT64, [2], b"", (1.0,), (1,), InvalidArgumentError, "needs 2 values; got 1"),
    (DTYPE_FLOAT64, [1], np.array([np.inf]).tobytes(), (), (1,), InvalidArgumentError, "finite"),
    (DTYPE_FLOAT64, [2], b"", (1.0, np.nan), (1,), InvalidArgumentError, "found nan at [1]"),
]


@pytest.mark.parametrize(("dtype", "shape", "data", "values", "ndims", "error", "words"), REFUSALS)
def test_refusals_name_the_field_and_the_problem(dtype, shape, data, values, ndims, error, words):
    with pytest.raises(error) as caught:
        decode_tensor(
            "context.rows", dtype, shape, data, ndims=ndims, max_elements=LIMIT, values=values
        )
    assert caught.value.argument == "context.rows"
    assert words in caught.value.problem, caught.value.problem


def test_a_huge_declared_shape_is_refused_before_any_allocation():
    with pytest.raises(LimitExceededError):
        decode_tensor("rows", DTYPE_FLOAT64, [2**40, 2**40], b"", ndims=(2,), max_elements=LIMIT)


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_rows_may_carry_nan_but_never_inf(dtype):
    array = np.array([[1.0, np.nan], [np.nan, 2.0]], dtype=dtype)
    code, shape, data = encode_tensor(array, DTYPE_FLOAT32 if dtype == "<f4" else DTYPE_FLOAT64)
    decoded = decode_tensor(
        "rows", code, shape, data, ndims=(2,), max_elements=LIMIT, allow_nan=True
    )
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(array))
    with pytest.raises(InvalidArgumentError, match="must be finite; found nan at") as caught:
        decode_tensor("predictions", code, shape, data, ndims=(2,), max_elements=LIMIT)
    assert caught.value.argument == "predictions"
    array[1, 1] = -np.inf
    code, shape, data = encode_tensor(array, code)
    with pytest.raises(
        InvalidArgumentError, match=r"finite or NaN \(missing\); found -inf at \[1, 1\]"
    ):
        decode_tensor("rows", code, shape, data, ndims=(2,), max_elements=LIMIT, allow_nan=True)
