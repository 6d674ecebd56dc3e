"""Explain a scikit-learn model through a running shapley-svc server (SHAPLEY_TARGET, default
127.0.0.1:50051)."""

import os

import numpy as np
from shapley_client import ShapleyClient
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier

data = load_breast_cancer()
X, y = data.data, data.target
model = GradientBoostingClassifier(random_state=0).fit(X, y)
probabilities = model.predict_proba(X)[:, 1]  # the outputs your model already produced

target = os.environ.get("SHAPLEY_TARGET", "127.0.0.1:50051")
with ShapleyClient(target, timeout=60) as client:
    context = client.create_context(X, probabilities, feature_names=data.feature_names)
    print("context", context.context_id)
    fidelity = context.diagnostics[0].predicted_fidelity
    print(f"predicted fidelity (expected Pearson r with the true SHAP values): {fidelity:.2f}")

    explanation = client.explain(context, X[:3], probabilities[:3])
    for i in range(3):
        order = np.argsort(-np.abs(explanation.values[i]))[:3]
        top = ", ".join(
            f"{explanation.attribution_names[j]} {explanation.values[i, j]:+.3f}"
            f"±{explanation.uncertainty[i, j]:.3f}"
            for j in order
        )
        print(
            f"row {i}: p={probabilities[i]:.3f} = base {explanation.base_values[i]:.3f}"
            f" {explanation.values[i].sum():+.3f}; {top}"
        )

    everything = client.explain_stream(context, X, probabilities, chunk_rows=200)
    print("streamed", everything.values.shape, "in chunks of 200 rows")
