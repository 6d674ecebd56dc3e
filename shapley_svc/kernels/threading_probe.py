"""The smallest parallel kernel: launching it makes numba choose its threading layer (see
``shapley_svc.estimator.threading_layer``)."""

import numba
from numba import prange


@numba.njit("void(float64[::1])", parallel=True, cache=True, nogil=True)
def touch(out):
    for i in prange(out.size):
        out[i] = i
