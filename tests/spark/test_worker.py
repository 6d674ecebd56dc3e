"""The workers' side without Spark: the batch function on Arrow record batches, and the
per-process cache of loaded contexts."""

import hashlib
import pickle

import numpy as np
import pytest

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.spark import _worker
from shapley_svc.spark._worker import BatchPlan, ShippedContext, explain_batches

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")


def _explained(frames, plan, shipped):
    """``explain_batches`` over pandas frames sent as Arrow record batches, as Spark sends
    them; its batches back as frames."""
    batches = (pa.RecordBatch.from_pandas(frame, preserve_index=False) for frame in frames)
    for batch in explain_batches(batches, plan, shipped):
        yield batch.to_pandas()


class _Broadcast:
    """Stands in for a Spark broadcast: counts how often its value is read."""

    def __init__(self, value):
        self._value = value
        self.reads = 0

    @property
    def value(self):
        self.reads += 1
        return self._value


def _shipped(explainer, tmp_path, broadcast=False):
    directory = explainer.save(tmp_path / "ctx")
    files = {name: (directory / name).read_bytes() for name in ("manifest.json", "arrays.npz")}
    checksum = hashlib.sha256(files["manifest.json"]).hexdigest()
    return ShippedContext(checksum, None, _Broadcast(files) if broadcast else files)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3))
    X[rng.random(300) < 0.15, 1] = np.nan
    y = np.sin(X[:, 0]) + np.nan_to_num(X[:, 1]) * X[:, 2]
    return X, y, ZeroShotExplainer(random_state=3).fit(X, y)


def _columns_plan(**changes) -> BatchPlan:
    """The plan of the ``fitted`` frames: columns a, b, c, prediction p, the columns layout,
    batches of 64 rows."""
    return BatchPlan(
        feature_columns=("a", "b", "c"),
        prediction_columns=("p",),
        layout="columns",
        value_columns=(("v0", "v1", "v2"),),
        uncertainty_columns=(("u0", "u1", "u2"),),
        base_columns=("base",),
        batch_rows=64,
        threads=1,
        **changes,
    )


def test_a_context_is_loaded_once_per_process_and_checksum(fitted, tmp_path, monkeypatch):
    _, _, explainer = fitted
    monkeypatch.setattr(_worker, "_LOADED", type(_worker._LOADED)())
    monkeypatch.setattr(_worker, "_LOADS", type(_worker._LOADS)())
    shipped = _shipped(explainer, tmp_path, broadcast=True)
    first = _worker.loaded_explainer(shipped)
    assert _worker.loaded_explainer(shipped) is first
    assert shipped.payload.reads == 1, shipped.payload.reads
    assert _worker.loads_so_far() == {shipped.checksum: 1}


def test_batches_equal_the_in_process_answers(fitted, tmp_path):
    X, y, explainer = fitted
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(p=y, tag="row")
    frame.loc[[4, 9], "p"] = np.nan  # rows logged without a prediction
    plan = _columns_plan()
    batches = [frame.iloc[:100], frame.iloc[100:100], frame.iloc[100:]]
    out = pd.concat(_explained(batches, plan, _shipped(explainer, tmp_path)))
    assert list(out.columns) == [*frame.columns, *plan.new_columns()]
    pd.testing.assert_frame_equal(out[list(frame.columns)].reset_index(drop=True), frame)
    given = ~np.isnan(frame["p"].to_numpy())
    with_predictions = explainer.explain(X[given], y[given])
    without = explainer.explain(X[~given])
    values = out[["v0", "v1", "v2"]].to_numpy()
    assert np.allclose(values[given], with_predictions.values, rtol=0, atol=1e-12)
    assert np.allclose(values[~given], without.values, rtol=0, atol=1e-12)
    uncertainty = out[["u0", "u1", "u2"]].to_numpy()
    assert np.allclose(uncertainty[given], with_predictions.uncertainty, rtol=0, atol=1e-12)
    gap = values[given].sum(axis=1) - (y[given] - out["base"].to_numpy()[given])
    assert np.abs(gap).max() <= 1e-9, np.abs(gap).max()


