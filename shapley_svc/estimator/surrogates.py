"""The surrogate zoo: cheap models fitted on (context rows, model outputs), explained exactly.

Each surrogate is fitted to one output column and explains itself exactly (closed forms or
TreeSHAP) or, for logistic surrogates above a few features, by the per-reference rescale rule
(DeepSHAP's, for one link), so its attributions cost nothing of the user's model. Which
surrogate to trust in a context is what the meta-learned combiner decides.

Regularisation strengths are fixed multiples of the row count rather than tuned by
cross-validation: how credit is split among correlated features is not identifiable from the fit,
so the zoo offers a weakly and a strongly regularised variant and lets the combiner choose. The
one exception is a model in the logistic member's class: there the fit is identified, and a
refit without the penalty's shrinkage stands in for the member (``SurrogateKind.make_in_class``).
"""

import enum
import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.linalg import solve as scipy_solve
from scipy.special import expit, softmax
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold

from shapley_svc.errors import CancelledError
from shapley_svc.estimator.groups import Players
from shapley_svc.kernels.coalitions import (
    additive_pair_gaps,
    fill_paired_rows,
    softmax_pair_gaps,
)
from shapley_svc.kernels.enumeration import shapley_from_coalition_values
from shapley_svc.kernels.link_additive import (
    sigmoid_additive_rescaled,
    softmax_additive_coalition_values,
    softmax_additive_path,
)
from shapley_svc.kernels.product_games import product_kernel_values, quadrature
from shapley_svc.kernels.splines import uniform_cubic_spline_terms
from shapley_svc.reference import TreeBackground
from shapley_svc.reference.closed_form import (
    LOGISTIC_ROWS_PER_TABLE,
    linear_values,
    logistic_additive_values,
)

RIDGE_ALPHAS = np.logspace(-4, 3, 15)
# Additive terms whose variances add to more than this many times their sum's variance cancel:
# most of each is undone by another (see LinearFit).
CANCELLING_TERMS = 2.0
SPLINE_KNOTS = 6
DEGREE = 3
TREE_MAX_DEPTH = 6
# Above this many features a logistic surrogate is attributed by the per-reference rescale rule
# (r >= 0.996 against its exact values on breast cancer) instead of 2^d coalitions.
LOGISTIC_EXACT_FEATURES = 6
# A linear or link member that reproduces the outputs to within this share of their variance out
# of fold is in the model's class; the combiner then takes it alone (``member_weights``), and a
# link member's in-class refit must pass the same test (``SurrogateKind.make_in_class``).
EXACT_FIT_UNEXPLAINED = 1e-3
# The in-class refit's L2 penalty per row: only enough to keep the solver finite on saturated
# outputs. At the zoo's 0.002 a logistic model's own member kept R^2 0.981 out of fold on k401k
# (collinear age, age^2 columns need large coefficients of opposite sign) and r 0.950 against
# the model's exact values; refitted at 1e-8 it fits to 1 - 3e-12 and scores r 1.000. At 1e-6
# a softmax refit still stopped 2e-4 from a softmax model's outputs, at 1e-8 2e-6.
IN_CLASS_STRENGTH = 1e-8
# An in-class member is the whole answer, so it enumerates every coalition while that costs at
# most this many link evaluations per explained row (2**d x background rows, x classes): d = 12
# against 100 background rows, 5.8 ms a row here (1.6 ms at d = 10), where the rescale rule takes
# 3 us but scored r 0.995 on k401k (d = 9) and 0.963 on fishing (d = 11, 4 classes).
IN_CLASS_ENUMERATION_EVALUATIONS = (1 << 12) * 100
# From this many rows, fit quality is measured on one held-out third instead of three folds:
# a third of 900 rows already pins R^2 down, and it saves two refits of every surrogate.
HOLDOUT_MIN_ROWS = 900
# Fit quality is measured over this many folds, so a context needs at least as many rows.
OUT_OF_FOLD_SPLITS = 3
# Wide inputs (embeddings): splines on at most this many columns, linear terms on the rest. A
# full basis at d = 1,024 has 8,192 columns, whose fit costs minutes; embedding models are
# mostly smooth along directions that a linear term per column already follows.
SPLINE_MAX_FEATURES = 64
# The forest tries at most this many columns per split (half of them below 2x this): at d = 1,024
# half the columns per split made the forest 9x slower to fit than at 64.
FOREST_MAX_SPLIT_FEATURES = 64
# The kernel-machine member: centres (seeded rows), gamma x d per standardised column and ridge
# penalties per row, chosen on a held-out fifth. A prototype on `bench combiner`'s 448
# enumerated cases (2026-12-03) chose all four gammas and penalties across cases.
KERNEL_CENTRES = 500
KERNEL_GAMMAS = (0.12, 0.4, 1.2, 4.0)
KERNEL_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0)
# The ANOVA kernel machine: centres, gammas per standardised column and pair strengths.
ANOVA_CENTRES = 500
ANOVA_GAMMAS = (0.1, 0.3, 1.0, 3.0)
ANOVA_STRENGTHS = (0.5, 2.0, 8.0, 32.0)
# Bytes a fit may use for its design matrix and the solver's copies of it; beyond it the
# surrogate is fitted on a seeded subsample of the rows (see ``rows_within_budget``).
DEFAULT_FIT_MEMORY_BYTES = 1 << 30


class Surrogate:
    """Fit on standardised rows and one output column; attribute rows against a background.

    ``predict`` and ``attributions`` are on the output's own scale (probability or value).
    After ``fit``, ``prepare`` folds in the background once (its means, its terms, per-leaf
    tables); ``attributions`` then takes only the rows to explain.
    """

    def fit(self, Z: np.ndarray, target: np.ndarray, seed: int) -> "Surrogate":
        raise NotImplementedError

    def predict(self, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, background: np.ndarray, players: Players | None = None) -> "Surrogate":
        """Hold what ``attributions`` needs of the (n_background, d) standardised background
        rows, for the game of ``players`` (None: one player per column)."""
        raise NotImplementedError

    def attributions(self, Z: np.ndarray) -> np.ndarray:
        """(m, P) interventional Shapley values of the surrogate's own output for the (m, d)
        standardised rows ``Z``: P = d, or the number of groups of the prepared players."""
        raise NotImplementedError

    def attributions_shared(self, Z: np.ndarray, shared: dict) -> np.ndarray:
        """``attributions``, for surrogates that share work across outputs through ``shared``
        (one dict per call and rows)."""
        return self.attributions(Z)

    def proxy_outputs(self, Z: np.ndarray, shared: dict) -> np.ndarray:
        """(m,) the surrogate's output on the (m, d) standardised rows ``Z`` up to a constant,
        from what ``prepare`` leaves (all a loaded explainer holds): refinement needs only
        differences between rows. ``shared`` as in ``attributions_shared``."""
        return self.predict(Z)

    def pair_cache_bytes(self) -> int:
        """Bytes ``pair_gaps`` has made of the background and keeps for later calls."""
        return 0

    def release_pair_cache(self) -> None:
        """Forget what ``pair_cache_bytes`` counts (made again when needed)."""

    def pair_gaps(self, Z: np.ndarray, pairs: "Pairs", shared: dict) -> np.ndarray:
        """(m, n_pairs) the surrogate's output on each pair's first mixed row minus its second
        (see ``shapley_svc.kernels.coalitions``), for the (m, d) standardised rows ``Z``. This
        general way builds the mixed rows; members override it with closed forms that do not."""
        m, n_pairs, _ = pairs.masks.shape
        mixed = np.empty((m * 2 * n_pairs, Z.shape[1]))
        fill_paired_rows(
            Z,
            pairs.background,
            pairs.player_of_column,
            pairs.masks,
            pairs.picks,
            0,
            mixed.reshape(m, 2 * n_pairs, Z.shape[1]),
        )
        outputs = self.proxy_outputs(mixed, shared).reshape(m, n_pairs, 2)
        return outputs[:, :, 0] - outputs[:, :, 1]


@dataclass(frozen=True)
class Pairs:
    """Refinement's coalition pairs in the design space the surrogates see.

    background : (n_background, d) standardised rows the pairs mix the explained rows with.
    player_of_column : (d,) int64 player of each design column.
    masks : (m, n_pairs, P) bool coalitions; picks : (m, n_pairs) int64 rows of ``background``.
    prepared : ``background`` is the one ``prepare`` saw, whose terms members may have kept;
        False for other rows (refinement's centre of the background).
    """

    background: np.ndarray
    player_of_column: np.ndarray
    masks: np.ndarray
    picks: np.ndarray
    prepared: bool = True


