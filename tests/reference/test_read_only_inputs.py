"""Read-only rows and backgrounds are common (pandas 3's ``to_numpy()``, memory-mapped files,
buffers decoded from a message): every reference engine takes them and answers as it does for
writeable copies of the same values."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.svm import SVR

from shapley_svc.reference import (
    additive_shapley,
    exact_shapley,
    kernel_machine_shapley,
    linear_shapley,
    logistic_additive_shapley,
    sampled_shapley,
    tree_shapley,
)


def read_only(array: np.ndarray) -> np.ndarray:
    frozen = np.array(array, dtype=np.float64)
    frozen.flags.writeable = False
    return frozen


def polynomial(rows: np.ndarray) -> np.ndarray:
    return rows[:, 0] + rows[:, 1] * rows[:, 2] - 0.5 * rows[:, 3] ** 2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 4))
    return X, polynomial(X)


@pytest.fixture(scope="module")
def engines(data):
    """Each engine as a function of (rows, background), its models fitted once."""
    X, y = data
    forest = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0).fit(X, y)
    machine = SVR().fit(X, y)
    terms = [((0,), lambda cols: cols[:, 0]), ((1, 2), lambda cols: cols[:, 0] * cols[:, 1])]
    return {
        "exact_shapley": lambda rows, bg: exact_shapley(polynomial, rows, bg),
        "sampled_shapley": lambda rows, bg: sampled_shapley(polynomial, rows, bg, 64, 3),
        "tree_shapley": lambda rows, bg: tree_shapley(forest, rows, bg),
        "kernel_machine_shapley": lambda rows, bg: kernel_machine_shapley(machine, rows, bg),
        "linear_shapley": lambda rows, bg: linear_shapley(np.arange(4.0), 1.0, rows, bg),
        "additive_shapley": lambda rows, bg: additive_shapley(terms, rows, bg),
        "logistic_additive_shapley": lambda rows, bg: logistic_additive_shapley(rows, bg, 0.2),
    }


@pytest.mark.parametrize(
    "engine",
    [
        "exact_shapley",
        "sampled_shapley",
        "tree_shapley",
        "kernel_machine_shapley",
        "linear_shapley",
        "additive_shapley",
        "logistic_additive_shapley",
    ],
)
@pytest.mark.parametrize("frozen", ["rows", "background", "both"])
def test_read_only_inputs_give_the_writeable_answer(data, engines, engine, frozen):
    X, _ = data
    rows, background = X[:3], X[50:70]
    explain = engines[engine]
    expected = explain(rows.copy(), background.copy())
    given_rows = read_only(rows) if frozen in ("rows", "both") else rows.copy()
    given_background = read_only(background) if frozen in ("background", "both") else background
    result = explain(given_rows, given_background)
    np.testing.assert_array_equal(result.values, expected.values)
    np.testing.assert_array_equal(given_rows, rows)
    np.testing.assert_array_equal(given_background, background)


@pytest.mark.parametrize("engine", ["exact_shapley", "sampled_shapley"])
def test_a_model_that_freezes_its_input_leaves_the_engines_working(data, engine):
    X, _ = data
    rows, background = X[:3], X[50:70]

    def freezing(inputs: np.ndarray) -> np.ndarray:
        inputs.flags.writeable = False
        return polynomial(inputs)

    explain = {
        "exact_shapley": lambda model: exact_shapley(model, rows, background),
        "sampled_shapley": lambda model: sampled_shapley(model, rows, background, 64, 3),
    }[engine]
    np.testing.assert_array_equal(explain(freezing).values, explain(polynomial).values)
