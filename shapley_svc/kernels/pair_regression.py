"""Refinement's regression of the residual game's values on paired coalitions, for consecutive
explained rows that share their coalitions at once (``shapley_svc.estimator.refinement.
refined_values`` states the method and holds the constants).

One compiled pass per call instead of about forty numpy operations on the whole batch: at the
benchmark's 10 rows, 9 players and 45 pairs a row, the numpy version took 0.72 ms a call, most
of it per-operation overhead, against an explain of 2.8 ms (k401k boosting, 2026-12-05); this
one, with the Python around it, 0.13 ms (100 rows: 2.16 -> 1.24 ms; P = 20 and 100 pairs: 1.17
-> 0.42 ms; the same values and standard deviations to 3e-15 relative).

The products that grow as P^2 (the pairs' Gram, their influences) and the inverse stay BLAS and
LAPACK calls, as in numpy, once per group of rows with the same coalitions (a proposal's rows are
one: ``refinement.draw_shared_coalitions``); the rows' own moments and moves are matrix products
over the group. At d = 1,024 and budget 10d, ten rows took 0.37 s a call, where each with
coalitions of its own took 0.30 s a row (2026-12-07). Groups run one after another: BLAS spreads
a large P over the cores itself, and rows run in parallel on top of it oversubscribed them (2
rows x 2 BLAS threads: 10 rows at P = 384 and 768 pairs took 354 ms, one row at a time 253 ms,
numpy 272 ms; each row its own coalitions then). In parallel the module's cold compile also
took 25 s, against 10 s.
"""

import numpy as np
from numba import njit

_FLAGS = {"cache": True, "nogil": True}


@njit(**_FLAGS)
def _centred(masks, sizes, first, last):
    """(last - first, P) the pairs' coalition indicators less their sizes over P."""
    n_players = masks.shape[1]
    chunk = np.empty((last - first, n_players))
    for p in range(first, last):
        centre = sizes[p] / n_players
        for j in range(n_players):
            chunk[p - first, j] = (1.0 if masks[p, j] else 0.0) - centre
    return chunk


@njit(**_FLAGS)
def _times(chunk, weights, offset):
    """(P,) chunk^T weights[offset : offset + len(chunk)]."""
    out = np.zeros(chunk.shape[1])
    for p in range(chunk.shape[0]):
        weight = weights[offset + p]
        for j in range(chunk.shape[1]):
            out[j] += chunk[p, j] * weight
    return out


@njit(**_FLAGS)
def _same_coalitions(masks, first, i):
    """Whether row ``i`` draws the coalitions of row ``first`` (read until the first
    difference: rows with coalitions of their own differ within a few cells)."""
    n_pairs, n_players = masks.shape[1], masks.shape[2]
    for p in range(n_pairs):
        for j in range(n_players):
            if masks[i, p, j] != masks[first, p, j]:
                return False
    return True


@njit("boolean(boolean[:, :, ::1])", **_FLAGS)
def rows_share_coalitions(masks):
    """Whether every row of (m, n_pairs, P) ``masks`` draws the first row's coalitions."""
    for i in range(1, masks.shape[0]):
        if not _same_coalitions(masks, 0, i):
            return False
    return True


