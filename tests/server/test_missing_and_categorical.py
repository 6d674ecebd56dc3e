"""Missing values and categorical columns over the wire: raw stubs, so the clients' own handling
(tested with them) does not hide what the server accepts and refuses."""

import grpc
import numpy as np
import pytest

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc.contexts import ContextSpec, content_id
from shapley_svc.estimator import ZeroShotExplainer
from tests.server.conftest import refusal


def _tensor(array):
    array = np.ascontiguousarray(array, dtype="<f8")
    return pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=list(array.shape), data=array.tobytes())


def _table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=(n, 3)), rng.integers(0, 5, size=n)])
    X[rng.random(n) < 0.2, 1] = np.nan
    effect = np.array([0.0, 1.0, -1.0, 0.5, 2.0])
    y = X[:, 0] + np.where(np.isnan(X[:, 1]), 1.0, X[:, 1]) + effect[X[:, 3].astype(int)]
    return X, y


def test_missing_cells_and_categorical_columns_are_explained_as_in_process(stub):
    X, y = _table()
    spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(y), categorical_columns=[3])
    info = stub.CreateContext(pb.CreateContextRequest(context=spec)).context
    assert list(info.categorical_columns) == [3]
    query = np.array([[0.1, np.nan, 0.3, 2.0], [0.0, 0.5, 0.0, 9.0]])  # 9: an unseen category
    answer = stub.Explain(
        pb.ExplainRequest(context_id=info.context_id, rows=_tensor(query), output_values=True)
    )
    values = np.array(answer.values.values).reshape(2, 4)
    local = ZeroShotExplainer().fit(X, y, categorical=[3]).explain(query)
    np.testing.assert_allclose(values, local.values, rtol=0, atol=1e-12)
    # Categorical columns are part of the content address.
    plain = stub.CreateContext(
        pb.CreateContextRequest(context=pb.ContextSpec(rows=_tensor(X), predictions=_tensor(y)))
    )
    assert plain.context.context_id != info.context_id
    assert list(plain.context.categorical_columns) == []


def test_categorical_columns_in_any_order_are_one_context(stub):
    """A set of columns: the same id, one fit, and the columns reported in order, however the
    spec lists them; a spec that lists them in order keeps the id it always had."""
    X, y = _table(seed=4)
    codes = np.random.default_rng(4).integers(0, 3, size=len(X)).astype(float)
    X = np.column_stack([codes, X])  # categorical columns 0 and 4

    def spec(columns: list[int]) -> pb.ContextSpec:
        return pb.ContextSpec(rows=_tensor(X), predictions=_tensor(y), categorical_columns=columns)

    first = stub.CreateContext(pb.CreateContextRequest(context=spec([4, 0])))
    again = stub.CreateContext(pb.CreateContextRequest(context=spec([0, 4])))
    streamed = stub.CreateContextStream(iter([pb.CreateContextRequest(context=spec([4, 0]))]))
    assert first.created and not again.created and not streamed.created
    for answer in (first, again, streamed):
        assert answer.context.context_id == first.context.context_id
        assert list(answer.context.categorical_columns) == [0, 4]
    sha = stub.GetServerInfo(pb.GetServerInfoRequest()).artifact_sha256
    in_order = ContextSpec(X, y, categorical_columns=np.array([0, 4]))
    assert first.context.context_id == content_id(in_order, sha)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"categorical_columns": [4]}, "context.categorical_columns", "column 4, outside [0, 4)"),
        ({"categorical_columns": [3, 3]}, "context.categorical_columns", "lists column 3"),
        ({"categorical_columns": [0]}, "context.rows", "integer codes or NaN"),
        ({"inf_at": (2, 0)}, "context.rows", "finite or NaN (missing); found inf at [2, 0]"),
        ({"nan_prediction": 5}, "context.predictions", "must be finite"),
    ],
)
def test_bad_missing_or_categorical_input_names_the_field(stub, change, field, words):
    X, y = _table()
    if "inf_at" in change:
        X[change["inf_at"]] = np.inf
    if "nan_prediction" in change:
        y[change["nan_prediction"]] = np.nan
    spec = pb.ContextSpec(
        rows=_tensor(X),
        predictions=_tensor(y),
        categorical_columns=change.get("categorical_columns", []),
    )
    code, details, at_fault = refusal(stub.CreateContext, pb.CreateContextRequest(context=spec))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and at_fault == field, details
    assert words in details


def test_a_non_integer_query_code_names_the_rows(stub):
    X, y = _table()
    spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(y), categorical_columns=[3])
    info = stub.CreateContext(pb.CreateContextRequest(context=spec)).context
    query = np.array([[0.0, 0.0, 0.0, 1.5]])
    code, details, field = refusal(
        stub.Explain, pb.ExplainRequest(context_id=info.context_id, rows=_tensor(query))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field == "rows", details
    assert "column 3 ('x3') is categorical" in details and "found 1.5" in details
    code, details, field = refusal(
        stub.Explain,
        pb.ExplainRequest(context_id=info.context_id, rows=_tensor(np.full((1, 4), -np.inf))),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field == "rows", details
