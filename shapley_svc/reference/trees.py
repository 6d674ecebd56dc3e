"""Exact interventional TreeSHAP for scikit-learn, XGBoost and LightGBM tree models."""

from dataclasses import dataclass

import numpy as np

from shapley_svc.errors import InvalidArgumentError, UnsupportedModelError
from shapley_svc.kernels.coalitions import (
    masked_tree_pair_gaps,
    off_path_players,
    tree_pair_gaps,
)
from shapley_svc.kernels.leaf_tables import (
    background_leaf_tables,
    leaf_paths,
    leaf_players,
    tabled_tree_shap,
)
from shapley_svc.kernels.tree_outputs import ensemble_leaves, ensemble_outputs
from shapley_svc.kernels.treeshap import interventional_tree_shap, leaf_weight_tables
from shapley_svc.reference._boosters import NodeArrays, lightgbm_trees, xgboost_trees
from shapley_svc.reference._result import ShapleyValues, package
from shapley_svc.reference._validation import as_float_matrix, check_rows_and_background


@dataclass(frozen=True)
class FlatEnsemble:
    """All trees of a model laid end to end, in the layout the TreeSHAP kernel reads.

    Attributes
    ----------
    left, right, feature : (n_nodes,) int64; children are -1 at leaves.
    threshold : (n_nodes,) float64; a row goes left when ``x[feature] <= threshold``.
    missing_left : (n_nodes,) bool; a row whose ``x[feature]`` is NaN goes left when set.
    node_values : (n_nodes, K) float64; each leaf's contribution to each output, already
        weighted (1 / n_trees for forests, the learning rate for gradient boosting).
    roots : (n_trees,) int64 root node of each tree.
    max_depth : deepest leaf of any tree.
    float32_inputs : the model compares float32 copies of the inputs (scikit-learn's ``tree``
        module and XGBoost do), so the kernel must see the same rounded values.
    zero_threshold : the model reads inputs with ``|x| <= zero_threshold`` as 0 (LightGBM's
        ``kZeroThreshold``); 0 when it reads them as given.
    zero_is_missing : (d,) bool or None; features on which the model routes 0 as missing
        (LightGBM's ``zero_as_missing``): the kernels see NaN there.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    node_values: np.ndarray
    roots: np.ndarray
    max_depth: int
    float32_inputs: bool
    zero_threshold: float = 0.0
    zero_is_missing: np.ndarray | None = None

    @property
    def splits(self) -> tuple[np.ndarray, ...]:
        """(left, right, feature, threshold, missing_left): what a walk down a tree reads."""
        return self.left, self.right, self.feature, self.threshold, self.missing_left


MAX_TABLE_ENTRIES = 4_000_000  # 32 MiB of per-leaf tables; deeper ensembles walk pairwise
# Pair gaps from per-leaf masks (``kernels.coalitions.masked_tree_pair_gaps``) take a 64-bit
# mask per (row, leaf slot): a background's masks are made only up to this size (past it the
# trees are walked), and explained rows' in chunks of it.
MAX_PAIR_MASK_BYTES = 32 * 2**20


def tree_shapley(model: object, X: np.ndarray, background: np.ndarray) -> ShapleyValues:
    """Exact interventional Shapley values of a tree model, for any d.

    Supported: scikit-learn's ``DecisionTreeRegressor``/``Classifier``, ``RandomForest*``,
    ``ExtraTrees*``, ``GradientBoosting*`` and ``HistGradientBoosting*``; XGBoost's
    ``XGBRegressor``, ``XGBClassifier`` and ``Booster`` (``gbtree``); LightGBM's
    ``LGBMRegressor``, ``LGBMClassifier`` and ``Booster`` (numeric features; categorical splits
    of any library, XGBoost's ``dart`` and non-NaN ``missing``, and LightGBM's linear trees are
    refused with :class:`~shapley_svc.errors.InvalidArgumentError`). The explained output is the
    scale on which the trees add up:

    - scikit-learn regressors: ``predict`` (for ``HistGradientBoostingRegressor`` only with an
      identity link: squared, absolute or quantile loss);
    - decision trees and forest classifiers: ``predict_proba``, shape (m, d, n_classes), as the
      forest averages its trees' class probabilities;
    - gradient-boosting classifiers: ``decision_function``, the raw log-odds (binary: (m, d);
      multiclass: (m, d, n_classes)), not probabilities, which are not additive over trees;
    - XGBoost and LightGBM models of every objective: the raw margin, ``predict(X,
      output_margin=True)`` (a ``Booster``: ``predict(DMatrix(X), output_margin=True)``) and
      ``predict(X, raw_score=True)``; it equals ``predict`` for identity-link regressors (squared
      error, absolute error, quantile, ...), it is the log-odds for classifiers (multiclass:
      (m, d, n_classes)) and the log of the prediction for log-link objectives (Poisson, gamma,
      Tweedie); LightGBM's random-forest mode: the raw score divided by the number of
      iterations, as its ``predict`` averages the trees (``raw_score=True`` returns their sum).
      The trees are those ``predict`` uses (the best iteration after early stopping).

    NaN in ``X`` or ``background`` is a missing value and is routed as the fitted model's own
    ``predict`` routes it: scikit-learn's ``missing_go_to_left`` (trees fitted without NaN send
    it where they were told to), XGBoost's default direction, LightGBM's ``default_left`` for
    ``missing_type`` NaN, its zero for ``missing_type`` None, and zero and NaN alike for
    ``missing_type`` Zero (``zero_as_missing``). Models whose own ``predict`` refuses NaN refuse
    it here too.

    Runs numba with ``nogil``, in parallel over explained rows, and never calls the model on
    mixed rows. See :class:`TreeBackground` for the two algorithms and their costs; to explain
    many batches against one background, build a :class:`TreeBackground` once.

    Parameters
    ----------
    model : a fitted model of a supported type.
    X : (m, d) rows to explain.
    background : (n_background, d) background rows.

    Returns
    -------
    ShapleyValues
        ``predictions`` and ``base_values`` come from the model's own output method above.
    """
    rows, background = check_rows_and_background(X, background, allow_nan=True)
    n_features = _n_features(model, rows.shape[1])
    if rows.shape[1] != n_features:
        raise InvalidArgumentError(
            "X", f"has {rows.shape[1]} features; the model was fitted on {n_features}"
        )
    return TreeBackground(model, background).shapley(rows)


class TreeBackground:
    """A tree model and a fixed background, prepared for repeated interventional TreeSHAP.

    When every leaf tests few distinct features (``sum over leaves of 2^k * k`` at most
    ``max_table_entries``), the background is folded into per-leaf tables once
    (:mod:`shapley_svc.kernels.leaf_tables`) and a row then costs ``sum over leaves of k``,
    whatever the background's size. Otherwise each (row, background row) pair is walked
    (:mod:`shapley_svc.kernels.treeshap`), at a cost that grows with the background. Both are
    exact and agree to rounding.

    Parameters
    ----------
    model : a fitted tree model (see :func:`tree_shapley`).
    background : (n_background, d) background rows; NaN is a missing value.
    max_table_entries : the largest table (in float64 entries) worth building.
    player_of_feature : optional (d,) ints in [0, P): explain the game whose players are these
        groups of features (Shapley values of each group, shape (m, P[, K])) instead of one
        player per feature. Needs the leaf tables.
    """

    def __init__(
        self,
        model: object,
        background: np.ndarray,
        max_table_entries: int = MAX_TABLE_ENTRIES,
        player_of_feature: np.ndarray | None = None,
    ):
        background = as_float_matrix("background", background, allow_nan=True)
        ensemble, output = flatten_ensemble(model)
        n_features = _n_features(model, background.shape[1])
        if background.shape[1] != n_features:
            raise InvalidArgumentError(
                "background",
                f"has {background.shape[1]} features; the model was fitted on {n_features}",
            )
        self.model = model
        self.ensemble = ensemble
        self._output = output
        self.background = background
        self._background_seen = self._as_seen(background)
        self.n_features = n_features
        self.n_outputs = ensemble.node_values.shape[1]
        self.base_value = (
            np.asarray(output(background), dtype=np.float64)
            .reshape(background.shape[0], self.n_outputs)
            .mean(axis=0)
        )
        if player_of_feature is not None:
            player_of_feature = np.ascontiguousarray(player_of_feature, dtype=np.int64)
            if player_of_feature.shape != (n_features,) or player_of_feature.min() < 0:
                raise InvalidArgumentError(
                    "player_of_feature", f"must hold {n_features} non-negative player indices"
                )
        self.n_players = (
            n_features if player_of_feature is None else int(player_of_feature.max()) + 1
        )
        self.paths = _leaf_paths(ensemble, n_features, max_table_entries, player_of_feature)
        self.tables: np.ndarray | None = None
        if self.paths.table_start is None and player_of_feature is not None:
            raise InvalidArgumentError(
                "max_table_entries",
                f"is {max_table_entries}, and grouped TreeSHAP needs per-leaf tables: this "
                f"ensemble's would hold {self.paths.table_entries:.3g} entries; raise "
                "max_table_entries or use shallower trees",
            )
        if self.paths.table_start is not None:
            self.tables = np.empty(self.paths.table_start[-1])
            weight_a, weight_b = leaf_weight_tables(max(self.paths.max_tests, 1))
            background_leaf_tables(
                self._background_seen,
                self.paths.start,
                self.paths.feature,
                self.paths.lower,
                self.paths.upper,
                self.paths.nan_passes,
                self.paths.test_bit,
                self.paths.player_start,
                self.paths.table_start,
                weight_a,
                weight_b,
                self.tables,
            )

    @property
    def algorithm(self) -> str:
        return "leaf tables" if self.tables is not None else "pairwise walk"

    def _as_seen(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as the model's comparisons see them (rounded, zeros read as missing)."""
        ensemble = self.ensemble
        if ensemble.float32_inputs:
            rows = rows.astype(np.float32).astype(np.float64)
        if ensemble.zero_threshold > 0:
            zero = 0.0
            if ensemble.zero_is_missing is not None:
                zero = np.where(ensemble.zero_is_missing, np.nan, 0.0)
            near_zero = np.abs(rows) <= ensemble.zero_threshold
            rows = np.ascontiguousarray(np.where(near_zero, zero, rows))
        return rows

    def shapley(self, X: np.ndarray) -> ShapleyValues:
        """(m, P[, K]) interventional Shapley values of ``X`` against the background (P = d
        without groups)."""
        rows = as_float_matrix("X", X, n_features=self.n_features, allow_nan=True)
        values = self.values(rows)
        predictions = np.asarray(self._output(rows), dtype=np.float64)
        return package(
            values,
            self.base_value,
            predictions.reshape(rows.shape[0], self.n_outputs),
            predictions.ndim == 1,
            "interventional TreeSHAP",
        )

    def values(self, X: np.ndarray) -> np.ndarray:
        """(m, P, K) values alone, without calling the model for its predictions."""
        return self.trusted_values(
            as_float_matrix("X", X, n_features=self.n_features, allow_nan=True)
        )

    def trusted_outputs(self, rows: np.ndarray) -> np.ndarray:
        """(m, K) the trees' summed leaf values for C-contiguous float64 rows, unchecked: the
        model's output up to its constant intercept (and before any link)."""
        ensemble = self.ensemble
        outputs = np.empty((rows.shape[0], self.n_outputs))
        ensemble_outputs(
            self._as_seen(rows),
            *ensemble.splits,
            ensemble.node_values,
            ensemble.roots,
            outputs,
        )
        return outputs

    def trusted_pair_gaps(
        self,
        rows: np.ndarray,
        background: np.ndarray,
        player_of_feature: np.ndarray,
        masks: np.ndarray,
        picks: np.ndarray,
        background_leaves: np.ndarray | None = None,
        keep_background: bool = False,
    ) -> np.ndarray:
        """(m, n_pairs, K) the trees' output on each pair's first mixed row minus its second
        (see ``shapley_svc.kernels.coalitions``), unchecked: rows (m, d) and background
        (n_background, d) C-contiguous float64, player_of_feature (d,) int64.

        Up to 64 players each tree's leaves are tested with bit masks
        (``kernels.coalitions.masked_tree_pair_gaps``); past that, or where the background's
        masks would take more than ``MAX_PAIR_MASK_BYTES``, both mixed rows of every pair walk
        the trees (``background_leaves``, ``trusted_leaves(background)``, if the caller kept
        it). The answers are the same up to the order of additions. ``keep_background``: the
        caller pairs with this background on every call, so its masks are made once and kept
        here (``pair_cache_bytes``)."""
        if masks.shape[2] <= 64:
            background_off = self._background_off(background, player_of_feature, keep_background)
            if background_off is not None:
                return self._masked_pair_gaps(rows, player_of_feature, masks, picks, background_off)
        ensemble = self.ensemble
        background_seen = self._as_seen(background)
        if background_leaves is None:
            background_leaves = self._leaves_seen(background_seen)
        rows_seen = self._as_seen(rows)
        out = np.empty((*picks.shape, self.n_outputs))
        tree_pair_gaps(
            rows_seen,
            background_seen,
            player_of_feature,
            masks,
            picks,
            *ensemble.splits,
            ensemble.node_values,
            ensemble.roots,
            self._leaves_seen(rows_seen),
            background_leaves,
            out,
        )
        return out

    def pair_cache_bytes(self) -> int:
        """Bytes of the arrays ``trusted_pair_gaps`` made and keeps for later calls (the kept
        background's masks, each node's player bit, the ensemble's ``PairLayout``): 0 before
        its first call."""
        kept = getattr(self, "_kept_background_off", None) or ()
        bits = getattr(self, "_kept_node_player_bit", None) or ()
        layout = getattr(self, "_layout", None)
        arrays = [*kept, *bits, *(() if layout is None else vars(layout).values())]
        return int(sum(array.nbytes for array in arrays))

    def release_pair_cache(self) -> None:
        """Forget what ``pair_cache_bytes`` counts: later calls make it again."""
        self._kept_background_off = None
        self._kept_node_player_bit = None
        self._layout = None

    def _background_off(
        self, background: np.ndarray, player_of_feature: np.ndarray, keep: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The background's off-path masks and leaf slots (``off_path_players``), kept ones if
        they are for the same rows' count and players; None past ``MAX_PAIR_MASK_BYTES``."""
        if background.shape[0] * self._slot_bytes() > MAX_PAIR_MASK_BYTES:
            return None
        kept = getattr(self, "_kept_background_off", None)
        if (
            keep
            and kept is not None
            and kept[0].shape[0] == background.shape[0]
            and np.array_equal(kept[2], player_of_feature)
        ):
            return kept[0], kept[1]
        off, slots = self._off_path(background, player_of_feature)
        if keep:
            # One assignment: a concurrent call sees the old masks or the new, never half.
            self._kept_background_off = (off, slots, player_of_feature.copy())
        return off, slots

    def _slot_bytes(self) -> int:
        """Bytes of one row's masks: one 64-bit mask per leaf slot of every tree."""
        return 8 * self._pair_layout().leaf_slots.size

    def _masked_pair_gaps(self, rows, player_of_feature, masks, picks, background_off):
        background_masks, background_slots = background_off
        layout = self._pair_layout()
        out = np.empty((*picks.shape, self.n_outputs))
        chunk = max(1, MAX_PAIR_MASK_BYTES // self._slot_bytes())
        for start in range(0, rows.shape[0], chunk):
            part = slice(start, start + chunk)
            row_masks, row_slots = self._off_path(rows[part], player_of_feature)
            masked_tree_pair_gaps(
                row_masks,
                background_masks,
                row_slots,
                background_slots,
                masks[part],
                picks[part],
                layout.slot_values,
                out[part],
            )
        return out

    def _off_path(
        self, rows: np.ndarray, player_of_feature: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``kernels.coalitions.off_path_players`` of C-contiguous float64 rows."""
        ensemble = self.ensemble
        layout = self._pair_layout()
        n_trees, width = layout.leaf_slots.shape
        node_player_bit = self._node_player_bit(player_of_feature)
        off = np.empty((rows.shape[0], n_trees, width), dtype=np.uint64)
        slot = np.empty((rows.shape[0], n_trees), dtype=np.int64)
        off_path_players(
            np.ascontiguousarray(self._as_seen(rows)),
            layout.parent,
            layout.is_left,
            ensemble.feature,
            ensemble.threshold,
            ensemble.missing_left,
            layout.inner,
            layout.top_down,
            node_player_bit,
            layout.leaf_slots,
            off,
            slot,
        )
        return off, slot

    def _node_player_bit(self, player_of_feature: np.ndarray) -> np.ndarray:
        """(n_nodes,) ``1 << player`` of each split's feature (0 at leaves), kept for the last
        grouping asked: every call of ``trusted_pair_gaps`` needs it for its explained rows."""
        kept = getattr(self, "_kept_node_player_bit", None)
        if kept is not None and np.array_equal(kept[0], player_of_feature):
            return kept[1]
        ensemble, layout = self.ensemble, self._pair_layout()
        node_player_bit = np.zeros(ensemble.feature.size, dtype=np.uint64)
        node_player_bit[layout.inner] = np.left_shift(
            np.uint64(1), player_of_feature[ensemble.feature[layout.inner]].astype(np.uint64)
        )
        self._kept_node_player_bit = (player_of_feature.copy(), node_player_bit)
        return node_player_bit

    def _pair_layout(self) -> "PairLayout":
        """The ensemble's shape as ``masked_tree_pair_gaps`` reads it, made once (not saved:
        a loaded explainer rebuilds it from its ensemble)."""
        layout = getattr(self, "_layout", None)
        if layout is None:
            layout = self._layout = pair_layout(self.ensemble)
        return layout

    def trusted_leaves(self, rows: np.ndarray) -> np.ndarray:
        """(m, n_trees) int64: the leaf each of the (m, d) C-contiguous float64 ``rows``
        reaches in each tree, unchecked."""
        return self._leaves_seen(self._as_seen(rows))

    def _leaves_seen(self, rows_seen: np.ndarray) -> np.ndarray:
        ensemble = self.ensemble
        out = np.empty((rows_seen.shape[0], ensemble.roots.size), dtype=np.int64)
        ensemble_leaves(rows_seen, *ensemble.splits, ensemble.roots, out)
        return out

    def trusted_values(self, rows: np.ndarray) -> np.ndarray:
        """``values`` with no checks: ``rows`` must be C-contiguous float64 (m, d), as the
        estimator's standardised rows are."""
        rows_seen = self._as_seen(rows)
        values = np.empty((rows.shape[0], self.n_players, self.n_outputs))
        if self.tables is not None:
            tabled_tree_shap(
                rows_seen,
                self.paths.start,
                self.paths.feature,
                self.paths.lower,
                self.paths.upper,
                self.paths.nan_passes,
                self.paths.test_bit,
                self.paths.player_start,
                self.paths.player_id,
                self.paths.leaf_values,
                self.paths.table_start,
                self.tables,
                values,
            )
        else:
            ensemble = self.ensemble
            weight_a, weight_b = leaf_weight_tables(min(self.n_features, ensemble.max_depth))
            interventional_tree_shap(
                rows_seen,
                self._background_seen,
                *ensemble.splits,
                ensemble.node_values,
                ensemble.roots,
                ensemble.max_depth,
                weight_a,
                weight_b,
                values,
            )
        return values


@dataclass(frozen=True)
class PairLayout:
    """A flat ensemble's nodes as ``kernels.coalitions.off_path_players`` visits them.

    parent, is_left : (n_nodes,) each node's parent (-1 at roots) and side.
    inner : (n_splits,) the nodes that split; top_down : every non-root node, after its parent.
    leaf_slots : (n_trees, width) each tree's leaves, -1 past its last.
    slot_values : (n_trees, width, K) their values, 0 past the last.
    """

    parent: np.ndarray
    is_left: np.ndarray
    inner: np.ndarray
    top_down: np.ndarray
    leaf_slots: np.ndarray
    slot_values: np.ndarray


def pair_layout(ensemble: FlatEnsemble) -> PairLayout:
    """``PairLayout`` of a flat ensemble, trees in ``roots`` order."""
    left, right = ensemble.left, ensemble.right
    inner = np.flatnonzero(left >= 0)
    parent = np.full(left.size, -1, dtype=np.int64)
    parent[left[inner]] = inner
    parent[right[inner]] = inner
    is_left = np.zeros(left.size, dtype=np.bool_)
    is_left[left[inner]] = True
    top_down: list[np.ndarray] = []
    tree_leaves: list[np.ndarray] = []
    for root in ensemble.roots:
        level = np.array([root])
        leaves = []
        while level.size:
            leaves.append(level[left[level] < 0])
            splits = level[left[level] >= 0]
            level = np.concatenate([left[splits], right[splits]])
            top_down.append(level)
        tree_leaves.append(np.concatenate(leaves))
    width = max(leaves.size for leaves in tree_leaves)
    leaf_slots = np.full((ensemble.roots.size, width), -1, dtype=np.int64)
    slot_values = np.zeros((ensemble.roots.size, width, ensemble.node_values.shape[1]))
    for t, leaves in enumerate(tree_leaves):
        leaf_slots[t, : leaves.size] = leaves
        slot_values[t, : leaves.size] = ensemble.node_values[leaves]
    return PairLayout(
        parent=parent,
        is_left=is_left,
        inner=inner.astype(np.int64),
        top_down=np.concatenate(top_down).astype(np.int64),
        leaf_slots=leaf_slots,
        slot_values=slot_values,
    )


@dataclass(frozen=True)
class LeafPaths:
    """Every leaf's distinct path features and intervals (see ``kernels.leaf_tables``)."""

    start: np.ndarray
    feature: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    nan_passes: np.ndarray
    test_bit: np.ndarray
    player_start: np.ndarray
    player_id: np.ndarray
    leaf_values: np.ndarray
    table_start: np.ndarray | None  # None when the tables would exceed the budget
    max_tests: int
    table_entries: float


def _leaf_paths(
    ensemble: FlatEnsemble,
    n_features: int,
    max_table_entries: int,
    player_of_feature: np.ndarray | None = None,
) -> LeafPaths:
    n_leaves = int(np.sum(ensemble.left < 0))
    capacity = n_leaves * max(1, min(ensemble.max_depth, n_features))
    leaf_node = np.empty(n_leaves, dtype=np.int64)
    start = np.empty(n_leaves + 1, dtype=np.int64)
    feature = np.empty(capacity, dtype=np.int64)
    lower = np.empty(capacity)
    upper = np.empty(capacity)
    nan_passes = np.empty(capacity, dtype=np.bool_)
    n_tests = leaf_paths(
        *ensemble.splits,
        ensemble.roots,
        ensemble.max_depth,
        n_features,
        leaf_node,
        start,
        feature,
        lower,
        upper,
        nan_passes,
    )
    feature = np.ascontiguousarray(feature[:n_tests])
    test_bit = np.empty(n_tests, dtype=np.int64)
    if player_of_feature is None:
        player_start, player_id = start, feature
        test_bit[:] = np.arange(n_tests) - np.repeat(start[:-1], np.diff(start))
    else:
        player_start = np.empty(n_leaves + 1, dtype=np.int64)
        player_id = np.empty(n_tests, dtype=np.int64)
        n_entries = leaf_players(
            start, feature, player_of_feature, test_bit, player_start, player_id
        )
        player_id = player_id[:n_entries]
    tests = np.diff(player_start)  # the k of each leaf's game: its distinct players
    max_tests = int(tests.max()) if n_leaves else 0
    # Sizes in floats first: a deep leaf's 2^k would overflow an integer.
    table_entries = float(np.sum(np.where(tests > 0, 2.0**tests * tests, 0.0)))
    if table_entries <= max_table_entries:
        sizes = np.where(tests > 0, (1 << tests) * tests, 0)
        table_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    else:
        table_start = None
    return LeafPaths(
        start=start,
        feature=feature,
        lower=np.ascontiguousarray(lower[:n_tests]),
        upper=np.ascontiguousarray(upper[:n_tests]),
        nan_passes=np.ascontiguousarray(nan_passes[:n_tests]),
        test_bit=test_bit,
        player_start=player_start,
        player_id=player_id,
        leaf_values=np.ascontiguousarray(ensemble.node_values[leaf_node]),
        table_start=table_start,
        max_tests=max_tests,
        table_entries=table_entries,
    )


def flatten_ensemble(model: object):
    """The model's trees as a :class:`FlatEnsemble`, and the method giving its additive output."""
    module = type(model).__module__.split(".")[0]
    # Optional libraries are imported only when their model is passed: never on the server path.
    if module == "xgboost":
        flat = xgboost_trees(model)
        return _concatenate(flat.trees, float32_inputs=True), flat.output
    if module == "lightgbm":
        flat = lightgbm_trees(model)
        return (
            _concatenate(
                flat.trees,
                float32_inputs=False,
                zero_threshold=flat.zero_threshold,
                zero_is_missing=flat.zero_is_missing,
            ),
            flat.output,
        )
    return _flatten_sklearn(model)


def _n_features(model: object, default: int) -> int:
    """The number of features the model was fitted on, or ``default`` when it does not say."""
    n_features = getattr(model, "n_features_in_", None)
    if n_features is None:  # a bare XGBoost or LightGBM Booster
        for method in ("num_features", "num_feature"):
            if callable(getattr(model, method, None)):
                n_features = getattr(model, method)()
                break
    return default if n_features is None else int(n_features)


def _flatten_sklearn(model: object):
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    _require_fitted(model)
    if isinstance(model, DecisionTreeClassifier | DecisionTreeRegressor):
        trees = [_sklearn_tree(model, 1.0)]
        return _concatenate(trees, float32_inputs=True), _output_method(model)
    if isinstance(
        model,
        RandomForestClassifier | RandomForestRegressor | ExtraTreesClassifier | ExtraTreesRegressor,
    ):
        weight = 1.0 / len(model.estimators_)
        trees = [_sklearn_tree(tree, weight) for tree in model.estimators_]
        return _concatenate(trees, float32_inputs=True), _output_method(model)
    if isinstance(model, GradientBoostingClassifier | GradientBoostingRegressor):
        if model.init not in (None, "zero"):
            raise InvalidArgumentError(
                "model",
                "is gradient boosting with a custom init estimator, not a pure tree ensemble; "
                "use exact_shapley or sampled_shapley on its decision_function",
            )
        stages = model.estimators_
        n_outputs = stages.shape[1]
        trees = [
            _sklearn_tree(stages[s, k], model.learning_rate, output=k, n_outputs=n_outputs)
            for s in range(stages.shape[0])
            for k in range(n_outputs)
        ]
        return _concatenate(trees, float32_inputs=True), _output_method(model)
    if isinstance(model, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        if isinstance(model, HistGradientBoostingRegressor) and model.loss not in (
            "squared_error",
            "absolute_error",
            "quantile",
        ):
            raise InvalidArgumentError(
                "model",
                f"is a HistGradientBoostingRegressor(loss={model.loss!r}), which predicts "
                "through a log link, not additive over trees; only identity-link losses are "
                "supported",
            )
        n_outputs = len(model._predictors[0])
        columns = _histogram_columns(model)
        trees = [
            _histogram_tree(predictor, output=k, n_outputs=n_outputs, columns=columns)
            for iteration in model._predictors
            for k, predictor in enumerate(iteration)
        ]
        return _concatenate(trees, float32_inputs=False), _output_method(model)
    raise UnsupportedModelError(
        "model",
        f"{type(model).__name__} is not a supported tree model; expected a fitted "
        "scikit-learn DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting* or "
        "HistGradientBoosting* estimator, or an XGBoost or LightGBM model",
    )


def _require_fitted(model: object) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except NotFittedError:
        raise InvalidArgumentError(
            "model", f"is a {type(model).__name__} that is not fitted yet"
        ) from None
    except TypeError:
        pass  # not an estimator at all: the type check reports it


def _output_method(model: object):
    from sklearn.base import is_classifier

    if not is_classifier(model):
        return model.predict
    if hasattr(model, "decision_function"):
        return model.decision_function
    return model.predict_proba


def _sklearn_tree(
    estimator: object, weight: float, output: int | None = None, n_outputs: int = 1
) -> NodeArrays:
    """Node arrays of a fitted ``sklearn.tree`` estimator; leaf values scaled by ``weight``.

    With ``output`` given, the tree's single value goes to that column of ``n_outputs``.
    """
    tree = estimator.tree_
    value = tree.value
    if output is not None:
        leaf_values = np.zeros((tree.node_count, n_outputs))
        leaf_values[:, output] = value[:, 0, 0] * weight
    elif value.shape[2] > 1:  # a classifier: class probabilities at each leaf
        if value.shape[1] != 1:
            raise InvalidArgumentError("model", "is a multi-output classifier: not supported")
        totals = value[:, 0, :].sum(axis=1, keepdims=True)
        leaf_values = value[:, 0, :] / np.where(totals > 0, totals, 1.0) * weight
    else:
        leaf_values = value[:, :, 0] * weight
    # Since scikit-learn 1.3 a fitted tree records where NaN goes at each split (where the
    # training NaN went, or towards the larger child when none reached the split).
    missing_left = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=bool))
    return NodeArrays(
        left=tree.children_left.astype(np.int64),
        right=tree.children_right.astype(np.int64),
        feature=np.maximum(tree.feature, 0).astype(np.int64),
        threshold=tree.threshold.astype(np.float64),
        missing_left=np.asarray(missing_left).astype(bool),
        leaf_values=leaf_values,
        max_depth=int(tree.max_depth),
    )


def _histogram_columns(model: object) -> np.ndarray | None:
    """For a ``HistGradientBoosting`` model fitted with categorical features, the caller's
    column of each column its trees split on; None when they split on the caller's columns.

    scikit-learn then fits on its own preprocessed matrix (``_preprocessor``, a ColumnTransformer:
    the categorical columns ordinal-encoded and moved first, the others after them, unchanged),
    so a node's ``feature_idx`` counts columns in that order. Read against the caller's columns,
    a model whose trees made no categorical split (which the reference takes) was explained on the
    wrong features: errors of 4.7 on values of about 1 (QA, 2026-12-05)."""
    transformer = getattr(model, "_preprocessor", None)
    if transformer is None:
        return None
    n_in = int(model.n_features_in_)
    columns = np.full(n_in, -1, dtype=np.int64)
    for name, _, selected in transformer.transformers_:
        positions = transformer.output_indices_[name]
        chosen = np.arange(n_in)[np.asarray(selected)] if np.size(selected) else np.empty(0, int)
        if positions.stop - positions.start != chosen.size:
            raise UnsupportedModelError(
                "model",
                "is a HistGradientBoosting model whose preprocessing does not keep one column "
                "per feature; not supported",
            )
        columns[positions] = chosen
    if (columns < 0).any():
        raise UnsupportedModelError(
            "model", "is a HistGradientBoosting model whose preprocessing drops features"
        )
    return columns


def _histogram_tree(
    predictor: object, output: int, n_outputs: int, columns: np.ndarray | None = None
) -> NodeArrays:
    """Node arrays of one ``HistGradientBoosting`` tree predictor; ``columns`` maps the columns
    its nodes split on to the caller's (``_histogram_columns``)."""
    nodes = predictor.nodes
    if nodes["is_categorical"].any():
        raise InvalidArgumentError(
            "model", "has categorical splits (HistGradientBoosting): not supported"
        )
    is_leaf = nodes["is_leaf"].astype(bool)
    leaf_values = np.zeros((nodes.shape[0], n_outputs))
    # Leaf values already include the learning rate.
    leaf_values[:, output] = nodes["value"]
    return NodeArrays(
        left=np.where(is_leaf, -1, nodes["left"].astype(np.int64)),
        right=np.where(is_leaf, -1, nodes["right"].astype(np.int64)),
        feature=(
            nodes["feature_idx"].astype(np.int64)
            if columns is None
            else columns[nodes["feature_idx"]].astype(np.int64)
        ),
        # A split on NaN alone has an infinite threshold: every number goes left, NaN right.
        threshold=nodes["num_threshold"].astype(np.float64),
        missing_left=nodes["missing_go_to_left"].astype(bool),
        leaf_values=leaf_values,
        max_depth=int(nodes["depth"].max()),
    )


def _concatenate(
    trees: list[NodeArrays],
    float32_inputs: bool,
    zero_threshold: float = 0.0,
    zero_is_missing: np.ndarray | None = None,
) -> FlatEnsemble:
    sizes = np.array([tree.left.shape[0] for tree in trees], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def children(name: str) -> np.ndarray:
        return np.concatenate(
            [
                np.where(getattr(tree, name) >= 0, getattr(tree, name) + offset, -1)
                for tree, offset in zip(trees, offsets, strict=True)
            ]
        ).astype(np.int64)

    def stacked(name: str, dtype: type) -> np.ndarray:
        return np.ascontiguousarray(
            np.concatenate([getattr(tree, name) for tree in trees]), dtype=dtype
        )

    return FlatEnsemble(
        left=children("left"),
        right=children("right"),
        feature=stacked("feature", np.int64),
        threshold=stacked("threshold", np.float64),
        missing_left=stacked("missing_left", np.bool_),
        node_values=stacked("leaf_values", np.float64),
        roots=offsets,
        max_depth=max(tree.max_depth for tree in trees),
        float32_inputs=float32_inputs,
        zero_threshold=zero_threshold,
        zero_is_missing=zero_is_missing,
    )
