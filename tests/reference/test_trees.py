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
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from shapley_svc.errors import UnsupportedModelError
from shapley_svc.kernels.coalitions import fill_paired_rows
from shapley_svc.reference import TreeBackground, tree_shapley, trees
from shapley_svc.reference.trees import MAX_TABLE_ENTRIES, flatten_ensemble
from tests.oracles import as_3d, brute_force_shapley


def _task(seed, n=400, d=5, n_classes=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    signal = X[:, 0] * X[:, 1] + np.sin(2 * X[:, 2]) + 0.5 * X[:, 3] ** 2
    if n_classes is None:
        return X, signal + 0.1 * rng.normal(size=n)
    return X, np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1]))


def _output_method(model):
    if hasattr(model, "decision_function"):
        return model.decision_function
    return model.predict_proba if hasattr(model, "predict_proba") else model.predict


MODELS = [
    ("deep regression tree", lambda: DecisionTreeRegressor(random_state=0), None),
    ("classification tree", lambda: DecisionTreeClassifier(max_depth=8, random_state=0), 3),
    (
        "random forest regressor",
        lambda: RandomForestRegressor(20, max_depth=7, random_state=0),
        None,
    ),
    ("random forest binary", lambda: RandomForestClassifier(15, max_depth=6, random_state=0), 2),
    ("random forest 3 classes", lambda: RandomForestClassifier(15, random_state=0), 3),
    ("extra trees regressor", lambda: ExtraTreesRegressor(15, max_depth=8, random_state=0), None),
    ("extra trees classifier", lambda: ExtraTreesClassifier(15, max_depth=8, random_state=0), 2),
    (
        "gradient boosting regressor",
        lambda: GradientBoostingRegressor(n_estimators=30, max_depth=4, random_state=0),
        None,
    ),
    (
        "gradient boosting binary",
        lambda: GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0),
        2,
    ),
    (
        "gradient boosting 3 classes",
        lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0),
        3,
    ),
    (
        "histogram boosting regressor",
        lambda: HistGradientBoostingRegressor(max_iter=30, random_state=0),
        None,
    ),
    (
        "histogram boosting binary",
        lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0),
        2,
    ),
    (
        "histogram boosting 3 classes",
        lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
        3,
    ),
]


ALGORITHMS = {"leaf tables": MAX_TABLE_ENTRIES, "pairwise walk": 0}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("name", "make", "n_classes"), MODELS, ids=[m[0] for m in MODELS])
def test_matches_brute_force(name, make, n_classes, algorithm):
    X, y = _task(1, n_classes=n_classes)
    model = make().fit(X, y)
    rows, background = X[:6], X[200:210]
    prepared = TreeBackground(model, background, max_table_entries=ALGORITHMS[algorithm])
    assert prepared.algorithm == algorithm
    result = prepared.shapley(rows)
    output = _output_method(model)
    expected = brute_force_shapley(output, rows, background)
    np.testing.assert_allclose(as_3d(result.values), expected, rtol=0, atol=1e-10)
    reference_outputs = np.asarray(output(rows))
    assert result.values.ndim == reference_outputs.ndim + 1
    np.testing.assert_array_equal(result.predictions, reference_outputs)
    assert result.efficiency_gap <= 1e-9 * max(1.0, np.abs(result.values).sum(axis=1).max())


def test_deep_tree_with_features_repeated_along_paths():
    # Few features, many rows, no depth limit: paths split on the same feature many times.
    X, y = _task(2, n=3000, d=4)
    model = DecisionTreeRegressor(random_state=0).fit(X, y)
    assert model.get_depth() >= 12
    tree = model.tree_
    node, features_on_path = 0, []
    while tree.children_left[node] >= 0:  # the leftmost path
        features_on_path.append(tree.feature[node])
        node = tree.children_left[node]
    assert len(features_on_path) > len(set(features_on_path))
    rows, background = X[:5], X[1000:1012]
    result = tree_shapley(model, rows, background)
    expected = brute_force_shapley(model.predict, rows, background)
    np.testing.assert_allclose(result.values, expected[:, :, 0], rtol=0, atol=1e-10)


