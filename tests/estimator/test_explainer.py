import json
import shutil

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from shapley_svc import ZeroShotExplainer
from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator import ArtifactError, FitCancelled, NotFittedError, load_artifact
from shapley_svc.estimator.artifact import DEFAULT_ARTIFACT
from shapley_svc.estimator.surrogates import ZOO
from shapley_svc.reference import exact_shapley, linear_shapley, tree_shapley


def _pearson(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


@pytest.fixture
def regression_context(rng):
    X = rng.normal(size=(400, 6))
    X[:, 1] += 0.5 * X[:, 0]
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * X[:, 3]
    model = RandomForestRegressor(50, max_depth=6, random_state=0).fit(X, y)
    return X, model


def test_single_output_shapes_base_values_and_exact_efficiency(regression_context):
    X, model = regression_context
    predictions = model.predict(X)
    explainer = ZeroShotExplainer(random_state=0).fit(X, predictions)
    explanation = explainer.explain(X[:30], predictions[:30])
    assert explanation.values.shape == explanation.uncertainty.shape == (30, 6)
    np.testing.assert_allclose(
        explanation.base_values, predictions[explainer.background_].mean(), rtol=1e-12
    )
    gap = explanation.values.sum(axis=1) - (predictions[:30] - explanation.base_values)
    scale = np.abs(explanation.values).sum(axis=1)
    assert np.all(np.abs(gap) <= 1e-9 * scale), np.abs(gap).max()
    assert np.all(explanation.uncertainty >= 0)
    assert explanation.attribution_names == [f"x{j}" for j in range(6)]
    assert explainer.groups_ is None
    np.testing.assert_array_equal(explanation.data, X[:30])


def test_tracks_the_true_values_of_a_forest(regression_context):
    X, model = regression_context
    predictions = model.predict(X)
    background = np.arange(100, 200)
    explanation = (
        ZeroShotExplainer(random_state=0)
        .fit(X, predictions, background)
        .explain(X[:40], predictions[:40])
    )
    truth = tree_shapley(model, X[:40], X[background]).values
    assert _pearson(explanation.values, truth) > 0.85


def test_recovers_a_logistic_model_on_the_probability_scale(rng):
    X = rng.normal(size=(500, 5))
    y = (X @ np.array([1.5, -1.0, 0.5, 0.0, 2.0]) + rng.normal(size=500) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    probabilities = model.predict_proba(X)
    background = np.arange(100)
    explanation = (
        ZeroShotExplainer(random_state=0)
        .fit(X, probabilities, background, feature_names=list("abcde"))
        .explain(X[200:240], probabilities[200:240])
    )
    assert explanation.values.shape == (40, 5, 2)
    assert explanation.base_values.shape == (40, 2)
    from shapley_svc.reference import exact_shapley

    truth = exact_shapley(model.predict_proba, X[200:240], X[background]).values
    assert _pearson(explanation.values, truth) > 0.95
    np.testing.assert_allclose(
        explanation.values.sum(axis=1), probabilities[200:240] - explanation.base_values, atol=1e-12
    )
    assert explanation.attribution_names == list("abcde")


def test_a_linear_model_on_collinear_columns_gets_the_linear_members_values(rng):
    # Nearly collinear columns (income and its square, say): splines and trees fit the outputs
    # about as well as ridge does, with other attributions. The member that reproduces the
    # outputs out of fold is the model's class, and is taken alone.
    income = rng.lognormal(size=600)
    X = np.column_stack(
        [income, income**2 / 10, rng.normal(size=600), income + rng.normal(size=600)]
    )
    coef = np.array([2.0, -1.0, 0.5, 0.3])
    predictions = X @ coef + 1.0
    explainer = ZeroShotExplainer(random_state=0).fit(X, predictions, background=np.arange(60))
    weights = {s.name: s.weight for s in explainer.diagnostics_.outputs[0].surrogates}
    assert max(weights, key=weights.get) in ("ridge", "ridge_strong") and max(weights.values()) == 1
    rows = X[100:130]
    truth = linear_shapley(coef, 1.0, rows, X[:60]).values
    assert _pearson(explainer.explain(rows, predictions[100:130]).values, truth) > 0.999


def test_a_nonlinear_model_keeps_the_gates_mix(regression_context):
    X, model = regression_context
    explainer = ZeroShotExplainer(random_state=0).fit(X, model.predict(X))
    weights = [s.weight for s in explainer.diagnostics_.outputs[0].surrogates]
    assert max(weights) < 1.0 and sum(w > 0 for w in weights) >= 2


def test_same_seed_same_answer_and_diagnostics(regression_context):
    X, model = regression_context
    predictions = model.predict(X)
    first = ZeroShotExplainer(random_state=3).fit(X, predictions).explain(X[:10])
    second = ZeroShotExplainer(random_state=3).fit(X, predictions).explain(X[:10])
    np.testing.assert_array_equal(first.values, second.values)
    np.testing.assert_array_equal(first.uncertainty, second.uncertainty)
    output = first.diagnostics.outputs[0]
    assert -1 <= output.predicted_fidelity <= 1
    assert abs(sum(member.weight for member in output.surrogates) - 1) < 1e-12
    names = [member.name for member in output.surrogates]
    assert "logistic" not in names  # outputs outside [0, 1]: no logistic member
    assert names == [kind.name for kind in ZOO if not kind.probability_only]
    assert first.diagnostics.artifact_version == load_artifact().version
    assert first.predictions is None


def test_should_stop_cancels_a_fit_and_keeps_the_previous_state(regression_context):
    X, model = regression_context
    predictions = model.predict(X)
    explainer = ZeroShotExplainer(random_state=0).fit(X, predictions)
    before = explainer.explain(X[:5]).values
    polls = []

    def stop_on_third_poll():
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(FitCancelled):
        explainer.fit(X[:, :4] * 2, predictions, should_stop=stop_on_third_poll)
    assert len(polls) == 3
    assert explainer.n_features_in_ == 6
    np.testing.assert_array_equal(explainer.explain(X[:5]).values, before)
    with pytest.raises(FitCancelled):
        ZeroShotExplainer().fit(X, predictions, should_stop=lambda: True)


def test_class_probabilities_are_explained_jointly_and_efficiently(rng):
    X = rng.normal(size=(400, 4))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=400), [-0.5, 0.5])
    model = LogisticRegression().fit(X, y)
    probabilities = model.predict_proba(X)
    background = np.arange(100)
    explanation = (
        ZeroShotExplainer(random_state=0)
        .fit(X, probabilities, background)
        .explain(X[200:230], probabilities[200:230])
    )
    assert explanation.values.shape == (30, 4, 3)
    truth = exact_shapley(model.predict_proba, X[200:230], X[background]).values
    assert _pearson(explanation.values, truth) > 0.95
    gap = explanation.values.sum(axis=1) - (probabilities[200:230] - explanation.base_values)
    assert np.abs(gap).max() < 1e-9


