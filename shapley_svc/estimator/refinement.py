"""Refinement: the zero-shot estimate as a control variate for a few of the caller's model rows.

Let g be the proxy, the gate's weighted mix of the zoo (less any tree member that weighs little
in it: ``control_weights``), whose interventional Shapley values are known exactly, and f the
caller's model. The residual game r = v_f - v_g has Shapley values
phi(f) - phi(g), and r(N) - r(empty) = (f(x) - base) - sum phi(g) is known without a model call.
Its Shapley values are estimated from paired coalitions (S and its complement, with one
background row b) drawn from the Shapley kernel: one set of coalitions for a proposal's rows,
each row with background rows of its own (``draw_shared_coalitions``). For an additive game with
values phi, a pair's gap r_b(S) - r_b(complement) less (2 |S| / P - 1) (r(N) - r(empty)) is
2 c . phi, with c = z - |S| / P the pair's centred coalition indicator. The values are the
kernel-weighted least-squares fit of those gaps under efficiency:

    phi(r) = (r(N) - r(empty)) / P + H^-1 mean over pairs of c y,
    y = (r_b(S) - r_b(complement) - (2 |S| / P - 1) (r(N) - r(empty))) / 2,

where H is a Gram matrix of c. With H the expectation of c c^T under the kernel, a (I - 11^T /
P), a = 1/2 - E[|S| (|S| - 1)] / (P (P - 1)), the estimate is unbiased for every budget; with
the pairs' own mean of c c^T it is least squares (KernelSHAP's regression), which fits the
additive part of the residual exactly and leaves only its interactions as noise, but is singular
below P pairs. H is half of each (``GRAM_SAMPLED_SHARE``; 0.85 the pairs' own at the centre
below, whose pairs carry less noise: ``CENTRE_GRAM_SAMPLED_SHARE``): both converge to the same
exact values as pairs accumulate, and the mix errs far less than the unbiased estimate at a few
pairs per player (embedding tasks at 4d, pairs alone: r 0.57 -> 0.68). A pair's game need not
have the total the values sum to (against b its total is r(x) - r(b); against the centre below,
r(x) - r(centre)), so the pairs' mean total is fitted as well, one more column whose regressor
is the target's slope on it, (|S| / P - 1/2), uncorrelated with c under the kernel: the values
then take the total asked for through efficiency alone. Given S and b, the pair costs two of the
caller's rows, and r_b(S) - r_b(complement) needs the proxy on the same two rows, which costs no
model call. Efficiency is exact; the error is the residual's, so a better zero-shot proxy needs
fewer rows (RegressionMSR, ControlSHAP). The standard error is the delta method's: the spread
over the pairs of each pair's move of the estimate, H^-1 c (y - share c . phi), corrected for
the degrees of freedom the fit spent and widened by Student's t for few pairs (on a game with
interactions, 0.98 of the values' spread over draws of pairs).

Drawing b is most of that error at a few pairs per player. Where the proxy says it pays, the
pairs mix with one row instead, the background's centre c (``reference_centre``): the residual
game against c has no background noise, and a bias, phi(r against c) - phi(r against the
background), which is small where the residual is smooth across the background. The choice is
the proxy's: ``CentreTrial`` measures, once per explainer, its game's centre bias and both
designs' noise per pair, and ``prefers_centre`` compares their errors at the proposal's number
of pairs (the bias, which does not shrink, loses to the noise, which does, as the budget grows:
refine still converges). The model's bias is believed to be ``CENTRE_BIAS_WEIGHT`` times the
proxy's (``CentreTrial.model_bias``), and that belief is added to the pairs' variance. The
centre's game is also steeper than the background's (a response averaged over background rows
is flatter), so from two pairs per player (and 16 at least) an eighth of them score their first
coalitions again with background rows, and each row's values are rescaled about their mean by
how the model's gaps there scale against its gaps at the centre (``centre_scaled``); the choice
of design then counts the bias that scale leaves, and the pairs' variance the proxy's whole
bias (``centre_trial``).

The answer is then the precision-weighted mean of that estimate and the zero-shot one
(the prior), whose stated uncertainty is first rescaled per row to the error the pairs measure
(empirical Bayes; for the weights, that measurement is shrunk toward the stated uncertainty in
proportion to how few pairs made it, or in a calibrated context toward the smaller of its two
estimates of the error; the pairs' variance weighs as Student's t predictive one, so that three
pairs or fewer do not move the values: ``weighing_inflation``), and projected back onto
efficiency. With few pairs this
keeps the answer near the zero-shot one, on average above it (`bench refinement`'s 50 real-table
cases, 2026-12-06: mean r 0.930 zero-shot, 0.938 at budget d), though not in every case (MLPs
on bwght and k401k lose 0.037 and 0.031 at d); with many, the refined estimate dominates.
"""

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import stats

from shapley_svc.canonical import canonical_floats
from shapley_svc.estimator.surrogates import canonical_column_order
from shapley_svc.kernels.coalitions import (
    fill_paired_rows,
    sample_paired_coalitions,
    sample_shared_coalitions,
)
from shapley_svc.kernels.pair_regression import regress_pairs, rows_share_coalitions

# Two pairs at least: one pair has no spread to estimate the error from.
MIN_PAIRS = 2
# The uncertainty is a standard deviation whose normal 80 % interval is the t interval.
_INTERVAL = 0.8
POOLED_SHARE = 0.5
# The zero-shot uncertainty is rescaled per row to the error the pairs measure, but by no less
# than this: at budget d on four development cases (diabetes MLP and forest, Friedman-1 SVR and
# boosting) a floor of 0.1 kept the merged answer at or above the zero-shot one, 0.01 did not.
MIN_PRIOR_VARIANCE_RATIO = 0.1
# Where that rescaled uncertainty weighs the prior against the pairs, the row's measurement
# counts as n_pairs against this many pairs per player of the belief that the combiner's stated
# uncertainty is right (ratio 1): half the weight at budget 4d. On `bench refinement`
# (2026-12-02), against the measurement taken whole: r at d, 2d, 4d, 10d on the 50 real-table
# cases 0.927, 0.928, 0.943, 0.960 -> 0.931, 0.935, 0.947, 0.962, on the embedding tasks 0.511,
# 0.574, 0.633, 0.734 -> 0.530, 0.582, 0.636, 0.734. One pair per player gave 0.930, 0.933,
# 0.946, 0.961 on the real tables (a prototype of the same cases).
PRIOR_PAIRS_PER_PLAYER = 2.0
# The Gram matrix the pairs are regressed with is this share of their own (sampled) one and the
# rest its expectation under the Shapley kernel (``refined_values``). Measured on `bench
# refinement`'s cases (2026-12-03, offline on the benchmark's own proposals and outputs), mean r
# at d / 2d / 4d / 10d for shares 0 (the unbiased estimate) / 0.3 / 0.5 / 0.7, pairs alone: the
# 50 real tables with background rows 0.703 / 0.808 / 0.882 / 0.943, 0.782 / 0.841 / 0.898 /
# 0.949, 0.803 / 0.845 / 0.900 / 0.950, 0.812 / 0.836 / 0.896 / 0.949; the 4 embedding tasks
# at the centre 0.359 / 0.460 / 0.569 / 0.690, 0.468 / 0.559 / 0.654 / 0.749, 0.485 / 0.582 /
# 0.682 / 0.774, 0.476 / 0.581 / 0.692 / 0.789. Refined (merged with the zero-shot values),
# shares 0.3 / 0.5 / 0.7: real tables 0.934 / 0.940 / 0.952 / 0.965 at 0.3 and 0.5 alike (to
# 0.001), 0.933 / 0.939 / 0.951 / 0.965 at 0.7; embeddings 0.637 / 0.705 / 0.758 / 0.809, 0.645 /
# 0.717 / 0.773 / 0.824, 0.640 / 0.716 / 0.779 / 0.833. (Share 1, least squares alone, is
# singular below P pairs.)
GRAM_SAMPLED_SHARE = 0.5
# Pairs at the background's centre (``prefers_centre``) carry no background row's noise: what
# the regression leaves is the residual's interactions alone, and more of the pairs' own Gram
# (least squares' fit of the additive part) pays. Measured offline on `bench refinement`'s
# proposals and outputs forced to the centre (2026-12-03, the pairs' total fitted), mean r
# merged at d / 2d / 4d / 10d for shares 0.5 / 0.7 / 0.85 / 0.95: the 4 embedding tasks 0.667 /
# 0.736 / 0.787 / 0.830, 0.682 / 0.753 / 0.805 / 0.843, 0.692 / 0.764 / 0.815 / 0.848, 0.698 /
# 0.768 / 0.813 / 0.847; the 50 real-table cases 0.936 / 0.943 / 0.945 / 0.943, 0.936 / 0.944
# / 0.945 / 0.943, 0.935 / 0.942 / 0.943 / 0.942, 0.932 / 0.937 / 0.940 / 0.941. With background
# rows the real tables lose from 0.5 up (0.931 / 0.936 / 0.952 / 0.965 at 0.5, 0.913 / 0.924
# / 0.947 / 0.965 at 0.85): a noisy Gram inverted amplifies the background rows' noise.
CENTRE_GRAM_SAMPLED_SHARE = 0.85
# A costly member (a tree ensemble: its pair gaps walk every tree for both rows of every pair)
# that weighs less than this share of the mix is left out of the proxy refine corrects
# (``control_weights``). The proxy need only be some function whose values are exact: any
# choice keeps refine unbiased and converging, and a light member moves it little. On `bench
# refinement`'s 50 real-table cases (2026-12-05, offline on the benchmark's proposals and
# outputs, the centre trial on the whole mix), mean r at d / 2d / 4d / 10d with every member
# 0.9342 / 0.9388 / 0.9519 / 0.9654, without the trees under 0.1 / 0.2 / 0.3 of the mix 0.9341
# / 0.9391 / 0.9520 / 0.9656, 0.9343 / 0.9393 / 0.9521 / 0.9656 and the same as 0.2 to 1e-4;
# the members' pair gaps took 27 % / 39 % / 39 % less time. There the forest member is 0-0.12
# of the mix (median 0.075; under 0.1 in 73 of 95 outputs), and its pair gaps cost 70 % of the
# boosted member's (k401k and gss7402, 10 rows at 4d: 0.70 against 0.99 ms, 0.85 against 1.23).
# At 0.2 the benchmark's d = 1,024 forest task lost its boosted member (0.18 of the mix) and r
# 0.647 / 0.695 / 0.713 / 0.730 -> 0.609 / 0.671 / 0.693 / 0.714: a tree member at a fifth of
# the mix can still follow the model off the context's rows. Leaving out every member under
# 0.1, cheap ones too, scored 0.9364 / 0.9405 / 0.9529 / 0.9663 on the real tables, but from one
# case (bwght CatBoost, +0.079 at d), while MLP targets lost up to 0.011 (fishing, k401k).
PROXY_MIN_COSTLY_SHARE = 0.1


