import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.preprocessing import SplineTransformer

from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.estimator.context import fit_context
from shapley_svc.estimator.surrogates import (
    RIDGE_ALPHAS,
    ClassView,
    LinearFit,
    RidgeSurrogate,
    SoftMultinomialSurrogate,
    SplineSurrogate,
    UniformCubicSplines,
    _terms_cancel,
    canonical_column_order,
    is_class_probabilities,
    out_of_fold_splits,
)
from shapley_svc.kernels.link_additive import softmax_additive_path
from shapley_svc.reference import exact_shapley


@pytest.fixture
def softmax_task(rng):
    """Rows and the class probabilities of a softmax with a nonlinear term, three classes."""

    def make(d, n=300):
        Z = rng.normal(size=(n, d))
        logits = Z @ rng.normal(size=(d, 3)) + np.sin(Z[:, :2]) @ rng.normal(size=(2, 3))
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        return Z, probabilities / probabilities.sum(axis=1, keepdims=True)

    return make


def test_spline_basis_is_scikit_learns(rng):
    Z = rng.normal(size=(400, 6))
    Z[:, 3] = 0.0  # constant column: scikit-learn gives it an all-zero basis
    Z[:, 4] = rng.integers(0, 3, size=400)  # few distinct values
    queries = np.vstack([Z, 3.0 * rng.normal(size=(200, 6)), Z.min(axis=0), Z.max(axis=0)])
    ours = UniformCubicSplines(6).fit(Z).transform(queries)
    theirs = SplineTransformer(n_knots=6, degree=3, knots="uniform", extrapolation="linear")
    np.testing.assert_allclose(ours, theirs.fit(Z).transform(queries), rtol=0, atol=1e-12)


def test_spline_terms_are_the_basis_times_the_coefficients(rng):
    """The kernel that evaluates the terms directly equals the basis contracted with the
    coefficients, inside the fit range, beyond it on both sides and on a constant column."""
    Z = rng.normal(size=(400, 6))
    Z[:, 3] = 0.0
    Z[:, 4] = rng.integers(0, 3, size=400)
    queries = np.vstack([Z, 3.0 * rng.normal(size=(200, 6)), Z.min(axis=0), Z.max(axis=0)])
    splines = UniformCubicSplines(6).fit(Z)
    coef = rng.normal(size=(3, 6, splines.n_splines))
    basis = splines.transform(queries).reshape(len(queries), 6, splines.n_splines)
    terms = splines.terms(queries, coef)
    np.testing.assert_allclose(terms, np.einsum("mdb,kdb->mdk", basis, coef), atol=1e-12)
    assert np.all(terms[:, 3] == 0.0)


def _leave_one_out_errors(design, target):
    """Per penalty, the mean and standard error of the squared leave-one-out residuals of
    scikit-learn's ridge (unpenalised intercept), refitted without each row."""
    n = len(target)
    errors, standard_errors = [], []
    for alpha in RIDGE_ALPHAS:
        squared = []
        for i in range(n):
            others = np.arange(n) != i
            ridge = Ridge(alpha=alpha).fit(design[others], target[others])
            squared.append((target[i] - ridge.predict(design[i : i + 1])[0]) ** 2)
        errors.append(np.mean(squared))
        standard_errors.append(np.std(squared) / np.sqrt(n))
    return np.array(errors), np.array(standard_errors)


@pytest.mark.parametrize("cancelling", [False, True])
def test_the_linear_fit_takes_the_penalty_of_least_leave_one_out_error_unless_its_terms_cancel(
    rng, cancelling
):
    """Without cancelling terms the penalty is the least error's; when the target is the
    difference of two near-copies (terms of +-20 for a sum of spread 1), it is the largest
    penalty within one standard error of the least error."""
    u, v = rng.normal(size=40), rng.normal(size=40)
    others = rng.normal(size=(40, 3))
    if cancelling:
        design = np.column_stack([u, u + 0.05 * v, others])
        target = 20 * (design[:, 1] - design[:, 0]) + 0.3 * rng.normal(size=40)
    else:
        design = np.column_stack([u, v, others])
        target = design @ rng.normal(size=5) * 0.3 + rng.normal(size=40)
    errors, standard_errors = _leave_one_out_errors(design, target)
    best = int(np.argmin(errors))
    if cancelling:
        best = int(np.flatnonzero(errors <= errors[best] + standard_errors[best]).max())
        assert best != int(np.argmin(errors))  # the case tells the two rules apart
    blocks = [np.array([j]) for j in range(5)]
    fit = LinearFit(blocks).fit(design, target)
    assert fit.alpha_ == RIDGE_ALPHAS[best]
    expected = Ridge(alpha=RIDGE_ALPHAS[best]).fit(design, target)
    np.testing.assert_allclose(fit.coef_, expected.coef_, atol=1e-9)
    assert LinearFit().fit(design, target).alpha_ == RIDGE_ALPHAS[int(np.argmin(errors))]