def test_to_shap(regression_context):
    pytest.importorskip("shap")
    X, model = regression_context
    explanation = ZeroShotExplainer().fit(X, model.predict(X)).explain(X[:3])
    converted = explanation.to_shap()
    np.testing.assert_array_equal(converted.values, explanation.values)


def test_linear_truth_without_query_predictions(rng):
    X = rng.normal(size=(300, 4))
    coef = np.array([2.0, -1.0, 0.0, 0.5])
    predictions = X @ coef + 1.0
    explanation = ZeroShotExplainer().fit(X, predictions, np.arange(50)).explain(X[:20])
    truth = linear_shapley(coef, 1.0, X[:20], X[:50]).values
    # Without the rows' predictions nothing projects the values, so the boosted trees' share of
    # the mix (a sixth here, although ridge fits exactly) shows as steps of about 5 %.
    assert _pearson(explanation.values, truth) > 0.995
    np.testing.assert_allclose(explanation.values, truth, atol=0.08 * np.abs(truth).max())


@pytest.mark.parametrize(
    ("fit_args", "argument", "message"),
    [
        ((np.zeros(5), np.zeros(5)), "X", "X must be 2-D"),
        ((np.ones((1, 3)), np.ones(1)), "X", "at least 3 rows"),
        ((np.ones((2, 3)), np.arange(2.0)), "X", "at least 3 rows .* got 2"),
        (
            (np.array([[0.0, np.inf], [1, 2], [3, 4]]), np.arange(3.0)),
            "X",
            r"X must be finite or NaN \(missing\); found inf at row 0, column 1",
        ),
        ((np.ones((4, 2)), np.ones(3)), "predictions", r"predictions must have shape \(4,\)"),
        ((np.ones((4, 2)), np.array([0.0, 1, np.inf, 2])), "predictions", "must be finite"),
        ((np.arange(8.0).reshape(4, 2), np.full(4, 0.3)), "predictions", "are constant"),
        ((np.arange(8.0).reshape(4, 2), np.ones((4, 0))), "predictions", "at least one output"),
        # Squares past 1e308 overflow: NaN or equal values for every feature, status quo ante.
        (
            (np.arange(8.0).reshape(4, 2), np.array([0.0, 1, 2, 3e31])),
            "predictions",
            r"must lie within \+-1e\+30 .* found 3e\+31 at row 3, column 0",
        ),
        ((np.arange(8.0).reshape(4, 2) * 1e152, np.arange(4.0)), "X", r"found 1e\+152 at row 0"),
    ],
)
def test_fit_rejects_bad_input(fit_args, argument, message):
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        ZeroShotExplainer().fit(*fit_args)
    assert caught.value.argument == argument


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40, 1.5, True, np.bool_(False)])
def test_fit_rejects_seeds_outside_scikit_learns_range(seed):
    X = np.arange(20.0).reshape(10, 2)
    with pytest.raises(
        InvalidArgumentError, match=r"random_state must be an int in \[0, 2\*\*32\)"
    ):
        ZeroShotExplainer(random_state=seed).fit(X, X[:, 0] ** 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"background": [0, 50]}, r"background indices must lie in \[0, 20\)"),
        ({"background": [1, 1, 2]}, "background indices must be distinct"),
        ({"background": [0.5, 1.0]}, "integer row indices"),
        ({"background": []}, "non-empty"),
        ({"feature_names": ["a"]}, "feature_names has 1 names; X has 3"),
        ({"feature_names": ["a", "a", "b"]}, "feature_names must be distinct"),
    ],
)
def test_fit_rejects_bad_background_and_names(rng, kwargs, message):
    X = rng.normal(size=(20, 3))
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        ZeroShotExplainer().fit(X, X[:, 0], **kwargs)
    assert caught.value.argument == next(iter(kwargs))


