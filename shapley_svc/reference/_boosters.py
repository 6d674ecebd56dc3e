"""XGBoost and LightGBM trees as node arrays, read from the libraries' own model dumps.

Both libraries are optional: each is imported only inside the function that reads its models,
so this module (and the server, which never passes such a model) imports without them.

The arrays follow the kernels' rule (left when ``x <= threshold``, NaN left when
``missing_left``), so each library's own rule is rewritten into it exactly:

- XGBoost compares float32 copies of the inputs, ``x < split_condition`` going to ``yes`` (the
  left child); for float32 values that is ``x <= the float32 just below split_condition``.
  NaN takes each node's default direction.
- LightGBM compares doubles, ``x <= threshold`` going left, after reading ``|x| <= 1e-35`` as
  0. ``missing_type`` NaN sends NaN the default way; None reads NaN as 0 (so NaN goes where 0
  goes); Zero reads NaN as 0 and sends 0 the default way, so the kernels see NaN for every zero
  of such a feature (which is then consistent only if no split on it has ``missing_type`` NaN).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from shapley_svc.errors import InvalidArgumentError, UnsupportedModelError

# LightGBM's kZeroThreshold (a C++ float): inputs this close to 0 are read as 0.
LIGHTGBM_ZERO_THRESHOLD = float(np.float32(1e-35))


class NodeArrays(NamedTuple):
    """One tree: node arrays in the kernels' layout (children -1 at leaves)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    leaf_values: np.ndarray  # (n_nodes, K), zero except at leaves
    max_depth: int


@dataclass(frozen=True)
class BoosterTrees:
    """A booster's trees and the method giving the output they add up to."""

    trees: list[NodeArrays]
    output: Callable[[np.ndarray], np.ndarray]
    zero_threshold: float = 0.0
    zero_is_missing: np.ndarray | None = None


def xgboost_trees(model: object) -> BoosterTrees:
    """The trees of an ``XGBModel`` (regressor, classifier) or ``Booster``, on the margin."""
    import xgboost

    if isinstance(model, xgboost.XGBModel):
        if not model.__sklearn_is_fitted__():
            raise InvalidArgumentError(
                "model", f"is a {type(model).__name__} that is not fitted yet"
            )
        if model.missing is not None and not np.isnan(model.missing):
            raise InvalidArgumentError(
                "model",
                f"treats {model.missing!r} as missing (missing={model.missing!r}); only "
                "missing=nan is supported, as NaN is the reference engine's missing value",
            )
        booster = model.get_booster()
        try:  # predict uses the trees up to the best iteration after early stopping
            n_rounds = model.best_iteration + 1
        except AttributeError:
            n_rounds = None

        def output(X: np.ndarray) -> np.ndarray:
            return model.predict(X, output_margin=True)

    elif isinstance(model, xgboost.Booster):
        booster, n_rounds = model, None

        def output(X: np.ndarray) -> np.ndarray:
            return booster.predict(xgboost.DMatrix(X), output_margin=True)

    else:
        raise UnsupportedModelError(
            "model",
            f"{type(model).__name__} is not a supported XGBoost model; expected "
            "XGBRegressor, XGBClassifier or Booster",
        )
    learner = json.loads(booster.save_raw(raw_format="json"))["learner"]
    gradient_booster = learner["gradient_booster"]
    if gradient_booster["name"] != "gbtree":
        raise InvalidArgumentError(
            "model",
            f"is an XGBoost booster={gradient_booster['name']!r}; only 'gbtree' is supported "
            "(dart rescales its trees at prediction, gblinear has none)",
        )
    forest = gradient_booster["model"]
    parameters = learner["learner_model_param"]
    n_outputs = max(int(parameters["num_class"]), int(parameters.get("num_target", 1)), 1)
    trees = forest["trees"]
    if n_rounds is not None:
        trees = trees[: forest["iteration_indptr"][n_rounds]]
    return BoosterTrees(
        [_xgboost_tree(tree, forest["tree_info"][i], n_outputs) for i, tree in enumerate(trees)],
        output,
    )


def _xgboost_tree(tree: dict, output: int, n_outputs: int) -> NodeArrays:
    if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1:
        raise InvalidArgumentError(
            "model", "has multi-output trees (multi_strategy='multi_output_tree'): not supported"
        )
    if any(tree["split_type"]):
        raise InvalidArgumentError(
            "model",
            "has categorical splits (enable_categorical): not supported; the reference "
            "engine's trees test numeric thresholds only",
        )
    children_left = np.asarray(tree["left_children"], dtype=np.int64)
    children_right = np.asarray(tree["right_children"], dtype=np.int64)
    conditions = np.asarray(tree["split_conditions"], dtype=np.float64).astype(np.float32)
    below = np.nextafter(conditions, np.float32(-np.inf)).astype(np.float64)
    default_left = np.asarray(tree["default_left"], dtype=bool)
    features = np.asarray(tree["split_indices"], dtype=np.int64)
    # Renumber the nodes reachable from the root: pruned trees keep deleted nodes in place.
    order, depth = _reachable(children_left, children_right)
    new_index = np.full(children_left.shape[0], -1, dtype=np.int64)
    new_index[order] = np.arange(order.shape[0])
    is_leaf = children_left[order] < 0
    leaf_values = np.zeros((order.shape[0], n_outputs))
    # A leaf's split_condition holds its value, learning rate included.
    leaf_values[is_leaf, output] = conditions[order][is_leaf]
    return NodeArrays(
        left=np.where(is_leaf, -1, new_index[np.maximum(children_left[order], 0)]),
        right=np.where(is_leaf, -1, new_index[np.maximum(children_right[order], 0)]),
        feature=np.where(is_leaf, 0, features[order]),
        threshold=np.where(is_leaf, 0.0, below[order]),
        missing_left=default_left[order] & ~is_leaf,
        leaf_values=leaf_values,
        max_depth=depth,
    )


