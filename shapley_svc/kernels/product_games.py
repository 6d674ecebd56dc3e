"""Interventional Shapley values of a kernel machine whose kernel is a product over players.

``f(z) = sum_c alpha_c prod_p k_p(z_p, centre_cp)`` (an RBF kernel is such a product: exp(-gamma
|z - c|^2) = prod over columns). Against one background row b, one centre's term is a product
game: v(S) = prod_{p in S} u_p prod_{p not in S} w_p, u_p = k_p(x_p, c_p), w_p = k_p(b_p, c_p).
Its Shapley value is the integral over t in [0, 1] of its multilinear extension's slope in p,
phi_p = int_0^1 (u_p - w_p) prod_{q != p} ((1 - t) w_q + t u_q) dt, a polynomial of degree P - 1
in t: Gauss-Legendre quadrature with ceil(P / 2) nodes is exact. Each node costs one prefix and
one suffix product over the players, so a (row, centre, background row) costs O(P^2), against
O(2^P) for enumeration. Callers pass the per-player factors already evaluated.
"""

import numpy as np
from numba import njit, prange

_FLAGS = {"cache": True, "nogil": True}


def quadrature(n_players: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1] that integrate a polynomial of degree
    ``n_players`` - 1 exactly."""
    nodes, weights = np.polynomial.legendre.leggauss(max(1, (n_players + 1) // 2))
    return np.ascontiguousarray((nodes + 1) / 2), np.ascontiguousarray(weights / 2)


@njit(
    "void(float64[:, :, ::1], float64[:, :, ::1], float64[::1], float64[::1], float64[::1],"
    " float64[:, ::1])",
    parallel=True,
    **_FLAGS,
)
def product_kernel_values(row_factors, background_factors, coefficients, nodes, weights, out):
    """Shapley values of ``sum_c coefficients[c] prod_p factor_cp``, averaged over the background.

    Parameters
    ----------
    row_factors : (m, C, P) u: each centre's factor of each player at the explained rows.
    background_factors : (n_background, C, P) w: the same at the background rows.
    coefficients : (C,) each centre's coefficient.
    nodes, weights : ``quadrature(P)``.
    out : (m, P), overwritten with the values.
    """
    m, n_centres, n_players = row_factors.shape
    n_background = background_factors.shape[0]
    for i in prange(m):
        prefix = np.empty(n_players + 1)
        values = out[i]
        for p in range(n_players):
            values[p] = 0.0
        for c in range(n_centres):
            u = row_factors[i, c]
            scale = coefficients[c] / n_background
            for b in range(n_background):
                w = background_factors[b, c]
                for q in range(nodes.shape[0]):
                    t = nodes[q]
                    prefix[0] = 1.0
                    for p in range(n_players):
                        prefix[p + 1] = prefix[p] * ((1.0 - t) * w[p] + t * u[p])
                    suffix = scale * weights[q]
                    for p in range(n_players - 1, -1, -1):
                        values[p] += (u[p] - w[p]) * prefix[p] * suffix
                        suffix *= (1.0 - t) * w[p] + t * u[p]
