"""A real-looking table: missing values, a categorical column and a bool, straight from pandas."""

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from shapley_svc import ZeroShotExplainer

rng = np.random.default_rng(0)
n = 2_000
table = pd.DataFrame(
    {
        "income": rng.lognormal(10.5, 0.5, size=n),
        "age": rng.integers(18, 80, size=n).astype(float),
        "region": pd.Categorical(rng.choice(["north", "south", "east", "west"], size=n)),
        "employed": rng.random(n) < 0.8,
    }
)
table.loc[rng.random(n) < 0.15, "income"] = np.nan  # not reported
logit = (
    (np.log(table["income"].fillna(20_000.0)) - 10.5) * 2.0
    + table["region"].map({"north": 0.5, "south": -0.5, "east": 0.0, "west": 1.0}).astype(float)
    + 1.5 * table["employed"]
    - 0.02 * (table["age"] - 45)
)
y = rng.random(n) < 1 / (1 + np.exp(-logit))
features = table.assign(employed=table["employed"].astype(int))  # the model's own input
model = HistGradientBoostingClassifier(random_state=0).fit(features, y)  # NaN and categories native
p = model.predict_proba(features)[:, 1]  # all the explainer ever sees of the model

# category/object/bool columns become codes, declared categorical; NaN is a value.
explainer = ZeroShotExplainer(random_state=0).fit(table, p)
print("categorical:", [explainer.feature_names_[j] for j in explainer.categorical_])
print("region codes:", explainer.categories_["region"])
rows = [0, 3, 6]
explanation = explainer.explain(table.iloc[rows], p[rows])
for row in range(len(rows)):
    shown = ", ".join(
        f"{name}={value if isinstance(value, str | bool) else format(value, '.0f')} {phi:+.3f}"
        for name, value, phi in zip(
            explanation.attribution_names,
            explanation.display_data[row],
            explanation.values[row],
            strict=True,
        )
    )
    print(f"p={p[rows[row]]:.3f} base={explanation.base_values[row]:.3f} | {shown}")