def test_tables_fold_any_background_size_and_match_the_walk():
    # Depth-capped ensembles (as the estimator's surrogates are) take the tables; a row's cost no
    # longer depends on the background, and both algorithms give the same numbers.
    X, y = _task(4, n=1500, d=12)
    model = ExtraTreesRegressor(40, max_depth=6, random_state=0).fit(X, y)
    tables = TreeBackground(model, X[:300])
    walk = TreeBackground(model, X[:300], max_table_entries=0)
    assert (tables.algorithm, walk.algorithm) == ("leaf tables", "pairwise walk")
    np.testing.assert_allclose(
        tables.shapley(X[400:460]).values, walk.shapley(X[400:460]).values, rtol=0, atol=1e-12
    )
    # Unlimited depth on 20 features would need far more than the table budget: walk instead.
    deep = RandomForestRegressor(5, random_state=0).fit(*_task(5, n=2000, d=20))
    assert TreeBackground(deep, X[:10, :1].repeat(20, axis=1)).algorithm == "pairwise walk"


def test_prepared_background_rejects_mismatched_features():
    X, y = _task(6)
    model = DecisionTreeRegressor(max_depth=3).fit(X, y)
    with pytest.raises(ValueError, match="background has 4 features"):
        TreeBackground(model, X[:10, :4])
    with pytest.raises(ValueError, match="X"):
        TreeBackground(model, X[:10]).shapley(X[:3, :4])


def test_deep_forest_with_many_features_keeps_efficiency():
    X, y = _task(3, n=2000, d=20)
    model = RandomForestRegressor(30, random_state=0).fit(X, y)
    result = tree_shapley(model, X[:50], X[500:600])
    scale = np.abs(result.values).sum(axis=1)
    gap = np.abs(result.values.sum(axis=1) - (result.predictions - result.base_values))
    assert np.all(gap <= 1e-9 * np.maximum(scale, 1e-12)), f"efficiency gap {gap.max()}"
    # Features 4..19 carry no signal but are still split on; features never split get zero.
    unused = np.setdiff1d(np.arange(20), np.unique(flatten_ensemble(model)[0].feature))
    assert np.all(result.values[:, unused] == 0)


def test_agrees_with_shap_on_shallow_regressors():
    # shap's interventional TreeExplainer is off from brute-force enumeration by about 1e-7 of
    # the value scale even on these shallow trees (3e-8 absolute here, measured), while ours
    # matches enumeration to 1e-10 above; so agreement is asserted at shap's own precision.
    shap = pytest.importorskip("shap")
    X, y = _task(4, n=500, d=6)
    for model in (
        DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, y),
        RandomForestRegressor(10, max_depth=4, random_state=0).fit(X, y),
    ):
        background = X[300:340]
        explainer = shap.TreeExplainer(
            model, data=background, feature_perturbation="interventional"
        )
        theirs = explainer.shap_values(X[:30], check_additivity=False)
        ours = tree_shapley(model, X[:30], background)
        scale = np.abs(ours.values).max()
        np.testing.assert_allclose(ours.values, theirs, rtol=0, atol=2e-7 * scale)
        np.testing.assert_allclose(ours.base_values, explainer.expected_value, atol=1e-8)


def test_repeated_calls_are_bit_identical():
    X, y = _task(5, n=1000, d=8)
    model = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(X, y)
    first = tree_shapley(model, X[:40], X[100:160])
    second = tree_shapley(model, X[:40], X[100:160])
    np.testing.assert_array_equal(first.values, second.values)