@njit(
    "void(float64[:, ::1], float64[:, ::1], float64[:, ::1], boolean[:, :, ::1], float64[::1],"
    " float64, float64, float64, int64, float64, float64, float64, float64[:, ::1],"
    " float64[:, ::1])",
    **_FLAGS,
)
def regress_pairs(
    proxy_values,
    proxy_gaps,
    model_gaps,
    masks,
    total,
    share,
    a,
    slope_square,
    step,
    pooled_share,
    widening,
    bias_variance,
    values,
    std,
):
    """Per explained row, the residual game's values regressed on its pairs, added to the
    proxy's, and each value's standard deviation: the delta method's, corrected for the degrees
    of freedom the fit spent, pooled in part over the row, widened to Student's t, plus the
    bias.

    Consecutive rows that draw the same coalitions (a proposal's rows do) share what depends on
    the coalitions alone: the Gram, its inverse and each pair's influence, computed once for
    them; each row then costs O(n_pairs x P) instead of O(n_pairs x P^2).

    Parameters
    ----------
    proxy_values : (m, P) the proxy's exact values.
    proxy_gaps, model_gaps : (m, n_pairs) the proxy's and the model's pair gaps, n_pairs >= 2.
    masks : (m, n_pairs, P) the pairs' first coalitions.
    total : (m,) what each row's values sum to.
    share : the pairs' own Gram's share of the regression's; ``a`` its expectation's constant;
        ``slope_square`` a quarter of the kernel's mean square of a gap's slope on its game's
        total (0: the pairs' total is not fitted).
    step : pairs per chunk (a chunk's centred coalitions and influences are step x P).
    pooled_share : the share of each value's variance that is its row's mean variance.
    widening : Student's t interval over the normal one at the pairs' count.
    bias_variance : added to each value's variance.
    values, std : (m, P), overwritten: the values and their standard deviations.
    """
    m, n_pairs, n_players = masks.shape
    fits_shift = slope_square > 0
    first = 0
    while first < m:
        last = first + 1
        while last < m and _same_coalitions(masks, first, last):
            last += 1
        rows = last - first
        shared = masks[first]
        sizes = np.empty(n_pairs)
        for p in range(n_pairs):
            size = 0
            for j in range(n_players):
                if shared[p, j]:
                    size += 1
            sizes[p] = size
        slopes = np.empty(n_pairs)
        for p in range(n_pairs):
            slopes[p] = 0.5 * (2.0 * sizes[p] / n_players - 1.0)
        # targets[p, r]: pair p's residual gap of row first + r less what efficiency fixes.
        residual_total = np.empty(rows)
        targets = np.empty((n_pairs, rows))
        for r in range(rows):
            i = first + r
            residual_total[r] = total[i] - np.sum(proxy_values[i])
            for p in range(n_pairs):
                targets[p, r] = (
                    0.5 * (model_gaps[i, p] - proxy_gaps[i, p]) - slopes[p] * residual_total[r]
                )
        # H = share * sampled + (1 - share) * a * (I - J) + J, J = 11^T / P: the all-ones
        # direction, which no pair sees, is efficiency's and is inverted as itself (H 1 = 1).
        gram = np.zeros((n_players, n_players))
        moments = np.zeros((n_players, rows))
        cross = np.zeros(n_players)
        for start in range(0, n_pairs, step):
            stop = min(start + step, n_pairs)
            chunk = _centred(shared, sizes, start, stop)
            gram += np.dot(chunk.T, chunk)
            moments += np.dot(chunk.T, np.ascontiguousarray(targets[start:stop]))
            cross += _times(chunk, slopes, start)
        moments /= n_pairs
        gram *= share / n_pairs
        for j in range(n_players):
            gram[j, j] += (1.0 - share) * a
        gram += (1.0 - (1.0 - share) * a) / n_players
        inverse = np.linalg.inv(gram)
        # estimates[:, r]: row first + r's values of the residual game.
        estimates = np.dot(inverse, moments)
        # The shift joins the regression as one more column: its Gram row is h = share * mean of
        # c slope (its expectation is 0) and its own entry eta = share * mean slope^2 + (1 -
        # share) * E slope^2. By the block inverse, with u = H^-1 h (``across``) and schur = eta
        # - h . u, the shift is (mean slope y - h . H^-1 mean c y) / schur and the values H^-1
        # mean c y - u shift.
        across = np.zeros(n_players)
        schur = 1.0
        shifts = np.zeros(rows)
        if fits_shift:
            cross *= share / n_pairs
            across = np.dot(inverse, cross)
            eta = share * np.mean(slopes**2) + (1.0 - share) * slope_square
            schur = eta - np.dot(cross, across)
            for r in range(rows):
                along_targets = 0.0
                for p in range(n_pairs):
                    along_targets += slopes[p] * targets[p, r]
                fitted_cross = 0.0
                for j in range(n_players):
                    fitted_cross += cross[j] * estimates[j, r]
                shifts[r] = (along_targets / n_pairs - fitted_cross) / schur
                for j in range(n_players):
                    estimates[j, r] -= across[j] * shifts[r]
        for r in range(rows):
            mean = 0.0
            for j in range(n_players):
                mean += estimates[j, r]
            mean /= n_players
            for j in range(n_players):
                estimates[j, r] -= mean
        # The delta method: pair p moves the estimate by its row of the block inverse, H^-1 c_p
        # + u (u . c_p - slope_p) / schur (``influence``, the rows' own), times y_p - share (c_p .
        # phi + slope_p shift) (``leverage``, each row's), less its mean; the spread of those moves
        # is the estimate's variance.
        moved = np.zeros((rows, n_players))
        moved_square = np.zeros((rows, n_players))
        for start in range(0, n_pairs, step):
            stop = min(start + step, n_pairs)
            chunk = _centred(shared, sizes, start, stop)
            influence = np.dot(chunk, inverse.T)
            fitted = np.dot(chunk, estimates)
            leverage = np.empty((stop - start, rows))
            for p in range(stop - start):
                along_part = 0.0
                for j in range(n_players):
                    along_part += chunk[p, j] * across[j]
                along = (along_part - slopes[start + p]) / schur
                for j in range(n_players):
                    influence[p, j] += along * across[j]
                for r in range(rows):
                    leverage[p, r] = targets[start + p, r] - share * (
                        fitted[p, r] + slopes[start + p] * shifts[r]
                    )
            moved += np.dot(leverage.T, influence)
            moved_square += np.dot((leverage * leverage).T, influence * influence)
        # The fit's degrees of freedom, the trace of H_aug^-1 times its sampled part: P + 1 less
        # the trace against the expected part, (1 - share) a (trace H^-1 - 1 + |u|^2 / schur)
        # + 1 (the all-ones direction, H^-1 J = J) + (1 - share) E slope^2 / schur (the
        # shift's). The residuals are short of the noise by as many.
        inverse_trace = 0.0
        for j in range(n_players):
            inverse_trace += inverse[j, j]
        spent = n_players - (1.0 - share) * a * (inverse_trace - 1.0) - 1.0
        if fits_shift:
            spent += 1.0 - (1.0 - share) * (a * np.sum(across**2) + slope_square) / schur
        inflation = n_pairs / max(n_pairs - spent, 1.0)
        variance = np.empty(n_players)
        for r in range(rows):
            i = first + r
            for j in range(n_players):
                spread = moved_square[r, j] - moved[r, j] ** 2 / n_pairs
                variance[j] = max(spread, 0.0) / (n_pairs - 1) / n_pairs * inflation
            pooled = pooled_share * np.mean(variance)
            for j in range(n_players):
                values[i, j] = proxy_values[i, j] + residual_total[r] / n_players + estimates[j, r]
                row_variance = (1.0 - pooled_share) * variance[j] + pooled
                std[i, j] = np.sqrt(widening**2 * row_variance + bias_variance)
        first = last
