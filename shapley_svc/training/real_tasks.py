"""Real-table tasks: the prior's model families on the development tables' own columns.

The synthetic prior's marginals are smooth draws; real tables have discrete codes, skew, ties,
missing cells and correlated blocks, and the combiner must learn which surrogates to trust on
those. A real-table task takes a development table (``shapley_svc.training.tables``), a seeded
subsample of its rows (as many as a prior task would have), and either the table's own target or
a synthetic target built from its columns (the prior's ``draw_target`` on the standardised columns,
products included), then trains one of the prior's model families on 70 % of the rows and labels
it exactly as a prior task is labelled. Categorical columns reach the model as codes and the
estimator as categorical columns, as a user's coded table would.
"""

from functools import cache

import numpy as np

from shapley_svc.training.prior import TASKS, PriorConfig, Task, draw_target, labelled_task
from shapley_svc.training.tables import Table, load_table, table_specs

# Half the real-table tasks keep the table's own target: real relationships between columns and
# target. The other half draw a synthetic target on the real columns: more targets per table and
# more task kinds (a regression table also yields classification tasks).
REAL_TARGET_SHARE = 0.5


@cache
def cached_table(table_id: str) -> Table:
    """The development table ``table_id``, loaded once per process."""
    specs = {spec["id"]: spec for spec in table_specs()}
    if table_id not in specs:
        raise ValueError(f"{table_id!r} is not a development table")
    return load_table(specs[table_id])


def _columns_as_nodes(X: np.ndarray) -> np.ndarray:
    """The columns standardised, missing cells at the mean (0): the pool a synthetic target is
    drawn from."""
    mean = np.nanmean(X, axis=0)
    spread = np.nanstd(X, axis=0)
    Z = (X - mean) / np.where(spread > 1e-12, spread, 1.0)
    return np.nan_to_num(Z, nan=0.0)


def sample_real_task(seed: int, config: PriorConfig) -> Task:
    """Draw one real-table task from ``config.real_tables``; the same seed gives the same task."""
    if not config.real_tables:
        raise ValueError("config.real_tables is empty: there is no table to draw from")
    rng = np.random.default_rng([seed, 3])
    table = cached_table(config.real_tables[rng.integers(len(config.real_tables))])
    n_table = table.X.shape[0]
    n = int(np.exp(rng.uniform(np.log(config.min_rows), np.log(config.max_rows + 1))))
    n = min(max(n, config.min_rows), n_table)
    rows = np.sort(rng.choice(n_table, size=n, replace=False))
    X = table.X[rows]
    nodes = _columns_as_nodes(X)
    family = config.families[rng.integers(len(config.families))]
    real_target = rng.random() < REAL_TARGET_SHARE
    if real_target:
        task, y = table.task, table.y[rows]
    else:
        weights = np.array(config.task_weights) / sum(config.task_weights)
        task = TASKS[rng.choice(3, p=weights)]
        y = draw_target(rng, nodes, task)
    info = {"table": table.id, "real_target": bool(real_target)}
    return labelled_task(rng, X, y, nodes, task, family, config, seed, info, table.categorical)