def size_distribution(n_players: int) -> tuple[np.ndarray, float]:
    """The Shapley kernel's distribution of coalition sizes 1 .. P - 1 as a (P - 1,) cumulative
    array, and the constant ``a`` of the estimator (see the module docstring)."""
    cumulative, a = _size_distribution(n_players)
    return cumulative.copy(), a


@functools.lru_cache(maxsize=256)
def _size_distribution(n_players: int) -> tuple[np.ndarray, float]:
    """``size_distribution``, cached (callers get a copy of the array). With
    ``expected_total_slope_square`` cached too, the regression of a 10-row refine at P = 9 took
    0.26 -> 0.18 ms (2026-12-05; the two computed 50 us of it each call)."""
    sizes, probability = _size_probability(n_players)
    pairs_inside = probability @ (sizes * (sizes - 1)) / (n_players * (n_players - 1))
    return np.cumsum(probability), 0.5 - float(pairs_inside)


def _size_probability(n_players: int) -> tuple[np.ndarray, np.ndarray]:
    """The coalition sizes 1 .. P - 1 and their probabilities under the Shapley kernel."""
    sizes = np.arange(1, n_players, dtype=np.float64)
    weights = 1.0 / (sizes * (n_players - sizes))
    return sizes, weights / weights.sum()


def total_slopes(sizes: np.ndarray, n_players: int) -> np.ndarray:
    """2 |S| / P - 1 for coalition sizes ``sizes``: how a pair's gap moves with its game's total
    (for an additive game the gap is this times the total plus 2 c . phi)."""
    return 2 * sizes / n_players - 1


@functools.lru_cache(maxsize=256)
def expected_total_slope_square(n_players: int) -> float:
    """E (2 |S| / P - 1)^2 under the Shapley kernel's sizes: the mean square of a pair gap's
    slope on its game's total (``total_slopes``); 0 for two players (every size is 1)."""
    sizes, probability = _size_probability(n_players)
    return float(probability @ total_slopes(sizes, n_players) ** 2)


@dataclass(frozen=True)
class DrawOrder:
    """The order in which a row's coalitions are drawn, fixed by the background's contents, so
    that the same table with its columns in another order draws the same coalitions of the
    same columns (the zero-shot values already follow the columns: ``canonical_column_order``).

    Attributes
    ----------
    columns : (d,) the columns in canonical order: a row's seed reads its values in this order.
    players : (P,) the players in canonical order: the kernel's k-th player is ``players[k]``.
    player_of_column : (d,) int64 the player each column belongs to, as given (the rows to
        score take a coalition's players' columns from the explained row).
    """

    columns: np.ndarray
    players: np.ndarray
    player_of_column: np.ndarray

    @classmethod
    def of(
        cls, background_rows: np.ndarray, player_of_column: np.ndarray, n_players: int
    ) -> "DrawOrder":
        """The order of ``background_rows`` (n, d) (``canonical_column_order``; columns that
        rank the rows alike keep the order given), each player placed by its first column in
        it (``player_of_column`` (d,))."""
        columns = canonical_column_order(background_rows)
        player_of_column = np.asarray(player_of_column, dtype=np.int64)
        position = np.empty(columns.size, dtype=np.int64)
        position[columns] = np.arange(columns.size)
        first = np.full(n_players, columns.size, dtype=np.int64)
        np.minimum.at(first, player_of_column, position)
        return cls(columns, np.argsort(first, kind="stable").astype(np.int64), player_of_column)


def row_seeds(rows: np.ndarray, seed: int) -> np.ndarray:
    """(m,) uint64: one seed per row from its values and ``seed``, so that a row draws the same
    coalitions in whichever batch it comes (-0.0 and NaN payloads are made canonical)."""
    canonical = canonical_floats(rows)
    prefix = int(seed).to_bytes(8, "little")
    digests = [hashlib.blake2b(prefix + row.tobytes(), digest_size=8).digest() for row in canonical]
    return np.array([int.from_bytes(digest, "little") for digest in digests], dtype=np.uint64)


def rows_sha256(rows: np.ndarray) -> str:
    """sha256 (hex) of a 2-D array of rows: its shape as two little-endian int64s, then its
    values as little-endian float64s in row order, -0.0 as 0.0 and every NaN as numpy's."""
    rows = canonical_floats(rows)
    digest = hashlib.sha256(np.asarray(rows.shape, dtype="<i8").tobytes())
    digest.update(memoryview(rows).cast("B"))
    return digest.hexdigest()


@dataclass(frozen=True)
class Proposal:
    """The rows the caller's model scores, and how refinement reads their outputs back.

    Rebuilt bit for bit from (the fitted explainer, the query rows, ``budget``, whether the
    predictions were given, ``random_state``): a server keeps nothing between the two calls.

    Attributes
    ----------
    rows : (m * rows_per_query, d) float64 rows to score, in blocks of ``rows_per_query`` per
        explained row (NaN where a background row has a missing value).
    rows_per_query : R <= budget: the explained row itself when its prediction was not given,
        then two rows per coalition pair.
    query : (m, d) the explained rows.
    predictions : (m, K) their predictions as given, or None (then read from the scored rows).
    budget : the most rows per explained row the caller allowed.
    random_state : the seed the coalitions were drawn with.
    masks : (m, n_pairs, P) bool, each pair's coalition (its first row's players from the query):
        the same for every explained row (``draw_shared_coalitions``).
    background : (m, n_pairs) int64, each pair's background row (position in the explainer's
        background rows); zeros when ``centre``.
    centre : the pairs mix the explained rows with the background's centre
        (``reference_centre``) instead of a background row each (``CentreTrial``).
    scale_masks, scale_background : with ``centre``, (m, n_scale_pairs, P) and (m,
        n_scale_pairs) the coalitions (the first of ``masks``) and background rows of the scale
        pairs (``centre_split``), whose rows end each block; None otherwise.
    background_sha256 : the fingerprint of the background the rows were mixed with (the
        explainer's ``_background_sha256``): refine refuses it elsewhere.
    display : (m, d) objects, a query frame's own values, for the refined
        ``Explanation.display_data`` (None for array rows: then shown from their codes).
    """

    rows: np.ndarray
    rows_per_query: int
    query: np.ndarray
    predictions: np.ndarray | None
    budget: int
    random_state: int
    masks: np.ndarray
    background: np.ndarray
    centre: bool = False
    scale_masks: np.ndarray | None = None
    scale_background: np.ndarray | None = None
    background_sha256: str | None = None
    display: np.ndarray | None = None

    @property
    def rows_sha256(self) -> str:
        """``rows_sha256`` of the rows to score: a proposal rebuilt elsewhere (a server
        keeps none between propose and refine) is the one scored if this matches."""
        return rows_sha256(self.rows)

    @property
    def n_pairs(self) -> int:
        """Pairs per explained row that the values are regressed on."""
        return self.masks.shape[1]

    @property
    def n_scale_pairs(self) -> int:
        """Pairs per explained row with background rows that measure the centre's scale."""
        return 0 if self.scale_masks is None else self.scale_masks.shape[1]

    @property
    def lead(self) -> int:
        """Rows at the head of each block that are the explained row itself (0 or 1)."""
        return self.rows_per_query - 2 * (self.n_pairs + self.n_scale_pairs)