def test_explain_rejects_bad_input(rng):
    X = rng.normal(size=(60, 3))
    explainer = ZeroShotExplainer()
    with pytest.raises(NotFittedError, match="not fitted"):
        explainer.explain(X)
    explainer.fit(X, np.column_stack([X[:, 0], X[:, 1] ** 2]))
    with pytest.raises(
        InvalidArgumentError, match="X_query has 4 features; the explainer was fitted on 3"
    ) as caught:
        explainer.explain(np.zeros((2, 4)))
    assert caught.value.argument == "X_query"
    with pytest.raises(
        InvalidArgumentError, match="predictions_query has 1 outputs; the explainer was fitted on 2"
    ) as caught:
        explainer.explain(X[:2], np.zeros(2))
    assert caught.value.argument == "predictions_query"
    with pytest.raises(InvalidArgumentError, match="X_query must be finite or NaN"):
        explainer.explain(np.full((1, 3), -np.inf))


def test_corrupted_or_missing_artifact_is_refused(tmp_path):
    manifest = tmp_path / "combiner.json"
    shutil.copy(DEFAULT_ARTIFACT, manifest)
    weights = tmp_path / json.loads(manifest.read_text())["weights"]
    shutil.copy(DEFAULT_ARTIFACT.parent / weights.name, weights)
    assert load_artifact(manifest).parameters.gate_bias.shape[0] > 0
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(manifest)
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "absent.json")
    altered = json.loads(manifest.read_text())
    altered["zoo"] = ["ridge"]
    manifest.write_text(json.dumps(altered))
    with pytest.raises(ArtifactError, match="zoo"):
        load_artifact(manifest)


