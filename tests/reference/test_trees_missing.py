"""Missing values (NaN) in tree models, and XGBoost and LightGBM models, against enumeration.

The oracle is always the library's own prediction (scikit-learn's ``predict``/``predict_proba``/
``decision_function``, XGBoost's margin, LightGBM's raw score) enumerated over every coalition by
``exact_shapley``: a NaN routed differently from the library would show up as a wrong value.
"""

import json

import numpy as np
import pytest
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

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.reference import TreeBackground, exact_shapley, tree_shapley
from shapley_svc.reference.trees import MAX_TABLE_ENTRIES, flatten_ensemble
from tests.oracles import brute_force_shapley

ALGORITHMS = {"leaf tables": MAX_TABLE_ENTRIES, "pairwise walk": 0}
# Relative to the largest |value|: float64 rounding of sums over a few hundred leaves.
RELATIVE_TOLERANCE = 1e-9


def _task(seed, n=400, d=5, n_classes=None, nan_share=0.2):
    """Rows with ``nan_share`` of their entries missing; missingness itself carries signal, so a
    NaN sent the wrong way changes the model's output."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[rng.random(X.shape) < nan_share] = np.nan
    filled = np.nan_to_num(X, nan=1.5)
    signal = filled[:, 0] * filled[:, 1] + np.sin(2 * filled[:, 2]) + 0.5 * filled[:, 3] ** 2
    signal += np.isnan(X[:, 4]) - 0.3 * np.isnan(X[:, 0])
    if n_classes is None:
        return X, signal + 0.1 * rng.normal(size=n)
    edges = np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1])
    return X, np.digitize(signal, edges)


def _sklearn_output(model):
    if hasattr(model, "decision_function"):
        return model.decision_function
    return model.predict_proba if hasattr(model, "predict_proba") else model.predict


def _assert_matches(ours, truth, tolerance=RELATIVE_TOLERANCE):
    ours, truth = np.asarray(ours), np.asarray(truth)
    scale = max(np.abs(truth).max(), 1e-12)
    error = np.abs(ours - truth).max()
    assert error <= tolerance * scale, f"max abs error {error:.3g} at value scale {scale:.3g}"


def _rows_with_nan(X):
    """Explained rows and background rows, each holding NaN in some entries."""
    rows, background = X[:4].copy(), X[200:212].copy()
    assert np.isnan(rows).any() and np.isnan(background).any()
    return rows, background


SKLEARN_MODELS = [
    ("regression tree", lambda: DecisionTreeRegressor(max_depth=7, random_state=0), None),
    ("classification tree", lambda: DecisionTreeClassifier(max_depth=6, random_state=0), 3),
    (
        "random forest regressor",
        lambda: RandomForestRegressor(8, max_depth=6, random_state=0),
        None,
    ),
    ("random forest binary", lambda: RandomForestClassifier(8, max_depth=5, random_state=0), 2),
    ("extra trees regressor", lambda: ExtraTreesRegressor(8, max_depth=6, random_state=0), None),
    ("extra trees 3 classes", lambda: ExtraTreesClassifier(8, max_depth=6, random_state=0), 3),
    (
        "histogram boosting regressor",
        lambda: HistGradientBoostingRegressor(max_iter=20, random_state=0),
        None,
    ),
    (
        "histogram boosting binary",
        lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
        2,
    ),
    (
        "histogram boosting 3 classes",
        lambda: HistGradientBoostingClassifier(max_iter=8, random_state=0),
        3,
    ),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    ("name", "make", "n_classes"), SKLEARN_MODELS, ids=[m[0] for m in SKLEARN_MODELS]
)
def test_sklearn_routes_nan_as_predict_does(name, make, n_classes, algorithm):
    X, y = _task(1, n_classes=n_classes)
    model = make().fit(X, y)
    rows, background = _rows_with_nan(X)
    prepared = TreeBackground(model, background, max_table_entries=ALGORITHMS[algorithm])
    assert prepared.algorithm == algorithm
    ours = prepared.shapley(rows)
    truth = exact_shapley(_sklearn_output(model), rows, background)
    _assert_matches(ours.values, truth.values)
    np.testing.assert_array_equal(ours.predictions, truth.predictions)
    np.testing.assert_allclose(ours.base_values, truth.base_values, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "make",
    [
        lambda: DecisionTreeRegressor(max_depth=6, random_state=0),
        lambda: HistGradientBoostingRegressor(max_iter=15, random_state=0),
    ],
    ids=["tree", "histogram boosting"],
)
def test_sklearn_fitted_without_nan_sends_it_where_the_model_does(make, algorithm):
    # No NaN at fit time: each split still sends NaN one way (HistGradientBoosting: towards the
    # child that saw more samples), and predict follows it.
    X, y = _task(2, nan_share=0.0)
    model = make().fit(X, y)
    X_missing, _ = _task(3)
    rows, background = _rows_with_nan(X_missing)
    ours = TreeBackground(model, background, max_table_entries=ALGORITHMS[algorithm])
    truth = exact_shapley(model.predict, rows, background)
    _assert_matches(ours.shapley(rows).values, truth.values)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_histogram_split_on_missingness_alone(algorithm):
    # When only missingness separates the targets, the split sends every number left and NaN
    # right, with an infinite threshold.
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 4))
    X[rng.random(400) < 0.3, 1] = np.nan
    y = 3.0 * np.isnan(X[:, 1]) + X[:, 0]
    model = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(X, y)
    assert np.isinf(flatten_ensemble(model)[0].threshold).any()
    missing = np.flatnonzero(np.isnan(X[:, 1]))
    present = np.flatnonzero(~np.isnan(X[:, 1]))
    rows = X[np.r_[missing[:2], present[:2]]]
    background = X[np.r_[missing[2:8], present[2:8]]]
    ours = TreeBackground(model, background, max_table_entries=ALGORITHMS[algorithm])
    truth = exact_shapley(model.predict, rows, background)
    _assert_matches(ours.shapley(rows).values, truth.values)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestRegressor(10, max_depth=5, random_state=0),
        lambda: HistGradientBoostingRegressor(max_iter=15, max_depth=4, random_state=0),
    ],
    ids=["random forest", "histogram boosting"],
)
def test_grouped_game_with_nan_matches_brute_force(make):
    X, y = _task(5, d=6)
    model = make().fit(X, y)
    groups = [[0, 3], [1], [2, 4, 5]]
    player_of_feature = np.array([0, 1, 2, 0, 2, 2])
    rows, background = X[100:104], X[:20]
    assert np.isnan(rows).any() and np.isnan(background).any()
    prepared = TreeBackground(model, background, player_of_feature=player_of_feature)
    truth = brute_force_shapley(model.predict, rows, background, groups)
    _assert_matches(prepared.values(rows), truth)


@pytest.mark.parametrize(
    "model_class", [GradientBoostingRegressor, GradientBoostingClassifier], ids=lambda c: c.__name__
)
def test_a_model_refusing_nan_refuses_it_here(model_class):
    # GradientBoosting* predict refuses NaN (scikit-learn 1.9), so its values would explain
    # outputs that do not exist: the model's own refusal comes through.
    X, y = _task(7, nan_share=0.0)
    model = model_class(n_estimators=5, random_state=0).fit(X, y > np.median(y))
    rows, background = _rows_with_nan(_task(8)[0])
    with pytest.raises(ValueError, match="NaN"):
        tree_shapley(model, rows, background)


def test_infinity_is_refused_naming_the_argument():
    X, y = _task(6)
    model = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, y)
    rows = X[:2].copy()
    rows[1, 2] = np.inf
    with pytest.raises(InvalidArgumentError, match="X must be finite or NaN") as caught:
        tree_shapley(model, rows, X[10:20])
    assert caught.value.argument == "X"
    background = X[10:20].copy()
    background[0, 0] = -np.inf
    with pytest.raises(InvalidArgumentError, match="background must be finite or NaN"):
        TreeBackground(model, background)


def _xgboost_margin_in_float64(booster):
    """The booster's margin from the leaves its own predict reaches (``pred_leaf``), summed in
    float64: XGBoost sums leaves in float32, which would blur the comparison to ~1e-7."""
    import xgboost

    forest = json.loads(booster.save_raw(raw_format="json"))["learner"]["gradient_booster"]
    trees, groups = forest["model"]["trees"], forest["model"]["tree_info"]
    n_outputs = max(groups) + 1

    def margin(Z):
        leaves = booster.predict(xgboost.DMatrix(Z), pred_leaf=True).astype(int)
        leaves = leaves.reshape(Z.shape[0], len(trees))
        out = np.zeros((Z.shape[0], n_outputs))
        for t, (tree, group) in enumerate(zip(trees, groups, strict=True)):
            values = np.asarray(tree["split_conditions"], dtype=np.float32).astype(np.float64)
            out[:, group] += values[leaves[:, t]]
        return out[:, 0] if n_outputs == 1 else out

    return margin


XGBOOST_MODELS = [
    ("regressor", "XGBRegressor", None),
    ("binary", "XGBClassifier", 2),
    ("3 classes", "XGBClassifier", 3),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nan_share", [0.2, 0.0])
@pytest.mark.parametrize(
    ("name", "class_name", "n_classes"), XGBOOST_MODELS, ids=[m[0] for m in XGBOOST_MODELS]
)
def test_xgboost_matches_enumeration_of_its_margin(
    name, class_name, n_classes, nan_share, algorithm
):
    xgboost = pytest.importorskip("xgboost")
    X, y = _task(11, n_classes=n_classes, nan_share=nan_share)
    model = getattr(xgboost, class_name)(n_estimators=12, max_depth=4, n_jobs=1).fit(X, y)
    rows, background = X[:4], X[200:212]
    prepared = TreeBackground(model, background, max_table_entries=ALGORITHMS[algorithm])
    ours = prepared.shapley(rows)
    # Exact against the library's routing with float64 sums ...
    truth = exact_shapley(_xgboost_margin_in_float64(model.get_booster()), rows, background)
    _assert_matches(ours.values, truth.values)
    # ... and against its own float32 margin to float32 rounding.
    margin = exact_shapley(lambda Z: model.predict(Z, output_margin=True), rows, background)
    _assert_matches(ours.values, margin.values, tolerance=1e-5)
    np.testing.assert_array_equal(ours.predictions, margin.predictions)


def test_xgboost_booster_and_early_stopping():
    xgboost = pytest.importorskip("xgboost")
    X, y = _task(12)
    booster = xgboost.train(
        {"max_depth": 3, "eta": 0.3}, xgboost.DMatrix(X[:300], label=y[:300]), 10
    )
    rows, background = X[300:304], X[320:332]
    truth = exact_shapley(_xgboost_margin_in_float64(booster), rows, background)
    _assert_matches(tree_shapley(booster, rows, background).values, truth.values)
    # After early stopping, predict uses the trees up to the best iteration only.
    model = xgboost.XGBRegressor(n_estimators=200, early_stopping_rounds=3, max_depth=3)
    model.fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    assert model.best_iteration + 1 < model.get_booster().num_boosted_rounds()
    truth = exact_shapley(lambda Z: model.predict(Z, output_margin=True), rows, background)
    _assert_matches(tree_shapley(model, rows, background).values, truth.values, tolerance=1e-5)


LIGHTGBM_MODELS = [
    ("regressor", "LGBMRegressor", None, {}),
    ("binary", "LGBMClassifier", 2, {}),
    ("3 classes", "LGBMClassifier", 3, {}),
    ("zero as missing", "LGBMRegressor", None, {"zero_as_missing": True}),
    ("missing ignored", "LGBMRegressor", None, {"use_missing": False}),
    (
        "random forest",
        "LGBMRegressor",
        None,
        {"boosting_type": "rf", "subsample": 0.7, "subsample_freq": 1},
    ),
    ("poisson", "LGBMRegressor", None, {"objective": "poisson"}),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nan_share", [0.2, 0.0])
@pytest.mark.parametrize(
    ("name", "class_name", "n_classes", "params"),
    LIGHTGBM_MODELS,
    ids=[m[0] for m in LIGHTGBM_MODELS],
)
def test_lightgbm_matches_enumeration_of_its_raw_score(
    name, class_name, n_classes, params, nan_share, algorithm
):
    lightgbm = pytest.importorskip("lightgbm")
    X, y = _task(13, n_classes=n_classes, nan_share=nan_share)
    if name == "poisson":
        y = np.exp(y / 3)
    # Zeros (and values LightGBM reads as zero) in the data: they go the missing way under
    # zero_as_missing and are the value NaN stands for when missing values are ignored.
    X[::7, 2] = 0.0
    X[3::11, 3] = 1e-40
    model = getattr(lightgbm, class_name)(
        n_estimators=12, num_leaves=12, min_child_samples=5, verbose=-1, n_jobs=1, **params
    ).fit(X, y)
    rows, background = X[:6], X[200:212]
    prepared = TreeBackground(model, background, max_table_entries=ALGORITHMS[algorithm])
    ours = prepared.shapley(rows)
    # Random-forest mode averages its trees in predict, yet its raw score is their sum.
    raw = name != "random forest"
    truth = exact_shapley(lambda Z: model.predict(Z, raw_score=raw), rows, background)
    _assert_matches(ours.values, truth.values)
    np.testing.assert_allclose(ours.predictions, truth.predictions, rtol=1e-12, atol=1e-12)


def test_lightgbm_booster_with_nan_in_a_grouped_game():
    lightgbm = pytest.importorskip("lightgbm")
    X, y = _task(14, d=6)
    booster = lightgbm.train(
        {"num_leaves": 8, "verbose": -1, "num_threads": 1}, lightgbm.Dataset(X, y), 10
    )
    groups = [[0, 3], [1], [2, 4, 5]]
    rows, background = X[100:104], X[:16]
    prepared = TreeBackground(booster, background, player_of_feature=np.array([0, 1, 2, 0, 2, 2]))
    truth = brute_force_shapley(
        lambda Z: booster.predict(Z, raw_score=True), rows, background, groups
    )
    _assert_matches(prepared.values(rows), truth)


def test_boosters_refuse_what_they_cannot_do_exactly():
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    X, y = _task(15)
    codes = np.nan_to_num(np.floor(np.abs(X[:, 1]) * 2), nan=0.0)
    with_categories = np.column_stack([X[:, 0], codes])
    categorical = lightgbm.LGBMRegressor(n_estimators=5, verbose=-1, min_child_samples=5).fit(
        with_categories, y, categorical_feature=[1]
    )
    xgboost_categorical = xgboost.XGBRegressor(
        n_estimators=3, enable_categorical=True, feature_types=["q", "c"], max_cat_to_onehot=1
    ).fit(with_categories, y)
    cases = [
        (categorical, with_categories, "categorical splits"),
        (xgboost_categorical, with_categories, "categorical splits"),
        (xgboost.XGBRegressor(n_estimators=3, booster="dart").fit(X, y), X, "booster='dart'"),
        (xgboost.XGBRegressor(n_estimators=3, missing=0.0).fit(X, y), X, "missing=0.0"),
        (
            lightgbm.LGBMRegressor(n_estimators=3, linear_tree=True, verbose=-1).fit(X, y),
            X,
            "linear",
        ),
        (xgboost.XGBRegressor(), X, "not fitted"),
        (lightgbm.LGBMClassifier(), X, "not fitted"),
    ]
    for model, data, message in cases:
        with pytest.raises(InvalidArgumentError, match=message) as caught:
            tree_shapley(model, data[:2], data[10:14])
        assert caught.value.argument == "model"


def test_agrees_with_shap_on_nan_for_forests():
    # shap's interventional TreeExplainer routes NaN by missing_go_to_left for these trees too;
    # agreement is asserted at shap's own precision (about 1e-7 of the value scale, see
    # test_trees.py), ours is held to enumeration above.
    shap = pytest.importorskip("shap")
    X, y = _task(21)
    rows, background = X[:20], X[200:240]
    assert np.isnan(rows).any() and np.isnan(background).any()
    for model in (
        DecisionTreeRegressor(max_depth=4, random_state=0).fit(X, y),
        RandomForestRegressor(10, max_depth=4, random_state=0).fit(X, y),
    ):
        explainer = shap.TreeExplainer(
            model, data=background, feature_perturbation="interventional"
        )
        theirs = explainer.shap_values(rows, check_additivity=False)
        ours = tree_shapley(model, rows, background)
        np.testing.assert_allclose(
            ours.values, theirs, rtol=0, atol=2e-7 * np.abs(ours.values).max()
        )


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_histogram_boosting_with_categorical_features_is_read_on_the_callers_columns(kind):
    """Fitted with ``categorical_features``, scikit-learn's histogram boosting splits on its own
    reordered matrix (categorical columns first). A model whose trees made no categorical split
    is exact here, and was explained on the wrong columns (errors of 4.7 on values near 1)."""
    rng = np.random.default_rng(1)  # no tree makes a categorical split
    n = 500
    X = np.column_stack(
        [rng.normal(size=n), rng.normal(size=n), rng.integers(0, 3, n), rng.normal(size=n)]
    ).astype(float)
    X[rng.random(n) < 0.1, 3] = np.nan
    y = 2 * X[:, 0] + X[:, 1] ** 2 + 0.5 * np.nan_to_num(X[:, 3], nan=-1.0)
    if kind == "regressor":
        model = HistGradientBoostingRegressor(max_iter=10, categorical_features=[2], random_state=0)
        model.fit(X, y)
        output = model.predict
    else:
        model = HistGradientBoostingClassifier(
            max_iter=10, categorical_features=[2], random_state=0
        )
        model.fit(X, y > np.median(y))
        output = model.decision_function
    assert not any(p.nodes["is_categorical"].any() for it in model._predictors for p in it)
    rows, background = X[:4], X[100:112]
    result = tree_shapley(model, rows, background)
    _assert_matches(result.values, brute_force_shapley(output, rows, background)[:, :, 0])
