"""Calibration in process: one batch of model calls per context, then zero-shot answers that
follow the model more closely, and refinement that starts from them. Pearson r against the exact
values, without calibration, with the members' weights refitted, and with the members refitted
on the context and the scored rows."""

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from shapley_svc import ZeroShotExplainer
from shapley_svc.reference import exact_shapley, kernel_machine_shapley, tree_shapley

X, y = load_diabetes(return_X_y=True)  # ships with scikit-learn
query = X[:20]
models = {
    "boosting": HistGradientBoostingRegressor(random_state=0),
    "svr": make_pipeline(StandardScaler(), SVR(C=30.0)),
    "mlp": make_pipeline(
        StandardScaler(),
        MLPRegressor(
            hidden_layer_sizes=(64, 64), early_stopping=True, max_iter=2000, random_state=0
        ),
    ),
}


def exact(name: str, model, background: np.ndarray) -> np.ndarray:
    """The exact values, each by its fastest exact method (none of them is the estimator)."""
    if name == "boosting":
        return tree_shapley(model, query, background).values  # TreeSHAP
    if name == "svr":
        return kernel_machine_shapley(model, query, background).values  # product games
    return exact_shapley(model.predict, query, background).values  # 2**10 coalitions


def r(explainer: ZeroShotExplainer, model, truth: np.ndarray, budget: int = 0) -> float:
    """Pearson r against the truth: zero-shot (budget 0), or refined at ``budget``."""
    if budget == 0:
        values = explainer.explain(query, model.predict(query)).values
    else:
        proposal = explainer.propose(query, budget, model.predict(query))
        values = explainer.refine(proposal, model.predict(proposal.rows)).values
    return np.corrcoef(values.ravel(), truth.ravel())[0, 1]


for name, model in models.items():
    model.fit(X, y)
    predictions = model.predict(X)
    explainer = ZeroShotExplainer(random_state=0).fit(X, predictions)
    truth = exact(name, model, explainer.background_rows_)

    proposal = explainer.propose_calibration()  # 10 rows per background row: 1,000 here
    weights = explainer.calibrate(proposal, model.predict(proposal.rows))  # weights refitted
    # Sized for a refit: 20 rows per background row (a refit keeps gaining from more rows).
    proposal = explainer.propose_calibration(refit=True)
    outputs = model.predict(proposal.rows)  # the model, once per context
    refitted = explainer.calibrate(proposal, outputs, X, predictions)  # the members refitted
    zero_shot = [r(e, model, truth) for e in (explainer, weights, refitted)]
    at_4d = [r(e, model, truth, 40) for e in (explainer, weights, refitted)]
    print(
        f"{name:8s} zero-shot r {zero_shot[0]:.3f}, calibrated {zero_shot[1]:.3f} (weights), "
        f"{zero_shot[2]:.3f} (refitted); refined at 4d {at_4d[0]:.3f}, {at_4d[1]:.3f}, "
        f"{at_4d[2]:.3f}"
    )
