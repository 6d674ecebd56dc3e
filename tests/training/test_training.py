from dataclasses import replace

import numpy as np
import pytest

from shapley_svc import ZeroShotExplainer
from shapley_svc.estimator.artifact import load_artifact
from shapley_svc.estimator.combiner import CombinerParameters, combine, gate_weights
from shapley_svc.estimator.context import GLOBAL_FEATURES, SURROGATE_FEATURES, ContextFeatures
from shapley_svc.estimator.surrogates import ZOO
from shapley_svc.training.examples import Example
from shapley_svc.training.meta import fit_gate
from shapley_svc.training.pipeline import SMOKE_CONFIG, train
from shapley_svc.training.prior import sample_task

SMALL = replace(SMOKE_CONFIG, max_rows=200, n_background=30, n_explained=6)


def test_prior_tasks_are_reproducible_and_labelled_efficiently():
    first, again = sample_task(11, SMALL), sample_task(11, SMALL)
    np.testing.assert_array_equal(first.X, again.X)
    np.testing.assert_array_equal(first.truth, again.truth)
    outputs = first.predictions if first.predictions.ndim == 2 else first.predictions[:, None]
    truth = first.truth if first.truth.ndim == 3 else first.truth[:, :, None]
    gaps = truth.sum(axis=1) - (outputs[first.explained] - outputs[first.background].mean(0))
    assert np.abs(gaps).max() <= 1e-9 * max(1.0, np.abs(truth).max())


def test_prior_covers_the_model_families_and_tasks():
    tasks = [sample_task(seed, SMALL) for seed in range(40)]
    assert len({t.family for t in tasks}) >= 6
    assert {t.task for t in tasks} >= {"regression", "binary"}
    assert len({t.X.shape[1] for t in tasks}) >= 4


def _example(values, truth, rng):
    n_surrogates = len(ZOO)
    return Example(
        features=ContextFeatures(
            global_features=rng.normal(size=len(GLOBAL_FEATURES)),
            surrogate_features=rng.normal(size=(n_surrogates, len(SURROGATE_FEATURES))),
            available=np.ones(n_surrogates, dtype=bool),
            output_scale=1.0,
        ),
        surrogate_values=values,
        truth=truth,
        truth_error=np.zeros_like(truth),
        target_sums=truth.sum(axis=1),
        family="test",
        task="regression",
        seed=0,
    )


def test_gate_learns_to_trust_the_surrogate_that_is_right(rng):
    examples = []
    for _ in range(30):
        truth = rng.normal(size=(10, 5))
        values = truth + rng.normal(scale=1.0, size=(len(ZOO), 10, 5))
        values[2] = truth + rng.normal(scale=0.05, size=truth.shape)
        examples.append(_example(values, truth, rng))
    params = fit_gate(examples, CombinerParameters.neutral())
    weights = gate_weights(examples[0].features, params)
    assert weights.argmax() == 2 and weights[2] > 0.8, weights


def test_combine_projects_onto_the_target_sums(rng):
    values = rng.normal(size=(3, 4, 6))
    weights = np.array([0.5, 0.3, 0.2])
    targets = rng.normal(size=4)
    combined, std = combine(values, weights, 1.0, 1e-3, targets)
    np.testing.assert_allclose(combined.sum(axis=1), targets, atol=1e-12)
    unprojected, std_before = combine(values, weights, 1.0, 1e-3, None)
    np.testing.assert_allclose(unprojected, np.einsum("s,smd->md", weights, values), atol=1e-12)
    assert np.all(std <= std_before + 1e-15)
    # The residual lands where the spread is largest.
    moved = np.abs(combined - unprojected)
    assert np.all(np.argmax(moved, axis=1) == np.argmax(std_before, axis=1))


@pytest.mark.slow
def test_smoke_training_writes_an_artifact_that_loads_and_explains(tmp_path):
    out = tmp_path / "combiner.json"
    metrics = train(8, seed=5, out=out, config=SMALL, workers=2)
    artifact = load_artifact(out)
    assert artifact.manifest["n_tasks"] == 8
    assert artifact.manifest["training_metrics"]["examples"] == metrics["examples"] >= 1
    assert np.isfinite(artifact.parameters.gate_global).all()
    # Trained, not the neutral start (a run whose meta-training returned it passed before).
    neutral = CombinerParameters.neutral()
    assert not np.allclose(artifact.parameters.gate_global, neutral.gate_global)
    drawn = artifact.manifest["training_metrics"]["tasks_drawn"]
    assert drawn["training"]["tasks"] + drawn["validation"]["tasks"] == 8
    assert sum(drawn["training"]["by_family"].values()) == drawn["training"]["tasks"]
    # The estimator explains with it, exactly efficient.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = X[:, 0] + X[:, 1] * X[:, 2]
    explanation = ZeroShotExplainer(artifact=out).fit(X, y).explain(X[:5], y[:5])
    gaps = explanation.values.sum(axis=1) - (y[:5] - explanation.base_values)
    assert np.abs(gaps).max() < 1e-9
    assert not list(tmp_path.glob(".*partial"))  # written through hidden files, renamed


def test_examples_are_built_by_one_process_per_cpu_the_quota_allows(monkeypatch):
    """The default worker count was os.cpu_count(): a container limited to 2 CPUs on a large
    node started one 330 MB worker per node core."""
    from shapley_svc.training import examples

    started = []

    class Refused(Exception):
        pass

    def executor(workers, **kwargs):
        started.append(workers)
        raise Refused

    monkeypatch.setattr(examples, "usable_cpus", lambda: 3)
    monkeypatch.setattr(examples, "ProcessPoolExecutor", executor)
    with pytest.raises(Refused):
        examples.build_examples([0, 1], SMOKE_CONFIG, progress=False)
    with pytest.raises(Refused):
        examples.build_examples([0, 1], SMOKE_CONFIG, workers=1, progress=False)
    assert started == [3, 1]
