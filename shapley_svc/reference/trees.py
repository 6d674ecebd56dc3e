"""Exact interventional TreeSHAP for scikit-learn tree models."""

from dataclasses import dataclass

import numpy as np

from shapley_svc.kernels.treeshap import interventional_tree_shap, leaf_weight_tables
from shapley_svc.reference._result import ShapleyValues, package
from shapley_svc.reference._validation import check_rows_and_background


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

    Runs numba with ``nogil``, in parallel over explained rows; cost grows with
    m * n_background * (reachable leaves per pair) and never calls the model on mixed rows.

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
    ensemble, output = flatten_ensemble(model)
    n_features = getattr(model, "n_features_in_", rows.shape[1])
    if rows.shape[1] != n_features:
        raise ValueError(f"X has {rows.shape[1]} features; the model was fitted on {n_features}")
    if ensemble.float32_inputs:
        rows_seen = rows.astype(np.float32).astype(np.float64)
        background_seen = background.astype(np.float32).astype(np.float64)
    else:
        rows_seen, background_seen = rows, background
    d = rows.shape[1]
    n_outputs = ensemble.node_values.shape[1]
    weight_a, weight_b = leaf_weight_tables(min(d, ensemble.max_depth))
    values = np.empty((rows.shape[0], d, n_outputs))
    interventional_tree_shap(
        rows_seen,
        background_seen,
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
    predictions = np.asarray(output(rows), dtype=np.float64)
    single_output = predictions.ndim == 1
    base_value = (
        np.asarray(output(background), dtype=np.float64)
        .reshape(background.shape[0], n_outputs)
        .mean(axis=0)
    )
    return package(
        values,
        base_value,
        predictions.reshape(rows.shape[0], n_outputs),
        single_output,
        "interventional TreeSHAP",
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
            raise ValueError(
                "model: gradient boosting with a custom init estimator is not a pure tree "
                "ensemble; use exact_shapley or sampled_shapley on its decision_function"
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
            raise ValueError(
                f"model: HistGradientBoostingRegressor(loss={model.loss!r}) predicts through a "
                "log link, which is not additive over trees; only identity-link losses are "
                "supported"
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
        raise ValueError(f"model: this {type(model).__name__} is not fitted yet") from None
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
            raise ValueError("model: multi-output classifiers are not supported")
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