@dataclass(frozen=True)
class RefinementParts:
    """What refinement merges, per explained row and output: the zero-shot values (the prior)
    and the pairs' estimate (``refined_values``), each with its standard deviation.

    Attributes
    ----------
    prior, prior_std, refined, refined_std : (m, P, K).
    interval_std : (m, P, K) ``refined_std`` as the stated error counts it: where the centre's
        design has scale pairs, with the centre's bias that the rows' scales leave in place of
        its whole bias (``CentreTrial.bias``); elsewhere ``refined_std`` itself.
    total : (m, K) prediction - base value: what the values sum to.
    base_values : (m, K).
    predictions : (m, K) the explained rows' predictions.
    scale_masks, scale_centre_gaps, scale_background_gaps : the scale pairs' coalitions (m,
        n_scale_pairs, P) and the model's pair gaps on them (m, n_scale_pairs, K) at the centre
        and with their background rows (``centre_scaled``); None without scale pairs.
    """

    prior: np.ndarray
    prior_std: np.ndarray
    refined: np.ndarray
    refined_std: np.ndarray
    interval_std: np.ndarray
    total: np.ndarray
    base_values: np.ndarray
    predictions: np.ndarray
    scale_masks: np.ndarray | None = None
    scale_centre_gaps: np.ndarray | None = None
    scale_background_gaps: np.ndarray | None = None

    @classmethod
    def empty(
        cls, m: int, n_players: int, n_outputs: int, predictions: np.ndarray
    ) -> "RefinementParts":
        """Unfilled parts for ``m`` explained rows with these (m, K) ``predictions``."""
        shape = (m, n_players, n_outputs)
        return cls(
            np.empty(shape),
            np.empty(shape),
            np.empty(shape),
            np.empty(shape),
            np.empty(shape),
            np.empty((m, n_outputs)),
            np.empty((m, n_outputs)),
            predictions,
        )

    def rows(self, part: slice) -> "RefinementParts":
        """The parts of the explained rows ``part``: views, filled in place."""
        return RefinementParts(
            self.prior[part],
            self.prior_std[part],
            self.refined[part],
            self.refined_std[part],
            self.interval_std[part],
            self.total[part],
            self.base_values[part],
            self.predictions[part],
        )


def control_weights(weights: np.ndarray, costly: np.ndarray) -> np.ndarray:
    """(S,) the weights of the proxy refine corrects, from the mix's ``weights`` (S,): the
    ``costly`` (S,) bool members of less than ``PROXY_MIN_COSTLY_SHARE`` of the total are
    left out and the others rescaled to the same total (the mix itself where nothing else
    weighs)."""
    total = weights.sum()
    kept = np.where(costly & (weights < PROXY_MIN_COSTLY_SHARE * total), 0.0, weights)
    kept_total = kept.sum()
    if kept_total <= 0:
        return weights
    return kept * (total / kept_total)


def pairs_within(budget: int, predictions_given: bool) -> int:
    """How many coalition pairs ``budget`` rows per explained row pay for."""
    return (budget - (0 if predictions_given else 1)) // 2


def minimum_budget(predictions_given: bool) -> int:
    return 2 * MIN_PAIRS + (0 if predictions_given else 1)