def test_with_fewer_rows_than_columns_the_penalty_is_the_least_errors_even_when_terms_cancel():
    """Thirty embedding-like rows (four latent factors through a hidden layer to forty
    correlated columns) and a logistic model's probabilities: the fit of least leave-one-out
    error has cancelling terms and the one-standard-error rule would take ten times its
    penalty; with fewer rows than columns the fit keeps the least error's."""
    rng = np.random.default_rng(5)
    n, p = 30, 40
    hidden = np.tanh(rng.normal(size=(n, 4)) @ rng.normal(size=(4, 16)))
    design = hidden @ rng.normal(size=(16, p)) + 0.1 * rng.normal(size=(n, p))
    target = 1.0 / (1.0 + np.exp(-0.3 * design @ rng.normal(size=p)))
    errors, standard_errors = _leave_one_out_errors(design, target)
    least = int(np.argmin(errors))
    blocks = [np.array([j]) for j in range(p)]
    coef = Ridge(alpha=RIDGE_ALPHAS[least]).fit(design, target).coef_
    # The case tells the rules apart: the terms cancel and the rule's penalty is another.
    assert _terms_cancel(design - design.mean(axis=0), coef, blocks)
    assert int(np.flatnonzero(errors <= errors[least] + standard_errors[least]).max()) != least
    assert LinearFit(blocks).fit(design, target).alpha_ == RIDGE_ALPHAS[least]


def _split_of_the_first_two(member, X, y, seed) -> float:
    """The spreads of the member's values of columns 0 and 1 (standardised rows, the first 100
    as background) added up, over the spread of their sum: 1 when the two do not cancel."""
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    values = member.fit(Z, y, seed).prepare(Z[:100]).attributions(Z)
    return (values[:, 0].std() + values[:, 1].std()) / (values[:, 0] + values[:, 1]).std()


def test_the_spline_member_does_not_split_two_aliased_columns_into_opposite_terms():
    """A column and its logarithm span nearly the same spline terms: the member's terms for the
    two must add up to their joint term without large opposite parts (with the penalty of the
    least leave-one-out error, one of these ten draws gave terms 15x the joint term's spread)."""
    ratios = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        income = np.round(np.exp(rng.normal(3.0, 0.8, size=1000))) + 0.5
        X = np.column_stack(
            [income, np.log(income), rng.normal(size=1000), rng.integers(0, 2, size=1000)]
        )
        y = np.tanh(np.log(income) - 3) + 0.5 * X[:, 2] + 0.3 * X[:, 3]
        y = y + rng.normal(scale=0.5, size=1000)
        ratios.append(_split_of_the_first_two(SplineSurrogate(), X, y, seed))
    assert max(ratios) < 1.5, ratios


def test_the_ridge_member_does_not_split_two_near_copies_into_opposite_terms():
    """The target reads one of two near-copies: the member's values of the two must not be large
    and opposite (with the penalty of the least leave-one-out error, one of these ten draws gave
    coefficients -1.1 and 2.1 for a joint effect of 1, terms 3.3x their sum's spread)."""
    ratios = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        u = rng.normal(size=300)
        X = np.column_stack([u, u + 0.02 * rng.normal(size=300), rng.normal(size=300)])
        y = u + 0.5 * X[:, 2] + 0.5 * rng.normal(size=300)
        ratios.append(_split_of_the_first_two(RidgeSurrogate(), X, y, seed))
    assert max(ratios) < 1.5, ratios