def _reachable(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, int]:
    """Nodes reachable from node 0 in depth-first order, and the deepest leaf's depth."""
    order, stack, max_depth = [], [(0, 0)], 0
    while stack:
        node, depth = stack.pop()
        order.append(node)
        if left[node] < 0:
            max_depth = max(max_depth, depth)
        else:
            stack.append((int(right[node]), depth + 1))
            stack.append((int(left[node]), depth + 1))
    return np.asarray(order, dtype=np.int64), max_depth


def lightgbm_trees(model: object) -> BoosterTrees:
    """The trees of an ``LGBMModel`` (regressor, classifier) or ``Booster``, on the raw score."""
    import lightgbm

    if isinstance(model, lightgbm.LGBMModel):
        if not model.__sklearn_is_fitted__():
            raise InvalidArgumentError(
                "model", f"is a {type(model).__name__} that is not fitted yet"
            )
        booster = model.booster_
        predict = model.predict
    elif isinstance(model, lightgbm.Booster):
        booster = model
        predict = model.predict
    else:
        raise UnsupportedModelError(
            "model",
            f"{type(model).__name__} is not a supported LightGBM model; expected "
            "LGBMRegressor, LGBMClassifier or Booster",
        )
    # Without num_iteration the dump holds the trees predict uses (the best iteration, if any).
    dump = booster.dump_model()
    n_outputs = int(dump["num_tree_per_iteration"])
    n_features = int(dump["max_feature_idx"]) + 1
    infos = dump["tree_info"]
    # Random-forest mode: predict averages the trees' raw scores, but raw_score=True returns
    # their sum; the average is the scale predict works on, so that is what is explained.
    scale = n_outputs / max(len(infos), 1) if dump.get("average_output") else 1.0

    def output(X: np.ndarray) -> np.ndarray:
        raw = predict(X, raw_score=True)
        return raw if scale == 1.0 else raw * scale

    missing_types = np.zeros((n_features, 3), dtype=bool)  # per feature: None, Zero, NaN seen
    trees = [
        _lightgbm_tree(info["tree_structure"], i % n_outputs, n_outputs, scale, missing_types)
        for i, info in enumerate(infos)
    ]
    zero_features = missing_types[:, 1]
    conflicting = np.flatnonzero(zero_features & missing_types[:, 2])
    if conflicting.size:
        raise InvalidArgumentError(
            "model",
            f"splits feature {conflicting[0]} both with missing_type Zero and NaN, so a zero "
            "there is missing at some splits and a number at others: not supported",
        )
    return BoosterTrees(
        trees,
        output,
        zero_threshold=LIGHTGBM_ZERO_THRESHOLD,
        zero_is_missing=zero_features if zero_features.any() else None,
    )


_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}


def _lightgbm_tree(
    root: dict, output: int, n_outputs: int, scale: float, missing_types: np.ndarray
) -> NodeArrays:
    left, right, feature, threshold, missing_left, values = [], [], [], [], [], []
    max_depth = 0
    # (node dict, its parent's index, whether it is the left child, depth); parents first.
    stack = [(root, -1, False, 0)]
    while stack:
        node, parent, is_left, depth = stack.pop()
        index = len(left)
        if parent >= 0:
            (left if is_left else right)[parent] = index
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise InvalidArgumentError(
                    "model", "has linear trees (linear_tree=True): not supported"
                )
            left.append(-1)
            right.append(-1)
            feature.append(0)
            threshold.append(0.0)
            missing_left.append(False)
            values.append(float(node["leaf_value"]) * scale)
            max_depth = max(max_depth, depth)
            continue
        if node["decision_type"] != "<=":
            raise InvalidArgumentError(
                "model",
                f"has categorical splits (decision_type {node['decision_type']!r}): not "
                "supported; the reference engine's trees test numeric thresholds only",
            )
        split_feature, split_threshold = int(node["split_feature"]), float(node["threshold"])
        kind = _MISSING_TYPES[node["missing_type"]]
        missing_types[split_feature, kind] = True
        left.append(-1)
        right.append(-1)
        feature.append(split_feature)
        threshold.append(split_threshold)
        # missing_type None reads NaN as the number 0; Zero and NaN take the default side.
        missing_left.append(0.0 <= split_threshold if kind == 0 else bool(node["default_left"]))
        values.append(0.0)
        stack.append((node["right_child"], index, False, depth + 1))
        stack.append((node["left_child"], index, True, depth + 1))
    leaf_values = np.zeros((len(left), n_outputs))
    leaf_values[:, output] = values
    return NodeArrays(
        left=np.asarray(left, dtype=np.int64),
        right=np.asarray(right, dtype=np.int64),
        feature=np.asarray(feature, dtype=np.int64),
        threshold=np.asarray(threshold, dtype=np.float64),
        missing_left=np.asarray(missing_left, dtype=bool),
        leaf_values=leaf_values,
        max_depth=max_depth,
    )
