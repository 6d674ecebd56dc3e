"""Explain an MLP on breast cancer zero-shot, from its outputs alone (no server)."""

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shapley_svc import ZeroShotExplainer

data = load_breast_cancer()
X, y = data.data, data.target
model = make_pipeline(StandardScaler(), MLPClassifier(max_iter=1000, random_state=0)).fit(X, y)
p = model.predict_proba(X)[:, 1]  # all the explainer ever sees of the model

explainer = ZeroShotExplainer(random_state=0).fit(X, p, feature_names=data.feature_names)
explanation = explainer.explain(X[:2], p[:2])
for row in range(2):
    top = np.argsort(-np.abs(explanation.values[row]))[:3]
    print(
        f"p={p[row]:.3f} base={explanation.base_values[row]:.3f}:",
        ", ".join(
            f"{explanation.attribution_names[j]} {explanation.values[row, j]:+.3f}"
            f"±{explanation.uncertainty[row, j]:.3f}"
            for j in top
        ),
    )
print("predicted fidelity", round(explanation.diagnostics.outputs[0].predicted_fidelity, 2))
