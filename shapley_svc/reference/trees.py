"""Exact interventional TreeSHAP for scikit-learn tree models."""

from dataclasses import dataclass

import numpy as np

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.kernels.leaf_tables import (
    background_leaf_tables,
    leaf_paths,
    leaf_players,
    tabled_tree_shap,
)
from shapley_svc.kernels.treeshap import interventional_tree_shap, leaf_weight_tables
from shapley_svc.reference._result import ShapleyValues, package
from shapley_svc.reference._validation import as_float_matrix, check_rows_and_background


@dataclass(frozen=True)
class FlatEnsemble:
    """All trees of a model laid end to end, in the layout the TreeSHAP kernel reads.

    Attributes
    ----------
    left, right, feature : (n_nodes,) int64; children are -1 at leaves.
    threshold : (n_nodes,) float64; a row goes left when ``x[feature] <= threshold``.
    node_values : (n_nodes, K) float64; each leaf's contribution to each output, already
        weighted (1 / n_trees for forests, the learning rate for gradient boosting).
    roots : (n_trees,) int64 root node of each tree.
    max_depth : deepest leaf of any tree.
    float32_inputs : the model compares float32 copies of the inputs (scikit-learn's ``tree``
        module does), so the kernel must see the same rounded values.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    node_values: np.ndarray
    roots: np.ndarray
    max_depth: int
    float32_inputs: bool


MAX_TABLE_ENTRIES = 4_000_000  # 32 MiB of per-leaf tables; deeper ensembles walk pairwise


def tree_shapley(model: object, X: np.ndarray, background: np.ndarray) -> ShapleyValues:
    """Exact interventional Shapley values of a scikit-learn tree model, for any d.

    Supported: ``DecisionTreeRegressor``/``Classifier``, ``RandomForest*``, ``ExtraTrees*``,
    ``GradientBoosting*`` and ``HistGradientBoosting*`` (numeric features; no categorical
    splits). The explained output is the scale on which the trees add up:

    - regressors: ``predict`` (for ``HistGradientBoostingRegressor`` only with an identity link:
      squared, absolute or quantile loss);
    - decision trees and forest classifiers: ``predict_proba``, shape (m, d, n_classes), as the
      forest averages its trees' class probabilities;
    - gradient-boosting classifiers: ``decision_function``, the raw log-odds (binary: (m, d);
      multiclass: (m, d, n_classes)), not probabilities, which are not additive over trees.

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
    rows, background = check_rows_and_background(X, background)
    n_features = getattr(model, "n_features_in_", rows.shape[1])
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
    background : (n_background, d) background rows.
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
        background = as_float_matrix("background", background)
        ensemble, output = flatten_ensemble(model)
        n_features = getattr(model, "n_features_in_", background.shape[1])
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
        if self.ensemble.float32_inputs:
            return rows.astype(np.float32).astype(np.float64)
        return rows

    def shapley(self, X: np.ndarray) -> ShapleyValues:
        """(m, P[, K]) interventional Shapley values of ``X`` against the background (P = d
        without groups)."""
        rows = as_float_matrix("X", X, n_features=self.n_features)
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
        return self.trusted_values(as_float_matrix("X", X, n_features=self.n_features))

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
                ensemble.left,
                ensemble.right,
                ensemble.feature,
                ensemble.threshold,
                ensemble.node_values,
                ensemble.roots,
                ensemble.max_depth,
                weight_a,
                weight_b,
                values,
            )
        return values


@dataclass(frozen=True)
class LeafPaths:
    """Every leaf's distinct path features and intervals (see ``kernels.leaf_tables``)."""

    start: np.ndarray
    feature: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
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
    n_tests = leaf_paths(
        ensemble.left,
        ensemble.right,
        ensemble.feature,
        ensemble.threshold,
        ensemble.roots,
        ensemble.max_depth,
        n_features,
        leaf_node,
        start,
        feature,
        lower,
        upper,
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
        trees = [
            _histogram_tree(predictor, output=k, n_outputs=n_outputs)
            for iteration in model._predictors
            for k, predictor in enumerate(iteration)
        ]
        return _concatenate(trees, float32_inputs=False), _output_method(model)
    raise TypeError(
        f"model: {type(model).__name__} is not a supported tree model; expected a fitted "
        "scikit-learn DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting* or "
        "HistGradientBoosting* estimator"
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
) -> tuple:
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
    return (
        tree.children_left.astype(np.int64),
        tree.children_right.astype(np.int64),
        np.maximum(tree.feature, 0).astype(np.int64),
        tree.threshold.astype(np.float64),
        leaf_values,
        int(tree.max_depth),
    )


def _histogram_tree(predictor: object, output: int, n_outputs: int) -> tuple:
    """Node arrays of one ``HistGradientBoosting`` tree predictor."""
    nodes = predictor.nodes
    if nodes["is_categorical"].any():
        raise ValueError("model: categorical splits of HistGradientBoosting are not supported")
    is_leaf = nodes["is_leaf"].astype(bool)
    leaf_values = np.zeros((nodes.shape[0], n_outputs))
    # Leaf values already include the learning rate.
    leaf_values[:, output] = nodes["value"]
    return (
        np.where(is_leaf, -1, nodes["left"].astype(np.int64)),
        np.where(is_leaf, -1, nodes["right"].astype(np.int64)),
        nodes["feature_idx"].astype(np.int64),
        nodes["num_threshold"].astype(np.float64),
        leaf_values,
        int(nodes["depth"].max()),
    )


def _concatenate(trees: list[tuple], float32_inputs: bool) -> FlatEnsemble:
    sizes = np.array([tree[0].shape[0] for tree in trees], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def children(index: int) -> np.ndarray:
        return np.concatenate(
            [
                np.where(tree[index] >= 0, tree[index] + offset, -1)
                for tree, offset in zip(trees, offsets, strict=True)
            ]
        ).astype(np.int64)

    return FlatEnsemble(
        left=children(0),
        right=children(1),
        feature=np.ascontiguousarray(np.concatenate([tree[2] for tree in trees])),
        threshold=np.ascontiguousarray(np.concatenate([tree[3] for tree in trees])),
        node_values=np.ascontiguousarray(np.concatenate([tree[4] for tree in trees])),
        roots=offsets,
        max_depth=max(tree[5] for tree in trees),
        float32_inputs=float32_inputs,
    )
