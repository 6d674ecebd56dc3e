"""Refinement in process: the zero-shot answer, then a few model calls chosen by the explainer."""

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor

from shapley_svc import ZeroShotExplainer
from shapley_svc.reference import exact_shapley

X, y = load_diabetes(return_X_y=True)  # ships with scikit-learn
model = RandomForestRegressor(200, min_samples_leaf=3, random_state=0).fit(X, y)
predictions = model.predict(X)

explainer = ZeroShotExplainer(random_state=0).fit(X, predictions)
query = X[:20]
truth = exact_shapley(model.predict, query, explainer.background_rows_).values


def score(values: np.ndarray) -> str:
    r = np.corrcoef(values.ravel(), truth.ravel())[0, 1]
    return f"r {r:.3f}, rms error {np.sqrt(np.mean((values - truth) ** 2)):.4f}"


zero_shot = explainer.explain(query, predictions[:20])
print(f"zero-shot (0 model rows): {score(zero_shot.values)}")
d = X.shape[1]
for budget in (d, 4 * d, 10 * d, 40 * d):
    proposal = explainer.propose(query, budget, predictions[:20])  # rows for your model
    refined = explainer.refine(proposal, model.predict(proposal.rows))
    covered = np.mean(np.abs(refined.values - truth) <= 1.2816 * refined.uncertainty)
    print(
        f"{refined.model_rows:>3} model rows per row: {score(refined.values)}, "
        f"80 % intervals cover {covered:.0%}"
    )
