"""Real tables through the Python client and a real server: NaN cells, declared categorical
columns and pandas DataFrames whose labels the client codes and keeps (issue 17)."""

import grpc
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from shapley_client import ShapleyError

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator import ZeroShotExplainer

plt.switch_backend("Agg")

REGIONS = ["north", "south", "east", "west"]


def _table(n=300, seed=5):
    """A frame with a missing-value numeric column, a category, a text column and a bool, and a
    model's output on it (which reads the missing values and every label)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.normal(size=n),
            "region": pd.Categorical(rng.choice(REGIONS, size=n), categories=REGIONS),
            "plan": rng.choice(["basic", "gold", "pro"], size=n).astype(object),
            "employed": rng.random(n) < 0.7,
        }
    )
    frame.loc[rng.random(n) < 0.2, "income"] = np.nan
    frame.loc[rng.random(n) < 0.1, "plan"] = None
    region = frame["region"].map(dict(zip(REGIONS, [0.5, -0.5, 0.0, 1.0], strict=True)))
    plan = frame["plan"].map({"basic": -0.3, "gold": 0.4, "pro": 0.8}).fillna(0.1)
    output = (
        frame["income"].fillna(-1.0) + region.astype(float) + plan + 0.6 * frame["employed"]
    ).to_numpy()
    return frame, output


@pytest.fixture(scope="module")
def table(client):
    frame, output = _table()
    return frame, output, client.create_context(frame, output)


def _query():
    return pd.DataFrame(
        {
            "income": [0.3, np.nan, -1.2],
            "region": pd.Categorical(["west", "south", "arctic"]),  # arctic: never seen
            "plan": ["gold", None, "platinum"],  # platinum: never seen
            "employed": [True, False, True],
        }
    )


def test_nan_cells_pass_through_and_are_explained_as_in_process(client):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    X[rng.random((300, 4)) < 0.15] = np.nan
    y = np.nan_to_num(X[:, 0], nan=2.0) - np.where(np.isnan(X[:, 1]), 1.0, X[:, 1] ** 2)
    context = client.create_context(X, y)
    query = np.array([[np.nan, 0.5, 0.1, np.nan], [0.2, np.nan, np.nan, 1.0]])
    predictions = np.nan_to_num(query[:, 0], nan=2.0) - np.where(
        np.isnan(query[:, 1]), 1.0, query[:, 1] ** 2
    )
    answer = client.explain(context, query, predictions)
    local = ZeroShotExplainer().fit(X, y).explain(query, predictions)
    np.testing.assert_allclose(answer.values, local.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(answer.values.sum(axis=1), predictions - answer.base_values)
    np.testing.assert_array_equal(answer.data, query)  # the NaN cells as sent
    assert answer.display_data is None  # nothing coded: nothing to show beyond the numbers
    streamed = client.explain_stream(context, query, predictions, chunk_rows=1)
    np.testing.assert_array_equal(streamed.values, answer.values)
    with pytest.raises(ShapleyError) as caught:
        client.explain(context, np.full((1, 4), np.inf))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.field == "rows"
    assert "finite or NaN (missing)" in caught.value.details


def test_a_dataframe_context_keeps_its_labels_and_declares_its_coded_columns(table):
    context = table[2]
    assert context.feature_names == ["income", "region", "plan", "employed"]
    assert context.categorical_columns == [1, 2, 3]
    assert context.categories == {
        "region": REGIONS,
        "plan": ["basic", "gold", "pro"],
        "employed": [False, True],
    }


def test_query_frames_are_coded_alike_unseen_labels_included(client, table):
    frame, output, context = table
    query = _query()
    predictions = np.array([1.5, -1.0, 0.2])
    answer = client.explain(context, query, predictions)
    # The server sees the same codes as the estimator's own DataFrame path gives.
    local = ZeroShotExplainer().fit(frame, output).explain(query, predictions)
    np.testing.assert_allclose(answer.values, local.values, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(answer.data, local.data)
    np.testing.assert_allclose(answer.values.sum(axis=1), predictions - answer.base_values)
    # Codes: west 3, south 1, arctic unseen (-1); gold 1, missing NaN, platinum unseen.
    np.testing.assert_array_equal(answer.data[:, 1], [3.0, 1.0, -1.0])
    np.testing.assert_array_equal(answer.data[:, 2], [1.0, np.nan, -1.0])
    assert answer.display_data[2, 1:].tolist() == ["arctic", "platinum", True]
    assert answer.display_data[1, 2] is None and np.isnan(answer.display_data[1, 0])
    streamed = client.explain_stream(context, query, predictions, chunk_rows=2)
    np.testing.assert_array_equal(streamed.values, answer.values)
    assert streamed.display_data.astype(str).tolist() == answer.display_data.astype(str).tolist()


def test_labels_reach_shap_and_pandas_keeps_one_line_per_raw_column(client, table):
    context = table[2]
    answer = client.explain(context, _query())
    assert answer.values.shape == (3, 4)  # one attribution per raw column, never per level
    shown = answer.to_shap()
    assert shown.display_data[0].tolist()[1:] == ["west", "gold", True]
    plt.figure()
    try:
        import shap

        shap.plots.waterfall(shown[0], show=False)
        labels = [text.get_text() for text in plt.gca().get_yticklabels()]
    finally:
        plt.close("all")
    assert any(label.startswith("west = region") for label in labels), labels
    tidy = answer.to_pandas()
    assert len(tidy) == 12 and list(tidy["attribution"].cat.categories) == context.feature_names


def test_explicit_categorical_columns_by_name_give_the_frames_context(client, table):
    frame, output, context = table
    codes = context.spec  # what the frame was sent as
    rows = np.frombuffer(codes.rows.data, "<f8").reshape(tuple(codes.rows.shape))
    by_name = client.create_context(
        rows,
        output,
        feature_names=context.feature_names,
        categorical_columns=["employed", "region", 2],  # any order, names or indices
    )
    assert by_name.context_id == context.context_id
    assert by_name.categories == {}  # codes came in: no labels to keep
    # An array query against the frame's context is shown with its labels.
    answer = client.explain(context, rows[:2])
    assert answer.display_data[:, 1].tolist() == [frame["region"][0], frame["region"][1]]


def test_unsupported_columns_are_refused_before_sending(client, table):
    frame, output, context = table
    dated = frame.assign(signed=pd.date_range("2026-01-01", periods=len(frame), freq="D"))
    with pytest.raises(TypeError, match=r"context.rows: column 'signed' has dtype datetime64"):
        client.create_context(dated, output)
    with pytest.raises(ValueError, match=r"'plan'.*hold labels"):
        client.explain(context.context_id, _query())  # an id has no labels to code with
    with pytest.raises(ValueError, match="categorical_columns names column 'zip'"):
        client.create_context(frame, output, categorical_columns=["zip"])


def test_query_frames_are_checked_as_in_process(client, table):
    """What the estimator refuses in a query frame, the client refuses before sending, naming
    rows and the column (QA 2026-12-05: each went through with status OK, or crashed)."""
    frame, output, context = table
    explainer = ZeroShotExplainer().fit(frame, output)
    query = _query()
    for bad, words in (
        # bools read back as text ("True"), and text labels as a category of their codes, were
        # unseen categories in every row; ints 0/1/2 for bools sent 2 as an unseen category.
        (query.assign(employed=["True", "False", "True"]), "'employed' holds str values"),
        (query.assign(plan=pd.Categorical([0, 1, 2])), "'plan' holds int values"),
        (query.assign(employed=[0, 1, 2]), "'employed' has dtype int64"),
        (query.assign(plan=[["gold"], None, ["pro"]]), "'plan' holds list values"),
    ):
        with pytest.raises(InvalidArgumentError, match=words) as in_process:
            explainer.explain(bad)
        assert in_process.value.argument == "X_query"
        with pytest.raises(ShapleyError, match=words) as caught:
            client.explain(context, bad)
        assert caught.value.field == "rows"
    # Default names in another order were sent unreordered: the wrong features, status OK.
    rng = np.random.default_rng(4)
    positional = pd.DataFrame(rng.normal(size=(100, 3)), columns=["x0", "x1", "x2"])
    y = 3 * positional["x0"].to_numpy() - positional["x2"].to_numpy()
    unnamed = client.create_context(positional.to_numpy(), y)
    assert unnamed.feature_names == ["x0", "x1", "x2"]
    shuffled = positional[["x2", "x0", "x1"]].iloc[:3]
    with pytest.raises(ShapleyError, match="same names, same order") as caught:
        client.explain(unnamed, shuffled)
    assert caught.value.field == "rows"
    other_names = positional.set_axis(["a", "b", "c"], axis=1).iloc[:3]  # still any names
    assert client.explain(unnamed, other_names).values.shape == (3, 3)
    # A row as a Series is a 1-D table, refused as such (it crashed with AttributeError).
    for call, field in (
        (lambda: client.explain(unnamed, positional.iloc[0]), "rows"),
        (lambda: client.create_context(frame["income"], output), "context.rows"),
    ):
        with pytest.raises(ShapleyError, match="expected 2 axes") as caught:
            call()
        assert caught.value.field == field


def test_the_server_names_bad_categorical_columns(client):
    rng = np.random.default_rng(9)
    X = np.column_stack([rng.normal(size=100), rng.integers(0, 3, size=100)])
    y = X[:, 0] + X[:, 1]
    for columns, words in (([2], "column 2, outside [0, 2)"), ([0], "integer codes or NaN")):
        with pytest.raises(ShapleyError) as caught:
            client.create_context(X, y, categorical_columns=columns)
        field = "context.categorical_columns" if columns == [2] else "context.rows"
        assert caught.value.field == field and words in caught.value.details, caught.value


def test_a_streamed_dataframe_context_is_the_same_context(make_server, table):
    frame, output, context = table
    small = make_server(max_message_bytes=1 << 13)  # 8 KiB: the frame goes in blocks
    with small.client(timeout=120, max_message_bytes=1 << 13) as client:
        streamed = client.create_context(frame, output)
        assert streamed.spec.ByteSize() > 1 << 13
        assert streamed.context_id == context.context_id
        assert streamed.categorical_columns == [1, 2, 3]
        assert streamed.categories == context.categories


def test_a_context_names_the_columns_its_rows_cannot_tell_apart(client):
    rng = np.random.default_rng(12)
    region = rng.choice(["north", "south", "east", "west"], size=400)
    frame = pd.DataFrame(
        {
            "income": rng.normal(size=400),
            "region": region,
            "region_code": pd.Series(region).map({"north": 3, "south": 1, "east": 0, "west": 2}),
            "age": rng.integers(20, 70, size=400),
        }
    )
    frame["log_age"] = np.log(frame["age"])
    output = frame["income"] + 0.1 * frame["age"] + (frame["region"] == "east")
    context = client.create_context(frame, output.to_numpy())
    assert context.aliases == [["region", "region_code"], ["age", "log_age"]]
    assert client.create_context(frame[["income", "age"]], output.to_numpy()).aliases == []
