"""Numba kernels: pure functions over contiguous arrays, no validation, logging or I/O.

Callers (``shapley_svc.reference`` and the estimator) validate inputs and pass canonical arrays:
C-contiguous float64 values and int64 indices.
"""
