"""A pandas table with missing values and categorical columns, explained through a running
shapley-svc server (SHAPLEY_TARGET, default 127.0.0.1:50051)."""

import os

import numpy as np
import pandas as pd
from shapley_client import ShapleyClient

REGION_EFFECT = {"north": 0.5, "south": -0.5, "east": 0.0, "west": 1.0}


def model(table: pd.DataFrame) -> np.ndarray:
    """Your model; here a made-up one that reads a missing income as a low one."""
    score = (
        (np.log(table["income"].fillna(20_000.0)) - 10.5) * 2.0
        + table["region"].map(REGION_EFFECT).astype(float).fillna(0.0)
        + 1.5 * table["employed"]
    )
    return 1 / (1 + np.exp(-score.to_numpy()))


rng = np.random.default_rng(0)
n = 500
table = pd.DataFrame(
    {
        "income": rng.lognormal(10.5, 0.5, size=n),
        "region": pd.Categorical(rng.choice(list(REGION_EFFECT), size=n)),
        "employed": rng.random(n) < 0.8,
    }
)
table.loc[rng.random(n) < 0.15, "income"] = np.nan  # not reported

with ShapleyClient(os.environ.get("SHAPLEY_TARGET", "127.0.0.1:50051"), timeout=60) as client:
    # category, object/string and bool columns go as codes, declared categorical; NaN is a value.
    context = client.create_context(table, model(table))
    print("categorical:", [context.feature_names[j] for j in context.categorical_columns])
    print("region codes:", context.categories["region"])

    query = pd.DataFrame(
        {
            "income": [np.nan, 52_000.0, 31_000.0],
            "region": pd.Categorical(["west", "south", "arctic"]),  # arctic: never seen
            "employed": [True, False, True],
        }
    )
    explanation = client.explain(context, query, model(query))  # coded like the context
    for i, p in enumerate(model(query)):
        shown = ", ".join(
            f"{name}={format(value, '.0f') if isinstance(value, float) else value} {phi:+.3f}"
            for name, value, phi in zip(
                explanation.feature_names,
                explanation.display_data[i],  # the query's own values
                explanation.values[i],
                strict=True,
            )
        )
        print(f"p={p:.3f} base={explanation.base_values[i]:.3f} | {shown}")
