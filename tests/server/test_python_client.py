"""The Python client's result object against a real server: its names, the rows it explained,
typed diagnostics, ``to_shap()`` (drawn with matplotlib's Agg backend) and ``to_pandas()``."""

import re
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import shap
from google.rpc import status_pb2
from shapley_client import (
    Explanation,
    InvalidArgumentError,
    OutputDiagnostics,
    ShapleyClient,
    ShapleyError,
    SurrogateDiagnostics,
)

from shapley_svc._proto import shapley_pb2 as pb
from tests.server.conftest import make_task, refusal

plt.switch_backend("Agg")

NAMES = ["age", "income", "debt", "tenure", "noise"]
GROUPS = {"person": [0, 3], "money": [1, 2], "other": [4]}


@pytest.fixture(scope="module")
def single(client):
    X, p = make_task(seed=11)
    context = client.create_context(X, p, feature_names=NAMES)
    return context, X, client.explain(context, X[:25], p[:25])


@pytest.fixture(scope="module")
def grouped(client):
    X, p = make_task(seed=11)
    context = client.create_context(X, p, feature_names=NAMES, groups=GROUPS)
    return client.explain(context, X[:25], p[:25])


@pytest.fixture
def figure():
    yield plt.figure()
    plt.close("all")


def _number(text: str) -> float:
    return float(text.replace("\u2212", "-"))  # shap prints minus signs as U+2212


def test_explanation_names_rows_and_typed_diagnostics(client, single, grouped):
    context, X, explanation = single
    assert explanation.attribution_names == explanation.feature_names == NAMES
    assert not explanation.grouped
    np.testing.assert_array_equal(explanation.data, X[:25])
    assert explanation.data.dtype == np.float64 and explanation.values.shape == (25, 5)

    assert grouped.attribution_names == list(GROUPS) and grouped.feature_names == NAMES
    assert grouped.grouped
    assert grouped.values.shape == (25, 3) and grouped.data.shape == (25, 5)

    (output,) = explanation.diagnostics
    assert isinstance(output, OutputDiagnostics)
    assert explanation.diagnostics == context.diagnostics
    sent = context.info.outputs[0]
    assert output.predicted_fidelity == sent.predicted_fidelity
    assert output.surrogates == [
        SurrogateDiagnostics(s.name, s.oof_r2, s.weight) for s in sent.surrogates
    ]
    # Read by key too, as the dicts these replaced were (surrogates by name).
    assert output["predicted_fidelity"] == output.predicted_fidelity
    boosted = output["surrogates"]["boosted_trees"]
    assert boosted["weight"] == boosted.weight and boosted["oof_r2"] == boosted.oof_r2
    with pytest.raises(KeyError):
        output["fidelity"]

    X32 = X[:25].astype(np.float32)
    as_float32 = client.explain(context, X32)
    assert as_float32.data.dtype == np.float32
    np.testing.assert_array_equal(as_float32.data, X32)
    streamed = client.explain_stream(context, X[:60], chunk_rows=25)
    np.testing.assert_array_equal(streamed.data, X[:60])
    assert streamed.feature_names == NAMES and streamed.diagnostics == context.diagnostics


def test_to_shap_beeswarm_colours_points_by_the_rows_values(single, figure):
    _, _, explanation = single
    values = explanation.to_shap()
    np.testing.assert_array_equal(values.data, explanation.data)
    np.testing.assert_array_equal(values.error_std, explanation.uncertainty)
    assert list(values.feature_names) == NAMES
    shap.plots.beeswarm(values, show=False)
    # One scatter per feature: x are its values, colours its column clipped to the 5-95 %
    # percentiles, in the same (shuffled) order.
    drawn = {}
    for collection in figure.axes[0].collections:
        if collection.get_array() is not None:
            x = collection.get_offsets()[:, 0]
            drawn[tuple(np.sort(x))] = dict(zip(x, collection.get_array(), strict=True))
    assert len(drawn) == len(NAMES), drawn.keys()
    for j in range(len(NAMES)):
        column = explanation.data[:, j]
        low, high = np.nanpercentile(column, 5), np.nanpercentile(column, 95)
        colours = drawn[tuple(np.sort(explanation.values[:, j]))]
        for i in range(len(column)):
            assert colours[explanation.values[i, j]] == pytest.approx(np.clip(column[i], low, high))


