"""Aliases over the wire: the context says which attributions its rows cannot tell apart."""

import numpy as np

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.server import messages


def _tensor(array):
    array = np.ascontiguousarray(array, dtype="<f8")
    return pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=list(array.shape), data=array.tobytes())


def test_the_context_names_its_aliases_and_explain_states_them_as_in_process(stub):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(300, 3))
    X = np.column_stack([X, np.exp(X[:, 0]), -X[:, 1]])  # aliases of columns 0 and 1
    y = 2 * X[:, 0] + X[:, 1] - X[:, 2]
    spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(y))
    answer = stub.CreateContext(pb.CreateContextRequest(context=spec))
    aliases = [list(s.attributions) for s in answer.context.aliases]
    assert aliases == [[0, 3], [1, 4]]
    assert answer.ByteSize() <= messages.description_bound(
        messages.context_spec(spec, 10**9), answer.context.artifact_version
    )
    explained = stub.Explain(
        pb.ExplainRequest(
            context_id=answer.context.context_id,
            rows=_tensor(X[:5]),
            predictions=_tensor(y[:5]),
            output_values=True,
        )
    )
    local = ZeroShotExplainer().fit(X, y).explain(X[:5], y[:5])
    stated = np.array(explained.uncertainty.values).reshape(5, 5)
    np.testing.assert_allclose(stated, local.uncertainty, rtol=0, atol=1e-12)
    plain = stub.CreateContext(
        pb.CreateContextRequest(
            context=pb.ContextSpec(rows=_tensor(X[:, :3]), predictions=_tensor(y))
        )
    )
    assert not plain.context.aliases


def test_the_description_bound_holds_when_every_attribution_has_an_alias():
    # Sixty pairs: their sets take more bytes than the rest of the bound leaves spare.
    rng = np.random.default_rng(9)
    X = rng.normal(size=(100, 60))
    X = np.column_stack([X, 3 * X])
    y = X[:, :60].sum(axis=1)
    explainer = ZeroShotExplainer().fit(X, y)
    assert explainer.alias_sets == [[j, j + 60] for j in range(60)]
    spec = messages.context_spec(pb.ContextSpec(rows=_tensor(X), predictions=_tensor(y)), 10**9)
    entry = type(
        "Entry",
        (),
        {
            "explainer": explainer,
            "context_id": "ctx-" + "0" * 40,
            "memory_bytes": 10**12,
            "fit_seconds": 1.5,
        },
    )()
    described = pb.CreateContextResponse(context=messages.context_info(entry), created=True)
    assert described.ByteSize() <= messages.description_bound(spec, explainer.artifact_.version)