def test_rejects_unsupported_and_unfitted_models():
    X, y = _task(6, n=100, d=4)
    # A ShapleyError naming the argument, and still the TypeError it was.
    with pytest.raises(TypeError, match="LinearRegression is not a supported tree model") as caught:
        tree_shapley(LinearRegression().fit(X, y), X[:2], X[:5])
    assert isinstance(caught.value, UnsupportedModelError)
    assert caught.value.argument == "model"
    with pytest.raises(ValueError, match="RandomForestRegressor that is not fitted"):
        tree_shapley(RandomForestRegressor(), X[:2], X[:5])
    poisson = HistGradientBoostingRegressor(loss="poisson", max_iter=5).fit(X, np.exp(y))
    with pytest.raises(ValueError, match="log link"):
        tree_shapley(poisson, X[:2], X[:5])
    with pytest.raises(ValueError, match="custom init estimator"):
        tree_shapley(
            GradientBoostingRegressor(init=LinearRegression(), n_estimators=3).fit(X, y),
            X[:2],
            X[:5],
        )
    model = DecisionTreeRegressor(max_depth=2).fit(X, y)
    with pytest.raises(ValueError, match="X has 5 features; the model was fitted on 4"):
        tree_shapley(model, np.zeros((2, 5)), np.zeros((3, 5)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestRegressor(20, max_depth=5, random_state=0),
        lambda: HistGradientBoostingClassifier(max_iter=20, max_depth=4, random_state=0),
    ],
)
def test_grouped_values_match_the_group_game_by_brute_force(make):
    X, y = _task(5, d=6, n_classes=None)
    if isinstance(make(), HistGradientBoostingClassifier):
        y = (y > np.median(y)).astype(int)
    model = make().fit(X, y)
    groups = [[0, 3], [1], [2, 4, 5]]
    player_of_feature = np.array([0, 1, 2, 0, 2, 2])
    prepared = TreeBackground(model, X[:25], player_of_feature=player_of_feature)
    ours = prepared.values(X[100:104])
    truth = brute_force_shapley(_output_method(model), X[100:104], X[:25], groups)
    np.testing.assert_allclose(ours, truth, atol=1e-10)


def test_grouped_values_need_the_tables():
    X, y = _task(6)
    model = DecisionTreeRegressor(random_state=0).fit(X, y)  # deep: no tables
    with pytest.raises(ValueError, match="grouped TreeSHAP needs per-leaf tables"):
        TreeBackground(model, X[:20], max_table_entries=10, player_of_feature=np.zeros(5, int))


def _model_pair_gaps(model, rows, background, players, masks, picks, n_classes):
    """The model's own outputs on each pair's first mixed row minus its second."""
    m, n_pairs, _ = masks.shape
    mixed = np.empty((m, 2 * n_pairs, rows.shape[1]))
    fill_paired_rows(rows, background, players, masks, picks, 0, mixed)
    outputs = as_3d(np.asarray(_output_method(model)(mixed.reshape(-1, rows.shape[1]))))
    if n_classes == 2 and outputs.shape[-1] == 2:
        outputs = outputs[..., 1:]
    outputs = outputs.reshape(m, n_pairs, 2, -1)
    return outputs[:, :, 0] - outputs[:, :, 1]


@pytest.mark.parametrize("route", ["masks", "walk"])
@pytest.mark.parametrize(("name", "make", "n_classes"), MODELS, ids=[m[0] for m in MODELS])
def test_pair_gaps_equal_the_model_on_the_mixed_rows(name, make, n_classes, route, monkeypatch):
    """Refinement's pair gaps skip the trees where the explained row and the background row
    reach the same leaf; the gaps must still be the model's own outputs on the two mixed rows,
    with missing cells too (histogram boosting routes them), whether the leaves are tested with
    masks or the trees walked (no room for masks), and whether the background's leaves or masks
    are passed in, kept from the last call or found per call."""
    if route == "walk":
        monkeypatch.setattr(trees, "MAX_PAIR_MASK_BYTES", 0)
    X, y = _task(6, n_classes=n_classes)
    X[::7, 2] = np.nan
    model = make().fit(np.nan_to_num(X) if "histogram" not in name else X, y)
    rows = X[[0, 1, 2, 3, 100, 101]]  # two of them background rows: every tree is skipped
    background = X[100:140]
    if "histogram" not in name:
        rows, background = np.nan_to_num(rows), np.nan_to_num(background)
    prepared = TreeBackground(model, background)
    rng = np.random.default_rng(0)
    n_pairs = 25
    masks = rng.random((len(rows), n_pairs, X.shape[1])) < 0.5
    picks = rng.integers(0, len(background), size=(len(rows), n_pairs))
    players = np.arange(X.shape[1], dtype=np.int64)
    expected = _model_pair_gaps(model, rows, background, players, masks, picks, n_classes)
    kept = prepared.trusted_leaves(background)
    assert (prepared.trusted_leaves(rows)[4:] == kept[:2]).all()
    for leaves, keep in ((kept, False), (kept, True), (None, True), (None, False)):
        gaps = prepared.trusted_pair_gaps(
            rows, background, players, masks, picks, leaves, keep_background=keep
        )
        np.testing.assert_allclose(gaps, expected.reshape(gaps.shape), rtol=0, atol=1e-9)
    kept_masks = getattr(prepared, "_kept_background_off", None)
    assert (kept_masks is not None) == (route == "masks")