def test_the_smallest_context_fits_and_answers_efficiently():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3, 4))
    p = 1.0 / (1.0 + np.exp(-X[:, 0]))
    explanation = ZeroShotExplainer().fit(X, p).explain(X, p)
    assert np.isfinite(explanation.values).all() and np.isfinite(explanation.uncertainty).all()
    np.testing.assert_allclose(explanation.values.sum(axis=1), p - explanation.base_values)


def test_dataframe_columns_name_the_features_and_are_checked_at_explain():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["age", "income", "debt"])
    p = X["age"].to_numpy() - 0.5 * X["debt"].to_numpy()
    explainer = ZeroShotExplainer().fit(X, p)
    assert explainer.feature_names_ == ["age", "income", "debt"]
    explanation = explainer.explain(X.iloc[:4], p[:4])
    assert explanation.attribution_names == ["age", "income", "debt"]
    np.testing.assert_array_equal(explanation.data, X.iloc[:4].to_numpy())
    # Explicit names win over the columns; plain arrays are explained as before.
    assert ZeroShotExplainer().fit(X, p, feature_names=list("abc")).feature_names_ == list("abc")
    np.testing.assert_array_equal(
        explainer.explain(X.to_numpy()[:4]).values, explainer.explain(X.iloc[:4]).values
    )
    with pytest.raises(InvalidArgumentError, match="has columns") as caught:
        explainer.explain(X[["income", "age", "debt"]].iloc[:2])
    assert caught.value.argument == "X_query"
    # Fitted without names: any columns are accepted, but not x0, x1, ... in another order.
    unnamed = ZeroShotExplainer().fit(X.to_numpy(), p)
    assert unnamed.explain(X[["income", "age", "debt"]].iloc[:2]).values.shape == (2, 3)
    positional = X.set_axis(["x0", "x1", "x2"], axis=1)
    for fitted in (unnamed, ZeroShotExplainer().fit(positional, p)):
        with pytest.raises(InvalidArgumentError, match="has columns") as caught:
            fitted.explain(positional[["x2", "x1", "x0"]].iloc[:2])
        assert caught.value.argument == "X_query"
    # A row as a Series, and repeated column names, are refused as such (not AttributeError).
    with pytest.raises(InvalidArgumentError, match="must be 2-D") as caught:
        explainer.explain(X.iloc[0])
    assert caught.value.argument == "X_query"
    with pytest.raises(InvalidArgumentError, match=r"repeated column names: \['age'\]") as caught:
        ZeroShotExplainer().fit(X.set_axis(["age", "age", "debt"], axis=1), p)
    assert caught.value.argument == "X"


def test_values_too_large_to_square_are_refused_where_they_come_in():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(60, 3))
    p = X[:, 0] - X[:, 1] * X[:, 2]
    explainer = ZeroShotExplainer().fit(X * 1e149, p)  # the largest scale of rows taken
    at_scale_one = ZeroShotExplainer().fit(X, p).explain(X[:2], p[:2])
    np.testing.assert_allclose(
        explainer.explain(X[:2] * 1e149, p[:2]).values, at_scale_one.values, atol=1e-12
    )
    query = X[:2] * 1e149
    query[1, 2] = 1e160
    with pytest.raises(InvalidArgumentError, match="within") as caught:
        explainer.explain(query)
    assert caught.value.argument == "X_query"
    proposal = explainer.propose(X[:2] * 1e149, 8)
    outputs = np.zeros(len(proposal.rows))
    outputs[3] = -1e155
    with pytest.raises(InvalidArgumentError, match="within") as caught:
        explainer.refine(proposal, outputs)
    assert caught.value.argument == "outputs"