def test_a_linear_model_keeps_its_own_cancelling_terms():
    """Age and age squared with opposite coefficients: terms 14x their sum's spread, which the
    rule for cancelling terms must not shrink away (the model is in the ridge member's class)."""
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 65, size=500)
    X = np.column_stack([age, age**2, rng.normal(size=500)])
    beta = np.array([0.8, -0.009, 0.5])
    explainer = ZeroShotExplainer(random_state=0).fit(X, X @ beta)
    values = explainer.explain(X[:20], X[:20] @ beta).values
    exact = (X[:20] - X[explainer.background_].mean(axis=0)) * beta
    np.testing.assert_allclose(values, exact, atol=1e-4 * np.abs(exact).max())


@pytest.mark.parametrize("splines", [False, True])
def test_multinomial_surrogate_is_exact_at_low_dimension(softmax_task, splines):
    Z, probabilities = softmax_task(d=5)
    surrogate = SoftMultinomialSurrogate(strength=0.002, splines=splines).fit(Z, probabilities, 0)
    assert np.corrcoef(surrogate.predict(Z).ravel(), probabilities.ravel())[0, 1] > 0.95
    rows, background = Z[:8], Z[100:140]
    values = surrogate.prepare(background).attributions(rows)
    truth = exact_shapley(surrogate.predict, rows, background)
    np.testing.assert_allclose(values, truth.values, atol=1e-12)


def test_softmax_path_credits_are_efficient_and_close_to_exact(softmax_task):
    Z, probabilities = softmax_task(d=8)
    surrogate = SoftMultinomialSurrogate(strength=0.002, splines=False).fit(Z, probabilities, 0)
    rows, background = Z[:6], Z[100:130]
    values = surrogate.prepare(background).attributions(rows)  # d = 8: the path rule
    truth = exact_shapley(surrogate.predict, rows, background).values
    assert np.corrcoef(values.ravel(), truth.ravel())[0, 1] > 0.97
    expected_sums = surrogate.predict(rows) - surrogate.predict(background).mean(axis=0)
    np.testing.assert_allclose(values.sum(axis=1), expected_sums, atol=1e-6)


def test_softmax_path_of_two_classes_is_the_sigmoid_rescale_rule(rng):
    # softmax over logits (0, s) is sigmoid(s): the path integral is the secant slope.
    row_terms = np.zeros((3, 4, 2))
    background_terms = np.zeros((5, 4, 2))
    row_terms[:, :, 1] = rng.normal(size=(3, 4))
    background_terms[:, :, 1] = rng.normal(size=(5, 4))
    values = np.empty((3, 4, 2))
    softmax_additive_path(row_terms, background_terms, np.zeros(2), values)
    row_logit = row_terms[:, :, 1].sum(axis=1)
    expected = np.zeros((3, 4))
    for z in background_terms[:, :, 1]:
        shift = row_logit - z.sum()
        secant = (1 / (1 + np.exp(-row_logit)) - 1 / (1 + np.exp(-z.sum()))) / shift
        expected += (row_terms[:, :, 1] - z) * secant[:, None]
    np.testing.assert_allclose(values[:, :, 1], expected / 5, atol=1e-9)
    np.testing.assert_allclose(values[:, :, 0], -values[:, :, 1], atol=1e-12)


def test_class_probabilities_are_recognised(softmax_task):
    _, probabilities = softmax_task(d=3)
    assert is_class_probabilities(probabilities)
    assert not is_class_probabilities(probabilities[:, :2] / probabilities[:, :2].sum(1)[:, None])
    assert not is_class_probabilities(probabilities * 0.9)  # rows do not sum to one
    assert not is_class_probabilities(np.column_stack([probabilities[:, 0] * 2 - 1] * 3))


def test_logistic_members_of_class_probabilities_share_one_fit(softmax_task):
    Z, probabilities = softmax_task(d=4)
    fitted = fit_context(Z, probabilities, np.arange(50), seed=0)
    views = [context.surrogates[3].model for context in fitted.outputs]  # "logistic"
    assert all(isinstance(view, ClassView) for view in views)
    assert len({id(view.parent) for view in views}) == 1
    per_class = fitted.member_values(Z[:5])
    # The classes' attributions of one softmax sum to zero feature by feature.
    np.testing.assert_allclose(sum(values[3] for values in per_class), 0.0, atol=1e-12)
    assert all(context.features.global_features[1] == 1.0 for context in fitted.outputs)


