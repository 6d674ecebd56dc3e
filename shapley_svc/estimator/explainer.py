"""``ZeroShotExplainer``: interventional SHAP values of a model from its outputs alone."""

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np
from joblib import parallel_config
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from shapley_svc.canonical import canonical_floats
from shapley_svc.errors import (
    CancelledError,
    InvalidArgumentError,
    LimitExceededError,
    NotFittedError,
)
from shapley_svc.estimator._memory import held_bytes
from shapley_svc.estimator.aliases import alias_sets, widened_for_aliases
from shapley_svc.estimator.artifact import DEFAULT_ARTIFACT, Artifact, load_artifact
from shapley_svc.estimator.calibration import (
    Calibration,
    CalibrationProposal,
    calibrated_output,
    context_fingerprint,
    draw_calibration,
    held_out_split,
    lower_estimate_share,
    outputs_fingerprint,
    r_squared,
    residual_square,
    rows_of,
    stacked_output,
    transferred_square,
    uncertainty_ratio,
)
from shapley_svc.estimator.calibration import default_budget as default_calibration_budget
from shapley_svc.estimator.calibration import minimum_budget as minimum_calibration_budget
from shapley_svc.estimator.combiner import (
    OUTPUT_TOTAL_TOLERANCE,
    balanced_across_outputs,
    combine,
    constant_output_total,
    fidelity_floor,
    member_weights,
    predicted_fidelity,
    uncertainty_terms,
    without_null_players,
)
from shapley_svc.estimator.context import fit_context
from shapley_svc.estimator.encoding import TableEncoder, categorical_columns, check_codes
from shapley_svc.estimator.groups import Players, parse_groups
from shapley_svc.estimator.persistence import load_state, save_explainer
from shapley_svc.estimator.refinement import (
    CENTRE_GRAM_SAMPLED_SHARE,
    CENTRE_TRIAL_BACKGROUND,
    CENTRE_TRIAL_COALITIONS,
    CENTRE_TRIAL_ROWS,
    MIN_CENTRE_TRIAL_BACKGROUND,
    POOLED_RIDGE_STRENGTHS,
    PRIOR_PAIRS_PER_PLAYER,
    CentreTrial,
    DrawOrder,
    PooledDesign,
    PooledMoments,
    Proposal,
    RefinementParts,
    centre_trial,
    control_weights,
    draw_coalitions,
    draw_proposal,
    merged_with_prior,
    minimum_budget,
    pair_chunk,
    pairs_within,
    pooled_fold,
    pooled_values,
    pooled_weights,
    prefers_centre,
    reference_centre,
    refined_values,
    rescaled,
    row_scales,
)
from shapley_svc.estimator.result import (
    CalibrationDiagnostics,
    Diagnostics,
    Explanation,
    OutputDiagnostics,
    SurrogateDiagnostics,
)
from shapley_svc.estimator.surrogates import OUT_OF_FOLD_SPLITS, ZOO, Pairs, Role
from shapley_svc.estimator.tables import code_frame, display_rows, is_data_frame
from shapley_svc.reference._validation import as_float_matrix

DEFAULT_BACKGROUND_ROWS = 100
# Below this many query rows the numba kernels run on the calling thread alone: starting a
# parallel region costs more than a few rows' work, and on a loaded machine it waits for every
# team member to be scheduled (single-row explain: 3 ms alone against 7.7 ms in parallel). Such a
# batch takes a few milliseconds: callers may run it where they are (the server does, on the gRPC
# handler thread, instead of handing it to a compute thread).
SERIAL_MAX_ROWS = 63
# Larger batches are explained in slices of at most this many row x feature cells (0.1-1 s of
# work), so that ``should_stop`` is polled often; every slice has a fixed cost, measured at about
# 6 % of a 10,000 x 20 batch when it was cut into 4,096-row slices.
EXPLAIN_SLICE_CELLS = 1 << 18
# Refine's slices hold at most this many proposed rows. ``should_stop`` is polled between the
# members' pair gaps, and one member's gaps for a whole slice run in one kernel call: 2,500 rows
# at d = 3 and a budget of 1,000 ran 1.5 s between polls in one slice, 0.33 s in slices of 524
# rows, for 12 % more CPU time; at 262 rows 30 % more (each slice has a fixed cost).
REFINE_SLICE_ROWS = 1 << 19
MAX_RANDOM_STATE = 2**32
# Working memory of one fit or explain call beyond the caller's own arrays: one surrogate's
# design matrix while fitting, one slice of query rows' attributions while explaining.
DEFAULT_MEMORY_BYTES = 1 << 30
MIN_MEMORY_BYTES = 16 << 20
_ARTIFACTS: dict[str, Artifact] = {}
# The costly members whose pair gaps refine skips where they weigh little (``_control_weights``).
_TREE_MEMBERS = np.array([kind.role is Role.TREE for kind in ZOO])


def _artifact(path) -> Artifact:
    key = str(path)
    if key not in _ARTIFACTS:
        _ARTIFACTS[key] = load_artifact(path)
    return _ARTIFACTS[key]


@contextmanager
def _kernel_threads(n_rows: int) -> Iterator[None]:
    """numba's thread count for this thread (numba keeps it per thread), restored after."""
    previous = numba.get_num_threads()
    if n_rows <= SERIAL_MAX_ROWS:
        numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _groups(players: Players | None) -> list[tuple[str, np.ndarray]] | None:
    """The groups as (name, (columns,) int64 column indices) pairs in answer order."""
    if players is None:
        return None
    return [
        (name, np.flatnonzero(players.of_feature == g).astype(np.int64))
        for g, name in enumerate(players.names)
    ]


# Derived from the fitted background on first use and kept: a fit discards them.
_DERIVED_STATE = ("_centre", "_trials", "_background_sha", "_order")


def _differs(rows: np.ndarray, row: np.ndarray) -> np.ndarray:
    """(n,) whether each of ``rows`` differs from ``row`` (NaN equals NaN: missing)."""
    same = (rows == row) | (np.isnan(rows) & np.isnan(row))
    return ~np.all(same, axis=1)


def _default_names(d: int) -> list[str]:
    return [f"x{j}" for j in range(d)]


def _column_names(table) -> list[str] | None:
    """The column names of a DataFrame-like table (pandas, or anything with ``columns``), as
    strings; None for arrays. Duck-typed: the estimator does not need pandas."""
    columns = getattr(table, "columns", None)
    return None if columns is None else [str(name) for name in columns]


def _row_matrix(name: str, value, n_features: int | None = None) -> np.ndarray:
    """C-contiguous float64 (n, d) rows (NaN is a value: missing; +-inf is refused), and the
    fitted feature count in the estimator's words."""
    array = as_float_matrix(name, value, allow_nan=True)
    if n_features is not None and array.shape[1] != n_features:
        raise InvalidArgumentError(
            name, f"has {array.shape[1]} features; the explainer was fitted on {n_features}"
        )
    _check_magnitude(name, array, MAX_ROW_MAGNITUDE, "the estimator squares them")
    return array


# The surrogates square the values they are given (variances, least squares): past about 1e154
# the squares overflow float64. Columns scaled by 1e154 got the same value for every feature;
# at 1e149 rows answer as at scale 1 (to 4e-15).
MAX_ROW_MAGNITUDE = 1e150
# Outputs of a context whose outputs sum to one constant on every row (class probabilities)
# that miss it by more than this share are on another scale and refused. Looser than
# ``OUTPUT_TOTAL_TOLERANCE`` (which decides the balance) by far: float32 or float16 outputs of
# many classes miss it by 1e-6-1e-4, another scale (log-odds, scores) by the order of the total.
OUTPUT_SCALE_TOLERANCE = 1e-2

# Model outputs have a lower bound: the boosted member's fit sums gradients in float32 (scikit-
# learn's histogram boosting), which overflows past 3.4e38. Predictions scaled by 1e40 changed
# the member weights and the values by up to 0.25 of their size, and a calibration past 1e77
# answered NaN; at 1e30 explain, refine and both calibrations answer as at scale 1 (to 1e-6 of
# the values), and sums over up to 3e8 rows stay within float32.
MAX_OUTPUT_MAGNITUDE = 1e30


def _check_magnitude(name: str, array: np.ndarray, bound: float, why: str) -> None:
    """Refuse finite values too large for the estimator's arithmetic (NaN passes)."""
    too_large = np.abs(array) > bound
    if too_large.any():
        at = np.argwhere(too_large)[0]
        raise InvalidArgumentError(
            name,
            f"must lie within +-{bound:g} ({why}); found {array[tuple(at)]:g}",
            row=int(at[0]),
            column=int(at[1]) if array.ndim == 2 else None,
        )


