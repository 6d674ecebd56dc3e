"""Calibration: the member weights of a context refitted, once, on a few of the caller's rows.

The gate weighs the zoo from context statistics learned on a prior; what decides a member's
worth is how the model behaves on rows that mix one row's features with another's, which the
context's outputs do not show. Calibration asks the caller to score such rows once per context:
paired coalitions (S and its complement, one background row) drawn for each background row, as
refinement draws them for an explained row. Shapley values depend only on the game's odd part,
and a pair's gap f(first row) - f(second row) is exactly that part's value at S, so the weights
are the non-negative least-squares fit of the members' pair gaps to the model's:

    w = argmin_{w >= 0} sum over pairs (sum_s w_s gap_s - gap_f)^2,

kept as shares (w / sum w) and a scale (sum w): the proxy is scale * sum_s share_s member_s, its
values exactly the same mix of the members' exact values. The weights are the context's, not a
row's: every explained row, in any batch, gets the same proxy, and refinement then starts from
it. On the refinement benchmark's 50 real-table cases (10 tables x 5 families, 50 background
rows) 5 pairs per background row (500 model rows, once) lifted zero-shot r from 0.926 to 0.939,
and refined r at 4d from 0.942 to 0.951; 2 pairs gave 0.937, 20 pairs 0.940. Shares normalised
to sum to one (no scale) gave 0.936.
"""

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from shapley_svc.canonical import canonical_floats
from shapley_svc.estimator.refinement import (
    MIN_PRIOR_VARIANCE_RATIO,
    DrawOrder,
    draw_pairs,
    rows_sha256,
    size_distribution,
)

# 10 rows (5 pairs) per background row: see the module docstring.
DEFAULT_ROWS_PER_BACKGROUND = 10
# A refit learns the members themselves from the scored rows, and keeps gaining from more of
# them where the weights alone do not: on `bench refinement` (2026-12-02), 20 rows per background
# row against 10 lifted the refitted contexts' zero-shot r from 0.953 to 0.959 on the 50
# real-table cases (refined at 4d: 0.962 to 0.966) in the same refit time (2.7 s against 2.9 s),
# and from 0.595 to 0.619 on the embedding tasks; on the d = 384 embedding MLP 10 / 20 / 40 gave
# 0.608 / 0.704 / 0.743 (weights only: 0.576 / 0.568 / 0.572).
REFIT_ROWS_PER_BACKGROUND = 20
# Fewer pairs than this leave the fit of up to 8 weights to noise.
MIN_PAIRS = 16
# Two pairs per background row at least: the uncertainty's scale needs each row's spread.
MIN_PAIRS_PER_ROW = 2
# A refit's residual is measured on the pairs of half the background rows, by a second refit
# that did not learn from them: each half needs two rows at least.
MIN_HELD_OUT_ROWS = 2
# The blends of the gate's mix and the pairs' that a refit chooses from (``stacked_output``).
STACKING_BLENDS = np.linspace(0.0, 1.0, 5)


@dataclass(frozen=True)
class CalibrationProposal:
    """The rows the caller's model scores to calibrate a context.

    Rebuilt bit for bit from (the fitted explainer, ``budget``, ``random_state``).

    Attributes
    ----------
    rows : (n_background * 2 * pairs_per_row, d) float64 rows to score, in blocks of
        ``2 * pairs_per_row`` per background row: each pair's row, then its complement.
    budget : the most rows the caller allowed in all.
    random_state : the seed the coalitions were drawn with.
    masks : (n_background, pairs_per_row, P) bool, each pair's coalition.
    background : (n_background, pairs_per_row) int64, each pair's other background row.
    background_sha256 : the fingerprint of the background rows (the explainer's
        ``_background_sha256``): calibrate refuses it elsewhere.
    """

    rows: np.ndarray
    budget: int
    random_state: int
    masks: np.ndarray
    background: np.ndarray
    background_sha256: str | None = None

    @property
    def rows_sha256(self) -> str:
        """``refinement.rows_sha256`` of the rows to score (see ``Proposal.rows_sha256``)."""
        return rows_sha256(self.rows)

    @property
    def pairs_per_row(self) -> int:
        return self.masks.shape[1]