def test_fit_quality_uses_three_folds_on_small_contexts_and_a_third_on_large():
    small, large = out_of_fold_splits(300, seed=0), out_of_fold_splits(3000, seed=0)
    assert len(small) == 3
    assert sorted(np.concatenate([test for _, test in small])) == list(range(300))
    assert len(large) == 1 and len(large[0][1]) == 1000


def _tied_table(n: int = 1_200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Columns of more than 255 distinct values with ties (so histogram boosting bins them at
    percentiles that can be a value itself), and a target with steps in them."""
    rng = np.random.default_rng(seed)
    X = np.round(rng.normal(size=(n, 4)), 2) + 0.1  # about 500 distinct values each, tied
    y = np.where(X[:, 0] > 0.3, 2.0, 0.0) + np.where(X[:, 1] > X[:, 2], 1.0, -1.0) + X[:, 3]
    return X, y


def test_the_boosted_member_splits_between_the_rows_values_and_fits_them_the_same():
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    from shapley_svc.estimator.surrogates import BoostedTreesSurrogate

    X, y = _tied_table()
    in_order = X[:, canonical_column_order(X)]  # the columns as the member fits them
    with threadpool_limits(1, user_api="openmp"):  # as the explainer fits it
        member = BoostedTreesSurrogate().fit(X, y, seed=0)
        as_binned = HistGradientBoostingRegressor(**member.model_.get_params()).fit(in_order, y)
    np.testing.assert_array_equal(member.predict(X), as_binned.predict(in_order))
    assert _splits_on_a_value(member.model_, X) == 0
    assert _splits_on_a_value(as_binned, in_order) > 0  # the check can fail: scikit-learn's do


def _splits_on_a_value(model, X: np.ndarray) -> int:
    """How many of ``model``'s splits have one of ``X``'s values (below its column's largest)
    for threshold."""
    count = 0
    for stage in model._predictors:
        for predictor in stage:
            splits = predictor.nodes[~predictor.nodes["is_leaf"].astype(bool)]
            for feature, threshold in zip(
                splits["feature_idx"], splits["num_threshold"], strict=True
            ):
                column = X[:, feature]
                count += threshold in column[column < column.max()]
    return count


def test_query_rows_sent_as_float32_are_explained_as_the_same_rows():
    """A query row a rounding away from a context row's values takes the context row's path in
    the boosted member (its thresholds were the tied values themselves: answers moved by up to
    1.1 on values of 90)."""
    from shapley_svc.estimator import ZeroShotExplainer

    X, y = _tied_table()
    X = X / 3.0  # values float32 cannot hold exactly
    explainer = ZeroShotExplainer(random_state=0).fit(X, y)
    query = X[:150]
    exact = explainer.explain(query, y[:150])
    rounded = explainer.explain(query.astype(np.float32), y[:150])
    np.testing.assert_allclose(rounded.values, exact.values, atol=1e-5)
    np.testing.assert_allclose(rounded.uncertainty, exact.uncertainty, atol=1e-5)


@pytest.mark.parametrize("member", ["boosted_trees", "forest"])
def test_a_tree_member_fits_the_columns_in_an_order_of_their_own(rng, member):
    """The member's trees are those of its scikit-learn model fitted on the columns in
    ``canonical_column_order``, read back against the columns as given: fitted on the columns in
    another order, it predicts the same (an exact reordering of the same trees)."""
    from threadpoolctl import threadpool_limits

    from shapley_svc.estimator.surrogates import ZOO

    make = next(kind.make for kind in ZOO if kind.name == member)
    Z = rng.normal(size=(400, 12))
    Z[:, 5] = Z[:, 2] + 0.1 * rng.normal(size=400)  # near-copies: the draws decide the credit
    target = Z[:, 2] + np.sin(3 * Z[:, 0]) * Z[:, 7] + (Z[:, 9] > 0)
    order = canonical_column_order(Z)
    assert sorted(order) == list(range(12)) and not np.array_equal(order, np.arange(12))
    with threadpool_limits(1, user_api="openmp"):
        fitted = make().fit(Z, target, seed=3)
        own = type(fitted.model_)(**fitted.model_.get_params()).fit(Z[:, order], target)
        permutation = rng.permutation(12)
        reordered = make().fit(Z[:, permutation], target, seed=3)
    # On its own rows (the boosted member's thresholds move between their values, not across).
    np.testing.assert_allclose(fitted.predict(Z), own.predict(Z[:, order]), atol=1e-12)
    queries = rng.normal(size=(300, 12))
    np.testing.assert_allclose(
        reordered.predict(queries[:, permutation]), fitted.predict(queries), atol=1e-12
    )


def test_canonical_column_order_follows_the_columns_ranks_and_keeps_aliases_as_given(rng):
    Z = rng.normal(size=(50, 6))
    Z[3, 1] = np.nan
    Z[:, 4] = Z[:, 0]  # equal columns keep the order given
    order = canonical_column_order(Z)
    permutation = np.array([2, 5, 1, 0, 3, 4])
    moved = Z[:, permutation]
    np.testing.assert_array_equal(moved[:, canonical_column_order(moved)], Z[:, order])
    assert list(order).index(0) < list(order).index(4)
    # Columns that rank the rows alike (up or down) keep the order given, wherever it puts them:
    # a split on either gains the same, and tree learners take the first (as the model did).
    for alias in (Z[:, 0] ** 3, -2 * Z[:, 0] + 1):
        for given in ([0, 1, 2, 3], [3, 1, 2, 0], [1, 3, 0, 2]):
            with_alias = np.column_stack([Z[:, :3], alias])[:, given]
            ranked = list(canonical_column_order(with_alias))
            ahead, behind = sorted([given.index(0), given.index(3)])  # x and its alias
            assert ranked.index(ahead) < ranked.index(behind), (given, ranked)
    negative_zero = Z.copy()
    negative_zero[0, 2] = 0.0
    signed = negative_zero.copy()
    signed[0, 2] = -0.0
    np.testing.assert_array_equal(
        canonical_column_order(negative_zero), canonical_column_order(signed)
    )


def test_a_reordering_of_the_columns_reorders_the_values_alone(rng):
    """QA F9: the tree members drew their split features by position, so the same table with its
    columns in another order got other values (r 0.943 between the two on breast cancer's MLP
    probabilities). With missing cells, a categorical column and three classes here."""
    from shapley_svc.estimator import ZeroShotExplainer

    n = 700
    colour = rng.integers(0, 4, size=n).astype(float)
    X = np.column_stack([colour, rng.normal(size=(n, 7))])
    X[:, 5] = X[:, 3] + 0.2 * rng.normal(size=n)
    X[rng.random(n) < 0.1, 2] = np.nan
    logits = np.column_stack(
        [
            np.array([0.0, 1.0, -1.0, 2.0])[colour.astype(int)] * X[:, 1],
            np.nan_to_num(X[:, 2]) + np.tanh(X[:, 3] * X[:, 4]),
            np.abs(X[:, 6]) - X[:, 7],
        ]
    )
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    permutation = np.array([4, 0, 7, 2, 6, 1, 5, 3])
    names = [f"c{j}" for j in range(8)]
    given = ZeroShotExplainer(random_state=2).fit(
        X, probabilities, categorical=[0], feature_names=names
    )
    moved = ZeroShotExplainer(random_state=2).fit(
        X[:, permutation],
        probabilities,
        categorical=[int(np.flatnonzero(permutation == 0)[0])],
        feature_names=[names[j] for j in permutation],
    )
    query = X[:40]
    as_given = given.explain(query, probabilities[:40])
    as_moved = moved.explain(query[:, permutation], probabilities[:40])
    assert as_moved.attribution_names == [names[j] for j in permutation]
    np.testing.assert_allclose(as_moved.values, as_given.values[:, permutation], atol=1e-9)
    np.testing.assert_allclose(
        as_moved.uncertainty, as_given.uncertainty[:, permutation], atol=1e-9
    )
    np.testing.assert_allclose(as_moved.base_values, as_given.base_values, atol=1e-12)
