"""The result object: conversions to shap (with the explained rows) and to a tidy pandas frame."""

import numpy as np
import pytest

from shapley_svc.estimator import Diagnostics, Explanation, OutputDiagnostics, SurrogateDiagnostics

DIAGNOSTICS = Diagnostics("5:test", [OutputDiagnostics(0.9, [SurrogateDiagnostics("ridge", 1, 1)])])


def _explanation(rng, m=4, d=3, n_outputs=None, grouped=False):
    shape = (m, 2 if grouped else d) + (() if n_outputs is None else (n_outputs,))
    names = ["g0", "g1"] if grouped else [f"x{j}" for j in range(d)]
    return Explanation(
        values=rng.normal(size=shape),
        base_values=rng.normal(size=(m,) if n_outputs is None else (m, n_outputs)),
        uncertainty=rng.uniform(size=shape),
        attribution_names=names,
        diagnostics=DIAGNOSTICS,
        data=rng.normal(size=(m, d)),
        grouped=grouped,
    )


def test_to_shap_carries_the_rows_and_shap_draws_them(rng):
    pytest.importorskip("shap")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    explanation = _explanation(rng, m=20, d=3)
    converted = explanation.to_shap()
    np.testing.assert_array_equal(converted.data, explanation.data)
    assert list(converted.feature_names) == ["x0", "x1", "x2"]

    shap.plots.beeswarm(converted, show=False)
    dots = [c for c in plt.gca().collections if len(c.get_offsets()) == 20]
    assert len(dots) == 3  # one row of dots per feature
    # The dots are coloured by the feature's value: as many colours as distinct values.
    assert all(len(np.unique(c.get_array())) == 20 for c in dots)
    plt.close("all")

    shap.plots.waterfall(converted[0], show=False)
    labels = " ".join(t.get_text() for t in plt.gcf().findobj(plt.Text))
    for j in range(3):  # the waterfall prints each feature's value next to its name
        assert f"{explanation.data[0, j]:.3f}".rstrip("0") in labels, labels
    plt.close("all")


def test_to_shap_of_groups_has_no_data(rng):
    pytest.importorskip("shap")
    converted = _explanation(rng, grouped=True).to_shap()
    assert converted.data is None
    assert list(converted.feature_names) == ["g0", "g1"]


@pytest.mark.parametrize("n_outputs", [None, 3])
def test_to_pandas_is_tidy(rng, n_outputs):
    pd = pytest.importorskip("pandas")
    explanation = _explanation(rng, m=4, d=3, n_outputs=n_outputs)
    frame = explanation.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    expected_columns = ["row", "attribution", "value", "uncertainty"]
    if n_outputs is not None:
        expected_columns.insert(2, "output")
    assert list(frame.columns) == expected_columns
    assert len(frame) == explanation.values.size
    for _, entry in frame.sample(5, random_state=0).iterrows():
        index = (entry["row"], int(entry["attribution"][1:]))
        if n_outputs is not None:
            index += (entry["output"],)
        assert entry["value"] == explanation.values[index]
        assert entry["uncertainty"] == explanation.uncertainty[index]


def test_to_pandas_without_pandas_says_what_to_install(rng, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match="pip install pandas"):
        _explanation(rng).to_pandas()