def _additive_pair_gaps(surrogate: "Surrogate", Z: np.ndarray, pairs: Pairs) -> np.ndarray:
    """Pair gaps of a surrogate additive over the players: from its attributions alone."""
    out = np.empty(pairs.picks.shape)
    additive_pair_gaps(
        np.ascontiguousarray(surrogate.attributions(Z)),
        np.ascontiguousarray(surrogate.attributions(pairs.background)),
        pairs.masks,
        pairs.picks,
        out,
    )
    return out


class UniformCubicSplines:
    """Cubic B-spline basis on uniform knots per column, continued linearly beyond the fit range.

    The same basis as scikit-learn's ``SplineTransformer(n_knots, degree=3, knots="uniform",
    extrapolation="linear")``, evaluated in closed form for all columns at once: scikit-learn
    calls one scipy ``BSpline`` per column, which costs milliseconds on a single row.
    """

    def __init__(self, n_knots: int):
        self.n_knots = n_knots

    @property
    def n_splines(self) -> int:
        return self.n_knots + DEGREE - 1

    def fit(self, Z: np.ndarray) -> "UniformCubicSplines":
        self.low_ = Z.min(axis=0)
        self.high_ = Z.max(axis=0)
        self.step_ = (self.high_ - self.low_) / (self.n_knots - 1)
        return self

    def transform(self, Z: np.ndarray) -> np.ndarray:
        """(m, d * n_splines): column j's splines in block j."""
        m, d = Z.shape
        n_splines = self.n_splines
        varying = self.step_ > 0
        step = np.where(varying, self.step_, 1.0)
        inside = np.clip(Z, self.low_, self.high_)
        # Position in knot intervals from the first (extended) knot, DEGREE intervals below low.
        position = (inside - self.low_) / step + DEGREE
        interval = np.minimum(np.floor(position).astype(np.int64), self.n_knots + DEGREE - 2)
        u = position - interval
        # The four cardinal cubic pieces non-zero here: splines interval-3 to interval.
        pieces = (
            np.stack(
                [(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3],
                axis=-1,
            )
            / 6.0
        )
        basis = np.zeros((m, d, n_splines))
        rows, cols = np.indices((m, d))
        for offset in range(4):
            index = interval - DEGREE + offset
            basis[rows, cols, index] += pieces[..., offset]
        # Linear continuation beyond the range: slopes of the boundary splines at the boundary.
        below, above = Z < self.low_, Z > self.high_
        if below.any() or above.any():
            edge_slope = np.array([-0.5, 0.0, 0.5]) / step[:, None]  # d/dx of pieces at u=0
            below_distance = np.where(below, Z - self.low_, 0.0)
            above_distance = np.where(above, Z - self.high_, 0.0)
            basis[:, :, :DEGREE] += below_distance[:, :, None] * edge_slope[None]
            basis[:, :, -DEGREE:] += above_distance[:, :, None] * edge_slope[None]
        basis[:, ~varying, :] = 0.0
        return basis.reshape(m, d * n_splines)

    def terms(self, Z: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """(m, d, K) each column's term, ``transform(Z)`` times ``coef`` (K, d, n_splines)
        column block by column block, without building the basis."""
        out = np.empty((Z.shape[0], Z.shape[1], coef.shape[0]))
        uniform_cubic_spline_terms(
            np.ascontiguousarray(Z, dtype=np.float64),
            *(
                np.ascontiguousarray(a, dtype=np.float64)
                for a in (self.low_, self.high_, self.step_)
            ),
            np.ascontiguousarray(coef, dtype=np.float64),
            out,
        )
        return out


class AdditiveBasis:
    """Cubic splines on up to ``SPLINE_MAX_FEATURES`` columns, a linear term on each other one.

    With more columns than that, the splines go to the columns most associated with the target
    (linearly or through its square, so that a symmetric effect is not missed) and the basis
    stays about ``d + 512`` columns wide. Columns: the spline blocks first, then the linear ones.

    A column with two values in the fit rows (an indicator: of a category, of a missing value)
    gets a linear term: on two points a spline is a line, and its eight basis columns would
    only widen the fit (a table's one-hot levels made the spline fits 3x wider than the table).
    """

    def fit(self, Z: np.ndarray, target: np.ndarray) -> "AdditiveBasis":
        d = Z.shape[1]
        low, high = Z.min(axis=0), Z.max(axis=0)
        curved = np.flatnonzero(~np.all((Z == low) | (Z == high), axis=0))
        if curved.size <= SPLINE_MAX_FEATURES:
            spline_columns = curved
        else:
            centred = target - target.mean()
            candidates = Z[:, curved]
            scores = np.abs(_correlations(candidates, centred)) + np.abs(
                _correlations(candidates**2, centred)
            )
            chosen = np.argsort(-scores, kind="stable")[:SPLINE_MAX_FEATURES]
            spline_columns = np.sort(curved[chosen])
        self.spline_columns_ = spline_columns
        self.linear_columns_ = np.setdiff1d(np.arange(d), spline_columns)
        self.splines_ = UniformCubicSplines(SPLINE_KNOTS).fit(Z[:, spline_columns])
        return self

    def term_blocks(self) -> list[np.ndarray]:
        """The columns of ``transform``'s design that make each input column's term."""
        n_splines = self.splines_.n_splines
        spline_blocks = [
            np.arange(c * n_splines, (c + 1) * n_splines) for c in range(self.spline_columns_.size)
        ]
        start = self.spline_columns_.size * n_splines
        linear_blocks = [np.array([start + c]) for c in range(self.linear_columns_.size)]
        return spline_blocks + linear_blocks

    def transform(self, Z: np.ndarray) -> np.ndarray:
        splines = self.splines_.transform(Z[:, self.spline_columns_])
        if self.linear_columns_.size == 0:
            return splines
        return np.hstack([splines, Z[:, self.linear_columns_]])

    def terms(self, Z: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """Each column's additive term: (m, d) for coef (p,), (m, d, K) for coef (K, p)."""
        coef = np.atleast_2d(coef)
        n_classes = coef.shape[0]
        m, d = Z.shape
        n_spline_columns = self.spline_columns_.size
        n_spline_coef = n_spline_columns * self.splines_.n_splines
        terms = np.empty((m, d, n_classes))
        if n_spline_columns:
            terms[:, self.spline_columns_] = self.splines_.terms(
                Z[:, self.spline_columns_],
                coef[:, :n_spline_coef].reshape(n_classes, n_spline_columns, -1),
            )
        terms[:, self.linear_columns_] = (
            Z[:, self.linear_columns_, None] * coef[:, n_spline_coef:].T[None]
        )
        return terms[:, :, 0] if n_classes == 1 else terms


def _correlations(Z: np.ndarray, centred_target: np.ndarray) -> np.ndarray:
    """Pearson r of each column with the (centred) target; 0 for constant columns."""
    centred = Z - Z.mean(axis=0)
    spread = np.sqrt((centred**2).sum(axis=0) * (centred_target @ centred_target))
    return np.divide(centred_target @ centred, spread, out=np.zeros(Z.shape[1]), where=spread > 0)


class LinearFit:
    """Least squares with an unpenalised intercept and a ridge penalty chosen by exact
    leave-one-out error over ``RIDGE_ALPHAS`` (generalised cross-validation).

    ``term_blocks``: the design's columns grouped into the additive terms they make (one block
    per input column). When the fit of the least error splits its prediction into terms that
    cancel (their variances add to more than ``CANCELLING_TERMS`` times their sum's), the
    penalty is the largest whose leave-one-out error is within one standard error of the least
    (the "one-standard-error rule"): among fits that predict alike, the more penalised one.
    Only with more rows than columns: below that, the columns are linearly dependent on the
    rows whatever the data, so terms that cancel there need not be near-copies. On fewer rows
    than columns the rule took a held-out linear embedding task (113 x 164) from r 0.759 to
    0.708; restricted, the other 24 held-out embedding tasks and bench combiner's 588 cases
    give the same values as before.

    The fit goes through the eigendecomposition of the smaller Gram matrix (p x p, or n x n when
    there are fewer rows than columns), which costs one matrix product and one symmetric
    eigensolve: at n = 10,000 and p = 1,024, 0.8 s against RidgeCV's 6.7 s (measured).
    """

    def __init__(self, term_blocks: list[np.ndarray] | None = None):
        self.term_blocks = term_blocks

    def fit(self, design: np.ndarray, target: np.ndarray) -> "LinearFit":
        mean_x, mean_y = design.mean(axis=0), float(target.mean())
        centred = design - mean_x
        y = target - mean_y
        n, p = centred.shape
        if n >= p:
            eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
        else:
            eigenvalues, vectors = np.linalg.eigh(centred @ centred.T)
        keep = eigenvalues > max(eigenvalues.max(), 0.0) * 1e-12
        eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
        singular = np.sqrt(eigenvalues)
        # Left singular vectors U (n x r) of the centred design.
        left = centred @ vectors / singular if n >= p else vectors
        projected = left.T @ y
        leverage_basis = left**2
        errors, standard_errors = np.empty(RIDGE_ALPHAS.size), np.empty(RIDGE_ALPHAS.size)
        for a, alpha in enumerate(RIDGE_ALPHAS):
            shrink = eigenvalues / (eigenvalues + alpha)
            residual = y - left @ (shrink * projected)
            leverage = 1.0 / n + leverage_basis @ shrink
            squared = (residual / (1.0 - leverage)) ** 2
            errors[a], standard_errors[a] = squared.mean(), squared.std() / np.sqrt(n)
        best = int(np.argmin(errors))

        def coefficients(alpha: float) -> np.ndarray:
            weights = projected * singular / (eigenvalues + alpha)
            if n >= p:
                return vectors @ weights
            return centred.T @ (left @ (weights / singular))

        self.alpha_ = float(RIDGE_ALPHAS[best])
        self.coef_ = coefficients(self.alpha_)
        if (
            self.term_blocks is not None
            and n > p
            and _terms_cancel(centred, self.coef_, self.term_blocks)
        ):
            best = int(np.flatnonzero(errors <= errors[best] + standard_errors[best]).max())
            self.alpha_ = float(RIDGE_ALPHAS[best])
            self.coef_ = coefficients(self.alpha_)
        self.intercept_ = mean_y - float(mean_x @ self.coef_)
        return self

    def predict(self, design: np.ndarray) -> np.ndarray:
        return design @ self.coef_ + self.intercept_


def _terms_cancel(centred: np.ndarray, coef: np.ndarray, term_blocks: list[np.ndarray]) -> bool:
    """Whether the additive terms of ``coef`` on the centred design cancel: their variances add
    to more than ``CANCELLING_TERMS`` times the variance of their sum."""
    # Without an n x (terms) array beside the design (655 MB for the largest embedding context
    # accepted, 20,000 x 4,096): one-column terms from the columns' variances (0.1 s there, where
    # a term at a time took 1.5 s), the spline blocks one at a time.
    single = np.array([block[0] for block in term_blocks if block.size == 1], dtype=np.int64)
    n = centred.shape[0]
    column_variances = np.einsum("ij,ij->j", centred, centred) / n
    spread = float(column_variances[single] @ coef[single] ** 2)
    spread += sum(
        float(np.var(centred[:, block] @ coef[block])) for block in term_blocks if block.size > 1
    )
    return spread > CANCELLING_TERMS * float(np.var(centred @ coef))


def _sum_players(values: np.ndarray, players: Players | None) -> np.ndarray:
    """Per-column values (m, d, ...) summed into the players' (m, P, ...): exact for additive
    surrogates, whose group values are the sums of their members'."""
    return values if players is None else players.sum_columns(values)


class RidgeSurrogate(Surrogate):
    """Linear; ``strength`` None picks alpha by generalised cross-validation."""

    def __init__(self, strength: float | None = None):
        self.strength = strength

    def fit(self, Z, target, seed):
        if self.strength is None:
            # Near-copies among the columns (fishing's prices of four modes) gave this member
            # opposite coefficients that cancel, values 5-9x the exact ones' spread; the rule for
            # cancelling terms (LinearFit) took bench combiner's 588 cases from mean r 0.9247 to
            # 0.9256 (17 up by more than 0.005, 1 down by 0.011; fringe's XGBoost on 300 rows
            # 0.47 -> 0.74), the linear targets unchanged (where a model in this class has
            # cancelling terms, its error rises at once with the penalty).
            columns = [np.array([j]) for j in range(Z.shape[1])]
            self.model_ = LinearFit(columns).fit(Z, target)
        else:
            self.model_ = Ridge(alpha=self.strength * Z.shape[0]).fit(Z, target)
        return self

    def predict(self, Z):
        return self.model_.predict(Z)

    def prepare(self, background, players=None):
        # phi_j = coef_j * (x_j - mean_z z_j): the background enters through its mean alone.
        self.background_mean_ = background.mean(axis=0)
        self.players_ = players
        return self

    def attributions(self, Z):
        coef = np.atleast_2d(np.asarray(self.model_.coef_, dtype=np.float64))
        values = linear_values(coef, Z, self.background_mean_)[:, :, 0]
        return _sum_players(values, self.players_)

    def pair_gaps(self, Z, pairs, shared):
        return _additive_pair_gaps(self, Z, pairs)


class SplineSurrogate(Surrogate):
    """A sum of one cubic spline per feature (see ``AdditiveBasis`` for wide inputs):
    phi_j = g_j(x_j) - mean_z g_j(z_j), and a group's value is the sum of its members'."""

    def fit(self, Z, target, seed):
        self.basis_ = AdditiveBasis().fit(Z, target)
        # Columns that carry the same information (x and log x) give spline blocks that nearly
        # span each other, and the penalty of the least leave-one-out error split their joint
        # term into large opposite ones: r of this member's values against the exact ones 0.07
        # on bwght's forest (x and log x of family income, terms of +-100 for a target that
        # varies by 13; 0.57 with the rule). Over bench combiner's 588 cases the rule for
        # cancelling terms (LinearFit) took this member alone from r 0.772 to 0.781 and the
        # explainer from 0.9238 to 0.9247 (17 cases up by more than 0.005, 3 down, at most
        # 0.011; d >= 14: 0.865 -> 0.870). The one-standard-error rule on every fit also
        # smoothed real curvature away on 300-row contexts: 0.9243, 27 cases down.
        self.model_ = LinearFit(self.basis_.term_blocks()).fit(self.basis_.transform(Z), target)
        return self

    def predict(self, Z):
        return self.model_.predict(self.basis_.transform(Z))

    def _terms(self, Z):
        return _sum_players(self.basis_.terms(Z, self.model_.coef_), self.players_)

    def prepare(self, background, players=None):
        self.players_ = players
        # Kept for refinement's pair gaps, which recomputed the background rows' spline terms
        # on every call: 0.74 ms -> 0.34 ms for this member in a 10-row refine at 4d (k401k
        # boosting).
        self.background_terms_ = np.ascontiguousarray(self._terms(background))
        self.background_mean_ = self.background_terms_.mean(axis=0)
        return self

    def attributions(self, Z):
        return self._terms(Z) - self.background_mean_

    def pair_gaps(self, Z, pairs, shared):
        background_terms = getattr(self, "background_terms_", None) if pairs.prepared else None
        if background_terms is None:  # other rows, or saved by a version that did not keep them
            background_terms = np.ascontiguousarray(self._terms(pairs.background))
        out = np.empty(pairs.picks.shape)
        additive_pair_gaps(
            np.ascontiguousarray(self._terms(Z)), background_terms, pairs.masks, pairs.picks, out
        )
        return out


# scikit-learn's default tolerance, the in-class refit's, and their iteration budgets.
DEFAULT_TOLERANCE = 1e-4
IN_CLASS_TOLERANCE = 1e-8
DEFAULT_MAX_ITER = 2000
IN_CLASS_MAX_ITER = 300
RARE_CLASS_SHARE = 0.1


def _soft_label_fit(
    strength: float,
    in_class: bool,
    n_rows: int,
    design: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
) -> LogisticRegression:
    """scikit-learn's logistic regression on soft labels (each of the ``n_rows`` rows repeated
    per label, weighted by the label's probability), with an L2 penalty of ``strength`` per row.

    An in-class refit must reach the coefficients themselves (at scikit-learn's default
    tolerance a softmax refit stopped 1.5e-3 from a softmax model's outputs, at 1e-8 2e-6) in a
    bounded number of steps: outputs outside the class need not converge, and its R^2 test, not
    the solver's status, judges it, so its convergence warning is not shown. (``catch_warnings``
    swaps the process's filters; concurrent fits can at worst leave that warning hidden.)
    """
    # The solver stops when the mean loss's gradient is below its tolerance, and that gradient
    # is of the order of the rarest class's share: with probabilities near 1e-7 the default
    # stopped at once, far from the fit (out-of-fold R^2 -1, values 300x the model's, their mix
    # r -0.23 against the exact values, QA 2026-12-06). Below a share of RARE_CLASS_SHARE the
    # tolerance shrinks with it; above, the fits are as before.
    shares = np.bincount(labels.astype(np.int64), weights=weights) / n_rows
    tolerance = (IN_CLASS_TOLERANCE if in_class else DEFAULT_TOLERANCE) * min(
        1.0, float(shares.min()) / RARE_CLASS_SHARE
    )
    model = LogisticRegression(
        C=1.0 / (strength * n_rows),
        tol=tolerance,
        max_iter=IN_CLASS_MAX_ITER if in_class else DEFAULT_MAX_ITER,
    )
    if not in_class:
        return model.fit(design, labels, sample_weight=weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(design, labels, sample_weight=weights)


class SoftLogisticSurrogate(Surrogate):
    """``sigmoid(sum_j g_j(x_j))`` fitted to probabilities by soft-label cross-entropy.

    Cross-entropy against the model's own probabilities is the KL projection onto the logistic
    family; unlike least squares on clipped logits it is not distorted by saturated outputs.
    ``strength`` is the L2 penalty per row (scikit-learn's C = 1 / (strength * n)).
    ``in_class``: the refit that stands in for the member when the outputs are in its class; it
    enumerates coalitions further (``IN_CLASS_ENUMERATION_EVALUATIONS``).
    """

    in_class = False  # explainers saved before in-class refits have no such field

    def __init__(self, strength: float, splines: bool, in_class: bool = False):
        self.strength = strength
        self.splines = splines
        self.in_class = in_class

    def _basis(self, Z):
        return self.basis_.transform(Z) if self.splines else Z

    def fit(self, Z, target, seed):
        self.basis_ = AdditiveBasis().fit(Z, target) if self.splines else None
        basis = self._basis(Z)
        n = Z.shape[0]
        self.model_ = _soft_label_fit(
            self.strength,
            self.in_class,
            n,
            np.vstack([basis, basis]),
            np.r_[np.ones(n), np.zeros(n)],
            np.r_[target, 1.0 - target],
        )
        return self

    def _terms(self, Z):
        coef = self.model_.coef_[0]
        terms = self.basis_.terms(Z, coef) if self.splines else Z * coef
        return np.ascontiguousarray(_sum_players(terms, self.players_))

    def predict(self, Z):
        return self.model_.predict_proba(self._basis(Z))[:, 1]

    def proxy_outputs(self, Z, shared):
        # From the coefficients: a loaded explainer keeps them, not the scikit-learn model.
        logit = self._basis(Z) @ self.model_.coef_[0] + float(self.model_.intercept_[0])
        return expit(logit)

    def pair_gaps(self, Z, pairs, shared):
        out = np.empty((*pairs.picks.shape, 1))
        background_terms = (
            self.background_terms_ if pairs.prepared else self._terms(pairs.background)
        )
        softmax_pair_gaps(
            np.ascontiguousarray(self._terms(Z)[:, :, None]),
            np.ascontiguousarray(background_terms[:, :, None]),
            np.array([float(self.model_.intercept_[0])]),
            pairs.masks,
            pairs.picks,
            out,
        )
        return out[:, :, 0]

    def prepare(self, background, players=None):
        # A group's term is the sum of its members': the surrogate is additive in groups too,
        # so the same closed forms give the group game's values.
        self.players_ = players
        self.background_terms_ = self._terms(background)
        return self

    def attributions(self, Z):
        row_terms = self._terms(Z)
        offset = float(self.model_.intercept_[0])
        if enumerates_coalitions(
            self.in_class, row_terms.shape[1], self.background_terms_.shape[0]
        ):
            return logistic_additive_values(row_terms, self.background_terms_, offset)
        values = np.empty(row_terms.shape)
        sigmoid_additive_rescaled(row_terms, self.background_terms_, offset, values)
        return values


class SoftMultinomialSurrogate(Surrogate):
    """``softmax(b + sum_j G_j(x_j))`` fitted to K class probabilities by soft-label cross-entropy.

    The multiclass counterpart of ``SoftLogisticSurrogate``: one model for all classes, so the
    classes compete as they do in the user's model (a middle class, whose probability rises and
    then falls along a feature, is out of reach of a sigmoid per class). Exact Shapley values by
    enumeration up to ``LOGISTIC_EXACT_FEATURES`` features, per-reference path credits above;
    ``in_class`` as in ``SoftLogisticSurrogate``.
    """

    in_class = False  # explainers saved before in-class refits have no such field

    def __init__(self, strength: float, splines: bool, in_class: bool = False):
        self.strength = strength
        self.splines = splines
        self.in_class = in_class

    def _basis(self, Z):
        return self.basis_.transform(Z) if self.splines else Z

    def fit(self, Z: np.ndarray, targets: np.ndarray, seed: int) -> "SoftMultinomialSurrogate":
        # Splines go where the classes' probabilities vary most with a column: the screen sees
        # the spread of the probabilities around the row's most likely class.
        self.basis_ = AdditiveBasis().fit(Z, targets.max(axis=1)) if self.splines else None
        basis = self._basis(Z)
        n, n_classes = targets.shape
        self.model_ = _soft_label_fit(
            self.strength,
            self.in_class,
            n,
            np.tile(basis, (n_classes, 1)),
            np.repeat(np.arange(n_classes), n),
            targets.T.ravel(),
        )
        return self

    def predict(self, Z: np.ndarray) -> np.ndarray:
        """(m, K) class probabilities."""
        return self.model_.predict_proba(self._basis(Z))

    def class_pair_gaps(self, Z: np.ndarray, pairs: Pairs) -> np.ndarray:
        """(m, n_pairs, K) every class's pair gaps (see ``Surrogate.pair_gaps``)."""
        out = np.empty((*pairs.picks.shape, self.background_terms_.shape[2]))
        background_terms = (
            self.background_terms_ if pairs.prepared else self._terms(pairs.background)
        )
        softmax_pair_gaps(
            self._terms(Z),
            background_terms,
            np.ascontiguousarray(self.model_.intercept_, dtype=np.float64),
            pairs.masks,
            pairs.picks,
            out,
        )
        return out

    def class_probabilities(self, Z: np.ndarray) -> np.ndarray:
        """(m, K) class probabilities from the coefficients (all a loaded explainer keeps)."""
        return softmax(self._basis(Z) @ self.model_.coef_.T + self.model_.intercept_, axis=1)

    def _terms(self, Z):
        coef = self.model_.coef_
        if self.splines:
            terms = self.basis_.terms(Z, coef)
        else:
            terms = Z[:, :, None] * coef.T[None]
        return np.ascontiguousarray(_sum_players(terms, self.players_))

    def prepare(
        self, background: np.ndarray, players: Players | None = None
    ) -> "SoftMultinomialSurrogate":
        self.players_ = players
        self.background_terms_ = self._terms(background)
        return self

    def attributions(self, Z: np.ndarray) -> np.ndarray:
        """(m, P, K) interventional Shapley values of every class's probability."""
        row_terms = self._terms(Z)
        offset = np.ascontiguousarray(self.model_.intercept_, dtype=np.float64)
        m, d, n_classes = row_terms.shape
        values = np.empty((m, d, n_classes))
        n_background = self.background_terms_.shape[0]
        if enumerates_coalitions(self.in_class, d, n_background * n_classes):
            for start in range(0, m, LOGISTIC_ROWS_PER_TABLE):
                rows = slice(start, start + LOGISTIC_ROWS_PER_TABLE)
                chunk = np.ascontiguousarray(row_terms[rows])
                table = np.empty((chunk.shape[0], 1 << d, n_classes))
                softmax_additive_coalition_values(chunk, self.background_terms_, offset, table)
                shapley_from_coalition_values(table, values[rows])
        else:
            softmax_additive_path(row_terms, self.background_terms_, offset, values)
        return values


def enumerates_coalitions(in_class: bool, n_players: int, evaluations_per_coalition: int) -> bool:
    """Whether a link member's values come from all 2**n_players coalitions (exact) rather
    than a per-reference rule."""
    if n_players <= LOGISTIC_EXACT_FEATURES:
        return True
    return in_class and (1 << n_players) * evaluations_per_coalition <= (
        IN_CLASS_ENUMERATION_EVALUATIONS
    )


class ClassView(Surrogate):
    """One class of a multinomial surrogate (fitted and prepared), seen as a surrogate of that
    output alone."""

    def __init__(self, parent: SoftMultinomialSurrogate, output: int):
        self.parent = parent
        self.output = output

    def predict(self, Z):
        return self.parent.predict(Z)[:, self.output]

    def attributions(self, Z):
        return self.parent.attributions(Z)[:, :, self.output]

    def attributions_shared(self, Z, shared):
        """All classes are computed once per call and shared through ``shared``."""
        key = id(self.parent)
        if key not in shared:
            shared[key] = self.parent.attributions(Z)
        return shared[key][:, :, self.output]

    def proxy_outputs(self, Z, shared):
        key = ("outputs", id(self.parent))
        if key not in shared:
            shared[key] = self.parent.class_probabilities(Z)
        return shared[key][:, self.output]

    def pair_gaps(self, Z, pairs, shared):
        key = ("pair gaps", id(self.parent))
        if key not in shared:
            shared[key] = self.parent.class_pair_gaps(Z, pairs)
        return shared[key][:, :, self.output]


def canonical_column_order(Z: np.ndarray) -> np.ndarray:
    """(d,) the columns of ``Z`` (n, d) in an order set by their contents: by a digest of the
    order in which each column ranks the rows (ascending or descending, whichever digest is
    smaller; missing values apart), columns that rank them alike in the order given.

    The tree members draw the features a split may try by position (the forest's and the
    boosted member's half of the features per split, the forest's random thresholds per
    feature), so fitted on the columns as given, a reordering of the caller's columns changed
    their trees and the answer: on breast cancer (an MLP's probabilities, d = 30) r 0.943
    between the values of two orders of the same columns, on diabetes (gradient boosting)
    0.993. Fitted on this order, a reordering reorders the values alone, but for columns that
    rank the rows alike (aliases: x and x^2 over positive x, a copy, an indicator and its
    complement). Between those a split gains exactly the same, and histogram boosting
    (scikit-learn's, XGBoost, LightGBM) takes the first column in its order (scikit-learn's
    forests and gradient boosting try the columns in a random order): a model trained on the
    columns in the order the context gives them, as a model's context usually comes, reads the
    first of them, and so do the members, where a digest's order put the later one first as
    often as not.
    On `bench refinement`'s 50 real-table cases (2026-12-06, zero-shot, seed 0) an order by the
    values' digests alone took mean r from 0.930 to 0.915, k401k's XGBoost and LightGBM (age
    before agesq) from 0.92 / 0.95 to 0.75 / 0.73; this order scores as the columns as given
    did, over seeds 0 / 1 / 2 0.928 / 0.925 / 0.929 against 0.930 / 0.924 / 0.926. Ranks, not
    values, also make the order deaf to the values' last bits (rows scaled by 1e149 are
    standardised to the same values but for rounding)."""
    keys = []
    for column in Z.T:
        seen = ~np.isnan(column)
        _, ranks = np.unique(column[seen], return_inverse=True)
        ascending = np.full(column.size, -1, dtype=np.int64)
        ascending[seen] = ranks
        descending = np.where(seen, ranks.max(initial=0) - ascending, -1)
        keys.append(min(_digest(ascending), _digest(descending)))
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def _digest(values: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=8).digest()


def _read_columns(model: object, order: np.ndarray) -> None:
    """Make ``model``, fitted on ``Z[:, order]``, read the columns of ``Z`` itself: each split's
    feature ``k`` becomes ``order[k]``, in place (a scikit-learn forest's trees or a histogram
    boosting model's predictors, the only models the tree members fit)."""
    if isinstance(model, HistGradientBoostingRegressor):
        for stage in model._predictors:
            for predictor in stage:
                nodes = predictor.nodes
                split = ~nodes["is_leaf"].astype(bool)
                nodes["feature_idx"][split] = order[nodes["feature_idx"][split]]
        return
    for estimator in model.estimators_:
        tree = estimator.tree_
        features = tree.feature
        split = features >= 0
        features[split] = order[features[split]]
        # ``Tree.feature`` is a view of the tree's own nodes (seen in scikit-learn 1.4.2 and
        # 1.9.1; the project takes 1.4 up): were it a copy, the writes above would be lost and
        # the trees would read other columns, so the write is checked.
        if not np.array_equal(tree.feature, features):
            raise RuntimeError("scikit-learn's trees no longer expose their features in place")


class _TreeSurrogate(Surrogate):
    """A scikit-learn tree ensemble in ``model_``, explained by interventional TreeSHAP.

    Depth is capped at ``TREE_MAX_DEPTH`` so that every leaf tests at most that many features:
    the background then folds into small per-leaf tables, built once in ``prepare``, and a row
    costs the same whatever the background's size.
    """

    def predict(self, Z):
        return self.model_.predict(Z)

    def prepare(self, background, players=None):
        of_feature = None if players is None else players.of_feature
        self.tree_background_ = TreeBackground(
            self.model_, background, player_of_feature=of_feature
        )
        # The leaf each background row reaches: refinement's pair gaps, where they walk the
        # trees (past 64 players), skip the trees where the explained row reaches the same one
        # (``kernels.coalitions.tree_pair_gaps``). Up to 64 players they test the leaves with
        # the background's masks instead, made on the first call that needs them and kept in
        # ``tree_background_`` (``pair_cache_bytes``), not here: an explainer that is never
        # refined does not hold them (made at fit for every tree member they took 4.9 of
        # 12.8 MiB at n = 2,000, d = 20), and saves do not carry them.
        self.background_leaves_ = self.tree_background_.trusted_leaves(
            np.ascontiguousarray(background, dtype=np.float64)
        )
        return self

    def attributions(self, Z):
        return self.tree_background_.trusted_values(Z)[:, :, 0]

    def proxy_outputs(self, Z, shared):
        return self.tree_background_.trusted_outputs(Z)[:, 0]

    def pair_gaps(self, Z, pairs, shared):
        # Explainers saved before the leaves were kept find them per call where they walk.
        leaves = getattr(self, "background_leaves_", None) if pairs.prepared else None
        return self.tree_background_.trusted_pair_gaps(
            Z,
            pairs.background,
            pairs.player_of_column,
            pairs.masks,
            pairs.picks,
            leaves,
            keep_background=pairs.prepared,
        )[:, :, 0]

    def pair_cache_bytes(self) -> int:
        return self.tree_background_.pair_cache_bytes()

    def release_pair_cache(self) -> None:
        self.tree_background_.release_pair_cache()


class BoostedTreesSurrogate(_TreeSurrogate):
    """Histogram boosting that sees half the features per split.

    Without the subsampling a boosted model hands all the credit of correlated features to
    whichever one it split on first; the true model rarely did the same (on the public benchmark
    the subsampled surrogate alone moved mean r from 0.81 to 0.86).

    The capacity (150 rounds of up to 15 leaves, five rows a leaf) is kept for speed, although
    more of it gains on real tables. On the 588 cases of `bench combiner` (2026-12-02):
    200 rounds of 31 leaves, two rows a leaf, lifted mean r 0.923 -> 0.927 (XGBoost 0.898 ->
    0.909; refine at 4d on `bench refinement`'s real tables 0.943 -> 0.950) but cost 1.45x the
    fit and 1.5x the explain, which put fit + explain of 1,000 rows at 74-95x KernelSHAP
    (`bench_estimator_speed`, KernelSHAP at 0.16-0.18 s a row; 157x in a run where it took
    0.30 s) against the 100x required, where the present member measured 169x at 0.22 s;
    31 leaves at 150 rounds lifted it only to 0.925 (LightGBM 0.902 -> 0.899), for about 1.15x
    the fit. The 200-round variant gained nothing on `bench_estimator_accuracy` (public set
    0.929 -> 0.929, held-out prior tasks 0.925 -> 0.923), and all features per split won on
    boosted targets but lost 0.01-0.02 on forests, SVMs and kNN in a 6-table screen.
    """

    def fit(self, Z, target, seed):
        order = canonical_column_order(Z)
        self.model_ = HistGradientBoostingRegressor(
            max_iter=150,
            learning_rate=0.13,
            max_leaf_nodes=15,
            max_depth=TREE_MAX_DEPTH,
            min_samples_leaf=5,
            l2_regularization=1e-3,
            max_features=0.5,
            random_state=seed,
        ).fit(Z[:, order], target)
        _read_columns(self.model_, order)
        _split_between_values(self.model_, Z)
        return self


def _split_between_values(model: HistGradientBoostingRegressor, Z: np.ndarray) -> None:
    """Move each split of ``model`` whose threshold is one of the rows' own values of its column
    halfway to the column's next value, in place.

    Past 255 distinct values histogram boosting bins a column at percentiles, and where two
    neighbouring ranks tie the threshold is the tied value itself: rows at that value go left,
    and a query row a rounding away from it (the same row sent as float32) goes right. On
    scikit-learn's diabetes table 477 of 2,000 values moved, by up to 1.1 on values of up to
    90, when the query rows came as float32. The rows the model was fitted on take the same
    paths after the move (none lies between the two values), so its fit is unchanged."""
    columns: dict[int, np.ndarray] = {}
    for stage in model._predictors:
        for predictor in stage:
            nodes = predictor.nodes
            for node in np.flatnonzero(~nodes["is_leaf"].astype(bool)):
                feature = int(nodes["feature_idx"][node])
                if feature not in columns:
                    column = Z[:, feature]
                    columns[feature] = np.unique(column[~np.isnan(column)])
                values = columns[feature]
                threshold = nodes["num_threshold"][node]
                at = int(np.searchsorted(values, threshold))
                if at + 1 < values.size and values[at] == threshold:
                    nodes["num_threshold"][node] = 0.5 * (values[at] + values[at + 1])


class ForestSurrogate(_TreeSurrogate):
    """Extremely randomised trees on half the features per split: spreads correlated credit."""

    def fit(self, Z, target, seed):
        order = canonical_column_order(Z)
        self.model_ = ExtraTreesRegressor(
            n_estimators=64,
            max_depth=TREE_MAX_DEPTH,
            min_samples_leaf=2,
            max_features=min(0.5, FOREST_MAX_SPLIT_FEATURES / Z.shape[1]),
            random_state=seed,
            n_jobs=None,  # the caller's joblib configuration decides (the explainer: all cores)
        ).fit(Z[:, order], target)
        _read_columns(self.model_, order)
        # Parallel prediction adds the trees' outputs in the order the threads finish, which
        # changes the last bits from run to run; one thread keeps the same request's answer
        # identical (64 shallow trees predict fast).
        self.model_.n_jobs = 1
        return self


class KernelMachineSurrogate(Surrogate):
    """A Gaussian (RBF) kernel machine on ``KERNEL_CENTRES`` seeded centres among the rows,
    f(z) = intercept + sum_c alpha_c exp(-gamma |z - centre_c|^2), explained exactly: the
    kernel is a product over players, so each centre's term against each background row is a
    product game (``shapley_svc.kernels.product_games``). Smooth, and with interactions of every
    order, it is the zoo's kind for smooth models (MLP, SVM, kNN), where additive splines miss
    the interactions and trees are steps.

    gamma (per standardised column, ``KERNEL_GAMMAS`` / d) and the ridge penalty
    (``KERNEL_PENALTIES`` per row, on the machine's RKHS norm) are chosen on a seeded held-out
    fifth of the rows, then the machine is refitted on all of them (Nystroem: the centres'
    columns of the kernel matrix).
    """

    def fit(self, Z, target, seed):
        self.centres_, held_out = _centres_and_held_out(Z, KERNEL_CENTRES, seed)
        grid = (
            (gamma, self._kernel(Z, gamma), self._kernel(self.centres_, gamma))
            for gamma in np.array(KERNEL_GAMMAS) / Z.shape[1]
        )
        self.gamma_, self.penalty_, (self.intercept_, self.alpha_) = _grid_fitted(
            grid, target, held_out
        )
        return self

    def _kernel(self, Z: np.ndarray, gamma: float) -> np.ndarray:
        distance = (
            (Z**2).sum(axis=1)[:, None]
            + (self.centres_**2).sum(axis=1)[None, :]
            - 2 * Z @ self.centres_.T
        )
        return np.exp(-gamma * np.maximum(distance, 0.0))

    def predict(self, Z):
        return self._kernel(Z, self.gamma_) @ self.alpha_ + self.intercept_

    def _factors(self, Z: np.ndarray) -> np.ndarray:
        """(m, centres, P) each centre's factor of each player at the rows ``Z``."""
        m, d = Z.shape
        squared = (Z[:, None, :] - self.centres_[None, :, :]) ** 2
        per_player = _sum_players(
            squared.reshape(m * len(self.centres_), d)[:, :, None], self.players_
        )
        return np.ascontiguousarray(
            np.exp(-self.gamma_ * per_player[:, :, 0]).reshape(m, len(self.centres_), -1)
        )

    def prepare(self, background, players=None):
        self.players_ = players
        self.background_factors_ = self._factors(background)
        return self

    def attributions(self, Z):
        n_players = self.background_factors_.shape[2]
        out = np.empty((Z.shape[0], n_players))
        nodes, weights = quadrature(n_players)
        product_kernel_values(
            self._factors(Z),
            self.background_factors_,
            np.ascontiguousarray(self.alpha_, dtype=np.float64),
            nodes,
            weights,
            out,
        )
        return out


class AnovaKernelSurrogate(Surrogate):
    """A kernel machine on a second-order ANOVA kernel of per-column Gaussians: with a_j(z, c) =
    exp(-gamma (z_j - c_j)^2), k(z, c) = sum_j a_j / d + strength * sum_{j != k} a_j a_k / (d
    (d - 1)). Smooth, with every pairwise interaction and none of higher order, so its exact
    values cost O(centres x d) a row (0.2 ms at d = 20 against 100 background rows, where the
    RBF machine takes 14.6 ms): a pair term a_j a_k against background row b gives j half of
    (a_j(x) - a_j(b)) (a_k(x) + a_k(b)), and averaged over the background that needs only each
    centre's background means of a_j and of a_j (sum_k a_k - a_j), held by ``prepare``; a
    group's value is the sum of its columns'. gamma (per standardised column,
    ``ANOVA_GAMMAS``), ``strength`` (``ANOVA_STRENGTHS``) and the penalty
    (``KERNEL_PENALTIES``) are chosen on a held-out fifth. On `bench combiner` (2026-12-03) it
    raised the best mix in hindsight less than the RBF machine (all cases 0.935 -> 0.938
    against 0.941; MLP 0.882 -> 0.891 against 0.909): smooth models need the higher orders.
    """

    def fit(self, Z, target, seed):
        self.centres_, held_out = _centres_and_held_out(Z, ANOVA_CENTRES, seed)
        grid = (
            ((gamma, strength), self._combined(rows, strength), self._combined(centres, strength))
            for gamma in ANOVA_GAMMAS
            # The factors depend on gamma alone: their sums serve every strength (recomputed per
            # setting, a fit of 700 rows, d = 9, took 5.5 s instead of 4.0 s).
            for rows, centres in [(self._sums(Z, gamma), self._sums(self.centres_, gamma))]
            for strength in ANOVA_STRENGTHS
        )
        (self.gamma_, self.strength_), self.penalty_, (self.intercept_, self.alpha_) = _grid_fitted(
            grid, target, held_out
        )
        return self

    def _kernel(self, Z: np.ndarray, gamma: float, strength: float) -> np.ndarray:
        """(m, centres) k(z, c) at the rows ``Z``."""
        return self._combined(self._sums(Z, gamma), strength)

    def _sums(self, Z: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray, int]:
        """Per row and centre, sum_j a_j and sum_j a_j^2, and d: what k needs for any strength.
        A block of rows at a time (the factors are m x centres x d)."""
        linear = np.empty((Z.shape[0], len(self.centres_)))
        square = np.empty_like(linear)
        for first in range(0, Z.shape[0], 256):
            factors = self._factors(Z[first : first + 256], gamma)
            linear[first : first + 256] = factors.sum(axis=2)
            square[first : first + 256] = np.einsum("mcj,mcj->mc", factors, factors)
        return linear, square, Z.shape[1]

    @staticmethod
    def _combined(sums: tuple[np.ndarray, np.ndarray, int], strength: float) -> np.ndarray:
        linear, square, d = sums
        kernel = linear / d
        if d > 1:
            kernel += strength * (linear**2 - square) / (d * (d - 1))
        return kernel

    def _factors(self, Z: np.ndarray, gamma: float) -> np.ndarray:
        """(m, centres, d) a_j(z, c) per column at the rows ``Z``."""
        return np.exp(-gamma * (Z[:, None, :] - self.centres_[None, :, :]) ** 2)

    def predict(self, Z):
        return self._kernel(Z, self.gamma_, self.strength_) @ self.alpha_ + self.intercept_

    def prepare(self, background, players=None):
        self.players_ = players
        factors = self._factors(background, self.gamma_)
        self.background_mean_ = factors.mean(axis=0)
        # Per centre and column j: the background mean of a_j a_k summed over k != j, that is
        # of a_j (sum_k a_k - a_j): O(background x centres x d), no d x d table.
        rest = factors.sum(axis=2, keepdims=True) - factors
        self.background_pair_rest_ = np.mean(factors * rest, axis=0)
        return self

    def attributions(self, Z):
        u = self._factors(Z, self.gamma_)
        d = u.shape[2]
        mean = self.background_mean_[None]
        rest = u.sum(axis=2, keepdims=True) - u  # sum over k != j of a_k(x)
        rest_mean = mean.sum(axis=2, keepdims=True) - mean  # ... of E a_k(b)
        # A pair term c2 a_j a_k gives j half of a_j(x) a_k(x) - E a_j(b) a_k(x) + a_j(x) E
        # a_k(b) - E a_j(b) a_k(b), and k the other half; within one player's columns the two
        # halves add up to that player's whole a_j(x) a_k(x) - E a_j(b) a_k(b), so the columns'
        # values summed into players are the players' exact values.
        pairs = 0.5 * (u * rest - mean * rest + u * rest_mean - self.background_pair_rest_[None])
        pair_weight = 2 * self.strength_ / (d * (d - 1)) if d > 1 else 0.0
        per_centre = (u - mean) / d + pair_weight * pairs
        return _sum_players(np.einsum("mcj,c->mj", per_centre, self.alpha_), self.players_)


def _centres_and_held_out(
    Z: np.ndarray, n_centres: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A kernel machine's seeded centres among the rows ``Z`` (all of them when fewer) and the
    (n,) bool mask of the fifth held out to choose its settings."""
    rng = np.random.default_rng(seed)
    n = Z.shape[0]
    centres = np.ascontiguousarray(Z[np.sort(rng.choice(n, min(n, n_centres), replace=False))])
    held_out = np.zeros(n, dtype=bool)
    held_out[rng.choice(n, max(1, n // 5), replace=False)] = True
    return centres, held_out


def _grid_fitted(grid, target: np.ndarray, held_out: np.ndarray):
    """A kernel machine's settings chosen on the ``held_out`` rows and its fit on all rows:
    ``grid`` yields (settings, features (n, centres), centre Gram) per setting of the kernel,
    each tried with every penalty of ``KERNEL_PENALTIES``; the chosen setting's matrices are
    kept for the final fit, not rebuilt. Returns (settings, penalty, (intercept, alpha))."""
    best = None
    for settings, features, centre_gram in grid:
        # The penalties share one setting's normal equations (with the ANOVA sums above, a
        # fit of 1,500 rows, d = 9, went from 7.8 s to 3.1 s; the RBF member's from 1.4 to 0.9).
        normal = _normal_equations(features[~held_out], target[~held_out])
        for penalty in KERNEL_PENALTIES:
            intercept, alpha = _kernel_ridge(normal, centre_gram, penalty)
            fitted = features[held_out] @ alpha + intercept
            error = float(np.mean((fitted - target[held_out]) ** 2))
            if best is None or error < best[0]:
                best = (error, settings, penalty, features, centre_gram)
    _, settings, penalty, features, centre_gram = best
    return (
        settings,
        penalty,
        _kernel_ridge(_normal_equations(features, target), centre_gram, penalty),
    )


def _normal_equations(
    features: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """F'F, F'(y - mean y), mean y and the row count: a least-squares fit's sufficient
    statistics, with the mean as intercept."""
    intercept = float(target.mean())
    return features.T @ features, features.T @ (target - intercept), intercept, features.shape[0]


def _kernel_ridge(
    normal: tuple[np.ndarray, np.ndarray, float, int], centre_gram: np.ndarray, penalty: float
) -> tuple[float, np.ndarray]:
    """Intercept and coefficients of the centres minimising the squared error plus ``penalty``
    x rows / centres x the machine's squared norm (alpha' K_cc alpha), from the fit's
    ``_normal_equations``."""
    gram, moment, intercept, n_rows = normal
    n_centres = centre_gram.shape[0]
    system = gram + penalty * n_rows / n_centres * centre_gram
    system[np.diag_indices(n_centres)] += 1e-8 * max(float(np.trace(system)) / n_centres, 1e-300)
    alpha = scipy_solve(system, moment, assume_a="pos")
    return intercept, alpha


class Role(enum.Enum):
    """What a member is, for the context features that compare kinds of fit."""

    LINEAR = "linear"  # a hyperplane on the standardised rows
    SMOOTH = "smooth"  # additive splines (on the output or inside a sigmoid)
    TREE = "tree"  # a depth-capped tree ensemble
    LINK = "link"  # linear inside a sigmoid or softmax


def additive_basis_width(n_features: int) -> int:
    """Columns of ``AdditiveBasis`` for ``n_features`` columns: splines, then linear terms."""
    spline_width = min(n_features, SPLINE_MAX_FEATURES) * (SPLINE_KNOTS + DEGREE - 1)
    return spline_width + max(n_features - SPLINE_MAX_FEATURES, 0)


@dataclass(frozen=True)
class SurrogateKind:
    """A named member of the zoo and everything the estimator needs to know about it.

    Attributes
    ----------
    name : the name the artifact lists (its order and names are the artifact's contract).
    role : what kind of fit it is.
    make : a fresh, unfitted surrogate of one output column.
    make_multinomial : for kinds that fit all K class probabilities at once, a fresh unfitted
        multinomial surrogate; None otherwise.
    probability_only : the kind needs outputs in [0, 1].
    make_in_class, make_multinomial_in_class : for the weakly penalised link member, the same
        class refitted with a vanishing penalty. The member's penalty is what keeps it stable
        on outputs outside its class; inside it, the penalty only shrinks the coefficients
        that mixed rows depend on. So the refit stands in for the member when it reproduces
        the outputs out of fold to within ``EXACT_FIT_UNEXPLAINED``; otherwise the member is
        kept as the combiner was trained on it.
    """

    name: str
    role: Role
    make: Callable[[], Surrogate]
    make_multinomial: Callable[[], Surrogate] | None = None
    probability_only: bool = False
    make_in_class: Callable[[], Surrogate] | None = None
    make_multinomial_in_class: Callable[[], Surrogate] | None = None

    def design_bytes_per_row(self, n_features: int, n_outputs: int = 1) -> int:
        """Bytes a fit holds per context row: its design matrix and the solver's copies.

        Linear fits keep the design, its centred copy and the singular vectors; soft-label fits
        see every row twice, and a multinomial fit once per class; trees keep a float32 or
        binned copy.
        """
        if self.role is Role.TREE:
            return 8 * n_features
        width = additive_basis_width(n_features) if self.role is Role.SMOOTH else n_features
        copies = 3 * (2 if n_outputs == 1 else n_outputs) if self.probability_only else 3
        return 8 * width * copies


def _soft_label_kind(
    name: str, role: Role, strength: float, splines: bool, in_class: bool = False
) -> SurrogateKind:
    """A kind fitted to probabilities by soft labels: per column a sigmoid, for class
    probabilities one softmax over all classes, with the same penalty and basis; ``in_class``:
    with the vanishing-penalty refits of ``SurrogateKind.make_in_class``."""
    refit = {"strength": IN_CLASS_STRENGTH, "splines": splines, "in_class": True}
    return SurrogateKind(
        name,
        role,
        partial(SoftLogisticSurrogate, strength=strength, splines=splines),
        partial(SoftMultinomialSurrogate, strength=strength, splines=splines),
        probability_only=True,
        make_in_class=partial(SoftLogisticSurrogate, **refit) if in_class else None,
        make_multinomial_in_class=partial(SoftMultinomialSurrogate, **refit) if in_class else None,
    )


# The order and names are those of the shipped artifact's arrays: never reorder or rename.
ZOO = (
    SurrogateKind("ridge", Role.LINEAR, RidgeSurrogate),
    SurrogateKind("ridge_strong", Role.LINEAR, partial(RidgeSurrogate, strength=0.05)),
    SurrogateKind("spline", Role.SMOOTH, SplineSurrogate),
    _soft_label_kind("logistic", Role.LINK, strength=0.002, splines=False, in_class=True),
    _soft_label_kind("logistic_strong", Role.LINK, strength=0.02, splines=False),
    _soft_label_kind("logistic_spline", Role.SMOOTH, strength=0.002, splines=True),
    SurrogateKind("boosted_trees", Role.TREE, BoostedTreesSurrogate),
    SurrogateKind("forest", Role.TREE, ForestSurrogate),
)


def members_with_role(role: Role) -> np.ndarray:
    """Zoo positions of the members with ``role``, in zoo order."""
    return np.array([s for s, kind in enumerate(ZOO) if kind.role is role], dtype=np.int64)


@dataclass
class FittedSurrogate:
    """A surrogate fitted on one output column, and how well it fits out of fold."""

    kind: SurrogateKind
    model: Surrogate
    oof_r2: float


def out_of_fold_splits(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train and test indices that cover every row once (three folds), or one held-out third."""
    folds = list(KFold(OUT_OF_FOLD_SPLITS, shuffle=True, random_state=seed).split(np.arange(n)))
    return folds if n < HOLDOUT_MIN_ROWS else folds[:1]


def _r2(target: np.ndarray, prediction: np.ndarray) -> float:
    total = np.sum((target - target.mean()) ** 2)
    return float(1.0 - np.sum((target - prediction) ** 2) / total) if total > 0 else 0.0


def _check(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise CancelledError("the fit was cancelled")


def rows_within_budget(
    kind: SurrogateKind, n_rows: int, n_features: int, memory_bytes: int, n_outputs: int = 1
) -> int:
    """How many context rows a fit of ``kind`` may use within ``memory_bytes`` (at least 50)."""
    per_row = kind.design_bytes_per_row(n_features, n_outputs)
    return int(min(n_rows, max(50, memory_bytes // per_row)))


def _rows_for_fit(
    kind: SurrogateKind,
    Z: np.ndarray,
    targets: np.ndarray,
    seed: int,
    memory_bytes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """All rows, or a seeded subsample when the fit's design would exceed ``memory_bytes``."""
    n_outputs = 1 if targets.ndim == 1 else targets.shape[1]
    keep = rows_within_budget(kind, Z.shape[0], Z.shape[1], memory_bytes, n_outputs)
    if keep >= Z.shape[0]:
        return Z, targets
    chosen = np.sort(np.random.default_rng(seed).choice(Z.shape[0], size=keep, replace=False))
    return Z[chosen], targets[chosen]


def _out_of_fold(
    make: Callable[[], Surrogate],
    Z: np.ndarray,
    targets: np.ndarray,
    seed: int,
    should_stop: Callable[[], bool] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The test rows and predictions of ``make()`` refitted without them, over the folds.

    ``should_stop`` is polled before each refit; True raises ``CancelledError``.
    """
    tested, predicted = [], []
    for train, test in out_of_fold_splits(Z.shape[0], seed):
        _check(should_stop)
        tested.append(test)
        predicted.append(make().fit(Z[train], targets[train], seed).predict(Z[test]))
    return np.concatenate(tested), np.concatenate(predicted)


def _fit_out_of_fold(
    make: Callable[[], Surrogate],
    Z: np.ndarray,
    targets: np.ndarray,
    seed: int,
    should_stop: Callable[[], bool] | None,
) -> tuple[Surrogate, np.ndarray, np.ndarray]:
    """``make()`` fitted on all rows, with the test rows and predictions of ``_out_of_fold``."""
    tested, predicted = _out_of_fold(make, Z, targets, seed, should_stop)
    _check(should_stop)
    return make().fit(Z, targets, seed), tested, predicted


def fit_surrogate(
    kind: SurrogateKind,
    Z: np.ndarray,
    target: np.ndarray,
    seed: int,
    background: np.ndarray,
    players: Players | None = None,
    should_stop: Callable[[], bool] | None = None,
    memory_bytes: int = DEFAULT_FIT_MEMORY_BYTES,
) -> FittedSurrogate:
    """Fit on all rows, measure R^2 on rows each refit did not see, and prepare the background.

    Parameters
    ----------
    kind : the zoo member.
    Z : (n, d) standardised context rows.
    target : (n,) one output column.
    seed : seeds the folds, the fit and any row subsample.
    background : (n_background, d) standardised background rows, folded into the fitted
        member (``Surrogate.prepare``) for the game of ``players``.
    should_stop : polled before each refit; True raises ``CancelledError``.
    memory_bytes : when the fit's design would exceed it, the fit uses a seeded subsample of
        the rows instead.
    """
    Z, target = _rows_for_fit(kind, Z, target, seed, memory_bytes)
    model, tested, predicted = _fit_out_of_fold(kind.make, Z, target, seed, should_stop)
    oof_r2 = _r2(target[tested], predicted)
    if kind.make_in_class is not None:
        found = _fit_in_class(kind.make_in_class, Z, target, seed, should_stop)
        if found is not None:
            model, oof_r2 = found[0], found[1][0]
    return FittedSurrogate(kind, model.prepare(background, players), oof_r2)


def _r2_per_output(targets: np.ndarray, predicted: np.ndarray) -> list[float]:
    if targets.ndim == 1:
        return [_r2(targets, predicted)]
    return [_r2(targets[:, k], predicted[:, k]) for k in range(targets.shape[1])]


def _fit_in_class(
    make: Callable[[], Surrogate],
    Z: np.ndarray,
    targets: np.ndarray,
    seed: int,
    should_stop: Callable[[], bool] | None,
) -> tuple[Surrogate, list[float]] | None:
    """An in-class refit (``SurrogateKind.make_in_class``) and its out-of-fold R^2 per output,
    when it reproduces every output to within ``EXACT_FIT_UNEXPLAINED``; None otherwise.

    The fit on all rows is checked first: an in-sample miss settles it with one fit instead of
    four (a softmax refit that does not converge runs to the solver's step limit).
    """
    _check(should_stop)
    refit = make().fit(Z, targets, seed)
    if 1.0 - min(_r2_per_output(targets, refit.predict(Z))) > EXACT_FIT_UNEXPLAINED:
        return None
    tested, predicted = _out_of_fold(make, Z, targets, seed, should_stop)
    r2 = _r2_per_output(targets[tested], predicted)
    return (refit, r2) if 1.0 - min(r2) <= EXACT_FIT_UNEXPLAINED else None


def is_class_probabilities(outputs: np.ndarray) -> bool:
    """Three or more outputs in [0, 1] that sum to one on every row: a softmax's outputs."""
    return (
        outputs.shape[1] >= 3
        and bool(outputs.min() >= 0.0 and outputs.max() <= 1.0)
        and bool(np.all(np.abs(outputs.sum(axis=1) - 1.0) <= 1e-6))
    )


def fit_multinomial(
    kind: SurrogateKind,
    Z: np.ndarray,
    outputs: np.ndarray,
    seed: int,
    background: np.ndarray,
    players: Players | None = None,
    should_stop: Callable[[], bool] | None = None,
    memory_bytes: int = DEFAULT_FIT_MEMORY_BYTES,
) -> list[FittedSurrogate]:
    """A kind with a ``make_multinomial`` fitted once to all K class probabilities (n, K),
    prepared once; one view per class. Other parameters as in ``fit_surrogate``."""
    Z, outputs = _rows_for_fit(kind, Z, outputs, seed, memory_bytes)
    model, tested, predicted = _fit_out_of_fold(
        kind.make_multinomial, Z, outputs, seed, should_stop
    )
    oof_r2 = _r2_per_output(outputs[tested], predicted)
    if kind.make_multinomial_in_class is not None:
        # One softmax for all classes: it stands in only where every class is in its class.
        found = _fit_in_class(kind.make_multinomial_in_class, Z, outputs, seed, should_stop)
        if found is not None:
            model, oof_r2 = found
    model.prepare(background, players)
    return [FittedSurrogate(kind, ClassView(model, k), r2) for k, r2 in enumerate(oof_r2)]