def test_to_shap_waterfall_prints_each_features_value(single, figure):
    _, _, explanation = single
    shap.plots.waterfall(explanation.to_shap()[3], show=False)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels() if " = " in t.get_text()]
    assert len(labels) == len(NAMES), labels
    for label in labels:
        value, name = label.split(" = ")
        assert _number(value) == pytest.approx(explanation.data[3, NAMES.index(name)], abs=5e-4)


def test_to_shap_with_groups_names_the_groups_and_carries_no_data(grouped, figure):
    values = grouped.to_shap()
    assert values.data is None and list(values.feature_names) == list(GROUPS)
    shap.plots.waterfall(values[0], show=False)
    labels = [t.get_text().strip() for t in figure.axes[0].get_yticklabels()]
    assert set(GROUPS) <= set(labels) and not any(" = " in label for label in labels)


def test_to_pandas_is_tidy_single_and_multi_output(client, single):
    _, _, explanation = single
    frame = explanation.to_pandas()
    assert list(frame.columns) == ["row", "attribution", "value", "uncertainty"]
    assert list(frame.attribution.cat.categories) == NAMES
    wide = frame.pivot(index="row", columns="attribution", values="value")[NAMES]
    np.testing.assert_array_equal(wide.to_numpy(), explanation.values)

    X, P = make_task(seed=12, outputs=3)
    multi = client.explain(client.create_context(X, P), X[:4], P[:4])
    frame = multi.to_pandas()
    assert list(frame.columns) == ["row", "attribution", "output", "value", "uncertainty"]
    assert len(frame) == 4 * 5 * 3
    one = frame.set_index(["row", "attribution", "output"])
    for i, j, k in [(0, 0, 0), (3, 4, 2), (1, 2, 1)]:
        entry = one.loc[(i, multi.attribution_names[j], k)]
        assert entry.value == multi.values[i, j, k]
        assert entry.uncertainty == multi.uncertainty[i, j, k]
    assert isinstance(frame, pd.DataFrame)


@pytest.mark.parametrize(("method", "package"), [("to_pandas", "pandas"), ("to_shap", "shap")])
def test_optional_packages_missing_give_a_clear_import_error(monkeypatch, method, package):
    zeros = np.zeros((1, 2))
    explanation = Explanation(
        values=zeros, base_values=np.zeros(1), uncertainty=zeros, attribution_names=["a", "b"],
        data=zeros, feature_names=["a", "b"], grouped=False, diagnostics=[], context_id="ctx",
        artifact_version="1:x",
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, package, None)  # import now raises ImportError
    message = rf"{method}\(\) needs the {package} package: pip install {package}$"
    with pytest.raises(ImportError, match=message):
        getattr(explanation, method)()


def test_refusals_name_the_fields_from_the_rich_status(client, single):
    context, X, _ = single
    for call in (
        lambda: client.explain(context, X[:4, :3]),
        lambda: client.explain_stream(context, X[:30, :3], chunk_rows=10),
    ):
        with pytest.raises(ShapleyError) as caught:
            call()
        error = caught.value
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert [v.field for v in error.violations] == ["rows"] and error.field == "rows"
        description = error.violations[0].description
        assert re.fullmatch(r"has 3 features; .*\b5 \(context ctx-\w+\)", description), description
        assert error.details == f"rows: {description}"


def test_errors_without_a_rich_status_name_no_field():
    with ShapleyClient("127.0.0.1:1", timeout=5) as nowhere:  # nothing listens on port 1
        with pytest.raises(ShapleyError) as caught:
            nowhere.server_info()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.violations == () and caught.value.field is None


