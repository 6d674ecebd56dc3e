"""Numba kernels: pure functions over contiguous arrays, no validation, logging or I/O.

Callers (``shapley_svc.reference`` and the estimator) validate inputs and pass canonical arrays:
C-contiguous float64 values and int64 indices.

Compile time is part of every first start after an install (the server compiles each kernel
module once, then reads numba's cache), so the kernels are written for it as well as for speed:

- A parallel kernel is a thin ``prange`` loop over a serial kernel for one row, pair or leaf
  (``_row_tree_shap``, ``_masked_pair_gap``, ...). numba analyses and rewrites everything inside
  a ``prange`` body; a call to a serial kernel it compiles once, as an ordinary function.
- Arithmetic on whole arrays (``a += b``, ``a /= n``, ``a.copy()``, ``np.zeros`` inside a
  ``prange`` body) is written as loops: numba compiles each such expression as code of its own,
  and inside a parallel kernel as a parallel region of its own.

On 2 idle cores (2026-12-05) the kernel modules compiled in 87.9 s one after another against
114.0 s before this layout (the RBF kernel machines' module 9.3 -> 3.7 s, ``link_additive``
23.4 -> 14.9 s, ``coalitions`` 31.3 -> 24.7 s), with the same answers bit for bit and no loss of
speed; the server's first start went from 56.4-62.0 s to 47.0-49.4 s.
"""