def _outputs(name: str, value, n_rows: int, n_outputs: int | None = None) -> np.ndarray:
    """Predictions as (n, K) float64; the caller remembers whether they came 1-D."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(name, "must be a numeric array") from None
    if array.ndim not in (1, 2) or array.shape[0] != n_rows:
        raise InvalidArgumentError(
            name, f"must have shape ({n_rows},) or ({n_rows}, K); got {array.shape}"
        )
    array = array.reshape(n_rows, -1)
    if array.shape[1] == 0:
        raise InvalidArgumentError(name, f"must hold at least one output; got {array.shape}")
    if n_outputs is not None and array.shape[1] != n_outputs:
        raise InvalidArgumentError(
            name, f"has {array.shape[1]} outputs; the explainer was fitted on {n_outputs}"
        )
    if not np.isfinite(array).all():
        row, column = (int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise InvalidArgumentError(
            name,
            f"must be finite; found {array[row, column]}",
            row=row,
            column=column,
            axis="output",
        )
    _check_magnitude(
        name, array, MAX_OUTPUT_MAGNITUDE, "a surrogate's fit sums them in float32; rescale them"
    )
    return np.ascontiguousarray(array)


def _is_seed(value) -> bool:
    """An int in scikit-learn's seed range; a bool is refused, as for budgets: True as seed 1 is
    more likely a flag passed in the wrong place than a choice."""
    return (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool | np.bool_)
        and 0 <= value < MAX_RANDOM_STATE
    )


class ZeroShotExplainer(BaseEstimator):
    """Estimate a model's interventional SHAP values from rows and the model's outputs alone.

    Per output, a zoo of surrogates (linear, logistic, additive splines, boosted trees, a forest)
    is fitted to (X, predictions) and each explains itself exactly; a combiner meta-trained on
    a synthetic prior of data-generating processes and model families weighs them for this
    context and estimates each value's uncertainty. With the query rows' predictions, each row
    is projected onto efficiency, its residual placed where the uncertainty is largest.

    Parameters
    ----------
    random_state : int in [0, 2**32), seeds the background sample, the surrogates and their
        sampling.
    artifact : path of the meta-learned artifact's manifest (default: the shipped one).
    working_memory_bytes : working memory of one call beyond the caller's arrays (at least 16 MiB;
        default 1 GiB). A surrogate whose design matrix would not fit is fitted on a seeded
        subsample of the rows; ``explain`` works through the query rows in slices that fit.

    A scikit-learn estimator: ``get_params``, ``set_params`` and ``sklearn.base.clone`` (an
    unfitted copy with the same parameters) work on it.

    Attributes
    ----------
    random_state_, working_memory_bytes_ : the seed and budget the fit ran with (``explain``
        slices within the latter).
    background_ : (n_background,) int64 indices of the background rows in X.
    background_rows_ : (n_background, d) those rows as given (coded): what absent features take
        in the rows ``propose`` asks the caller to score.
    feature_names_ : the d input columns' names.
    categorical_ : (n_categorical,) int64 indices of the categorical columns (declared, or coded
        from a DataFrame).
    categories_ : feature name -> labels, for the columns coded from a DataFrame: code c stands
        for ``labels[c]``.
    encoder_ : ``TableEncoder``: how the raw columns become the surrogates' design columns.
    groups_ : None, or the groups as (name, (columns,) int64 column indices) pairs in answer
        order.
    attribution_names_ : the P names ``explain`` attributes to: the groups', else the features'.
    n_rows_, n_features_in_, n_outputs_, single_output_ : the context's shape; single_output_
        when ``predictions`` was 1-D.
    diagnostics_ : ``Diagnostics``: the artifact's version and, per output, the predicted
        fidelity and each applicable member's out-of-fold R^2 and weight.
    artifact_ : the loaded meta-learned artifact.
    context_ : the fitted ``FittedContext`` (standardiser, per-output zoo, players).
    weights_, uncertainty_terms_ : per output, the combiner's member weights (S,), summing to
        one, and its (spread scale, variance floor).
    fidelity_floor_ : per output, what explain and refine multiply those terms by (at least 1;
        see ``combiner.fidelity_floor``); 1 once calibrated.
    scales_ : per output, what the weighted mix is multiplied by: 1, or calibration's scale.
    calibration_ : None, or the ``Calibration`` that refitted ``weights_`` and ``scales_``
        (see ``calibrate``).
    """

    def __init__(
        self,
        random_state: int = 0,
        artifact: str | None = None,
        working_memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ):
        self.random_state = random_state
        self.artifact = artifact
        self.working_memory_bytes = working_memory_bytes

    def fit(
        self,
        X,
        predictions,
        background=None,
        feature_names: Sequence[str] | None = None,
        *,
        categorical=None,
        groups=None,
        should_stop: Callable[[], bool] | None = None,
    ) -> "ZeroShotExplainer":
        """Fit to a context.

        Parameters
        ----------
        X : (n, d) rows; n >= 3. NaN is a value (missing), attributed like any other; +-inf is
            refused. A pandas DataFrame gives the feature names, and its ``category``,
            ``object``/string and ``bool`` columns become codes, declared categorical (the
            labels are kept in ``categories_``, so query frames are coded the same way).
        predictions : (n,) or (n, K) the model's outputs on X (probabilities, logits or values).
        background : None for a seeded sample of min(n, 100) rows of X, or 1-D int indices into
            X of the rows that stand in for absent features.
        feature_names : d distinct names (default: the columns of a pandas DataFrame X, else
            x0, x1, ...).
        categorical : None, or the columns (indices or feature names) whose values are category
            codes: integers, or NaN for a missing category. The surrogates treat them as
            categories, not magnitudes; each still gets one attribution. A code the context
            never showed is an unseen category at explain time, not an error.
        groups : None for one attribution per feature, or a partition of the d columns into
            named groups (``{"name": [column indices], ...}`` or a list of (name, indices)
            pairs): ``explain`` then answers one value per group, the Shapley values of the game
            whose players are the groups, with efficiency exact over the groups.
        should_stop : optional; polled between surrogate fits (at most about a second apart at
            n = 2,000, d = 20). When it returns True, ``fit`` raises ``CancelledError`` and the
            explainer keeps its previous state.
        """
        if (
            not isinstance(self.working_memory_bytes, int | np.integer)
            or isinstance(self.working_memory_bytes, bool)
            or self.working_memory_bytes < MIN_MEMORY_BYTES
        ):
            raise InvalidArgumentError(
                "working_memory_bytes",
                f"must be an int of at least {MIN_MEMORY_BYTES} (16 MiB); "
                f"got {self.working_memory_bytes!r}",
            )
        if not _is_seed(self.random_state):
            raise InvalidArgumentError(
                "random_state",
                f"must be an int in [0, 2**32) (scikit-learn's seed range); "
                f"got {self.random_state!r}",
            )
        coded = code_frame("X", X) if is_data_frame(X) else None
        rows = _row_matrix("X", X if coded is None else coded.rows)
        n, d = rows.shape
        if n < OUT_OF_FOLD_SPLITS:
            raise InvalidArgumentError(
                "X",
                f"must have at least {OUT_OF_FOLD_SPLITS} rows (each surrogate's fit is measured "
                f"over {OUT_OF_FOLD_SPLITS} folds); got {n}",
            )
        outputs = _outputs("predictions", predictions, n)
        # The surrogates treat a spread this small as none (``context.fit_context``).
        tolerance = 1e-12 * (1 + np.abs(outputs).max())
        constant = np.flatnonzero(outputs.std(axis=0) <= tolerance)
        if constant.size:
            raise InvalidArgumentError(
                "predictions",
                f"are constant or too nearly so (output {constant[0]} has standard deviation "
                f"{outputs[:, constant[0]].std():.3g}, at most {tolerance:.3g}): there is nothing "
                "to attribute (outputs on so small a scale must be rescaled)",
            )
        background_indices = self._background_indices(background, n)
        names = self._feature_names(_column_names(X) if feature_names is None else feature_names, d)
        categories = {} if coded is None else coded.categories
        declared = categorical_columns(categorical, names)
        categorical_indices = np.union1d(declared, list(categories)).astype(np.int64)
        check_codes("X", rows, categorical_indices, names)
        players = None if groups is None else parse_groups(groups, d)
        encoder = TableEncoder.fit(rows, categorical_indices, outputs)
        artifact = _artifact(self.artifact or DEFAULT_ARTIFACT)
        seed = int(self.random_state)
        memory_bytes = int(self.working_memory_bytes)
        # Forest surrogates grow their trees on all cores (the trees do not depend on it). The
        # boosted surrogate's OpenMP stays on one thread: on these sizes two are no faster, and
        # called from a worker thread (the server's) OpenMP teams spin against each other,
        # making the fit about 5x slower.
        with (
            parallel_config(backend="threading", n_jobs=-1),
            threadpool_limits(1, user_api="openmp"),
        ):
            context = fit_context(
                encoder.transform(rows),
                outputs,
                background_indices,
                seed,
                should_stop,
                encoder.players(players, names),
                memory_bytes,
            )
        params = artifact.parameters
        n_players = d if players is None else players.count
        aliases = alias_sets(
            rows,
            categorical_indices,
            None if players is None else [columns for _, columns in _groups(players)],
        )
        features = [output.features for output in context.outputs]
        weights = [member_weights(output, params) for output in features]
        # Attributes are set only now, so a refused or cancelled fit leaves the previous state.
        self.random_state_ = seed
        self.working_memory_bytes_ = memory_bytes
        self.background_ = background_indices
        self.background_rows_ = np.ascontiguousarray(rows[background_indices])
        self.feature_names_ = names
        self.categorical_ = categorical_indices
        self.categories_ = {names[j]: labels for j, labels in categories.items()}
        self.encoder_ = encoder
        self.groups_ = _groups(players)
        self.attribution_names_ = names if players is None else list(players.names)
        self.artifact_ = artifact
        self.single_output_ = np.ndim(predictions) == 1
        self.n_rows_ = n
        self.n_features_in_ = d
        self.n_outputs_ = outputs.shape[1]
        self.context_ = context
        self.weights_ = weights
        self.context_sha256_ = context_fingerprint(rows, outputs)
        # Set only where the outputs sum to a constant, so that other saves stay as they were.
        self.__dict__.pop("output_total_", None)
        output_total = constant_output_total(outputs)
        if output_total is not None:
            self.output_total_ = output_total
        # What the previous fit's first propose derived from its background (a fit of the same
        # object on another context kept them: its refined values erred up to 5x more).
        for derived in _DERIVED_STATE:
            self.__dict__.pop(derived, None)
        self.scales_ = [1.0] * outputs.shape[1]
        self.calibration_ = None
        self.uncertainty_terms_ = [
            uncertainty_terms(output, params, n_players) for output in features
        ]
        self.diagnostics_ = self._diagnostics(weights)
        # The floor is measured on what explain states without one (factor 1 meanwhile), and
        # without the aliases' spread, which no fidelity covers: the floor is the members'.
        self.fidelity_floor_ = [1.0] * outputs.shape[1]
        self.__dict__.pop("alias_sets_", None)
        self.fidelity_floor_ = self._fidelity_floors(outputs[background_indices])
        # Set only where there are aliases, so that other saves stay as they were.
        if aliases:
            self.alias_sets_ = aliases
        return self

    @property
    def alias_sets(self) -> list[list[int]]:
        """The sets of attributions (indices along the answers' second axis) that the context's
        rows cannot tell apart (``aliases.alias_sets``); empty without, and for explainers saved
        before they were found."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        return [list(members) for members in getattr(self, "alias_sets_", ())]

    def _fidelity_floors(self, background_outputs: np.ndarray) -> list[float]:
        """Per output, ``combiner.fidelity_floor`` of this fit: from what ``explain`` states
        (without a floor) for a seeded sample of at most ``DEFAULT_BACKGROUND_ROWS`` background
        rows, with their predictions (``background_outputs``, (n_background, K))."""
        n_background = self.background_rows_.shape[0]
        rng = np.random.default_rng(self.random_state_)
        sample = np.sort(
            rng.choice(n_background, size=min(n_background, DEFAULT_BACKGROUND_ROWS), replace=False)
        )
        explanation = self.explain(self.background_rows_[sample], background_outputs[sample])
        shape = (sample.size, len(self.attribution_names_), self.n_outputs_)
        values = explanation.values.reshape(shape)
        std = explanation.uncertainty.reshape(shape)
        return [
            fidelity_floor(values[:, :, k], std[:, :, k], output.predicted_fidelity)
            for k, output in enumerate(self.diagnostics_.outputs)
        ]

    def _stated_terms(self, k: int) -> tuple[float, float]:
        """Output ``k``'s (spread scale, variance floor) as explain and refine state them: the
        combiner's, times the fidelity floor (1 once calibrated, and for explainers saved before
        the floor existed)."""
        spread_scale, floor = self.uncertainty_terms_[k]
        factor = self._floor_factors()[k]
        return spread_scale * factor, floor * factor

    def _floor_factors(self) -> np.ndarray:
        """(K,) the fidelity floor per output (ones for explainers saved before it existed)."""
        factors = getattr(self, "fidelity_floor_", None)
        return np.ones(self.n_outputs_) if factors is None else np.asarray(factors, np.float64)

    def _diagnostics(
        self,
        weights: list[np.ndarray],
        calibration: list[CalibrationDiagnostics] | None = None,
        calibration_rows: int = 0,
    ) -> Diagnostics:
        """The diagnostics of this fit with ``weights`` per output (and calibration's)."""
        params = self.artifact_.parameters
        features = [output.features for output in self.context_.outputs]
        calibration = calibration or [None] * len(features)
        return Diagnostics(
            self.artifact_.version,
            [
                OutputDiagnostics(
                    predicted_fidelity(output, params, output_weights),
                    [
                        SurrogateDiagnostics(kind.name, float(member[0]), float(weight))
                        for kind, member, weight, ok in zip(
                            ZOO,
                            output.surrogate_features,
                            output_weights,
                            output.available,
                            strict=True,
                        )
                        if ok
                    ],
                    output_calibration,
                )
                for output, output_weights, output_calibration in zip(
                    features, weights, calibration, strict=True
                )
            ],
            calibration_rows,
        )

    def save(self, path: str | Path) -> Path:
        """Write the fitted state into the directory ``path``: ``arrays.npz`` and a JSON
        ``manifest.json`` (format, artifact version and checksum, the arrays' sha256, dtypes
        and shapes, and its own sha256), never pickle. ``ZeroShotExplainer.load(path)``
        answers bit for bit like this explainer; it explains, but cannot refit its members
        (their scikit-learn models are not saved). A path that cannot hold the save raises
        ``InvalidArgumentError`` naming ``path``, and leaves nothing half written."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        return save_explainer(self, path)

    @classmethod
    def load(cls, path: str | Path, artifact: str | None = None) -> "ZeroShotExplainer":
        """An explainer saved with ``save``, checked against ``artifact`` (default: the shipped
        one): a damaged directory, another format or another artifact is refused
        (``InvalidArgumentError`` naming ``path``)."""
        loaded_artifact = _artifact(artifact or DEFAULT_ARTIFACT)
        state = load_state(path, loaded_artifact)
        explainer = cls(
            random_state=state.pop("random_state"),
            artifact=artifact,
            working_memory_bytes=state.pop("working_memory_bytes"),
        )
        del state["artifact"]
        for name, value in state.items():
            setattr(explainer, name, value)
        explainer.artifact_ = loaded_artifact
        return explainer

    def memory_bytes(self) -> int:
        """Estimated bytes this fitted explainer holds (surrogates, their tables, the rows)."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        return held_bytes(self.context_)

    def pair_cache_bytes(self) -> int:
        """Bytes of what refinement made of the background rows and keeps for later calls (the
        tree members' leaf masks, made by the first ``propose``, ``refine`` or ``calibrate``
        that needs them), counted in ``memory_bytes`` too: 0 for an explainer never refined."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        return self.context_.pair_cache_bytes()

    def release_pair_cache(self) -> None:
        """Forget what ``pair_cache_bytes`` counts (a cache: later calls make it again, at the
        cost of their first call). The server does so for a context whose cache alone would
        take its store past its limit."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        self.context_.release_pair_cache()

    def _background_indices(self, background, n: int) -> np.ndarray:
        if background is None:
            rng = np.random.default_rng(self.random_state)
            return np.sort(rng.choice(n, size=min(n, DEFAULT_BACKGROUND_ROWS), replace=False))
        indices = np.asarray(background)
        if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
            raise InvalidArgumentError(
                "background",
                "must be a non-empty 1-D array of integer row indices "
                f"into X; got dtype {indices.dtype}, shape {indices.shape}",
            )
        if indices.min() < 0 or indices.max() >= n:
            raise InvalidArgumentError(
                "background",
                f"indices must lie in [0, {n}); got values from {indices.min()} to {indices.max()}",
            )
        if np.unique(indices).size != indices.size:
            raise InvalidArgumentError("background", "indices must be distinct")
        return indices.astype(np.int64)

    @staticmethod
    def _feature_names(names, d: int) -> list[str]:
        if names is None:
            return _default_names(d)
        names = [str(name) for name in names]
        if len(names) != d:
            raise InvalidArgumentError(
                "feature_names", f"has {len(names)} names; X has {d} features"
            )
        if len(set(names)) != d:
            raise InvalidArgumentError("feature_names", "must be distinct")
        return names

    def rows_per_slice(self) -> int:
        """How many query rows ``explain`` works on at once: within ``working_memory_bytes``, and
        at most ``EXPLAIN_SLICE_CELLS`` row x feature cells (features, not players: the
        surrogates' work grows with d whatever the grouping)."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        n_players = len(self.attribution_names_)
        # Per row: every member's values, the combined values and their spread, per output,
        # and the widest basis a surrogate expands the row's design columns into.
        width = self.encoder_.width
        per_row = 8 * (n_players * self.n_outputs_ * (len(ZOO) + 4) + 16 * width)
        within_memory = self.working_memory_bytes_ // 2 // per_row
        return max(1, min(within_memory, EXPLAIN_SLICE_CELLS // width))

    @staticmethod
    def _display(rows, coded, categories: dict[int, list]) -> np.ndarray | None:
        """What ``Explanation.display_data`` shows: None without coded columns; a query frame's
        own values; array rows' codes as their labels."""
        if not categories:
            return None
        return coded.display if coded is not None else display_rows(rows, categories)

    def _categories_by_column(self) -> dict[int, list]:
        position = {name: j for j, name in enumerate(self.feature_names_)}
        return {position[name]: labels for name, labels in self.categories_.items()}

    def explain(
        self,
        X_query,
        predictions_query=None,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> Explanation:
        """Estimated SHAP values of the query rows (exactly efficient when predictions given).

        Parameters
        ----------
        X_query : (m, d) rows to explain; a DataFrame's columns must be the fitted feature names
            (when the fit had names).
        predictions_query : None, or the model's outputs on X_query, shaped like ``predictions``.
        should_stop : optional; polled before each slice of ``rows_per_slice()`` rows. When it
            returns True, ``explain`` raises ``CancelledError``.
        """
        rows, coded, categories = self._query_rows(X_query)
        m = rows.shape[0]
        outputs = None
        if predictions_query is not None:
            outputs = _outputs("predictions_query", predictions_query, m, self.n_outputs_)
            self._check_output_total("predictions_query", outputs)
        n_players = len(self.attribution_names_)
        values = np.empty((m, n_players, self.n_outputs_))
        uncertainty = np.empty((m, n_players, self.n_outputs_))
        base_values = np.empty((m, self.n_outputs_))
        step = self.rows_per_slice()
        with _kernel_threads(m):
            for first in range(0, m, step):
                if should_stop is not None and should_stop():
                    raise CancelledError("the explanation was cancelled")
                part = slice(first, min(m, first + step))
                self._explain_slice(
                    rows[part],
                    None if outputs is None else outputs[part],
                    values[part],
                    uncertainty[part],
                    base_values[part],
                )
        if self.single_output_:
            values, uncertainty, base_values = (
                values[:, :, 0],
                uncertainty[:, :, 0],
                base_values[:, 0],
            )
            outputs = None if outputs is None else outputs[:, 0]
        return Explanation(
            values=values,
            base_values=base_values,
            uncertainty=uncertainty,
            attribution_names=list(self.attribution_names_),
            diagnostics=self.diagnostics_,
            # Its own copy: the rows may be the caller's array, which the caller may reuse.
            data=rows.copy(),
            display_data=self._display(rows, coded, categories),
            grouped=self.groups_ is not None,
            predictions=outputs,
        )

    def _query_rows(self, X_query) -> tuple[np.ndarray, object, dict[int, list]]:
        """Canonical (m, d) query rows, the coded frame (None for arrays) and the coded columns'
        labels by position."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        # The names first: a frame is coded by position, so columns in another order would be
        # refused for the wrong reason (a coded column's dtype), QA 2026-12-05.
        self._check_columns("X_query", X_query)
        categories = self._categories_by_column()
        coded = code_frame("X_query", X_query, categories) if is_data_frame(X_query) else None
        rows = _row_matrix("X_query", X_query if coded is None else coded.rows, self.n_features_in_)
        check_codes("X_query", rows, self.categorical_, self.feature_names_)
        return rows, coded, categories

    def _check_columns(self, name: str, table) -> None:
        """A table with columns must have the fitted names, in order. Fitted on an array, the
        names are x0, x1, ...: a frame may name its columns as it likes, but not those names in
        another order (nor may one fitted on such a frame)."""
        columns = _column_names(table)  # None for arrays: nothing to check
        if (
            columns is not None
            and columns != self.feature_names_
            and (
                self.feature_names_ != _default_names(self.n_features_in_)
                or sorted(columns) == sorted(self.feature_names_)
            )
        ):
            raise InvalidArgumentError(
                name,
                f"has columns {columns}; the explainer was fitted on {self.feature_names_} "
                "(same names, same order)",
            )

    def _player_of_column(self) -> np.ndarray:
        """(d,) int64: the player (attribution) each raw column belongs to."""
        player = np.arange(self.n_features_in_, dtype=np.int64)
        for g, (_, columns) in enumerate(self.groups_ or []):
            player[columns] = g
        return player

    def propose(
        self,
        X_query,
        budget: int,
        predictions_query=None,
        *,
        random_state: int | None = None,
    ) -> Proposal:
        """The rows your model should score to refine the explanation of ``X_query``.

        Parameters
        ----------
        X_query : (m, d) rows to explain, as for ``explain``.
        budget : the most rows your model scores per explained row (background rows included:
            each proposed row mixes the explained row with one background row, or with the
            background's centre where this explainer's trial of its proxy says that errs less
            at this budget: ``proposal.centre``; from two pairs per player on, and 16 at
            least, an eighth of the centre's pairs mix with background rows to measure its
            game's scale: ``proposal.n_scale_pairs``). At least 4, or 5 without
            ``predictions_query`` (the explained row itself is then one of them).
        predictions_query : None, or the model's outputs on X_query, shaped like
            ``predictions``.
        random_state : seeds the coalitions (default: the fit's); a row draws the same ones in
            any batch, and of the same columns in any order of them (``DrawOrder``).

        Returns
        -------
        Proposal
            ``proposal.rows`` (m * proposal.rows_per_query, d) to score with the model, in order;
            pass the outputs to ``refine``. The same arguments give the same proposal.
        """
        rows, coded, categories = self._query_rows(X_query)
        outputs = None
        if predictions_query is not None:
            outputs = _outputs(
                "predictions_query", predictions_query, rows.shape[0], self.n_outputs_
            )
            self._check_output_total("predictions_query", outputs)
        lowest = minimum_budget(outputs is not None)
        if not isinstance(budget, int | np.integer) or isinstance(budget, bool) or budget < lowest:
            raise InvalidArgumentError(
                "budget",
                f"must be an int of at least {lowest} model rows per explained row "
                f"({minimum_budget(True)} with the explained rows' predictions, "
                f"{minimum_budget(False)} without); got {budget!r}",
            )
        self._check_proposal_size(rows.shape[0] * int(budget))
        seed = self._seed(random_state)
        n_players = len(self.attribution_names_)
        n_pairs = pairs_within(int(budget), outputs is not None) if n_players > 1 else 0
        centre = self._may_mix_with_centre() and prefers_centre(
            self._centre_trials(), n_pairs, n_players
        )
        proposal = draw_proposal(
            rows,
            outputs,
            self.background_rows_,
            self._draw_order(),
            n_pairs,
            int(budget),
            seed,
            self._centre_row() if centre else None,
        )
        # A query frame's own values, so that refine shows them as explain does (an unseen
        # label has no code to show it by).
        display = self._display(rows, coded, categories) if coded is not None else None
        return dataclasses.replace(
            proposal, background_sha256=self._background_sha256(), display=display
        )

    def _check_proposal_size(self, most_rows: int) -> None:
        """Refuse a proposal whose rows could exceed the working memory, before drawing it: a
        budget of 10**9 ran out of memory inside numpy, 10**30 failed there naming nothing."""
        most_bytes = most_rows * self.n_features_in_ * 8
        if most_bytes > self.working_memory_bytes_:
            raise LimitExceededError(
                "budget",
                f"the proposal's up to {most_rows:,} rows of {self.n_features_in_} features "
                f"would take {most_bytes:,} bytes, more than working_memory_bytes "
                f"({self.working_memory_bytes_:,}); lower the budget or propose for fewer rows "
                "at a time",
            )

    def _check_pooled_size(self, n_rows: int) -> None:
        """Refuse ``pool_rows`` where its arrays would take more than half the working memory
        (the other half is refine's slices): per fold a Gram of the design columns, three more
        while each fold's function is solved, and its functions at every ridge strength."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        n_folds = int(pooled_fold(n_rows).max(initial=0)) + 1
        width = self.context_.standardiser.mean.shape[0]
        functions = (len(POOLED_RIDGE_STRENGTHS) + 1) * n_folds * self.n_outputs_
        needed = 8 * width * ((n_folds + 3) * width + functions)
        if n_rows > 1 and needed > self.working_memory_bytes_ // 2:
            raise LimitExceededError(
                "pool_rows",
                f"pooling {n_rows} rows of {width} design columns would take {needed:,} bytes, "
                f"more than half of working_memory_bytes ({self.working_memory_bytes_:,}); "
                "refine without pool_rows, or with a larger working memory",
            )

    def _may_mix_with_centre(self) -> bool:
        """Whether refine's pairs may mix with the background's centre (``prefers_centre``).
        Not in a context refitted on the model's outputs: its members learned the model on rows
        mixed with background rows, so their residual there is small and at the centre not
        measured, and the trial sees only the proxy. On `bench refinement`'s refitted contexts
        (2026-12-02, refine forced to each design) the centre, where the trial chose it, took
        mean r at d / 2d / 4d / 10d from 0.959 / 0.961 / 0.966 / 0.975 to 0.959 / 0.958 /
        0.965 / 0.975 on the real tables, from 0.656 / 0.677 / 0.707 / 0.772 to 0.652 / 0.675 /
        0.697 / 0.708 on the embedding tasks (the d = 1,024 forest 0.635 -> 0.513 at 4d)."""
        calibration = self.calibration_
        return calibration is None or not calibration.refitted

    def _background_sha256(self) -> str:
        """The fingerprint of the rows that stand in for absent features, as proposals mix
        them: the background rows (NaN canonical), the categorical columns (which the centre
        reads) and each column's player. A proposal carries it, and refine and calibrate
        refuse one made against another background."""
        fingerprint = self.__dict__.get("_background_sha")
        if fingerprint is None:
            rows = self.background_rows_
            digest = hashlib.sha256(np.asarray(rows.shape, dtype=np.int64).tobytes())
            digest.update(canonical_floats(rows).tobytes())
            digest.update(self.categorical_.astype(np.int64).tobytes())
            digest.update(self._player_of_column().tobytes())
            fingerprint = digest.hexdigest()
            self._background_sha = fingerprint
        return fingerprint

    def _centre_row(self) -> np.ndarray:
        """(1, d) the background's centre (``reference_centre``), derived from the fitted state
        once and kept."""
        centre = self.__dict__.get("_centre")
        if centre is None:
            centre = reference_centre(self.background_rows_, self.categorical_)
            self._centre = centre
        return centre

    def _draw_order(self) -> DrawOrder:
        """The order refine's and calibrate's coalitions are drawn in (``DrawOrder``), derived
        from the fitted background once and kept."""
        order = self.__dict__.get("_order")
        if order is None:
            order = DrawOrder.of(
                self.background_rows_, self._player_of_column(), len(self.attribution_names_)
            )
            self._order = order
        return order

    def _centre_trials(self) -> list[CentreTrial]:
        """Per output, ``CentreTrial`` of this explainer's proxy, measured once and kept (a
        calibration's copy measures its own): a seeded sample of ``CENTRE_TRIAL_ROWS``
        background rows as the explained rows, ``CENTRE_TRIAL_COALITIONS`` coalitions each,
        every coalition mixed with the centre and with each of (up to
        ``CENTRE_TRIAL_BACKGROUND``, fewer where the working memory is short) background
        rows."""
        trials = self.__dict__.get("_trials")
        if trials is not None:
            return trials
        n_players = len(self.attribution_names_)
        if n_players < 2:
            self._trials = []
            return self._trials
        rng = np.random.default_rng(self.random_state_)
        background = self.background_rows_
        # The repeated coalitions (a byte per player) within a quarter of the working memory.
        cells = CENTRE_TRIAL_ROWS * CENTRE_TRIAL_COALITIONS * n_players
        most = max(MIN_CENTRE_TRIAL_BACKGROUND, self.working_memory_bytes_ // (4 * cells))
        if background.shape[0] > min(CENTRE_TRIAL_BACKGROUND, most):
            chosen = rng.choice(background.shape[0], min(CENTRE_TRIAL_BACKGROUND, most), False)
            background = background[np.sort(chosen)]
        n_background = background.shape[0]
        rows = min(CENTRE_TRIAL_ROWS, n_background)
        query = background[np.sort(rng.choice(n_background, rows, False))]
        masks, _ = draw_coalitions(
            query, 1, self._draw_order(), CENTRE_TRIAL_COALITIONS, self.random_state_
        )
        design = self.encoder_.transform(query)
        players = self.context_.design_players(design.shape[1])
        needed = self._control_members()
        standardise = self.context_.standardiser.transform
        every_background = Pairs(
            standardise(self.encoder_.transform(background)),
            players,
            np.repeat(masks, n_background, axis=1),
            np.tile(np.arange(n_background), (rows, CENTRE_TRIAL_COALITIONS)),
            prepared=background is self.background_rows_,
        )
        centre = Pairs(
            standardise(self.encoder_.transform(self._centre_row())),
            players,
            masks,
            np.zeros(masks.shape[:2], dtype=np.int64),
            prepared=False,
        )
        with_background = self.context_.member_pair_gaps(design, every_background, needed)
        with_centre = self.context_.member_pair_gaps(design, centre, needed)
        member_values = self.context_.member_values(design, needed)
        self._trials = [
            centre_trial(
                self._control(with_background, k).reshape(
                    rows, CENTRE_TRIAL_COALITIONS, n_background
                ),
                self._control(with_centre, k),
                masks,
                self._control(member_values, k),
            )
            for k in range(self.n_outputs_)
        ]
        return self._trials

    def _seed(self, random_state: int | None) -> int:
        """The seed of a proposal: ``random_state``, checked, or the fit's."""
        seed = self.random_state_ if random_state is None else random_state
        if not _is_seed(seed):
            raise InvalidArgumentError(
                "random_state", f"must be an int in [0, 2**32); got {random_state!r}"
            )
        return int(seed)

    def refine(
        self,
        proposal: Proposal,
        outputs,
        *,
        pool_rows: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> Explanation:
        """Refined SHAP values from your model's outputs on ``proposal.rows``.

        The zero-shot estimate's proxy is explained exactly and the model's outputs correct it
        (see ``shapley_svc.estimator.refinement``): a regression of the residual on the scored
        pairs, exactly efficient, converging to the exact values as the budget grows.
        ``uncertainty`` is the remaining error.

        Parameters
        ----------
        proposal : from ``propose`` on this explainer.
        outputs : (len(proposal.rows),) or (len(proposal.rows), K): the model's outputs on the
            proposed rows, on the scale of the context's predictions.
        pool_rows : also learn from the other explained rows' pairs (default False): a linear
            function of the columns, fitted on the other rows' pairs to what the proxy misses
            there, joins each row's proxy, where held-out rows say it errs less than none
            (``refinement.POOLED_FOLDS``). It gains most on smooth models in many columns (an
            MLP on 384 embedding columns, 10 rows a call: r 0.864 -> 0.903 at budget 4d on
            `bench refinement`) and costs nothing measurable elsewhere; but a row's answer
            then depends on the rows refined with it (and their order), where by default it
            depends on the row alone. A single row is refined as without it.
        should_stop : optional; polled before each slice of explained rows. When it returns
            True, ``refine`` raises ``CancelledError``.
        """
        if not isinstance(pool_rows, bool | np.bool_):
            raise InvalidArgumentError(
                "pool_rows", f"must be True or False; got {type(pool_rows).__name__}"
            )
        if pool_rows and isinstance(proposal, Proposal):
            self._check_pooled_size(proposal.query.shape[0])
        parts = self._refinement_parts(proposal, outputs, should_stop, bool(pool_rows))
        values, uncertainty = self._merged(parts, proposal.n_pairs)
        self._exact_zeros(proposal.query, values, uncertainty, parts.predictions, parts.base_values)
        base_values, predictions = parts.base_values, parts.predictions
        if self.single_output_:
            values, uncertainty = values[:, :, 0], uncertainty[:, :, 0]
            base_values, predictions = base_values[:, 0], predictions[:, 0]
        return Explanation(
            values=values,
            base_values=base_values,
            uncertainty=uncertainty,
            attribution_names=list(self.attribution_names_),
            diagnostics=self.diagnostics_,
            data=proposal.query,
            display_data=proposal.display
            if proposal.display is not None
            else self._display(proposal.query, None, self._categories_by_column()),
            grouped=self.groups_ is not None,
            predictions=np.array(predictions),
            model_rows=proposal.rows_per_query,
        )

    def _merged(self, parts: RefinementParts, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
        """(m, P, K) values and uncertainty: ``parts`` merged per output, as ``refine`` answers
        (``merged_with_prior``); ``n_pairs`` pairs per explained row measured the pairs' part."""
        values = np.empty_like(parts.prior)
        uncertainty = np.empty_like(parts.prior)
        for k in range(self.n_outputs_):
            share, pairs_per_player = self._prior_belief(k)
            refined, refined_std = parts.refined[:, :, k], parts.refined_std[:, :, k]
            scales = None
            reference = None
            if parts.scale_masks is not None:
                scales = row_scales(
                    parts.scale_masks,
                    parts.scale_centre_gaps[:, :, k],
                    parts.scale_background_gaps[:, :, k],
                )
                reference, _ = rescaled(refined, refined_std, *scales)
            merged = merged_with_prior(
                parts.prior[:, :, k],
                parts.prior_std[:, :, k],
                refined,
                refined_std,
                parts.total[:, k],
                n_pairs,
                pairs_per_player,
                share,
                reference,
                parts.interval_std[:, :, k],
            )
            if scales is not None:
                merged = rescaled(*merged, *scales)
            values[:, :, k], uncertainty[:, :, k] = merged
        return values, uncertainty

    def _refinement_parts(
        self,
        proposal: Proposal,
        outputs,
        should_stop: Callable[[], bool] | None = None,
        pool_rows: bool = False,
    ) -> RefinementParts:
        """What ``refine`` merges: per explained row and output, the zero-shot values (the
        prior) and the pairs' estimate, each with its standard deviation (checks the
        arguments as ``refine`` documents)."""
        if not hasattr(self, "context_"):
            raise NotFittedError()
        if not isinstance(proposal, Proposal):
            raise InvalidArgumentError(
                "proposal", f"must be a Proposal from propose(); got {type(proposal).__name__}"
            )
        n_players = len(self.attribution_names_)
        if (
            proposal.background_sha256 != self._background_sha256()
            or proposal.query.shape[1] != self.n_features_in_
            or proposal.masks.shape[2] != n_players
            or int(proposal.background.max(initial=0)) >= self.background_rows_.shape[0]
            or (
                proposal.scale_background is not None
                and int(proposal.scale_background.max(initial=0)) >= self.background_rows_.shape[0]
            )
        ):
            raise InvalidArgumentError("proposal", "was made by another explainer")
        if proposal.predictions is not None and proposal.predictions.shape[1] != self.n_outputs_:
            # Another explainer on the same background (the fingerprint's scope, so that a
            # calibrated copy refines its parent's proposals) for a model with other outputs.
            raise InvalidArgumentError(
                "proposal",
                f"carries predictions of {proposal.predictions.shape[1]} outputs; this "
                f"explainer was fitted on {self.n_outputs_}: it was made by another explainer",
            )
        m, block = proposal.query.shape[0], proposal.rows_per_query
        if block == 0:  # one player with its prediction given: its value is exact already
            scored = np.empty((0, self.n_outputs_))
        else:
            scored = _outputs("outputs", outputs, proposal.rows.shape[0], self.n_outputs_)
            self._check_output_total("outputs", scored)
        by_query = scored.reshape(m, block, self.n_outputs_)
        lead = proposal.lead
        predictions = proposal.predictions if lead == 0 else by_query[:, 0, :]
        parts = RefinementParts.empty(m, n_players, self.n_outputs_, predictions)
        pairs_end = lead + 2 * proposal.n_pairs
        if proposal.n_scale_pairs:
            # The scale pairs' coalitions are the first pairs' again: their gaps at the centre
            # and with background rows, side by side.
            n_scale = proposal.n_scale_pairs
            paired = by_query[:, lead:, :].reshape(m, -1, 2, self.n_outputs_)
            gaps = paired[:, :, 0, :] - paired[:, :, 1, :]
            parts = dataclasses.replace(
                parts,
                scale_masks=proposal.scale_masks,
                scale_centre_gaps=gaps[:, :n_scale],
                scale_background_gaps=gaps[:, proposal.n_pairs :],
            )
        step = self._refine_rows_per_slice(block)
        # The rows the pairs mix with as the members see them: once per call, not per slice.
        reference = self._centre_row() if proposal.centre else self.background_rows_
        reference_design = self.context_.standardiser.transform(self.encoder_.transform(reference))
        slices = [slice(first, min(m, first + step)) for first in range(0, m, step)]
        with _kernel_threads(m * block):
            if pool_rows and m > 1 and proposal.n_pairs:
                self._pooled_slices(
                    proposal,
                    slices,
                    by_query[:, lead:pairs_end, :],
                    predictions,
                    reference_design,
                    parts,
                    should_stop,
                )
                return parts
            for part in slices:
                if should_stop is not None and should_stop():
                    raise CancelledError("the refinement was cancelled")
                self._refine_slice(
                    proposal,
                    part,
                    by_query[part, lead:pairs_end, :],
                    predictions[part],
                    reference_design,
                    parts.rows(part),
                    should_stop,
                )
        return parts

    def propose_calibration(
        self,
        budget: int | None = None,
        *,
        random_state: int | None = None,
        refit: bool = False,
    ) -> CalibrationProposal:
        """The rows your model should score, once, to calibrate this context (see
        ``calibrate``).

        Parameters
        ----------
        budget : the most rows your model scores in all (default: 10 per background row, 1,000
            for the default 100; 20 per background row with ``refit``). Every background row
            gets ``budget // (2 * n_background)`` paired coalitions; at least two pairs per
            background row and 16 pairs in all.
        random_state : seeds the coalitions (default: the fit's).
        refit : size the default budget for ``calibrate`` with the context (X, predictions),
            which refits the surrogates themselves and keeps gaining from more rows where the
            weights alone do not (see ``calibration.REFIT_ROWS_PER_BACKGROUND``). Either
            proposal serves either kind of calibration.

        Returns
        -------
        CalibrationProposal
            ``proposal.rows`` to score with the model, in order; pass the outputs to
            ``calibrate``. The same arguments give the same proposal.
        """
        if not hasattr(self, "context_"):
            raise NotFittedError()
        n_background = self.background_rows_.shape[0]
        if budget is None:
            budget = default_calibration_budget(n_background, refit=bool(refit))
        lowest = minimum_calibration_budget(n_background)
        if not isinstance(budget, int | np.integer) or isinstance(budget, bool) or budget < lowest:
            raise InvalidArgumentError(
                "budget",
                f"must be an int of at least {lowest} rows (two pairs per background row, "
                f"{n_background} background rows, 16 pairs in all); got {budget!r}",
            )
        self._check_proposal_size(int(budget))
        if len(self.attribution_names_) < 2:
            raise InvalidArgumentError(
                "budget",
                "a context with a single attribution has nothing to calibrate: its value is "
                "prediction - base value, exactly, when explain is given the prediction",
            )
        if n_background < 2 or not np.any(
            _differs(self.background_rows_[1:], self.background_rows_[0])
        ):
            raise InvalidArgumentError(
                "background",
                ("has one row" if n_background == 1 else f"has {n_background} rows, all the same")
                + ": calibration scores rows mixed from two background rows, and rows mixed from "
                "copies of one row are that row: the model's outputs on them measure nothing",
            )
        seed = self._seed(random_state)
        proposal = draw_calibration(self.background_rows_, self._draw_order(), int(budget), seed)
        return dataclasses.replace(proposal, background_sha256=self._background_sha256())

    def calibrate(
        self,
        proposal: CalibrationProposal,
        outputs,
        X=None,
        predictions=None,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> "ZeroShotExplainer":
        """A calibrated copy of this explainer, from your model's outputs on ``proposal.rows``
        (see ``shapley_svc.estimator.calibration``); this explainer is left as it was.

        Without ``X``: each output's member weights are refitted to the outputs' pair gaps, and
        the stated uncertainty rescaled to the residual the pairs still measure (the larger of
        two estimates: see ``calibration.uncertainty_ratio``). With ``X`` and
        ``predictions`` (the context this explainer was fitted on, checked): the zoo is refitted
        on the context and the scored rows together, so that the members learn what the model
        does on rows that mix background rows; they are weighed by the gate's mix, the pairs'
        or a blend of the two, whichever follows the pairs best held out
        (``calibration.stacked_output``), and the stated uncertainty is rescaled from a
        residual measured held out (see ``_weigh_held_out``). Two fits' time, on
        n + len(proposal.rows) rows and on n + half of them. On the refinement benchmark's 50
        real-table cases, zero-shot r 0.926 -> 0.953 refitted, 0.939 re-weighted (10 rows per
        background row); refitted at 20, the default of ``propose_calibration(refit=True)``:
        0.959.

        The copy explains, proposes, refines and saves like any explainer, with no further
        model rows. ``diagnostics_`` of the copy report the weights, each output's scale and
        R^2 of the pair gaps before and after (in-sample after).

        Parameters
        ----------
        proposal : from ``propose_calibration`` on this explainer.
        outputs : (len(proposal.rows),) or (len(proposal.rows), K): the model's outputs on the
            proposed rows, on the scale of the context's predictions. Finite; where the
            context's outputs sum to one constant (class probabilities), rows that miss it by
            more than ``OUTPUT_SCALE_TOLERANCE`` are refused (``InvalidArgumentError``).
        X, predictions : None, or the context's rows and predictions as given to ``fit``.
        should_stop : optional; polled as ``fit`` polls it while the zoo is refitted, and
            before each member's pair gaps when the weights are (True: ``CancelledError``, this
            explainer unchanged).
        """
        if not hasattr(self, "context_"):
            raise NotFittedError()
        if not isinstance(proposal, CalibrationProposal):
            raise InvalidArgumentError(
                "proposal",
                "must be a CalibrationProposal from propose_calibration(); "
                f"got {type(proposal).__name__}",
            )
        n_background = self.background_rows_.shape[0]
        if (
            proposal.background_sha256 != self._background_sha256()
            or proposal.masks.shape[0] != n_background
            or proposal.masks.shape[2] != len(self.attribution_names_)
            or proposal.rows.shape[1] != self.n_features_in_
        ):
            raise InvalidArgumentError("proposal", "was made by another explainer")
        scored = _outputs("outputs", outputs, proposal.rows.shape[0], self.n_outputs_)
        self._check_output_total("outputs", scored)
        if X is not None or predictions is not None:
            return self._refitted(proposal, scored, X, predictions, should_stop)
        design, member_gaps, model_gaps = self._calibration_gaps(proposal, scored, should_stop)
        fitted = [
            calibrated_output(member_gaps[k], model_gaps[:, :, k], self.weights_[k], scale)
            for k, scale in enumerate(self.scales_)
        ]
        calibrated = copy.copy(self)
        # Measured of the proxy, which the weights change.
        calibrated.__dict__.pop("_trials", None)
        calibrated.weights_ = [output.shares for output in fitted]
        calibrated.scales_ = [output.scale for output in fitted]
        # The stated uncertainty follows the calibrated proxy's residual on the same pairs:
        # the members' spread alone shrinks as the weights settle on fewer members (80 %
        # coverage 0.48 on the refinement benchmark's real tables without this, 0.78 with).
        member_values = self.context_.member_values(design)
        terms, shares = [], []
        for k, output in enumerate(fitted):
            spread_scale, floor = self.uncertainty_terms_[k]
            proxy_gaps = np.einsum("s,smp->mp", output.scale * output.shares, member_gaps[k])
            residual = residual_square(model_gaps[:, :, k] - proxy_gaps, proposal.masks)
            transferred = transferred_square(
                self._stated_std(member_values, k), output.gap_r2_before, output.gap_r2_after
            )
            _, stated = combine(
                output.scale * member_values[k],
                output.shares,
                spread_scale,
                floor,
                np.zeros(n_background),
            )
            ratio = uncertainty_ratio(residual, transferred, stated)
            terms.append((spread_scale * ratio, floor * ratio))
            shares.append(lower_estimate_share(residual, transferred, stated))
        calibrated.uncertainty_terms_ = terms
        calibrated.fidelity_floor_ = [1.0] * len(terms)
        # The members are this context's: refitted on scored rows when this context was, so a
        # weights calibration of a refitted context is still refitted (it keeps refine's pairs
        # on background rows), and the rows scored for it are both calibrations'.
        members_refitted = self.calibration_ is not None and self.calibration_.refitted
        calibrated.calibration_ = Calibration(
            int(proposal.budget),
            int(proposal.random_state),
            int(proposal.rows.shape[0]),
            outputs_fingerprint(scored),
            refitted=members_refitted,
            lower_estimate_shares=tuple(shares),
        )
        calibrated.diagnostics_ = self._diagnostics(
            calibrated.weights_,
            [
                CalibrationDiagnostics(output.scale, output.gap_r2_before, output.gap_r2_after)
                for output in fitted
            ],
            int(proposal.rows.shape[0]) + self.diagnostics_.calibration_rows,
        )
        return calibrated

    def _refitted(
        self,
        proposal: CalibrationProposal,
        scored: np.ndarray,
        X,
        predictions,
        should_stop: Callable[[], bool] | None,
    ) -> "ZeroShotExplainer":
        """``calibrate`` with the context: the zoo refitted on it and the scored rows."""
        if X is None or predictions is None:
            missing = "X" if X is None else "predictions"
            raise InvalidArgumentError(
                missing, "is required with the other: give X and predictions together"
            )
        if getattr(self, "context_sha256_", None) is None:
            raise InvalidArgumentError(
                "X",
                "this explainer was saved before it kept its context's fingerprint: fit it again "
                "to calibrate with X, or calibrate without X (weights only)",
            )
        self._check_columns("X", X)
        categories = self._categories_by_column()
        coded = code_frame("X", X, categories) if is_data_frame(X) else None
        rows = _row_matrix("X", X if coded is None else coded.rows, self.n_features_in_)
        context_outputs = _outputs("predictions", predictions, rows.shape[0], self.n_outputs_)
        if context_fingerprint(rows, context_outputs) != self.context_sha256_:
            raise InvalidArgumentError(
                "X", "and predictions are not the context this explainer was fitted on"
            )
        refitted = self._fitted_like(
            np.concatenate([rows, proposal.rows]),
            np.concatenate([context_outputs, scored]),
            should_stop,
        )
        refitted.categories_ = self.categories_
        refitted.single_output_ = self.single_output_
        _, zero_shot_gaps, model_gaps = self._calibration_gaps(proposal, scored, should_stop)
        shares = self._weigh_held_out(
            refitted,
            proposal,
            scored,
            rows,
            context_outputs,
            zero_shot_gaps,
            model_gaps,
            should_stop,
        )
        refitted.fidelity_floor_ = [1.0] * len(refitted.uncertainty_terms_)
        before = self._pair_gap_r2(zero_shot_gaps, model_gaps)
        after = refitted._pair_gap_r2(
            refitted._calibration_gaps(proposal, scored, should_stop)[1], model_gaps
        )
        refitted.calibration_ = Calibration(
            int(proposal.budget),
            int(proposal.random_state),
            int(proposal.rows.shape[0]),
            outputs_fingerprint(scored),
            refitted=True,
            lower_estimate_shares=tuple(shares),
        )
        refitted.diagnostics_ = refitted._diagnostics(
            refitted.weights_,
            [
                CalibrationDiagnostics(scale, b, a)
                for scale, b, a in zip(refitted.scales_, before, after, strict=True)
            ],
            int(proposal.rows.shape[0]),
        )
        return refitted

    def _fitted_like(
        self, rows: np.ndarray, outputs: np.ndarray, should_stop: Callable[[], bool] | None
    ) -> "ZeroShotExplainer":
        """A new explainer fitted as this one was (seed, artifact, memory, background rows,
        names, categorical columns, groups) to ``rows`` and ``outputs``, whose first rows are
        this explainer's context."""
        return ZeroShotExplainer(
            random_state=self.random_state_,
            artifact=self.artifact,
            working_memory_bytes=self.working_memory_bytes_,
        ).fit(
            rows,
            outputs,
            background=self.background_,
            feature_names=self.feature_names_,
            categorical=self.categorical_.tolist() or None,
            groups=self.groups_,
            should_stop=should_stop,
        )

    def _weigh_held_out(
        self,
        refitted: "ZeroShotExplainer",
        proposal: CalibrationProposal,
        scored: np.ndarray,
        rows: np.ndarray,
        context_outputs: np.ndarray,
        zero_shot_gaps: list[np.ndarray],
        model_gaps: np.ndarray,
        should_stop: Callable[[], bool] | None,
    ) -> list[float]:
        """Sets ``refitted``'s weights (``calibration.stacked_output``) and rescales its
        uncertainty terms (``_held_out_terms``) from pairs it did not learn: a second refit
        learns from the context and the calibration rows of half the background rows, and the
        other half's pairs judge it. Returns each output's ``lower_estimate_share``. Below
        ``MIN_HELD_OUT_ROWS`` background rows a half, the gate's weights and terms are kept, and
        believed as ``fit`` states them (share 1)."""
        split = held_out_split(proposal.masks.shape[0], proposal.random_state)
        if split is None:
            return [1.0] * len(refitted.uncertainty_terms_)
        learned, held = split
        held_out = self._fitted_like(
            np.concatenate([rows, rows_of(proposal, learned, proposal.rows)]),
            np.concatenate([context_outputs, rows_of(proposal, learned, scored)]),
            should_stop,
        )
        held_out_design, held_out_gaps, _ = held_out._calibration_gaps(
            proposal, scored, should_stop
        )
        stacked = [
            stacked_output(
                held_out_gaps[k][:, held],
                model_gaps[held, :, k],
                refitted.weights_[k],
                refitted.scales_[k],
                proposal.random_state,
            )
            for k in range(self.n_outputs_)
        ]
        # The refit and the held-out fit weigh their members alike, so that the residual
        # measured on the held-out fit is that of the refit's proxy.
        for explainer in (refitted, held_out):
            explainer.weights_ = [output.shares for output in stacked]
            explainer.scales_ = [output.scale for output in stacked]
        refitted.uncertainty_terms_, shares = self._held_out_terms(
            refitted.uncertainty_terms_,
            held_out,
            held_out_design[held],
            held_out_gaps,
            held,
            proposal,
            zero_shot_gaps,
            model_gaps,
        )
        return shares

    def _held_out_terms(
        self,
        terms: list[tuple[float, float]],
        held_out: "ZeroShotExplainer",
        held_out_background: np.ndarray,
        held_out_gaps: list[np.ndarray],
        held: np.ndarray,
        proposal: CalibrationProposal,
        zero_shot_gaps: list[np.ndarray],
        model_gaps: np.ndarray,
    ) -> tuple[list[tuple[float, float]], list[float]]:
        """A refit's uncertainty ``terms`` (its gate's), rescaled as a weights-only calibration
        rescales them (``calibration.uncertainty_ratio``) but from a residual the refit did not
        learn, and each output's ``calibration.lower_estimate_share`` of that residual.
        ``held_out``, a second refit, learned from the context and the calibration rows of
        half the background rows and weighs its members as the refit does; its residual is
        measured on the pairs of the other half, ``held``. On the refinement benchmark's 50
        real-table cases the refit's 80 % intervals covered 0.71 as the gate states them, and
        0.82 rescaled held out; rescaled from the refit's own, in-sample residual they covered
        0.62 (a prototype run over the same cases' outputs): the refit has learned those rows.
        ``held_out_background``: the held rows as ``held_out``'s members see them;
        ``held_out_gaps``, ``zero_shot_gaps`` and ``model_gaps``: its member pair gaps, this
        explainer's and the model's, as ``_calibration_gaps`` gives them."""
        zero_shot_values = self.context_.member_values(
            self.encoder_.transform(self.background_rows_[held])
        )
        held_out_values = held_out.context_.member_values(held_out_background)
        rescaled, shares = [], []
        for k, (spread_scale, floor) in enumerate(terms):
            model = model_gaps[held, :, k]
            proxy = held_out._proxy_gaps(held_out_gaps, k)[held]
            residual = residual_square(model - proxy, proposal.masks[held])
            transferred = transferred_square(
                self._stated_std(zero_shot_values, k),
                r_squared(self._proxy_gaps(zero_shot_gaps, k)[held].ravel(), model.ravel()),
                r_squared(proxy.ravel(), model.ravel()),
            )
            stated = held_out._stated_std(held_out_values, k)
            ratio = uncertainty_ratio(residual, transferred, stated)
            rescaled.append((spread_scale * ratio, floor * ratio))
            shares.append(lower_estimate_share(residual, transferred, stated))
        return rescaled, shares

    def _proxy_gaps(self, member_gaps: list[np.ndarray], k: int) -> np.ndarray:
        """Output ``k``'s proxy pair gaps from every member's (S, m, n_pairs)."""
        return np.einsum("s,smp->mp", self.scales_[k] * self.weights_[k], member_gaps[k])

    def _stated_std(self, member_values: list[np.ndarray], k: int) -> np.ndarray:
        """(m, P) the uncertainty output ``k``'s combiner states for the rows of
        ``member_values``, projected (as with predictions given: any sums give the same), before
        the fidelity floor: calibration rescales the combiner's own terms."""
        spread_scale, floor = self.uncertainty_terms_[k]
        targets = np.zeros(member_values[k].shape[1])
        _, std = combine(
            self._scaled(member_values[k], k), self.weights_[k], spread_scale, floor, targets
        )
        return std

    def _calibration_gaps(
        self,
        proposal: CalibrationProposal,
        scored: np.ndarray,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """The background rows' design, each output's (S, n_background, n_pairs) member pair
        gaps (every member's), and the model's (n_background, n_pairs, K) pair gaps."""
        n_background, n_pairs = proposal.masks.shape[:2]
        by_pair = scored.reshape(n_background, n_pairs, 2, self.n_outputs_)
        design = self.encoder_.transform(self.background_rows_)
        pairs = Pairs(
            self.context_.standardiser.transform(design),
            self.context_.design_players(design.shape[1]),
            proposal.masks,
            proposal.background,
        )
        member_gaps = self.context_.member_pair_gaps(design, pairs, should_stop=should_stop)
        return design, member_gaps, by_pair[:, :, 0, :] - by_pair[:, :, 1, :]

    def _pair_gap_r2(self, member_gaps: list[np.ndarray], model_gaps: np.ndarray) -> list[float]:
        """Per output, R^2 of this explainer's proxy pair gaps against the model's over the
        calibration pairs, from its member pair gaps and the model's (``_calibration_gaps``)."""
        return [
            r_squared(self._proxy_gaps(member_gaps, k).ravel(), model_gaps[:, :, k].ravel())
            for k in range(self.n_outputs_)
        ]

    def _refine_rows_per_slice(self, block: int) -> int:
        """Explained rows refined at once: per proposed row, a coalition's players and every
        member's gap per output; per explained row, the regression's targets, moments and
        moves (``regress_pairs``); once per slice, whose rows share their coalitions, the
        regression's chunk of centred coalitions, their influences and its square, and four P
        x P arrays (its Gram, and inverting it); within half the working memory (and explain's
        slices). A slice is one Gram for its rows: at d = 1,024 and budget 10d (predictions
        given), 35 rows a slice in the default working memory, where counting the Gram's
        arrays per row made it 3 (four Grams for ten rows); at 4d 98 against 6."""
        n_players = len(self.attribution_names_)
        chunk = min(max(1, block // 2), pair_chunk(n_players))
        once = 3 * 8 * chunk * n_players + 4 * 8 * n_players**2
        per_query = max(1, block) * (n_players + 8 * (len(ZOO) + 2) * self.n_outputs_) + 8 * (
            block // 2 + 3 * n_players + 2 * chunk
        )
        return max(
            1,
            min(
                (self.working_memory_bytes_ // 2 - once) // per_query,
                self.rows_per_slice(),
                REFINE_SLICE_ROWS // max(1, block),
            ),
        )

    def _refine_slice(
        self, proposal, part, pair_outputs, predictions, reference_design, parts, should_stop
    ) -> None:
        """Fill ``parts`` (``RefinementParts`` of the explained rows ``part`` of ``proposal``);
        ``pair_outputs`` (m, 2 * n_pairs, K) are the model's outputs on their pairs' rows,
        ``predictions`` (m, K) on the rows themselves, ``reference_design`` the standardised
        design of the rows the pairs mix with (the background rows, or the centre).
        ``should_stop`` is polled before each member's pair gaps and each output's regression:
        a slice is sized for memory and can take seconds (2.1 s for 2,000 rows at d = 32 and
        budget 4d), and smaller slices cost more (1.6-1.9x the CPU time at 8 slices there)."""
        proxy_values, proxy_gaps = self._slice_proxy(
            proposal, part, predictions, reference_design, parts, should_stop
        )
        self._slice_regression(
            proposal, part, pair_outputs, proxy_values, proxy_gaps, parts, should_stop
        )

    def _slice_proxy(
        self, proposal, part, predictions, reference_design, parts, should_stop
    ) -> tuple[np.ndarray, np.ndarray]:
        """The proxy refine corrects on the explained rows ``part``: its (m, P, K) exact values
        and (m, n_pairs, K) pair gaps; fills ``parts``' totals, base values and prior."""
        query = proposal.query[part]
        masks = proposal.masks[part]
        design = self.encoder_.transform(query)
        needed = self._needed_members()
        member_values = self.context_.member_values(design, needed)
        pairs = Pairs(
            reference_design,
            self.context_.design_players(design.shape[1]),
            masks,
            proposal.background[part],
            prepared=not proposal.centre,
        )
        member_gaps = self.context_.member_pair_gaps(
            design, pairs, self._control_members(), should_stop
        )
        proxy_values = np.empty((len(query), masks.shape[2], self.n_outputs_))
        proxy_gaps = np.empty((len(query), masks.shape[1], self.n_outputs_))
        for k, context in enumerate(self.context_.outputs):
            parts.base_values[:, k] = context.base_value
            proxy_values[:, :, k] = self._control(member_values, k)
            proxy_gaps[:, :, k] = self._control(member_gaps, k)
            total = predictions[:, k] - context.base_value
            parts.total[:, k] = total
            spread_scale, floor = self._stated_terms(k)
            parts.prior[:, :, k], parts.prior_std[:, :, k] = combine(
                self._scaled(member_values[k], k), self.weights_[k], spread_scale, floor, total
            )
        return proxy_values, proxy_gaps

    def _slice_regression(
        self, proposal, part, pair_outputs, proxy_values, proxy_gaps, parts, should_stop=None
    ) -> None:
        """Fill ``parts``' refined values of the explained rows ``part`` from the model's
        ``pair_outputs`` against the proxy's ``proxy_values`` and ``proxy_gaps``
        (``_slice_proxy``); ``should_stop`` is polled before each output's regression."""
        masks = proposal.masks[part]
        trials = self._centre_trials() if proposal.centre else None
        for k in range(self.n_outputs_):
            if should_stop is not None and should_stop():
                raise CancelledError("the refinement was cancelled")
            model = pair_outputs[:, :, k].reshape(masks.shape[0], masks.shape[1], 2)
            bias_variance = 0.0
            if trials is not None:
                # Without scale pairs nothing but the proxy speaks of the model's centre bias,
                # and the pairs are weighed with the belief that chose their design
                # (``CentreTrial.model_bias``). With them, the weights keep the proxy's whole
                # bias, as measured when they were added (``centre_trial``): the belief's weight
                # there lost r 0.002-0.007 on `bench refinement`'s d = 384 embedding tasks at
                # 4d and 10d (2026-12-07, offline).
                trial = trials[k]
                bias_variance = (
                    trial.bias(scaled=False)
                    if proposal.n_scale_pairs
                    else trial.model_bias(scaled=False)
                )
            parts.refined[:, :, k], parts.refined_std[:, :, k] = refined_values(
                proxy_values[:, :, k],
                proxy_gaps[:, :, k],
                model[:, :, 0] - model[:, :, 1],
                masks,
                parts.total[:, k],
                bias_variance,
                CENTRE_GRAM_SAMPLED_SHARE if proposal.centre else None,
            )
            parts.interval_std[:, :, k] = parts.refined_std[:, :, k]
            if proposal.n_scale_pairs:
                # The answer is rescaled per row (``centre_scaled``): its interval counts the
                # bias the scales leave, where the weights keep the whole (``merged_with_prior``).
                parts.interval_std[:, :, k] = np.sqrt(
                    np.maximum(
                        parts.refined_std[:, :, k] ** 2
                        - bias_variance
                        + trials[k].bias(scaled=True),
                        0.0,
                    )
                )

    def _pooled_slices(
        self, proposal, slices, pair_outputs, predictions, reference_design, parts, should_stop
    ) -> None:
        """``_refine_slice`` over ``slices`` with a pooled residual in each row's proxy
        (``refine(..., pool_rows=True)``; ``refinement.POOLED_FOLDS``): a first pass takes
        every slice's proxy and gathers the folds' moments of what it misses, a second regresses
        each row against its proxy plus the function fitted on the other folds."""
        m = proposal.query.shape[0]
        design = self.context_.standardiser.transform(self.encoder_.transform(proposal.query))
        player_of_column = self.context_.design_players(design.shape[1])
        background_mean = self.context_.standardiser.transform(
            self.encoder_.transform(self.background_rows_)
        ).mean(axis=0)
        folds = pooled_fold(m)
        moments = PooledMoments.empty(int(folds.max()) + 1, design.shape[1], self.n_outputs_)
        features = PooledDesign.of(
            design, reference_design, proposal.background, proposal.masks, player_of_column
        )
        proxies = []
        for part in slices:
            if should_stop is not None and should_stop():
                raise CancelledError("the refinement was cancelled")
            proxy_values, proxy_gaps = self._slice_proxy(
                proposal, part, predictions[part], reference_design, parts.rows(part), should_stop
            )
            proxies.append((proxy_values, proxy_gaps))
            paired = pair_outputs[part].reshape(-1, proposal.n_pairs, 2, self.n_outputs_)
            features.add(moments, folds, part, paired[:, :, 0, :] - paired[:, :, 1, :] - proxy_gaps)
        weights = pooled_weights(moments, m)  # (F, C, K)
        for part, (proxy_values, proxy_gaps) in zip(slices, proxies, strict=True):
            own = weights[folds[part]]  # (g, C, K)
            proxy_gaps += features.gaps(part, own)
            for k in range(self.n_outputs_):
                proxy_values[:, :, k] += pooled_values(
                    own[:, :, k],
                    design[part],
                    background_mean,
                    player_of_column,
                    proxy_values.shape[1],
                )
            self._slice_regression(
                proposal,
                part,
                pair_outputs[part],
                proxy_values,
                proxy_gaps,
                parts.rows(part),
                should_stop,
            )

    def _prior_belief(self, k: int) -> tuple[float, float]:
        """What refine believes of output ``k``'s zero-shot error before a row's pairs measure
        it (``shrunk_variance_ratio``): as a share of the stated variance, and how many pairs
        per player that belief counts as. The combiner's stated uncertainty was trained to be
        right on average: share 1. A calibrated context states the larger of two estimates of
        its error, so that its intervals cover: the belief is the smaller one's share
        (``calibration.lower_estimate_share``). A calibrated explainer saved before it kept
        that share takes each row's measurement whole, as it did then."""
        calibration = self.calibration_
        if calibration is None:
            return 1.0, PRIOR_PAIRS_PER_PLAYER
        if calibration.lower_estimate_shares is None:
            return 1.0, 0.0
        return calibration.lower_estimate_shares[k], PRIOR_PAIRS_PER_PLAYER

    def _needed_members(self) -> list[np.ndarray]:
        """Per output, the members whose weight is not zero: a member of weight zero adds
        exactly nothing to the values, their spread or the proxy, so it is not computed (a
        calibrated context keeps 2-4 of the zoo)."""
        return [
            scale * weights > 0 for weights, scale in zip(self.weights_, self.scales_, strict=True)
        ]

    def _control_weights(self, k: int) -> np.ndarray:
        """(len(ZOO),) output ``k``'s weights of the proxy refine corrects: the mix's, less its
        light tree members (``refinement.control_weights``)."""
        return control_weights(self.scales_[k] * self.weights_[k], _TREE_MEMBERS)

    def _control_members(self) -> list[np.ndarray]:
        """Per output, the members in refine's proxy: the only ones whose pair gaps it needs."""
        return [self._control_weights(k) > 0 for k in range(self.n_outputs_)]

    def _control(self, member_arrays: list[np.ndarray], k: int) -> np.ndarray:
        """Output ``k``'s proxy from every member's (S, m, n) values or pair gaps, as refine
        corrects it (``_proxy_gaps`` is the whole mix's, which calibration measures)."""
        return np.einsum("s,smp->mp", self._control_weights(k), member_arrays[k])

    def _scaled(self, member_values: np.ndarray, k: int) -> np.ndarray:
        """Output ``k``'s (S, m, P) member values times its scale (the same array at scale 1)."""
        scale = self.scales_[k]
        return member_values if scale == 1.0 else scale * member_values

    def _explain_slice(self, rows, outputs, values, uncertainty, base_values) -> None:
        """Fill ``values``, ``uncertainty`` (m, P, K) and ``base_values`` (m, K) for ``rows``."""
        member_values = self.context_.member_values(
            self.encoder_.transform(rows), self._needed_members()
        )
        for k, context in enumerate(self.context_.outputs):
            spread_scale, floor = self._stated_terms(k)
            targets = None if outputs is None else outputs[:, k] - context.base_value
            values[:, :, k], uncertainty[:, :, k] = combine(
                self._scaled(member_values[k], k), self.weights_[k], spread_scale, floor, targets
            )
            base_values[:, k] = context.base_value
        null = self._exact_zeros(
            rows, values, uncertainty, outputs, base_values, self._floor_factors()
        )
        aliases = getattr(self, "alias_sets_", None)
        # A calibrated context states the error its model calls measured, on rows that mix one
        # row's values with another's: there the aliases' split is measured, not unknown.
        if aliases and self.calibration_ is None:
            uncertainty[...] = widened_for_aliases(values, uncertainty, aliases, null)

    def _exact_zeros(
        self, rows, values, uncertainty, predictions, base_values, stated_factors=None
    ) -> np.ndarray:
        """What is known exactly, in place on (m, P, K) ``values`` and ``uncertainty``: the null
        players of ``rows`` have value zero (``combiner.without_null_players``), and where the
        outputs sum to a constant each player's values sum to zero over them (``_balance``;
        ``stated_factors`` (K,) as ``balanced_across_outputs`` takes them). Returns the (m, P)
        null players."""
        null = self._null_players(rows)
        if null.any():
            values[...], uncertainty[...] = without_null_players(values, uncertainty, null)
        self._balance(values, uncertainty, predictions, base_values, null, stated_factors)
        return null

    def _null_players(self, rows: np.ndarray) -> np.ndarray:
        """(m, P) bool: the players whose every column holds, in that row, the one value all
        background rows hold there (NaN as NaN): no coalition's value depends on them."""
        background = self.background_rows_
        first = background[0]
        constant = np.all((background == first) | (np.isnan(background) & np.isnan(first)), axis=0)
        if not constant.any():
            return np.zeros((rows.shape[0], len(self.attribution_names_)), dtype=bool)
        same = constant & ((rows == first) | (np.isnan(rows) & np.isnan(first)))
        if self.groups_ is None:
            return same
        return np.stack([same[:, columns].all(axis=1) for _, columns in self.groups_], axis=1)

    def _check_output_total(self, name: str, outputs: np.ndarray) -> None:
        """Refuse model outputs (m, K) that do not sum to what the context's outputs sum to on
        every one of its rows (``output_total_``: class probabilities), beyond
        ``OUTPUT_SCALE_TOLERANCE``: they are on another scale (logits, scores, another model's),
        and the answer, exactly efficient, would split them against the probabilities' base
        values (QA F8: log-odds were taken silently)."""
        total = getattr(self, "output_total_", None)
        if total is None:
            return
        sums = outputs.sum(axis=1)
        off = np.abs(sums - total) > OUTPUT_SCALE_TOLERANCE * max(1.0, abs(total))
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise InvalidArgumentError(
                name,
                f"sums to {sums[row]:.6g} over its {outputs.shape[1]} outputs; the context's "
                f"outputs sum to {total:.6g} on every row (class probabilities): give the "
                "model's outputs on the context's scale",
                row=row,
            )

    def _balance(self, values, uncertainty, predictions, base_values, null, stated_factors) -> None:
        """Where the outputs sum to a constant (``output_total_``: class probabilities), make
        each player's (m, P, K) ``values`` sum to zero over them, in place
        (``combiner.balanced_across_outputs``); rows with ``predictions`` (m, K) keep their
        efficiency, and rows whose predictions do not sum to that constant are left as they
        are (their outputs' values cannot sum to zero). On `bench real-tables`' 25 multiclass
        cases mean r went 0.936 -> 0.941 (2026-12-06)."""
        total = getattr(self, "output_total_", None)
        if total is None:
            return
        if predictions is None:
            values[...], uncertainty[...] = balanced_across_outputs(
                values, uncertainty, None, null, stated_factors
            )
            return
        tolerance = OUTPUT_TOTAL_TOLERANCE * max(1.0, float(np.abs(predictions).max()))
        rows = np.abs(predictions.sum(axis=1) - total) <= tolerance
        if rows.any():
            values[rows], uncertainty[rows] = balanced_across_outputs(
                values[rows],
                uncertainty[rows],
                predictions[rows] - base_values[rows],
                null[rows],
                stated_factors,
            )