@pytest.mark.parametrize(
    "trailer",
    [
        b"\x1a\xff\xff\xff\x0f",  # does not decode
        status_pb2.Status(code=5, message="another status").SerializeToString(),  # at odds
    ],
    ids=["garbled", "mismatched"],
)
def test_a_rich_status_that_does_not_read_leaves_code_and_message(trailer):
    def refuse(request, context):
        context.set_trailing_metadata((("grpc-status-details-bin", trailer),))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")

    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "shapley.v1.Shapley",
                {"GetServerInfo": grpc.unary_unary_rpc_method_handler(refuse)},
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with ShapleyClient(f"127.0.0.1:{port}", timeout=10) as client:
            with pytest.raises(ShapleyError) as caught:
                client.server_info()
    finally:
        server.stop(None)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details == "refused" and caught.value.violations == ()


def test_a_dataframe_names_the_context_and_its_columns_are_checked(client):
    X, p = make_task(seed=12)
    frame = pd.DataFrame(X, columns=NAMES)
    context = client.create_context(frame, p)
    assert context.feature_names == NAMES
    assert context.context_id == client.create_context(X, p, feature_names=NAMES).context_id
    explanation = client.explain(context, frame.iloc[:3], p[:3])
    assert explanation.attribution_names == NAMES
    with pytest.raises(ValueError, match="rows: has columns"):
        client.explain(context, frame[NAMES[::-1]].iloc[:3])
    with pytest.raises(ValueError, match="rows: has columns"):
        client.explain_stream(context, frame[NAMES[::-1]])


def _tensor(array) -> pb.Tensor:
    array = np.ascontiguousarray(array, dtype="<f8")
    return pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=list(array.shape), data=array.tobytes())


def _counting():
    calls = []

    def counting(rows):
        calls.append(len(rows))
        return rows[:, 0] - 0.5 * rows[:, 1] * rows[:, 2]

    return calls, counting


BACKGROUND = list(range(20))  # ProposeCalibration's defaults: 200 rows, 400 for a refit


def test_calibrate_decides_a_streamed_context_is_weights_only_before_proposing(server):
    X, p = make_task(n=500, seed=13)
    with server.client(timeout=120, max_message_bytes=20_000) as small:
        context = small.create_context(X, p, background=BACKGROUND)
        assert context.spec.ByteSize() > 20_000  # streamed: it cannot go along with outputs
        calls, counting = _counting()
        calibrated = small.calibrate(context, counting)
        # The weights alone, on their default budget: the model scores 200 rows, not 400.
        assert calls == [200]
        assert not calibrated.calibration_refitted and calibrated.calibration_rows == 200
        explicit = small.calibrate(context, counting, refit=False)
        assert explicit.context_id == calibrated.context_id and calls == [200, 200]
        with pytest.raises(ValueError, match="do not fit in one 20000-byte message"):
            small.calibrate(context, counting, refit=True)
        assert calls == [200, 200]  # refused before the model ran


def test_calibrate_sizes_a_refit_by_the_message_its_outputs_go_in(client, server):
    X, p = make_task(n=300, seed=14)
    context = client.create_context(X, p, background=BACKGROUND)
    # The context fits in a message with 200 outputs (1.6 kB), not with 400 (3.2 kB).
    limit = int((context.spec.ByteSize() + 2_400) / 0.9)
    with server.client(timeout=120, max_message_bytes=limit) as small:
        for refit in (None, True):
            calls, counting = _counting()
            calibrated = small.calibrate(context, counting, refit=refit)
            assert calls == [200], refit  # the refit's default would not fit: the weights'
            assert calibrated.calibration_refitted and calibrated.calibration_rows == 200
        calls, counting = _counting()
        weights = small.calibrate(context, counting, budget=400)
        assert calls == [400] and not weights.calibration_refitted
        assert (
            weights.context_id
            == small.calibrate(context, counting, budget=400, refit=False).context_id
        )
        with pytest.raises(ValueError, match=f"do not fit in one {limit}-byte message"):
            small.calibrate(context, counting, budget=400, refit=True)
        assert calls == [400, 400]  # refused before the model ran