def test_a_context_coded_from_labels_takes_string_columns(tmp_path):
    rng = np.random.default_rng(11)
    colour = rng.choice(["red", "green", "blue"], size=300)
    x = rng.normal(size=300)
    y = x + np.select([colour == "red", colour == "green"], [1.0, -1.0], 0.2)
    frame = pd.DataFrame({"x": x, "colour": pd.Categorical(colour)})
    explainer = ZeroShotExplainer(random_state=4).fit(frame, y)
    # The caller's columns have other names and arrive as Spark sends strings: object dtype.
    query = pd.DataFrame({"amount": x[:50], "paint": colour[:50].astype(object)})
    query.loc[3, "paint"] = None  # a missing label
    query.loc[4, "paint"] = "purple"  # a label the context never showed
    plan = BatchPlan(
        feature_columns=("amount", "paint"),
        prediction_columns=None,
        layout="arrays",
        value_columns=(("values",),),
        uncertainty_columns=(("uncertainty",),),
        base_columns=("base",),
        batch_rows=None,
        threads=1,
    )
    out = next(_explained([query], plan, _shipped(explainer, tmp_path)))
    expected = explainer.explain(pd.DataFrame({"x": query["amount"], "colour": query["paint"]}))
    assert np.allclose(np.stack(out["values"]), expected.values, rtol=0, atol=1e-12)
    assert np.isnan(expected.data[3, 1]) and expected.data[4, 1] == -1.0


_MODEL_CALLS: list[int] = []


def _model(rows):
    """The ``fitted`` context's function; pickled by reference, so the worker's copy is it."""
    _MODEL_CALLS.append(len(rows))
    return np.sin(rows[:, 0]) + np.nan_to_num(rows[:, 1]) * rows[:, 2]


def _shipped_model(broadcast=False):
    data = pickle.dumps(_model)
    return _worker.ShippedModel(
        hashlib.sha256(data).hexdigest(), _Broadcast(data) if broadcast else data
    )


def test_refined_batches_equal_the_in_process_refinement_slice_by_slice(
    fitted, tmp_path, monkeypatch
):
    X, y, explainer = fitted
    monkeypatch.setattr(_worker, "_MODELS", type(_worker._MODELS)())
    monkeypatch.setattr(_worker, "_MODEL_LOADS", type(_worker._MODEL_LOADS)())
    _MODEL_CALLS.clear()
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(p=y)
    frame.loc[[4, 9], "p"] = np.nan  # rows logged without a prediction: their own row is scored
    budget = 12
    # Seven explained rows per model call: batches of 64 rows are refined in slices.
    monkeypatch.setattr(_worker, "REFINE_SLICE_CELLS", 7 * budget * 3)
    shipped_model = _shipped_model(broadcast=True)
    plan = _columns_plan(refinement=_worker.Refinement(shipped_model, budget, 17))
    out = pd.concat(_explained([frame], plan, _shipped(explainer, tmp_path)))
    assert len(_MODEL_CALLS) > 5 and max(_MODEL_CALLS) <= 7 * budget, _MODEL_CALLS
    # The model was unpickled once for every slice of every batch.
    assert shipped_model.payload.reads == 1
    assert _worker.model_loads_so_far() == {shipped_model.checksum: 1}
    given = ~np.isnan(frame["p"].to_numpy())
    values = out[["v0", "v1", "v2"]].to_numpy()
    uncertainty = out[["u0", "u1", "u2"]].to_numpy()
    for rows, predictions in ((given, y[given]), (~given, None)):
        proposal = explainer.propose(X[rows], budget, predictions, random_state=17)
        expected = explainer.refine(proposal, _model(proposal.rows))
        assert expected.model_rows > 0
        assert np.allclose(values[rows], expected.values, rtol=0, atol=1e-12)
        assert np.allclose(uncertainty[rows], expected.uncertainty, rtol=0, atol=1e-12)
    zero_shot = explainer.explain(X[given], y[given]).values
    assert not np.allclose(values[given], zero_shot, rtol=0, atol=1e-6)
    gap = values[given].sum(axis=1) - (y[given] - out["base"].to_numpy()[given])
    assert np.abs(gap).max() <= 1e-9, np.abs(gap).max()


@pytest.mark.parametrize("refined", [False, True])
@pytest.mark.parametrize("some_predictions_missing", [False, True])
def test_a_refused_value_is_reported_by_the_callers_column_and_the_rows_values(
    fitted, tmp_path, monkeypatch, refined, some_predictions_missing
):
    # Row numbers within an Arrow batch (or within the rows of it explained together) locate
    # nothing in a table of millions: the error names the caller's column and shows the row.
    X, y, explainer = fitted
    frame = pd.DataFrame(X[:40], columns=["a", "b", "c"]).assign(p=y[:40])
    frame.loc[31, "c"] = np.inf
    frame.loc[31, "a"] = 12.5
    if some_predictions_missing:  # the rows are then explained in two groups
        frame.loc[[2, 3, 5], "p"] = np.nan
    changes = {"caller_names": {"a": "Age", "b": "Income", "c": "Debt.Ratio", "p": "score"}}
    if refined:  # rows are proposed in slices of 7
        monkeypatch.setattr(_worker, "REFINE_SLICE_CELLS", 7 * 12 * 3)
        changes["refinement"] = _worker.Refinement(_shipped_model(), 12, 17)
    plan = _columns_plan(**changes)
    with pytest.raises(InvalidArgumentError) as refused:
        list(_explained([frame], plan, _shipped(explainer, tmp_path)))
    assert refused.value.argument == "Debt.Ratio"
    message = str(refused.value)
    assert "holds inf in the row with Age=12.5, Income=" in message, message
    assert f"score={float(frame.loc[31, 'p'])!r}" in message, message
    # The estimator's own row numbers count the rows explained together: left out.
    assert message.endswith("refused: X_query must be finite or NaN (missing); found inf"), message