def test_model_outputs_answer_as_at_scale_one_up_to_their_bound_and_are_refused_past_it():
    """Predictions scaled by 1e40 changed the member weights and the values by up to 0.25 of
    their size (the boosted member sums gradients in float32), with no error. At 9e28 they move
    by rounding alone: the boosted member's float32 sums round otherwise at another scale (3e-5
    here on values up to 1.4, since its columns are fitted in their canonical order)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5))

    def model(rows):
        return np.tanh(rows[:, 0] * rows[:, 1]) + rows[:, 2] ** 2 + rows[:, 3]

    query = X[:3]
    answers = []
    for scale in (1.0, 9e28):  # outputs up to 9.8e29
        explainer = ZeroShotExplainer().fit(X, scale * model(X))
        proposal = explainer.propose(query, 20, scale * model(query))
        refined = explainer.refine(proposal, scale * model(proposal.rows))
        answers.append(
            (explainer.explain(query, scale * model(query)).values / scale, refined.values / scale)
        )
    for at_bound, at_one in zip(answers[1], answers[0], strict=True):
        np.testing.assert_allclose(at_bound, at_one, atol=1e-4)
    for argument, call in [
        ("predictions", lambda: ZeroShotExplainer().fit(X, 1e31 * model(X))),
        ("predictions_query", lambda: explainer.explain(query, 1e31 * model(query))),
        ("outputs", lambda: explainer.refine(proposal, 1e31 * model(proposal.rows))),
    ]:
        with pytest.raises(InvalidArgumentError, match=r"within \+-1e\+30") as caught:
            call()
        assert caught.value.argument == argument


def test_numbers_where_the_context_took_labels_are_refused():
    """Codes in a column the explainer coded from string labels were all unseen categories:
    every row got the unseen-label answer, off by up to 0.51, with no error (QA 2026-12-05)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(8)
    frame = pd.DataFrame(
        {"x": rng.normal(size=120), "region": rng.choice(["east", "west"], size=120)}
    )
    p = frame["x"].to_numpy() + (frame["region"] == "east").to_numpy()
    explainer = ZeroShotExplainer().fit(frame, p)
    for coded in (np.arange(4) % 2, np.arange(4) % 2 == 0):
        query = frame.iloc[:4].assign(region=coded)
        with pytest.raises(InvalidArgumentError, match="coded it from string labels") as caught:
            explainer.explain(query)
        assert caught.value.argument == "X_query"
    as_category = frame.iloc[:4].astype({"region": "category"})
    assert explainer.explain(as_category).values.shape == (4, 2)


def test_an_explanation_keeps_its_own_copy_of_the_rows():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(60, 3))
    p = X[:, 0] - X[:, 1] * X[:, 2]
    query = X[:4].copy()
    explanation = ZeroShotExplainer().fit(X, p).explain(query, p[:4])
    query[:] = 0.0  # the caller reuses its buffer
    np.testing.assert_array_equal(explanation.data, X[:4])


def test_scikit_learn_clones_an_explainer_unfitted_with_its_parameters(rng):
    from sklearn.base import clone

    X = rng.normal(size=(80, 3))
    predictions = X[:, 0] + X[:, 1] * X[:, 2]
    fitted = ZeroShotExplainer(random_state=7, working_memory_bytes=64 << 20).fit(X, predictions)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "context_")
    with pytest.raises(NotFittedError):
        copy.explain(X[:2])
    again = copy.fit(X, predictions).explain(X[:5], predictions[:5])
    np.testing.assert_array_equal(again.values, fitted.explain(X[:5], predictions[:5]).values)
    assert fitted.set_params(random_state=9).get_params()["random_state"] == 9
    with pytest.raises(ValueError, match="Invalid parameter 'seed'"):
        fitted.set_params(seed=1)


def test_rare_event_probabilities_are_explained_on_their_scale():
    """Probabilities near 1e-7 stopped the logistic members' solver at once (its tolerance is
    absolute): out-of-fold R^2 -1, values 300x the model's, and the mix's r against the exact
    values 0.34 (QA 2026-12-06)."""
    from scipy.special import expit
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor

    X, y = load_diabetes(return_X_y=True)
    booster = GradientBoostingRegressor(n_estimators=50, random_state=0)
    booster.fit(X, (y - y.mean()) / y.std())

    def model(rows):
        return expit(2 * booster.predict(rows) - 20)

    explainer = ZeroShotExplainer(random_state=0).fit(X, model(X), background=np.arange(40))
    query = X[100:110]
    answer = explainer.explain(query, model(query))
    truth = exact_shapley(model, query, explainer.background_rows_).values
    assert np.corrcoef(answer.values.ravel(), truth.ravel())[0, 1] > 0.8
    assert np.abs(answer.values).max() < 5 * np.abs(truth).max()