def draw_pairs(
    query: np.ndarray,
    reference_rows: np.ndarray,
    order: DrawOrder,
    n_pairs: int,
    lead: int,
    seed: int,
    shared: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_pairs`` paired coalitions per row of canonical ``query`` (m, d), each with one of the
    ``reference_rows`` (background rows, or the centre alone), drawn in ``order``: the (m *
    (lead + 2 * n_pairs), d) rows to score, the (m, n_pairs, P) masks and the (m, n_pairs)
    picks of reference rows (see ``Proposal``). The coalitions are the ``shared`` ones
    (``draw_shared_coalitions``) or each row's own (``draw_coalitions``); they do not depend on
    the reference rows."""
    # Writable and contiguous (copied only when not): the kernels take mutable arrays, and a
    # caller's view may be read-only (np.frombuffer over a message).
    query = np.require(query, dtype=np.float64, requirements=["C", "W"])
    draw = draw_shared_coalitions if shared else draw_coalitions
    masks, picks = draw(query, reference_rows.shape[0], order, n_pairs, seed)
    m, d = query.shape
    rows = np.empty((m * (lead + 2 * n_pairs), d))
    fill_paired_rows(
        query, reference_rows, order.player_of_column, masks, picks, lead, rows.reshape(m, -1, d)
    )
    return rows, masks, picks


def coalition_seed(seed: int) -> np.uint64:
    """The seed of a proposal's shared coalitions: its own stream, apart from every row's."""
    digest = hashlib.blake2b(
        b"coalitions" + int(seed).to_bytes(8, "little"), digest_size=8
    ).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def draw_shared_coalitions(
    query: np.ndarray, n_reference: int, order: DrawOrder, n_pairs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(m, n_pairs, P) masks, the same coalitions for every row of ``query`` (drawn from
    ``seed`` alone), and (m, n_pairs) picks among ``n_reference`` rows, drawn from each row's
    own seed; both read in ``order``.

    One set of coalitions for the request's rows makes the regression's Gram and its inverse,
    O(n_pairs x P^2) a row, one computation for them all (``regress_pairs``); what a row's values
    err by is unchanged in distribution, only no longer independent of another row's. A row
    still draws the same pairs in whichever batch it comes."""
    m = query.shape[0]
    n_players = order.players.size
    drawn = np.zeros((n_pairs, n_players), dtype=np.bool_)
    picks = np.zeros((m, n_pairs), dtype=np.int64)
    if n_pairs:
        size_cdf, _ = size_distribution(n_players)
        seeds = row_seeds(np.ascontiguousarray(query[:, order.columns]), seed)
        sample_shared_coalitions(coalition_seed(seed), seeds, size_cdf, n_reference, drawn, picks)
        drawn = drawn[:, np.argsort(order.players)]
    return np.repeat(drawn[np.newaxis], m, axis=0), picks


def draw_coalitions(
    query: np.ndarray, n_reference: int, order: DrawOrder, n_pairs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(m, n_pairs, P) masks and (m, n_pairs) picks among ``n_reference`` rows, drawn from
    each row of ``query``'s own seed, both read in ``order`` (see ``draw_pairs``)."""
    m = query.shape[0]
    n_players = order.players.size
    drawn = np.zeros((m, n_pairs, n_players), dtype=np.bool_)
    picks = np.zeros((m, n_pairs), dtype=np.int64)
    if not n_pairs:
        return drawn, picks
    size_cdf, _ = size_distribution(n_players)
    seeds = row_seeds(np.ascontiguousarray(query[:, order.columns]), seed)
    sample_paired_coalitions(seeds, size_cdf, n_reference, drawn, picks)
    if np.array_equal(order.players, np.arange(n_players)):
        return drawn, picks
    # Player j is the kernel's player at its place in ``order.players``. np.take gathers the
    # 26 million cells of 5 rows at d = 1,024 and budget 10d in 0.04 s; the scatter
    # ``masks[:, :, order.players] = drawn`` took 0.24 s (2026-12-07).
    return np.take(drawn, np.argsort(order.players), axis=2), picks


def draw_proposal(
    query: np.ndarray,
    predictions: np.ndarray | None,
    background_rows: np.ndarray,
    order: DrawOrder,
    n_pairs: int,
    budget: int,
    seed: int,
    centre_row: np.ndarray | None = None,
) -> Proposal:
    """The coalitions and rows for canonical ``query`` (m, d), ``n_pairs`` pairs each (the
    caller checked ``budget``), mixed with ``background_rows``; or, given the (1, d)
    ``centre_row``, split by ``centre_split``: the pairs mixed with the centre (the same
    coalitions as with background rows, as far as they go), then the scale pairs: the first
    of those coalitions again, mixed with background rows."""
    lead = 0 if predictions is not None else 1
    # A private copy, kept by the proposal: the caller's array may change after this call.
    query = np.array(query, dtype=np.float64, order="C")
    centre = centre_row is not None
    at_centre, n_scale = centre_split(n_pairs, order.players.size) if centre else (n_pairs, 0)
    if n_scale == 0:
        reference = centre_row if centre else background_rows
        rows, masks, picks = draw_pairs(query, reference, order, n_pairs, lead, seed, shared=True)
        return Proposal(
            rows, lead + 2 * n_pairs, query, predictions, budget, seed, masks, picks, centre
        )
    masks, picks = draw_shared_coalitions(query, 1, order, at_centre, seed)
    # The scale pairs are the first coalitions again (the same seed draws them), each with a
    # background row of its own.
    scale_masks, scale_picks = draw_shared_coalitions(
        query, background_rows.shape[0], order, n_scale, seed
    )
    m, d = query.shape
    pairs_rows = lead + 2 * at_centre
    block = pairs_rows + 2 * n_scale
    # Each explained row's block is contiguous: both sets are written in place into their
    # slices of it (one array of rows, 0.4 GB at d = 1,024 and budget 10d for 5 rows, not two).
    rows = np.empty((m * block, d))
    blocks = rows.reshape(m, block, d)
    fill_paired_rows(
        query, centre_row, order.player_of_column, masks, picks, lead, blocks[:, :pairs_rows]
    )
    fill_paired_rows(
        query,
        background_rows,
        order.player_of_column,
        scale_masks,
        scale_picks,
        0,
        blocks[:, pairs_rows:],
    )
    return Proposal(
        rows, block, query, predictions, budget, seed, masks, picks, True, scale_masks, scale_picks
    )


def reference_centre(background: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    """(1, d) the background's centre as a row the caller's model can score: each column's mean
    over its observed values, the most frequent code of a categorical column, then rounded to
    the nearest value the column takes in the background (as ``shap.kmeans`` rounds its
    centres), so that a coded or discrete column keeps a value it has; NaN where a column has
    none observed."""
    centre = np.full((1, background.shape[1]), np.nan)
    is_categorical = np.zeros(background.shape[1], dtype=bool)
    is_categorical[np.asarray(categorical, dtype=np.int64)] = True
    for j in range(background.shape[1]):
        column = background[:, j]
        seen, counts = np.unique(column[~np.isnan(column)], return_counts=True)
        if seen.size == 0:
            continue
        if is_categorical[j]:
            centre[0, j] = seen[np.argmax(counts)]
        else:
            mean = np.average(seen, weights=counts)
            centre[0, j] = seen[np.argmin(np.abs(seen - mean))]
    return centre


# How much the proxy's centre bias counts against the background rows' noise when refine
# chooses where its pairs mix (``prefers_centre``): the proxy sees only part of the model's bias
# off the data. On `bench refinement`'s cases (2026-12-02, uncalibrated, refine forced to each
# design and the choice recomputed), mean r at d / 2d / 4d / 10d: the 50 real tables with the
# background rows alone 0.931 / 0.936 / 0.947 / 0.962; weight 1 0.933 / 0.934 / 0.944 / 0.962;
# 2 0.933 / 0.935 / 0.948 / 0.962; 4 0.931 / 0.936 / 0.947 / 0.962. The 4 embedding tasks:
# background rows 0.530 / 0.582 / 0.636 / 0.734; weights 1, 2 and 4 all choose the centre up to
# 4d (0.612 / 0.654 / 0.709) and, at 10d, 4 / 3 / 1 of the tasks (0.772 / 0.752 / 0.729).
# Re-measured 2026-12-03 with the pairs' total fitted and the centre's share 0.85 (offline,
# trials recomputed): real tables weight 1 0.935 / 0.940 / 0.945 / 0.964, 2 0.934 / 0.939 /
# 0.952 / 0.965, 4 0.933 / 0.939 / 0.952 / 0.965, 8 0.933 / 0.936 / 0.952 / 0.965 (the better
# design per case in hindsight 0.936 / 0.945 / 0.954 / 0.965); the embedding tasks choose the
# centre at d to 4d at every weight. Measured directly (2026-12-07, offline): the model's exact
# centre bias on the benchmark's explained rows over the trial's of the proxy, on the 95 outputs
# of the 50 real-table cases, has median 1.70, geometric mean 1.92 and mean 2.53 (quartiles 1.17
# and 2.71; 13 % above 4, the MLPs on k401k and smarket near 10). Where no scale pairs measure
# the model, the pairs' variance then carries the same belief (``CentreTrial.model_bias``;
# before, the proxy's bias alone): on the 50 cases over 4 proposal seeds, mean r at d / 2d / 4d
# 0.9382 / 0.9435 / 0.9533 -> 0.9382 / 0.9447 / 0.9536, cases more than 0.005 below their own
# zero-shot answer 2 / 4 / 0 -> 2 / 2 / 0 (the worst -0.050 / -0.069 -> -0.020 / -0.043, k401k
# MLP), 80 % coverage 0.748 / 0.781 / 0.776 -> 0.744 / 0.782 / 0.778. Weights-calibrated
# contexts' proxies are nearer the model (the same ratio: median 1.47, geometric mean 1.61),
# and their embedding tasks lost r at d / 2d on `bench refinement` (0.689 / 0.738 -> 0.680 /
# 0.727); one belief for both kinds of context is kept.
CENTRE_BIAS_WEIGHT = 2.0
# The trial's explained rows (background rows, seeded), coalitions per row, and background rows
# each coalition is mixed with (all, up to this many, seeded).
CENTRE_TRIAL_ROWS = 16
CENTRE_TRIAL_COALITIONS = 32
CENTRE_TRIAL_BACKGROUND = 100
MIN_CENTRE_TRIAL_BACKGROUND = 8


@dataclass(frozen=True)
class CentreTrial:
    """What refine's pairs would measure of the proxy's game (one output) when they mix with
    the background's centre instead of one random background row each: the centre removes the
    background rows' sampling noise and adds a bias (the game against one row is not the game
    against the background), measured on the proxy, whose games are known without a model call.

    Attributes, per value and squared, on the scale of the values: ``bias_variance`` the mean
    squared bias of the centre's game, ``background_variance`` and ``centre_variance`` one
    pair's sampling variance with a background row and with the centre, and
    ``scaled_bias_variance`` the bias the centre's game leaves once each row's values are
    rescaled as ``centre_scaled`` rescales them (what a design with scale pairs keeps).
    """

    bias_variance: float
    background_variance: float
    centre_variance: float
    scaled_bias_variance: float

    def bias(self, scaled: bool) -> float:
        """The proxy's centre bias variance, as left by a design with scale pairs or without."""
        return self.scaled_bias_variance if scaled else self.bias_variance

    def model_bias(self, scaled: bool) -> float:
        """The model's centre bias variance as refine believes it: the proxy's, times
        ``CENTRE_BIAS_WEIGHT``. The design is chosen with it, and a design without scale pairs
        weighs its pairs against the prior and states their interval with it too."""
        return CENTRE_BIAS_WEIGHT * self.bias(scaled)

    def centre_error(self, n_pairs: int, scaled: bool = False) -> float:
        return self.model_bias(scaled) + self.centre_variance / n_pairs

    def background_error(self, n_pairs: int) -> float:
        return self.background_variance / n_pairs


def prefers_centre(trials: list[CentreTrial], n_pairs: int, n_players: int) -> bool:
    """Whether ``n_pairs`` pairs per explained row err less with the centre's design (those
    of them ``centre_split`` leaves at the centre, with the bias their scale pairs leave where
    it gives some) than all with background rows, summed over the outputs' ``trials``."""
    if n_pairs < MIN_PAIRS or not trials:
        return False
    at_centre, n_scale = centre_split(n_pairs, n_players)
    centre = sum(trial.centre_error(at_centre, n_scale > 0) for trial in trials)
    return centre < sum(trial.background_error(n_pairs) for trial in trials)


# The centre's game is not the background's, and its values are not only shifted: on the
# embedding tasks of `bench refinement` the exact values of the d = 384 MLP's game against the
# centre correlate r 0.971 with the truth but at 1.67 times its scale (the forest's: r 0.80,
# 1.25 times), because a model's response averaged over background rows is flatter than at one
# row. The centre's pairs converge to that game, so refine's error there grew with the budget
# (relative RMSE of the d = 1,024 forest 0.79 / 0.83 / 0.88 at 2d / 4d / 10d) while r rose.
# So in the centre's design a share of the pairs scores the first coalitions again with
# background rows, and each row's values are rescaled about their mean (efficiency kept) by
# how the model's gaps there scale against its gaps at the centre on the same coalitions
# (``centre_scaled``), shrunk toward 1 by a normal belief of standard deviation
# CENTRE_SCALE_PRIOR_STD. On `bench refinement` (2026-12-03), the 4 embedding tasks' relative
# RMSE at 4d / 10d went from 0.626 / 0.619, 0.611 / 0.669, 0.827 / 0.882, 0.643 / 0.650 to
# 0.593 / 0.567, 0.524 / 0.369, 0.719 / 0.685, 0.587 / 0.493 (d = 384 forest, MLP, d = 1,024
# forest, MLP), so that it now shrinks at every budget; r went from 0.817 / 0.825, 0.884 /
# 0.935, 0.716 / 0.728, 0.841 / 0.906 to 0.807 / 0.824, 0.873 / 0.939, 0.713 / 0.730, 0.821 /
# 0.891 (an eighth fewer pairs at the centre). Measured offline first (the same proposals):
# a quarter of the pairs from d on lost r 0.02-0.03 at d and 2d, where the prior still
# outweighs the pairs; the values' own predicted gaps in place of the centre's measured ones
# (an estimate, with its error) set the scales of the d = 384 MLP's rows 0.1-0.2 off and r at
# 10d fell 0.935 -> 0.918. A scale pooled over a request's rows would tie a row's answer to its
# batch.
CENTRE_SCALE_SHARE = 0.125
CENTRE_SCALE_PRIOR_STD = 0.25
# A scale and the pairs' mean total are fitted per row. With few scale pairs the scale's own
# error outweighs what it corrects: on the 50 real tables' cases that choose the centre at 4d
# (6, d 6-11, 3-5 scale pairs at a quarter), 3 scale pairs and up took mean r 0.9558 -> 0.9548
# (offline, scaled by the values' predicted gaps). The refinement benchmark's tables (d <= 12)
# never reach 16 at budgets up to 10d; the embedding tasks have 96 and more from 4d.
MIN_SCALE_PAIRS = 16


def centre_split(n_pairs: int, n_players: int) -> tuple[int, int]:
    """(pairs at the centre, scale pairs with background rows) of ``n_pairs`` in the centre's
    design for ``n_players``: ``CENTRE_SCALE_SHARE`` of them for the scale from
    ``PRIOR_PAIRS_PER_PLAYER`` pairs per player (below, the prior outweighs the pairs and their
    scale matters less than their number); none where that leaves fewer than
    ``MIN_SCALE_PAIRS`` scale pairs or ``MIN_PAIRS`` at the centre."""
    n_scale = int(CENTRE_SCALE_SHARE * n_pairs)
    if (
        n_pairs < PRIOR_PAIRS_PER_PLAYER * n_players
        or n_scale < MIN_SCALE_PAIRS
        or n_pairs - n_scale < MIN_PAIRS
    ):
        return n_pairs, 0
    return n_pairs - n_scale, n_scale


def centre_scaled(
    values: np.ndarray,
    std: np.ndarray,
    masks: np.ndarray,
    centre_gaps: np.ndarray,
    background_gaps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(m, P) ``values`` and ``std`` of one output rescaled per row about the row's mean by the
    scale ``row_scales`` fits on the scale pairs (``rescaled``). Row sums are unchanged."""
    return rescaled(values, std, *row_scales(masks, centre_gaps, background_gaps))


def row_scales(
    masks: np.ndarray, centre_gaps: np.ndarray, background_gaps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(m,) each row's scale s and its posterior variance: the model's gaps on the scale pairs
    (``masks`` (m, n, P) mixed with background rows, ``background_gaps`` (m, n)) regressed on
    its gaps on the same coalitions at the centre (``centre_gaps`` (m, n): scored, so without
    error), each pair's game total fitted as in ``refined_values`` (a per-row slope on 2 |S| / P
    - 1). The estimate is shrunk toward 1 by a normal belief of standard deviation
    ``CENTRE_SCALE_PRIOR_STD`` and its standard error."""
    n_players = masks.shape[2]
    sizes = masks.sum(axis=2)
    predicted = np.array(centre_gaps, dtype=np.float64)
    gaps = np.array(background_gaps, dtype=np.float64)
    slopes = total_slopes(sizes, n_players)
    slope_square = np.sum(slopes**2, axis=1)
    fitted = 1
    if np.all(slope_square > 0):
        predicted -= along_total(predicted, slopes, slope_square)
        gaps -= along_total(gaps, slopes, slope_square)
        fitted = 2
    freedom = masks.shape[1] - fitted
    predicted_square = np.sum(predicted**2, axis=1)
    # The error variance is estimated from ``freedom`` degrees of freedom; as a weight it is
    # taken at the mean of what it may be, freedom / (freedom - 2) times the estimate (as
    # ``weighing_inflation`` does for the pairs), unbounded from two degrees down.
    measured = (predicted_square > 0) & (freedom > 2)
    safe_square = np.where(measured, predicted_square, 1.0)
    estimate = np.sum(predicted * gaps, axis=1) / safe_square
    residual = gaps - estimate[:, None] * predicted
    error_variance = np.sum(residual**2, axis=1) / max(freedom - 2, 1) / safe_square
    belief = CENTRE_SCALE_PRIOR_STD**2
    weight = np.where(measured, belief / (belief + error_variance), 0.0)
    return 1.0 + weight * (estimate - 1.0), weight * error_variance


def rescaled(
    values: np.ndarray, std: np.ndarray, scale: np.ndarray, scale_variance: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(m, P) ``values`` rescaled per row about the row's mean by ``scale`` (m,), and ``std``
    with the scale's posterior variance (m,) joined; the stated variance is otherwise kept."""
    deviation = values - values.mean(axis=1, keepdims=True)
    scaled = values + (scale - 1.0)[:, None] * deviation
    # The stated error stays the centre estimate's (not rescaled with it) plus the scale's: on
    # the embedding MLPs at 4d and 10d (5 rows each) the 80 % intervals covered 0.61-0.72 with
    # the error rescaled too, 0.85-0.91 as here, 0.77-0.85 unscaled.
    scaled_std = np.sqrt(std**2 + scale_variance[:, None] * deviation**2)
    return scaled, scaled_std


def along_total(left: np.ndarray, slopes: np.ndarray, slope_square: np.ndarray) -> np.ndarray:
    """(m, n) each row's least-squares fit of ``left`` (m, n) on its pairs' ``slopes`` (m, n)
    on the game's total (``total_slopes``; ``slope_square`` (m,) their sums of squares): the
    part of the pairs' gaps that a total of the row's own explains."""
    return slopes * (np.sum(slopes * left, axis=1) / slope_square)[:, None]


def efficiency_part(sizes: np.ndarray, total: np.ndarray, n_players: int) -> np.ndarray:
    """(m, n) the part of each pair's gap that efficiency fixes, (2 |S| / P - 1) * total, for
    coalition sizes (m, n) and the rows' (m,) totals: for an additive game the gap less it is
    2 c . phi (see the module docstring)."""
    return total_slopes(sizes, n_players) * total[:, None]


def centre_trial(
    background_gaps: np.ndarray,
    centre_gaps: np.ndarray,
    masks: np.ndarray,
    proxy_values: np.ndarray,
) -> CentreTrial:
    """``CentreTrial`` of one output from the proxy's pair gaps on the coalitions ``masks``
    (m, T, P): (m, T, n) mixed with each of n background rows, (m, T) with the centre; and the
    proxy's exact values (m, P) at the trial's rows.

    A pair moves ``refined_values``' estimate by c (y - share c . phi) / a to first order (its
    delta method): the gap less what efficiency fixes, less the share of the additive part the
    regression fits (each design's: ``GRAM_SAMPLED_SHARE``, ``CENTRE_GRAM_SAMPLED_SHARE``). The
    trial's phi is the proxy's exact values (the additive part of the game against the
    background; against the centre, that part of the centre's game, so that its additive bias
    counts as noise). The spread of those moves is each design's noise per pair. The centre's
    bias is the two games' difference on the same coalitions (``_bias_variance``), as it is and
    with each row's scale taken out."""
    n_players = masks.shape[2]
    _, a = size_distribution(n_players)
    sizes = masks.sum(axis=2)
    centred = masks - sizes[..., None] / n_players
    # What a pair's gap leaves once efficiency and each design's share of the additive part
    # are taken out ...
    fixed = efficiency_part(sizes, proxy_values.sum(axis=1), n_players)
    additive = 2 * np.einsum("mtj,mj->mt", centred, proxy_values)
    half_centred = 0.5 * centred / a
    background_left = background_gaps - (fixed + GRAM_SAMPLED_SHARE * additive)[..., None]
    centre_left = centre_gaps - (fixed + CENTRE_GRAM_SAMPLED_SHARE * additive)
    # ... and the pairs' game total, which refine fits (a shift along each pair's slope on it):
    # that takes out the centre's total r(x) - r(centre) where it differs from the
    # background's. So does the trial, per row, for each design and for the bias.
    slopes = total_slopes(sizes, n_players)
    slope_square = np.sum(slopes**2, axis=1)
    centre_shifted = np.array(centre_gaps, dtype=np.float64)
    background_shifted = background_gaps.mean(axis=2)
    if np.all(slope_square > 0):
        centre_left -= along_total(centre_left, slopes, slope_square)
        background_left -= along_total(background_left.mean(axis=2), slopes, slope_square)[
            ..., None
        ]
        centre_shifted -= along_total(centre_shifted, slopes, slope_square)
        background_shifted -= along_total(background_shifted, slopes, slope_square)
    mean_left = background_left.mean(axis=2)
    # Over all (coalition, background row) pairs: E[move^2] - E[move]^2 per value.
    background_square = np.mean(half_centred**2 * (background_left**2).mean(axis=2)[..., None], 1)
    background_mean = np.mean(half_centred * mean_left[..., None], axis=1)
    with_centre = half_centred * centre_left[..., None]
    # The bias: the two games' difference on the same coalitions. A design with scale pairs
    # rescales each row's values by how the model's gaps with background rows scale against
    # its gaps at the centre (``centre_scaled``), so the bias it keeps is the difference once
    # the centre's gaps take their row's scale, fitted here on the proxy's gaps the same way.
    # On `bench refinement`'s embedding tasks (2026-12-03, uncalibrated and weights-calibrated)
    # the proxy's centre games were 1.1-2.4 times as steep as its background games, and the
    # scale took 48-80 % of the bias variance. ``prefers_centre`` counts this bias for a design
    # with scale pairs: the calibrated d = 384 / 1,024 MLP contexts then keep the centre at 10d,
    # r 0.826 / 0.737 -> 0.924 / 0.826 (with background rows there they fell below 4d's 0.870 /
    # 0.777; the other contexts' designs are unchanged). The pairs' weights keep the bias as it
    # is: the proxy sees only part of the model's (``CENTRE_BIAS_WEIGHT``), and with the scaled
    # one the pairs weighed more and the uncalibrated forests' r fell 0.008 / 0.014 at 4d. The
    # stated interval counts the scaled one (``RefinementParts.interval_std``).
    centre_square = np.sum(centre_shifted**2, axis=1)
    row_scale = np.divide(
        np.sum(centre_shifted * background_shifted, axis=1),
        centre_square,
        out=np.ones_like(centre_square),
        where=centre_square > 0,
    )
    return CentreTrial(
        bias_variance=_bias_variance(centre_shifted - background_shifted, half_centred),
        background_variance=float(np.mean(background_square - background_mean**2)),
        centre_variance=float(np.mean(with_centre.var(axis=1, ddof=1))),
        scaled_bias_variance=_bias_variance(
            row_scale[:, None] * centre_shifted - background_shifted, half_centred
        ),
    )


def _bias_variance(difference: np.ndarray, half_centred: np.ndarray) -> float:
    """The mean squared bias per value of a game against another from their gaps'
    ``difference`` (m, T) on the same coalitions, whose moves of the values are
    ``half_centred`` (m, T, P) times it: on one coalition the difference has the bias for its
    mean and only the coalitions' noise (no background row drawn), so the squared mean over the
    coalitions less its sampling variance measures it, centred per row (refine's projection
    onto efficiency moves a row's constant gap onto its values). Its standard error is added:
    a bias too small to measure here still makes the background rows the better choice at a
    budget large enough, where refine must converge to the exact values."""
    moves = half_centred * difference[..., None]
    bias = moves.mean(axis=1)
    bias -= bias.mean(axis=1, keepdims=True)
    excess = bias**2 - moves.var(axis=1, ddof=1) / moves.shape[1]
    standard_error = excess.std() / np.sqrt(excess.size)
    return float(max(excess.mean(), 0.0) + standard_error)


@functools.lru_cache(maxsize=256)
def t_widening(n_pairs: int) -> float:
    """How much wider Student's t interval of ``n_pairs`` pairs' mean is than the normal one at
    the stated level. Cached: scipy's two ppf calls took 0.6 ms, 6 % of a 10-row refine at 4d
    (k401k boosting)."""
    return float(
        stats.t.ppf(0.5 + _INTERVAL / 2, n_pairs - 1) / stats.norm.ppf(0.5 + _INTERVAL / 2)
    )


# Pairs per chunk in ``refined_values``: a chunk's centred coalitions, their influences and
# its square are float arrays of this many cells per explained row at most (32 MB each).
PAIR_CHUNK_CELLS = 1 << 22


def pair_chunk(n_players: int) -> int:
    """How many pairs ``refined_values`` takes at a time for ``n_players`` players."""
    return max(1, PAIR_CHUNK_CELLS // n_players)


def refined_values(
    proxy_values: np.ndarray,
    proxy_pair_gaps: np.ndarray,
    model_pair_gaps: np.ndarray,
    masks: np.ndarray,
    total: np.ndarray,
    bias_variance: float = 0.0,
    sampled_share: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Refined values and their standard deviations for one output: the residual game's values
    regressed on the pairs (see the module docstring), added to the proxy's.

    Parameters
    ----------
    proxy_values : (m, P) the proxy's exact Shapley values.
    proxy_pair_gaps, model_pair_gaps : (m, n_pairs) g(first row) - g(second row), and f's.
    masks : (m, n_pairs, P) the pairs' coalitions: no pairs, or ``MIN_PAIRS`` at least (one
        pair has no spread to state).
    total : (m,) prediction - base value: what the refined values sum to.
    bias_variance : the mean squared bias of the pairs' game against the one asked for, added
        to each value's variance (``CentreTrial.bias_variance`` for pairs at the centre).
    sampled_share : the share of the pairs' own Gram in the regression's (None:
        ``GRAM_SAMPLED_SHARE``, pairs with background rows; ``CENTRE_GRAM_SAMPLED_SHARE`` at the
        centre).

    Returns
    -------
    (m, P) values and (m, P) standard deviations.
    """
    m, n_pairs, n_players = masks.shape
    if n_pairs == 0:
        residual_total = total - proxy_values.sum(axis=1)
        values = proxy_values + (residual_total / n_players)[:, None]
        return values, np.zeros_like(values)
    share = GRAM_SAMPLED_SHARE if sampled_share is None else sampled_share
    _, a = size_distribution(n_players)
    # A pair's residual gap less what efficiency fixes is centred . phi for an additive game ...
    # when the pairs' game has the total asked for. It need not: a pair's game against its
    # background row b has total r(x) - r(b), and the centre's r(x) - r(centre), which no row
    # of the context gives. So the pairs' mean total is fitted too, as a shift whose regressor
    # is the target's slope on the total; E[c slope] = 0 under the kernel, so it costs one
    # degree of freedom and no bias. Measured on `bench refinement`'s proposals and outputs
    # (2026-12-03, offline), mean r of the pairs alone at d / 2d / 4d / 10d: the 4 embedding
    # tasks at the centre 0.485 / 0.582 / 0.682 / 0.774 -> 0.533 / 0.624 / 0.713 / 0.791, and
    # merged with the zero-shot values 0.645 / 0.717 / 0.773 / 0.824 -> 0.667 / 0.736 / 0.787
    # / 0.830; the 50 real tables with background rows 0.803 / 0.845 / 0.900 / 0.950 -> 0.816 /
    # 0.850 / 0.902 / 0.951 (merged the same to 0.001). The shift's column takes the same mix
    # of sampled and expected Gram as the values': its sampled part alone (least squares for
    # the shift) gave the embeddings 0.679 / 0.743 / 0.791 / 0.831 merged, but is singular
    # where every pair halves the players.
    #
    # The kernel solves the values and that shift by the block inverse, and states the delta
    # method's spread of the pairs' moves (``kernels.pair_regression`` gives the formulas). With
    # the exact Gram alone that is the unbiased estimate's own spread; with the sampled one
    # alone, the fit's residuals (a sandwich).
    #
    # A row's pairs are taken a chunk at a time (``pair_chunk``): at once, their centred
    # coalitions and influences would be two float arrays of n_pairs x P (268 MB each at d =
    # 4,096 and budget 4d).
    #
    # Half of each value's variance is the row's mean (``POOLED_SHARE``): with few pairs a
    # value's own spread is too noisy to weigh it by (diabetes forest at budget d: r 0.978 per
    # value, 0.981 half-pooled).
    values = np.empty((m, n_players))
    std = np.empty((m, n_players))
    regress_pairs(
        np.ascontiguousarray(proxy_values, dtype=np.float64),
        np.ascontiguousarray(proxy_pair_gaps, dtype=np.float64),
        np.ascontiguousarray(model_pair_gaps, dtype=np.float64),
        np.ascontiguousarray(masks, dtype=np.bool_),
        np.ascontiguousarray(total, dtype=np.float64),
        float(share),
        float(a),
        expected_total_slope_square(n_players) / 4,
        pair_chunk(n_players),
        POOLED_SHARE,
        t_widening(n_pairs),
        float(bias_variance),
        values,
        std,
    )
    return values, std


# Refine's optional pooled residual (``refine(..., pool_rows=True)``): a linear function of the
# design columns fitted to what the proxy misses on the *other* explained rows' pairs joins
# the proxy of each row. Rows are split into this many folds (row i in fold i % folds); a row's
# function is fitted on the other folds, so its own pairs stay independent of it and its
# regression stays unbiased. Ridge strengths are tried at these multiples of the features'
# mean square per row, and none (no pooled function) wins unless a strength lowers the
# held-out folds' squared gap error. Measured offline on `bench refinement`'s proposals and
# outputs (10 rows a call, leave one row out, 2026-12-07), mean r at d / 2d / 4d / 10d: d =
# 384 MLP 0.686 / 0.794 / 0.866 / 0.933 -> 0.822 / 0.885 / 0.903 / 0.940 (2 seeds); d = 384
# forest 0.717 / 0.766 / 0.798 / 0.816 -> 0.715 / 0.765 / 0.799 / 0.816; d = 1,024 forest
# unchanged to 0.001; 50 real-table cases 0.938 / 0.942 / 0.952 / 0.967 -> 0.937 / 0.942 /
# 0.955 / 0.968. Shifting the zero-shot prior by the pooled function's values as well gained
# the MLP more (0.935 at 4d) but lost the d = 384 forest 0.02-0.06 and the real tables 0.02 at
# d: only the proxy takes it. In `bench refinement` itself (2026-12-08, one seed): d = 384 MLP
# 0.680 / 0.791 / 0.864 / 0.933 -> 0.824 / 0.892 / 0.903 / 0.940, real tables 0.941 / 0.945 /
# 0.955 / 0.969 -> 0.941 / 0.945 / 0.958 / 0.970, forests and the d = 1,024 MLP within 0.006.
# Five folds instead of ten lost the d = 384 MLP 0.007 at d (0.822 -> 0.815, 2 seeds, offline).
POOLED_FOLDS = 10
POOLED_RIDGE_STRENGTHS = np.logspace(-4.0, 4.0, 9)
# Rows whose pair features are built at once (float64 cells: 2 MiB; one row at least). Ten rows
# of d = 384 at budget 4d at once (24 MB an array) took 0.25-0.45 s on fresh memory on the
# 2-core VM, 0.035 s on reused memory; one row at a time 0.03 s every time (2026-12-08).
POOLED_FEATURE_CELLS = 1 << 18


def pooled_fold(n_rows: int) -> np.ndarray:
    """(n_rows,) int64: the fold of each explained row of a pooled refine call."""
    return np.arange(n_rows, dtype=np.int64) % min(max(n_rows, 1), POOLED_FOLDS)


def pair_features(
    design: np.ndarray,
    reference_design: np.ndarray,
    picks: np.ndarray,
    masks: np.ndarray,
    player_of_column: np.ndarray,
) -> np.ndarray:
    """(m, n_pairs, C) features whose product with any w (C,) is the pair gaps of the function
    linear in the design columns, w . row: a pair's first row takes the explained row's
    columns in its coalition and the reference row's elsewhere, its second row the reverse.

    design : (m, C) the explained rows' standardised design; reference_design : the rows the
    pairs mix with (picks (m, n_pairs) of them); masks : (m, n_pairs, P) coalitions;
    player_of_column : (C,) the player of each design column.
    """
    signs = np.where(masks[:, :, player_of_column], 1.0, -1.0)
    return (design[:, None, :] - reference_design[picks]) * signs


@dataclass
class PooledMoments:
    """Per fold, the Gram of the pairs' features and their products with each output's residual
    gaps (model gap - proxy gap), gathered slice by slice of a refine call."""

    grams: np.ndarray  # (F, C, C)
    moments: np.ndarray  # (F, C, K)
    feature_squares: float = 0.0

    @classmethod
    def empty(cls, n_folds: int, n_columns: int, n_outputs: int) -> "PooledMoments":
        return cls(
            np.zeros((n_folds, n_columns, n_columns)), np.zeros((n_folds, n_columns, n_outputs))
        )

    def add(self, folds: np.ndarray, features: np.ndarray, residual_gaps: np.ndarray) -> None:
        """Add rows (of ``folds``) with their (m, n_pairs, C) ``features`` and (m, n_pairs, K)
        ``residual_gaps``."""
        for fold in np.unique(folds):
            mine = folds == fold
            stacked = features[mine].reshape(-1, features.shape[2])
            self.grams[fold] += stacked.T @ stacked
            self.moments[fold] += stacked.T @ residual_gaps[mine].reshape(-1, self.moments.shape[2])
            self.feature_squares += float(np.einsum("ij,ij->", stacked, stacked))


@dataclass
class PooledDesign:
    """The pairs' features (``pair_features``) of a pooled refine call's explained rows, built a
    few rows at a time, or never where every row's pairs share their coalitions and mix with
    one reference row (the centre): features are then signs (n_pairs, C) times the row's
    difference from that row, so that a row's Gram is the signs' Gram times the outer product
    of that difference, and its gaps the signs times a vector. At d = 1,024 and budget 4d
    (ten rows) the features and their Grams took 0.96 s of a 2.9 s refine (2026-12-08).

    design : (m, C) standardised; reference_design, picks, masks, player_of_column as for
    ``pair_features``.
    """

    design: np.ndarray
    reference_design: np.ndarray
    picks: np.ndarray
    masks: np.ndarray
    player_of_column: np.ndarray
    signs: np.ndarray | None = None
    signs_gram: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        design: np.ndarray,
        reference_design: np.ndarray,
        picks: np.ndarray,
        masks: np.ndarray,
        player_of_column: np.ndarray,
        shared: bool | None = None,
    ) -> "PooledDesign":
        """``shared`` None: whether the rows share coalitions and reference row, found out."""
        if shared is None:
            # Read until the first difference, with no array the size of the masks.
            shared = reference_design.shape[0] == 1 and bool(
                rows_share_coalitions(np.ascontiguousarray(masks, dtype=np.bool_))
            )
        if not shared:
            return cls(design, reference_design, picks, masks, player_of_column)
        signs = np.where(masks[0][:, player_of_column], 1.0, -1.0)
        return cls(design, reference_design, picks, masks, player_of_column, signs, signs.T @ signs)

    def _rows_at_once(self) -> int:
        return max(1, POOLED_FEATURE_CELLS // max(1, self.masks.shape[1] * self.design.shape[1]))

    def add(
        self, moments: PooledMoments, folds: np.ndarray, rows: slice, residual_gaps: np.ndarray
    ) -> None:
        """Add ``rows`` (of ``folds``, every row's) with their (g, n_pairs, K) residual gaps."""
        if self.signs is None:
            step = self._rows_at_once()
            for first in range(rows.start, rows.stop, step):
                some = slice(first, min(rows.stop, first + step))
                within = slice(first - rows.start, some.stop - rows.start)
                moments.add(folds[some], self.features(some), residual_gaps[within])
            return
        deltas = self.design[rows] - self.reference_design[0]
        signed = np.matmul(self.signs.T, residual_gaps)  # (g, C, K)
        for fold in np.unique(folds[rows]):
            mine = folds[rows] == fold
            moments.grams[fold] += self.signs_gram * (deltas[mine].T @ deltas[mine])
            moments.moments[fold] += np.einsum("gc,gck->ck", deltas[mine], signed[mine])
        moments.feature_squares += self.masks.shape[1] * float(np.sum(deltas * deltas))

    def features(self, rows: slice) -> np.ndarray:
        return pair_features(
            self.design[rows],
            self.reference_design,
            self.picks[rows],
            self.masks[rows],
            self.player_of_column,
        )

    def gaps(self, rows: slice, weights: np.ndarray) -> np.ndarray:
        """(g, n_pairs, K) pair gaps of the rows' linear functions ``weights`` (g, C, K)."""
        if self.signs is None:
            step = self._rows_at_once()
            return np.concatenate(
                [
                    np.matmul(
                        self.features(slice(first, min(rows.stop, first + step))),
                        weights[first - rows.start : min(rows.stop, first + step) - rows.start],
                    )
                    for first in range(rows.start, rows.stop, step)
                ]
            )
        deltas = self.design[rows] - self.reference_design[0]
        return np.matmul(self.signs, deltas[:, :, None] * weights)


def pooled_weights(moments: PooledMoments, n_rows: int) -> np.ndarray:
    """(F, C, K) per fold, each output's pooled linear function of the design columns: ridge
    fitted on the other folds' pairs, the strength (one per output, shared by the folds) the
    one that errs least on the held-out folds' gaps, or zeros where none beats no function."""
    grams, targets = moments.grams, moments.moments
    n_folds, n_columns, n_outputs = targets.shape
    weights = np.zeros_like(targets)
    if n_folds < 2 or moments.feature_squares <= 0.0:
        return weights
    scale = moments.feature_squares / n_columns / max(n_rows, 1)
    total_gram, total_target = grams.sum(axis=0), targets.sum(axis=0)
    fitted = np.zeros((len(POOLED_RIDGE_STRENGTHS), n_folds, n_columns, n_outputs))
    # The held-out folds' squared gap error less its value with no function (w = 0).
    held_out_gain = np.zeros((len(POOLED_RIDGE_STRENGTHS), n_outputs))
    for fold in range(n_folds):
        eigenvalues, vectors = np.linalg.eigh(total_gram - grams[fold])
        rotated = vectors.T @ (total_target - targets[fold])  # (C, K)
        for s, strength in enumerate(POOLED_RIDGE_STRENGTHS * scale):
            w = vectors @ (rotated / np.maximum(eigenvalues + strength, strength)[:, None])
            fitted[s, fold] = w
            held_out_gain[s] += np.einsum("ck,ck->k", w, grams[fold] @ w) - 2.0 * np.einsum(
                "ck,ck->k", w, targets[fold]
            )
    for k in range(n_outputs):
        best = int(np.argmin(held_out_gain[:, k]))
        if held_out_gain[best, k] < 0.0:
            weights[:, :, k] = fitted[best, :, :, k]
    return weights


def pooled_values(
    weights: np.ndarray,
    design: np.ndarray,
    background_mean: np.ndarray,
    player_of_column: np.ndarray,
    n_players: int,
) -> np.ndarray:
    """(m, P) exact interventional values of each row's linear function w_i . row (``weights``
    (m, C)) against the background (``background_mean`` (C,) of its standardised design)."""
    per_column = weights * (design - background_mean)
    values = np.zeros((design.shape[0], n_players))
    np.add.at(values.T, player_of_column, per_column.T)
    return values


def weighing_inflation(n_pairs: int) -> float:
    """What the refined variance (``refined_values``' std squared, widened to Student's t
    interval) is multiplied by where it weighs the refined values against the prior: to the
    variance of Student's t predictive distribution, (n - 1) / (n - 3) times the estimated one,
    unbounded (the pairs weigh nothing) from three pairs down. An interval wants the t quantile;
    a precision weight wants the variance, and a spread estimated from 1-2 degrees of freedom is
    often far too small (half the time below 0.455 of the true one at one): it handed a few noisy
    pairs most of the weight. On `bench refinement`'s 50 real-table cases (2026-12-02, the
    merge recomputed from refine's parts), refine at d fell more than 0.005 below its own
    zero-shot answer in 5 / 2 / 6 cases (uncalibrated / weights / zoo refitted) before, 2 / 1 / 1
    with this (at 2d 5 / 3 / 3 -> 3 / 1 / 3); mean r at d 0.9306 / 0.9396 / 0.9576 -> 0.9306 /
    0.9399 / 0.9592, at 4d and 10d the same to 1e-4."""
    if n_pairs <= 3:
        return np.inf
    return (n_pairs - 1) / (n_pairs - 3) / t_widening(n_pairs) ** 2


def prior_variance_ratio(
    prior_values: np.ndarray, prior_std: np.ndarray, values: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """(m, 1) how much larger each row's zero-shot error is than its stated uncertainty says,
    measured against the unbiased refined values: E (refined - prior)^2 = prior's squared error
    + the refined variance (empirical Bayes over the row's P values). At least
    ``MIN_PRIOR_VARIANCE_RATIO``, so that a few lucky pairs cannot make the prior certain."""
    excess = np.mean((values - prior_values) ** 2 - std**2, axis=1, keepdims=True)
    stated = np.mean(prior_std**2, axis=1, keepdims=True)
    ratio = np.maximum(excess, 0.0) / np.maximum(stated, 1e-300)
    return np.maximum(ratio, MIN_PRIOR_VARIANCE_RATIO)


def shrunk_variance_ratio(
    measured: np.ndarray,
    n_pairs: int,
    n_players: int,
    prior_pairs_per_player: float,
    prior_share: float,
) -> np.ndarray:
    """``prior_variance_ratio``'s measurement from ``n_pairs`` pairs, shrunk toward
    ``prior_share`` (1: the stated uncertainty taken as right) by weighing it as ``n_pairs``
    against ``prior_pairs_per_player`` * ``n_players`` pairs: a few pairs measure the ratio with
    much noise."""
    against = n_pairs + prior_pairs_per_player * n_players
    evidence = n_pairs / against if against > 0 else 1.0
    shrunk = (1.0 - evidence) * prior_share + evidence * measured
    return np.maximum(shrunk, MIN_PRIOR_VARIANCE_RATIO)


def merged_with_prior(
    prior_values: np.ndarray,
    prior_std: np.ndarray,
    values: np.ndarray,
    std: np.ndarray,
    total: np.ndarray,
    n_pairs: int,
    prior_pairs_per_player: float,
    prior_share: float,
    error_reference: np.ndarray | None = None,
    interval_std: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision-weighted mean of the zero-shot estimate (the prior) and the refined one, whose
    errors are independent (the refined one's is the pairs' sampling error alone), projected
    back onto efficiency like the zero-shot combination: each row's gap to ``total`` moves onto
    its values in proportion to their variances. All arrays (m, P) but ``total`` (m,);
    ``std`` is ``refined_values``'s, from ``n_pairs`` pairs; ``prior_pairs_per_player`` is how
    much the belief that the prior's error is ``prior_share`` of its stated variance counts
    (``shrunk_variance_ratio``; 0: not at all).

    The weights take the prior's rescaled variance shrunk toward ``prior_share`` of the stated
    one (``shrunk_variance_ratio``); the stated error takes it as measured. Intervals from the
    shrunk variance instead (no less than the stated one, each value's squared gap less the
    sampling variance) covered 0.79 on the real tables, but where the zero-shot intervals were
    overconfident, 0.61-0.63 at budgets 2d and 4d on the tests' synthetic interaction (zero-shot
    0.40) and 0.67-0.75 at d and 2d on the embedding MLPs (zero-shot 0.45-0.53); as measured,
    0.77-0.81 and 0.93-0.96 there, and 0.82-0.84 at d to 4d on the real tables.

    ``error_reference`` (m, P), default ``values``: the estimate of the truth each prior value's
    squared gap to which bounds its error in the stated one. With scale pairs it is the refined
    values rescaled (``centre_scaled``): the centre's own are off by its game's scale, and their
    gaps to the prior overstated its error: on `bench refinement`'s embedding tasks (2026-12-03)
    the 80 % coverage at 4d / 10d went from 0.89 / 0.90 to 0.86 / 0.87, every value the same.

    ``interval_std`` (m, P), default ``std``: the refined values' standard deviation as the
    stated error counts it (``RefinementParts.interval_std``). With scale pairs it holds the
    centre's bias that the rows' scales leave, while the weights keep the whole bias: the proxy
    sees only part of the model's (``CENTRE_BIAS_WEIGHT``), and with the scaled bias in the
    weights too the uncalibrated embedding forests lost r 0.008 / 0.014 at 4d. Offline on `bench
    refinement`'s 4 embedding tasks (2026-12-03, their proposals and outputs), the 80 % coverage
    at 4d / 10d went from 0.86 / 0.87 to 0.84 / 0.85 (weights-calibrated 0.87 / 0.87 to 0.86 /
    0.85), every value the same."""
    measured = prior_variance_ratio(prior_values, prior_std, values, std)
    prior_variance = prior_std**2 * measured
    weighed = prior_std**2 * shrunk_variance_ratio(
        measured, n_pairs, values.shape[1], prior_pairs_per_player, prior_share
    )
    inflation = weighing_inflation(n_pairs)
    if np.isinf(inflation):
        # Too few pairs to weigh: the prior's values, its variance the combined one.
        share = np.zeros_like(values)
        combined = weighed.copy()
    else:
        variance = std**2 * inflation
        # The refined value's share is the prior's variance over both (1 when both are zero).
        both = weighed + variance
        share = np.divide(weighed, both, out=np.ones_like(both), where=both > 0)
        combined = share * variance  # = 1 / (1 / weighed + 1 / variance)
    merged = share * values + (1.0 - share) * prior_values
    total_combined = combined.sum(axis=1, keepdims=True)
    proportion = np.divide(
        combined,
        total_combined,
        out=np.full_like(combined, 1.0 / values.shape[1]),
        where=total_combined > 0,
    )
    merged += proportion * (total - merged.sum(axis=1))[:, None]
    # The merged error is share * refined error + (1 - share) * prior error, the prior's taken
    # per value as the larger of its rescaled variance and that value's squared gap to the
    # unbiased refined value (a row-level scale alone covered 50-69 % on a forest at budget d).
    reference = values if error_reference is None else error_reference
    prior_error = np.maximum((reference - prior_values) ** 2, prior_variance)
    pairs_error = std if interval_std is None else interval_std
    error = share**2 * pairs_error**2 + (1.0 - share) ** 2 * prior_error
    return merged, np.sqrt(error * (1.0 - proportion))