def _smooth(rows):
    return 2 * rows[:, 0] + np.sin(rows[:, 1])


def _smooth_task(n, seed=0):
    """Two features: the refit's default proposal (2,000 rows) is 32 kB, the weights' 16 kB."""
    X = np.random.default_rng(seed).uniform(-1, 1, size=(n, 2))
    return X, _smooth(X)


def _counting_smooth():
    calls = []

    def counting(rows):
        calls.append(len(rows))
        return _smooth(rows)

    return calls, counting


def test_calibrate_falls_back_to_the_weights_default_where_the_server_cannot_propose_a_refits(
    make_server,
):
    """A server whose messages cannot carry the refit's default proposal (2,000 rows, 100
    background rows) refused ProposeCalibration(refit=True) naming budget, and the default
    calibrate failed, refit=None or True, although the weights' default (1,000) and a refit on
    it fit (QA, 2026-12-05)."""
    target = make_server(warm=False, max_message_bytes=20_000)
    X, p = _smooth_task(300)
    with target.client(timeout=120, max_message_bytes=20_000) as small:
        context = small.create_context(X, p)
        with pytest.raises(ShapleyError) as refused:  # what the client used to ask for
            small.propose_calibration(context, refit=True)
        assert (refused.value.code, refused.value.field) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "budget",
        )
        explicit = small.calibrate(context, _smooth, budget=1_000, refit=True)
        for refit in (None, True):
            calls, counting = _counting_smooth()
            calibrated = small.calibrate(context, counting, refit=refit)
            assert calls == [1_000], refit  # the weights' default, refitted on
            assert calibrated.calibration_refitted and calibrated.calibration_rows == 1_000
            assert calibrated.calibration.budget == 1_000
            assert calibrated.calibration.HasField("context")
        weights = small.calibrate(context, counting, refit=False)
        assert not weights.calibration_refitted and weights.calibration_rows == 1_000
        assert explicit.calibration_refitted
        # A budget of 0 is the default, as the server and the Node client read it: it was a
        # budget given, with no fallback, and was refused.
        calls, counting = _counting_smooth()
        assert small.calibrate(context, counting, budget=0).context_id == calibrated.context_id
        assert calls == [1_000]


def test_calibrate_counts_the_budget_against_max_context_rows_as_the_server_does(make_server):
    """The server's refit check counts n + the budget; the client counted n + the rows
    proposed for it (fewer): with refit=None and budget=1050 it had the model score 1,000 rows
    and sent the refit the server then refused (QA, 2026-12-05)."""
    target = make_server(warm=False, max_context_rows=1_340)
    with target.client(timeout=120) as limited:
        X, p = _smooth_task(300)
        context = limited.create_context(X, p)
        calls, counting = _counting_smooth()
        # 300 + 1,050 > 1,340 (the rows proposed for 1,050: 1,000, would fit): the weights.
        calibrated = limited.calibrate(context, counting, budget=1_050)
        assert calls == [1_000]
        assert not calibrated.calibration_refitted
        assert not calibrated.calibration.HasField("context")
        weights = limited.calibrate(context, counting, budget=1_050, refit=False)
        assert weights.context_id == calibrated.context_id
        # Told to refit: refused as the server refuses it, before the model runs.
        calls.clear()
        with pytest.raises(ShapleyError) as caught:
            limited.calibrate(context, counting, budget=1_050, refit=True)
        refused = caught.value
        assert (refused.code, refused.field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget")
        assert "the 1050 scored rows, 1350 in all; the limit is 1340" in refused.details
        assert "a budget of at most 1040" in refused.details
        assert calls == []
        assert limited.calibrate(context, counting, budget=1_040, refit=True).calibration_refitted
        # 400 + 1,000 (the weights' default) > 1,340 as well: by default the weights alone;
        # told to refit with the default budget, refused before the model runs.
        X, p = _smooth_task(400, seed=1)
        larger = limited.create_context(X, p)
        calls.clear()
        by_default = limited.calibrate(larger, counting)
        assert calls == [1_000] and not by_default.calibration_refitted
        with pytest.raises(ShapleyError) as caught:
            limited.calibrate(larger, counting, refit=True)
        refused = caught.value
        assert (refused.code, refused.field) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget")
        assert "the 1000 scored rows, 1400 in all; the limit is 1340" in refused.details
        assert calls == [1_000]


def test_the_clients_background_refusals_are_the_servers(client, stub):
    X, p = make_task(n=60, seed=11)
    for background in ([-1, 3], [0, 60]):
        with pytest.raises(InvalidArgumentError) as caught:
            client.create_context(X, p, background=background)
        spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(p), background=background)
        expected = refusal(stub.CreateContext, pb.CreateContextRequest(context=spec))
        assert (caught.value.code, caught.value.details, caught.value.field) == expected
    # Past int64 the server is never asked (the wire cannot carry it): the same words.
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_context(X, p, background=[0, 2**63])
    assert caught.value.details == (
        "context.background: indices must lie in [0, 60); got values from 0 to 9223372036854775808"
    )