def test_masked_pair_gaps_follow_groups_chunks_and_a_changed_grouping(monkeypatch):
    """With players that are groups of columns and explained rows taken in chunks, the masked
    gaps are still the model's outputs on the mixed rows; the kept background masks are made
    again for another grouping, and a background one row past the bound is walked."""
    X, y = _task(7, d=8)
    X[::5, 3] = np.nan
    model = HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=15, random_state=0)
    model.fit(X, y)
    background = X[200:204]
    rows = X[:11]
    prepared = TreeBackground(model, background)
    # Room for the background's masks and four explained rows' at a time: three chunks.
    monkeypatch.setattr(trees, "MAX_PAIR_MASK_BYTES", 4 * prepared._slot_bytes())
    rng = np.random.default_rng(1)
    for player_of_feature in ([0, 1, 2, 0, 2, 3, 1, 3], [0, 0, 1, 1, 2, 2, 0, 1]):
        players = np.array(player_of_feature, dtype=np.int64)
        masks = rng.random((len(rows), 9, players.max() + 1)) < 0.5
        picks = rng.integers(0, len(background), size=(len(rows), 9))
        expected = _model_pair_gaps(model, rows, background, players, masks, picks, None)
        gaps = prepared.trusted_pair_gaps(
            rows, background, players, masks, picks, keep_background=True
        )
        np.testing.assert_allclose(gaps, expected.reshape(gaps.shape), rtol=0, atol=1e-9)
        kept_masks, kept_slots, kept_players = prepared._kept_background_off
        assert kept_masks.nbytes == 4 * prepared._slot_bytes() and kept_slots.shape == (4, 30)
        np.testing.assert_array_equal(kept_players, players)
    wider = X[200:205]
    fresh = TreeBackground(model, wider)
    expected = _model_pair_gaps(model, rows, wider, players, masks, picks, None)
    gaps = fresh.trusted_pair_gaps(rows, wider, players, masks, picks, keep_background=True)
    np.testing.assert_allclose(gaps, expected.reshape(gaps.shape), rtol=0, atol=1e-9)
    assert getattr(fresh, "_kept_background_off", None) is None


def test_pair_gaps_over_more_than_64_players_walk_the_trees():
    """A 64-bit mask holds 64 players; past that the trees are walked, with the same answers."""
    X, y = _task(8, n=300, d=70)
    model = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(X, y)
    background, rows = X[200:230], X[:5]
    prepared = TreeBackground(model, background)
    rng = np.random.default_rng(2)
    players = np.arange(70, dtype=np.int64)
    masks = rng.random((len(rows), 12, 70)) < 0.5
    picks = rng.integers(0, len(background), size=(len(rows), 12))
    expected = _model_pair_gaps(model, rows, background, players, masks, picks, None)
    gaps = prepared.trusted_pair_gaps(rows, background, players, masks, picks, keep_background=True)
    np.testing.assert_allclose(gaps, expected.reshape(gaps.shape), rtol=0, atol=1e-9)
    assert prepared.pair_cache_bytes() == 0