@dataclass(frozen=True)
class Calibration:
    """How a context was calibrated: the proposal's arguments, the model rows scored, a
    fingerprint of the model's outputs on them (sha256 of their float64 bytes), whether the
    zoo was refitted on the context and the scored rows (else only its weights were), and per
    output the smaller of the two estimates of the proxy's error as a share of the variance its
    uncertainty states (``lower_estimate_share``; None in explainers saved before it was kept:
    refine then takes each row's measured error whole)."""

    budget: int
    random_state: int
    model_rows: int
    outputs_sha256: str
    refitted: bool = False
    lower_estimate_shares: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CalibratedOutput:
    """One output's calibrated weights and how well the proxy's pair gaps follow the model's
    before and after (R^2 over the calibration pairs; after is in-sample, at most len(ZOO)
    weights fitted to at least ``MIN_PAIRS`` pairs)."""

    shares: np.ndarray
    scale: float
    gap_r2_before: float
    gap_r2_after: float


def minimum_budget(n_background: int) -> int:
    """The fewest calibration rows: ``MIN_PAIRS_PER_ROW`` pairs per background row, and
    ``MIN_PAIRS`` in all."""
    pairs_per_row = max(MIN_PAIRS_PER_ROW, -(-MIN_PAIRS // n_background))
    return 2 * pairs_per_row * n_background


def default_budget(n_background: int, refit: bool = False) -> int:
    """``DEFAULT_ROWS_PER_BACKGROUND`` rows per background row (``REFIT_ROWS_PER_BACKGROUND``
    for a refit), at least ``minimum_budget``."""
    per_row = REFIT_ROWS_PER_BACKGROUND if refit else DEFAULT_ROWS_PER_BACKGROUND
    return max(per_row * n_background, minimum_budget(n_background))


def draw_calibration(
    background_rows: np.ndarray,
    order: DrawOrder,
    budget: int,
    seed: int,
) -> CalibrationProposal:
    """Pairs for every background row within ``budget`` rows, drawn in ``order``; the caller
    checked ``budget`` against ``minimum_budget`` and that there are two players or more."""
    pairs_per_row = budget // (2 * background_rows.shape[0])
    rows, masks, picks = draw_pairs(background_rows, background_rows, order, pairs_per_row, 0, seed)
    return CalibrationProposal(rows, budget, seed, masks, picks)


def held_out_split(n_background: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The background rows whose calibration rows a second refit learns from, and the others,
    on whose pairs that refit's residual is measured: a seeded half each, sorted; None below
    ``MIN_HELD_OUT_ROWS`` rows a half (``residual_square`` needs the spread over rows)."""
    if n_background < 2 * MIN_HELD_OUT_ROWS:
        return None
    order = np.random.default_rng(seed).permutation(n_background)
    half = n_background // 2
    return np.sort(order[:half]), np.sort(order[half:])


def rows_of(
    proposal: CalibrationProposal, background_rows: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """The part of ``rows`` (``proposal.rows``, or the outputs on them) that the pairs of
    ``background_rows`` (indices) mix."""
    per_row = 2 * proposal.pairs_per_row
    blocks = rows.reshape(proposal.masks.shape[0], per_row, *rows.shape[1:])
    return blocks[background_rows].reshape(-1, *rows.shape[1:])


def outputs_fingerprint(outputs: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(outputs, dtype="<f8").tobytes()).hexdigest()


def context_fingerprint(rows: np.ndarray, outputs: np.ndarray) -> str:
    """sha256 of a context's canonical rows (-0.0 and NaN payloads made canonical) and outputs,
    so that ``calibrate`` can tell the context it was fitted on from another."""
    digest = hashlib.sha256(repr(rows.shape).encode())
    digest.update(canonical_floats(rows).tobytes())
    digest.update(np.ascontiguousarray(outputs, dtype="<f8").tobytes())
    return digest.hexdigest()


def r_squared(fitted: np.ndarray, target: np.ndarray) -> float:
    total = float(np.sum((target - target.mean()) ** 2))
    if total <= 0.0:
        return 1.0 if np.allclose(fitted, target) else 0.0
    return 1.0 - float(np.sum((target - fitted) ** 2)) / total


def calibrated_output(
    member_gaps: np.ndarray, model_gaps: np.ndarray, weights: np.ndarray, scale: float
) -> CalibratedOutput:
    """Refit one output's member weights.

    Parameters
    ----------
    member_gaps : (S, m, n_pairs) each member's pair gaps (zeros for absent members).
    model_gaps : (m, n_pairs) the model's.
    weights, scale : the output's current shares (S,) and scale, for ``gap_r2_before``.
    """
    design = member_gaps.reshape(member_gaps.shape[0], -1).T
    target = model_gaps.ravel()
    before = r_squared(design @ (scale * weights), target)
    fitted, _ = nnls(design, target)
    total = float(fitted.sum())
    if total <= 0.0:
        # No non-negative mix follows the model's gaps better than none: the proxy is zero and
        # each row's prediction is spread by the variance floor alone.
        none = r_squared(np.zeros_like(target), target)
        return CalibratedOutput(np.asarray(weights, dtype=np.float64), 0.0, before, none)
    return CalibratedOutput(fitted / total, total, before, r_squared(design @ fitted, target))


def stacked_output(
    member_gaps: np.ndarray,
    model_gaps: np.ndarray,
    weights: np.ndarray,
    scale: float,
    seed: int,
) -> CalibratedOutput:
    """One output's weights for a refitted zoo, from pairs that its members did not learn.

    The refit's gate weighs its members from context statistics learned on a prior of tables,
    which is right on real tables and far off on the embedding tasks. The candidates are blends
    of the gate's mix and the pairs' non-negative least-squares mix (``calibrated_output``),
    ``(1 - t) * gate + t * pairs`` for t in ``STACKING_BLENDS``; t is the one whose mix, fitted
    on one half of the rows, predicts the other half's gaps best (two-fold, seeded halves; ties:
    the gate's side), and the pairs' mix is then fitted on all of them. On `bench refinement`
    (2026-12-02), against the gate's weights, zero-shot r of the refitted context: d = 384
    embedding MLP 0.459 -> 0.615, forest 0.653 -> 0.659, d = 1,024 MLP 0.461 -> 0.582, forest
    0.475 -> 0.525 (at 4d: 0.659 -> 0.693, 0.718 -> 0.749, 0.586 -> 0.662, 0.600 -> 0.605);
    on the 50 real-table cases 0.953 both ways, at 4d 0.962 both ways (at d 0.953 -> 0.951,
    at 10d 0.972 -> 0.971). The pairs' mix alone (t = 1 always; prototype on the same cases)
    lost on the real tables: 0.952 zero-shot, 0.961 at 4d.

    Parameters
    ----------
    member_gaps : (S, m, n_pairs) each member's pair gaps on m rows it did not learn, m >= 2.
    model_gaps : (m, n_pairs) the model's.
    weights, scale : the gate's shares (S,) and scale.
    seed : draws the two halves of the rows.
    """
    gate = scale * np.asarray(weights, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(model_gaps.shape[0])
    halves = (np.sort(order[: order.size // 2]), np.sort(order[order.size // 2 :]))
    squared_error = np.zeros(STACKING_BLENDS.size)
    for fitted_on, scored_on in (halves, halves[::-1]):
        fitted = calibrated_output(member_gaps[:, fitted_on], model_gaps[fitted_on], weights, scale)
        target = model_gaps[scored_on].ravel()
        design = member_gaps[:, scored_on].reshape(member_gaps.shape[0], -1).T
        by_gate, by_pairs = design @ gate, design @ (fitted.scale * fitted.shares)
        for b, blend in enumerate(STACKING_BLENDS):
            mixed = (1.0 - blend) * by_gate + blend * by_pairs
            squared_error[b] += float(np.sum((target - mixed) ** 2))
    blend = float(STACKING_BLENDS[int(np.argmin(squared_error))])
    pairs = calibrated_output(member_gaps, model_gaps, weights, scale)
    if blend == 0.0:  # the gate's own weights, to the bit
        before = pairs.gap_r2_before
        return CalibratedOutput(np.asarray(weights, dtype=np.float64), scale, before, before)
    mix = (1.0 - blend) * gate + blend * pairs.scale * pairs.shares
    total = float(mix.sum())
    if total <= 0.0:
        return pairs  # the gate's mix is empty too: no mix follows the gaps
    design = member_gaps.reshape(member_gaps.shape[0], -1).T
    return CalibratedOutput(
        mix / total, total, pairs.gap_r2_before, r_squared(design @ mix, model_gaps.ravel())
    )


def residual_square(residual_gaps: np.ndarray, masks: np.ndarray) -> float:
    """An upper estimate of the mean squared Shapley value of the residual game (model minus
    proxy) over the calibration rows and players, less the part efficiency fixes.

    Each row's paired estimate squared, minus that estimate's sampling variance, is unbiased
    for the row's mean square; their mean over rows plus one standard error of it is the
    answer. Few pairs per row make the unbiased mean noisy (negative on 10 of the refinement
    benchmark's 50 real-table cases): as the estimate itself the calibrated 80 % intervals
    covered 0.66 there, one standard error above it 0.78.

    Parameters
    ----------
    residual_gaps : (m, n_pairs) the model's pair gaps minus the calibrated proxy's; m >= 2.
    masks : (m, n_pairs, P) the pairs' coalitions; n_pairs >= 2.
    """
    n_pairs, n_players = masks.shape[1], masks.shape[2]
    _, a = size_distribution(n_players)
    centred = masks - masks.sum(axis=2, keepdims=True) / n_players
    terms = 0.5 * centred * residual_gaps[:, :, None] / a
    estimate = terms.mean(axis=1)
    sampling = terms.var(axis=1, ddof=1) / n_pairs
    per_row = np.mean(estimate**2 - sampling, axis=1)
    return float(per_row.mean() + per_row.std(ddof=1) / np.sqrt(per_row.size))


def transferred_square(
    stated_std_before: np.ndarray, gap_r2_before: float, gap_r2_after: float
) -> float:
    """A second estimate of the calibrated proxy's mean squared Shapley error: the zero-shot
    context's stated mean variance, scaled by how much calibration shrank the mean squared pair
    gap between model and proxy, (1 - R^2 after) / (1 - R^2 before) of the pair gaps. It
    averages squares of whole gaps, so it stays steady where ``residual_square`` is noise: with
    5 pairs per row over 384 players that estimate fell to the floor and the calibrated 80 %
    intervals covered 0.49 (embedding forest)."""
    stated = float(np.mean(stated_std_before**2))
    unexplained_before = 1.0 - gap_r2_before
    if unexplained_before <= 0.0:
        return stated
    return stated * max(1.0 - gap_r2_after, 0.0) / unexplained_before


def uncertainty_ratio(residual: float, transferred: float, stated_std: np.ndarray) -> float:
    """What the calibrated context's variances are multiplied by, so that the stated
    uncertainty of the background rows' values (as projected onto efficiency) matches the larger
    of two estimates of the residual's size: the pairs' direct one (``residual_square``) and the
    zero-shot uncertainty carried over (``transferred_square``); at least
    ``MIN_PRIOR_VARIANCE_RATIO``. The larger of the two covered 0.84 on the refinement
    benchmark's 50 real-table cases (0.78 direct, 0.75 carried over) and 0.82 / 0.98 / 0.90 on
    three of its four embedding tasks (0.49 / 0.98 / 0.90 direct); on the fourth (the MLP at
    d = 384) the zero-shot intervals already cover only 0.41, and the calibrated ones 0.36."""
    stated = float(np.mean(stated_std**2))
    measured = max(residual, transferred, 0.0)
    ratio = measured / stated if stated > 0 else 1.0
    return max(ratio, MIN_PRIOR_VARIANCE_RATIO)


def lower_estimate_share(residual: float, transferred: float, stated_std: np.ndarray) -> float:
    """The smaller of the two estimates of the calibrated proxy's error over the variance that
    ``uncertainty_ratio`` makes the context state (the larger one, or its floor), in [0, 1]:
    what refine expects a row's error to be, as a share of the stated variance, before its pairs
    measure it. Calibration states the larger estimate so that its intervals cover; the weights
    refine gives the zero-shot values need the likely error instead. On `bench refinement`
    (2026-12-02), shrinking each row's measurement toward this share instead of taking it whole
    (the rule before) moved refine's r at d, 2d, 4d and 10d on the 50 real-table cases from
    0.936, 0.938, 0.950, 0.964 to 0.940, 0.943, 0.952, 0.965 (weights refitted) and from 0.950,
    0.952, 0.959, 0.972 to 0.953, 0.956, 0.962, 0.972 (zoo refitted), with the 80 % coverage
    within 0.01; on the embedding tasks from 0.600, 0.632, 0.673, 0.753 to 0.603, 0.631, 0.669,
    0.749 (weights) and from 0.515, 0.584, 0.639, 0.736 to 0.540, 0.591, 0.641, 0.736 (zoo).
    Shrunk toward the larger estimate instead, the embedding tasks fell from 0.600 to 0.542 at
    d (weights refitted)."""
    calibrated = float(np.mean(stated_std**2)) * uncertainty_ratio(
        residual, transferred, stated_std
    )
    if calibrated <= 0.0:
        return 1.0
    return min(max(min(residual, transferred), 0.0) / calibrated, 1.0)