def test_groups_as_pairs_make_the_context_a_mapping_makes(client):
    X, p = make_task(seed=11)
    mapping = client.create_context(X, p, feature_names=NAMES, groups=GROUPS)
    for groups in (list(GROUPS.items()), [(name, np.array(cols)) for name, cols in GROUPS.items()]):
        pairs = client.create_context(X, p, feature_names=NAMES, groups=groups)
        assert pairs.context_id == mapping.context_id
        assert pairs.attribution_names == list(GROUPS)


def test_the_clients_group_refusals_are_the_servers(client, stub):
    X, p = make_task(seed=11)
    groups = {"person": [0, 3, 7], "money": [1, 2], "other": [4]}  # column 7 of 5
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_context(X, p, groups=groups)
    spec = pb.ContextSpec(
        rows=_tensor(X),
        predictions=_tensor(p),
        groups=[pb.FeatureGroup(name=name, columns=columns) for name, columns in groups.items()],
    )
    code, message, field = refusal(stub.CreateContext, pb.CreateContextRequest(context=spec))
    refused = caught.value
    assert (refused.code, refused.field, refused.details) == (code, field, message)


def test_the_clients_seed_refusals_are_the_servers(client, stub):
    X, p = make_task(seed=11)
    context = client.create_context(X, p)
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_context(X, p, random_state=2**32)
    spec = pb.ContextSpec(rows=_tensor(X), predictions=_tensor(p), random_state=2**32)
    expected = refusal(stub.CreateContext, pb.CreateContextRequest(context=spec))
    assert (caught.value.code, caught.value.details, caught.value.field) == expected
    with pytest.raises(InvalidArgumentError) as caught:
        client.propose_calibration(context, random_state=2**32)
    request = pb.ProposeCalibrationRequest(context_id=context.context_id, random_state=2**32)
    expected = refusal(stub.ProposeCalibration, request)
    assert (caught.value.code, caught.value.details, caught.value.field) == expected


def test_a_model_that_returns_none_is_named_not_a_nan(client):
    X, p = make_task(seed=11)
    context = client.create_context(X, p)
    for call in (
        lambda model: client.calibrate(context, model, budget=400),
        lambda model: client.explain(context, X[:2], model=model, budget=8),
    ):
        with pytest.raises(InvalidArgumentError) as caught:
            call(lambda rows: None)
        assert caught.value.field == "outputs"
        assert caught.value.details == (
            "outputs: must be an array of numbers, (rows,) or (rows, K); the model returned None"
        )