def test_a_refused_prediction_names_its_column(fitted, tmp_path):
    X, y, explainer = fitted
    frame = pd.DataFrame(X[:10], columns=["a", "b", "c"]).assign(p=y[:10])
    frame.loc[6, "p"] = -np.inf
    with pytest.raises(InvalidArgumentError) as refused:
        list(_explained([frame], _columns_plan(), _shipped(explainer, tmp_path)))
    assert refused.value.argument == "p"
    assert f"holds -inf in the row with a={float(frame.loc[6, 'a'])!r}" in str(refused.value)


def test_a_missing_prediction_under_a_budget_of_four_is_named_with_its_row(fitted, tmp_path):
    """A row without its prediction needs budget 5 (its own row is scored): the job said only
    that the budget must be 5, naming neither the column nor the row (QA, 2026-12-06)."""
    X, y, explainer = fitted
    frame = pd.DataFrame(X[:10], columns=["a", "b", "c"]).assign(p=y[:10])
    frame.loc[6, "p"] = np.nan
    changes = {"caller_names": {"p": "churn_score"}}
    plan = _columns_plan(refinement=_worker.Refinement(_shipped_model(), 4, 17), **changes)
    with pytest.raises(InvalidArgumentError) as refused:
        list(_explained([frame], plan, _shipped(explainer, tmp_path)))
    assert refused.value.argument == "churn_score"
    message = str(refused.value)
    assert f"holds nan in the row with a={float(frame.loc[6, 'a'])!r}" in message, message
    assert "is missing (null or NaN)" in message and "at least 5" in message, message
    frame.loc[6, "p"] = y[6]  # every prediction given: 4 is enough
    assert len(pd.concat(_explained([frame], plan, _shipped(explainer, tmp_path)))) == 10


def test_a_refused_model_output_is_reported_as_the_estimator_refused_it(fitted, tmp_path):
    # Outputs count proposed rows, not explained ones: they were mapped as explained rows, which
    # raised IndexError where some predictions were missing.
    X, y, explainer = fitted
    frame = pd.DataFrame(X[:40], columns=["a", "b", "c"]).assign(p=y[:40])
    frame.loc[[2, 3, 5], "p"] = np.nan
    plan = _columns_plan(refinement=_worker.Refinement(_shipped_nan_model(), 12, 17))
    with pytest.raises(InvalidArgumentError) as refused:
        list(_explained([frame], plan, _shipped(explainer, tmp_path)))
    assert refused.value.argument == "outputs"
    assert "must be finite; found nan" in str(refused.value)


def _nan_model(rows):
    return np.full(len(rows), np.nan)


def _shipped_nan_model():
    data = pickle.dumps(_nan_model)
    return _worker.ShippedModel(hashlib.sha256(data).hexdigest(), data)


def test_spark_connect_ships_in_the_closure_by_default_and_refuses_a_broadcast():
    """Spark Connect has no broadcast variables: the default failed every call there with
    JVM_ATTRIBUTE_NOT_SUPPORTED (review QA, 2026-12-06)."""
    pytest.importorskip("pyspark")
    from shapley_svc.spark.dataframe import _shipping

    classic = type("SparkSession", (), {"__module__": "pyspark.sql.session"})()
    connect = type("SparkSession", (), {"__module__": "pyspark.sql.connect.session"})()
    assert _shipping(classic, None) == "broadcast" and _shipping(connect, None) == "closure"
    assert _shipping(classic, "closure") == "closure" == _shipping(connect, "closure")
    assert _shipping(classic, "broadcast") == "broadcast"
    with pytest.raises(InvalidArgumentError, match="needs a SparkContext") as refused:
        _shipping(connect, "broadcast")
    assert refused.value.argument == "shipping"
    with pytest.raises(InvalidArgumentError, match="must be one of"):
        _shipping(classic, "by post")
