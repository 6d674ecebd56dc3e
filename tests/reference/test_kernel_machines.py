import numpy as np
import pytest
from scipy.sparse import csr_matrix
from sklearn.decomposition import PCA
from sklearn.kernel_ridge import KernelRidge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler
from sklearn.svm import SVC, SVR, NuSVC, NuSVR, OneClassSVM

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.reference import exact_shapley, kernel_machine_shapley


@pytest.fixture
def table(rng):
    """A smooth regression target with interactions over 6 correlated features."""
    X = rng.normal(size=(160, 6)) @ rng.normal(size=(6, 6)) * 0.6
    y = np.sin(X[:, 0]) * X[:, 1] + X[:, 2] ** 2 - 0.5 * X[:, 3] + rng.normal(0, 0.1, 160)
    return X, y


def _machines(X, y):
    label = y > np.median(y)
    return [
        (make_pipeline(StandardScaler(), SVR(C=10.0)).fit(X, y), "predict"),
        (NuSVR(gamma=0.3).fit(X, y), "predict"),
        (make_pipeline(MinMaxScaler(), RobustScaler(), SVC(C=3.0)).fit(X, label), "decision"),
        (NuSVC(gamma="auto").fit(X, label), "decision"),
        (OneClassSVM(gamma=0.2).fit(X), "decision"),
        (KernelRidge(kernel="rbf", alpha=0.3).fit(X, y), "predict"),
        (KernelRidge(kernel="laplacian", gamma=0.4).fit(X, np.c_[y, label]), "predict"),
    ]


def test_every_supported_machine_matches_enumerating_its_own_output(table):
    X, y = table
    rows, background = X[:5], X[100:130]
    for model, output in _machines(X, y):
        method = model.predict if output == "predict" else model.decision_function
        # A small memory budget splits rows and background rows into chunks.
        ours = kernel_machine_shapley(model, rows, background, max_memory=2**20)
        truth = exact_shapley(method, rows, background)
        assert ours.values.shape == truth.values.shape, model
        np.testing.assert_allclose(ours.values, truth.values, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours.base_values, truth.base_values, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours.predictions, method(rows), rtol=0, atol=1e-10)
        assert ours.exact and ours.efficiency_gap < 1e-10
        assert ours.model_evaluations == len(rows)  # the rebuilt outputs' check


def test_a_machine_fitted_on_a_sparse_matrix_gets_the_same_values(table):
    X, y = table
    dense = SVR(gamma=0.2).fit(X, y)
    sparse = SVR(gamma=0.2).fit(csr_matrix(X), y)
    expected = kernel_machine_shapley(dense, X[:3], X[100:120]).values
    np.testing.assert_allclose(
        kernel_machine_shapley(sparse, X[:3], X[100:120]).values, expected, rtol=0, atol=1e-10
    )


def test_wide_rows_keep_efficiency_and_a_constant_feature_gets_nothing(rng):
    d = 40
    X = rng.normal(size=(300, d))
    X[:, 7] = 1.5  # the same in every row: a null player
    y = np.tanh(X[:, :5].sum(axis=1)) + X[:, 10] * X[:, 11]
    model = make_pipeline(StandardScaler(), SVR(C=5.0)).fit(X, y)
    result = kernel_machine_shapley(model, X[:4], X[200:260])
    assert result.values.shape == (4, d)
    assert result.efficiency_gap < 1e-10
    np.testing.assert_allclose(result.values[:, 7], 0.0, atol=1e-12)
    np.testing.assert_allclose(result.predictions, model.predict(X[:4]), atol=1e-10)


@pytest.mark.parametrize(
    ("build", "problem"),
    [
        (lambda X, y: SVR(kernel="poly").fit(X, y), "only 'rbf'"),
        (lambda X, y: SVC().fit(X, np.digitize(y, np.quantile(y, [0.3, 0.6]))), "3 classes"),
        (lambda X, y: make_pipeline(PCA(3), SVR()).fit(X, y), "not a column-wise scaler"),
        (lambda X, y: KernelRidge(kernel="linear").fit(X, y), "only 'rbf' and 'laplacian'"),
        (lambda X, y: SVR(), "not fitted"),
        (lambda X, y: np.linalg, "not a supported kernel machine"),
    ],
)
def test_unsupported_models_are_refused_naming_the_model(table, build, problem):
    X, y = table
    with pytest.raises(InvalidArgumentError) as refused:
        kernel_machine_shapley(build(X, y), X[:2], X[100:110])
    assert refused.value.argument == "model"
    assert problem in str(refused.value)


def test_bad_rows_are_refused_naming_the_argument(table):
    X, y = table
    model = SVR().fit(X, y)
    with pytest.raises(InvalidArgumentError) as refused:
        kernel_machine_shapley(model, X[:2, :5], X[100:110, :5])
    assert refused.value.argument == "X"
    holed = X[:2].copy()
    holed[1, 3] = np.nan
    with pytest.raises(InvalidArgumentError) as refused:
        kernel_machine_shapley(model, holed, X[100:110])
    assert refused.value.argument == "X"
    with pytest.raises(InvalidArgumentError) as refused:
        kernel_machine_shapley(model, X[:2], X[100:110, :4])
    assert refused.value.argument == "background"


def test_a_machine_whose_attributes_disagree_with_its_own_output_is_refused(table):
    X, y = table
    model = SVR().fit(X, y)
    # scikit-learn predicts from a private copy; the public coefficients no longer match it.
    model.dual_coef_ = model.dual_coef_ * 1.01
    with pytest.raises(InvalidArgumentError) as refused:
        kernel_machine_shapley(model, X[:2], X[100:110])
    assert refused.value.argument == "model"
    assert "does not reproduce its own outputs" in str(refused.value)
