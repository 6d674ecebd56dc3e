"""How much of the exact SHAP values a zero-shot estimator can know: models that agree on the
context and disagree on the values.

A zero-shot estimator sees the context's rows and the model's outputs on them, nothing else.
Models whose outputs on the context agree (to R^2 >= ``AGREEMENT_R2`` against the target's) give
it the same evidence up to that tolerance, so it gives them about the same answer; their exact
interventional SHAP values can still differ, because the values also weigh what each model does
on rows that mix one row's features with another's, where the context says nothing.

For each of ``bench refinement``'s real-table cases (the target model M of a production family,
exact truth by enumeration) this trains alternates: the regressors of ``DISTILLERS`` fitted to
M's outputs on the context rows (one per output column), each a model a user could have trained.
Those that agree with M to ``AGREEMENT_R2`` join M in the case's set, and their exact values
are computed as M's were. Reported per case and averaged:

* the Pearson r between M's values and each alternate's;
* the identifiability ceiling: the highest mean r over the set that one answer can reach. With
  each set member's values centred and scaled to unit length (u_j), an answer's mean Pearson r
  over the set is its cosine with the mean of the u_j, so the ceiling is the length of that mean.
  No estimator that gives agreeing models the same answer has a higher mean r over them;
* the mutual r: the mean Pearson r over the set's distinct pairs (target and alternates), and
  the same among the alternates alone: do they agree with one another as they do with M?
* the limit: the ceiling as agreeing models are added, were the set exchangeable (every pair
  correlated at the mutual r, rho): the mean of N unit vectors with pairwise cosine rho has
  length sqrt(rho + (1 - rho) / N), which falls to sqrt(rho);
* our zero-shot estimator's r (fitted on M's outputs) against M and against the alternates.

One alternate is an exact interpolator: extremely randomised trees with a leaf per row and no
bootstrap reproduce the outputs on every context row (R^2 1 unless two rows share their
features). It is the plainest case of a model the context cannot tell from M.

    python -m benchmarks.diagnose_identifiability            # the 50 cases: about 26 minutes
    python -m benchmarks.diagnose_identifiability --quick    # 2 tables, 2 families
    python -m benchmarks.diagnose_identifiability --prior-families   # linear, forests, SVM, kNN

Writes ``identifiability.{md,json}`` to ``benchmarks/results/`` (``identifiability_prior.*`` with
``--prior-families``, ``*_quick.*`` with ``--quick``).
"""

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from functools import partial
from itertools import combinations
from pathlib import Path

import numpy as np

from benchmarks import real_tables
from benchmarks._machine import machine_info
from benchmarks.accuracy_cases import pearson
from benchmarks.bench_refinement import (
    FULL,
    QUICK,
    SEED,
    enumerated_real_table_cases,
    fitted_explainer,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Target models of the prior's families that `bench refinement` leaves out (``--prior-families``):
# a linear target is where the estimator's exact-linear rule prefers one of the agreeing models.
PRIOR_FAMILIES = ("linear", "random_forest", "extra_trees", "svm", "knn")
MODULE = "benchmarks.diagnose_identifiability"
AGREEMENT_R2 = 0.98
DISTILL_ROUNDS = 300


# The real-table families' own fitters, as regressors, with more capacity: 300 rounds for the
# boosters (their targets have 100) and 500 iterations for the MLP.
DISTILLERS = {
    "xgboost": partial(real_tables.FITTERS["xgboost"], rounds=DISTILL_ROUNDS),
    "lightgbm": partial(real_tables.FITTERS["lightgbm"], rounds=DISTILL_ROUNDS),
    "hist_gradient_boosting": partial(
        real_tables.FITTERS["hist_gradient_boosting"], rounds=DISTILL_ROUNDS
    ),
    "mlp_onehot": partial(real_tables.FITTERS["mlp_onehot"], max_iter=500),
    # A leaf per row, no bootstrap: an exact interpolator of the context's outputs.
    "extra_trees": partial(real_tables.FITTERS["extra_trees"], min_samples_leaf=1),
}


def distilled(name: str, X: np.ndarray, outputs: np.ndarray, categorical: np.ndarray):
    """``predict(rows) -> (n, K)`` of ``name``'s regressors fitted to each output column of the
    target's ``outputs`` (n, K) on the context rows ``X``, on one thread."""
    with real_tables.one_thread():
        models = [
            DISTILLERS[name](X, outputs[:, k], "regression", categorical, SEED + 1)
            for k in range(outputs.shape[1])
        ]

    def predict(rows: np.ndarray) -> np.ndarray:
        with real_tables.one_thread():
            return np.column_stack([np.asarray(m.predict(rows), dtype=np.float64) for m in models])

    return predict


def agreement_r2(outputs: np.ndarray, target: np.ndarray) -> float:
    """R^2 of ``outputs`` against ``target`` over every cell, each output column centred."""
    residual = np.sum((outputs - target) ** 2)
    total = np.sum((target - target.mean(axis=0)) ** 2)
    return float(1.0 - residual / total) if total > 0 else 0.0


def identifiability_ceiling(truths: list[np.ndarray]) -> float:
    """The highest mean Pearson r over ``truths`` that one answer reaches: the length of the
    mean of the truths centred and scaled to unit length."""
    units = []
    for truth in truths:
        centred = truth.ravel() - truth.mean()
        units.append(centred / np.linalg.norm(centred))
    return float(np.linalg.norm(np.mean(units, axis=0)))


def mutual_r(truths: list[np.ndarray]) -> float | None:
    """The mean Pearson r over the distinct pairs of ``truths``; None for fewer than two."""
    pairs = [pearson(first, second) for first, second in combinations(truths, 2)]
    return float(np.mean(pairs)) if pairs else None


def exchangeable_limit(mutual: float | None) -> float | None:
    """The identifiability ceiling of an exchangeable set whose pairs all correlate at
    ``mutual``, as it grows: sqrt(rho + (1 - rho) / N) tends to sqrt(rho)."""
    return None if mutual is None else float(np.sqrt(max(mutual, 0.0)))


def diagnose_case(case) -> dict:
    from shapley_svc.reference import exact_shapley

    outputs = case.predictions.reshape(len(case.X), -1)
    query = case.X[case.explained]
    background = case.X[case.background]
    explainer = fitted_explainer(case)
    ours = explainer.explain(query, case.predictions[case.explained]).values.reshape(
        case.truth.shape
    )
    truths = [case.truth]
    alternates = {}
    for name in DISTILLERS:
        predict = distilled(name, case.X, outputs, case.categorical)
        agreement = agreement_r2(predict(case.X), outputs)
        entry = {"agreement_r2": agreement}
        if agreement >= AGREEMENT_R2:
            truth = exact_shapley(predict, query, background).values.reshape(case.truth.shape)
            truths.append(truth)
            entry.update(r_with_target=pearson(truth, case.truth), ours_r=pearson(ours, truth))
        alternates[name] = entry
    agreeing = [a for a in alternates.values() if "r_with_target" in a]
    mutual = mutual_r(truths)
    return {
        "case": case.name,
        "family": case.family,
        "d": int(case.X.shape[1]),
        "outputs": int(outputs.shape[1]),
        "alternates": alternates,
        "n_agreeing": len(agreeing),
        "ours_r": pearson(ours, case.truth),
        "ours_mean_r_over_set": float(np.mean([pearson(ours, t) for t in truths])),
        "ceiling": identifiability_ceiling(truths) if agreeing else None,
        "mean_r_with_target": float(np.mean([a["r_with_target"] for a in agreeing]))
        if agreeing
        else None,
        "mutual_r": mutual,
        "alternates_mutual_r": mutual_r(truths[1:]),
        "limit": exchangeable_limit(mutual),
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summary(rows: list[dict]) -> dict:
    groups = {"all cases": rows}
    for family in sorted({row["family"] for row in rows}):
        groups[family] = [row for row in rows if row["family"] == family]
    found = {}
    for name, members in groups.items():
        with_set = [row for row in members if row["ceiling"] is not None]
        found[name] = {
            "cases": len(members),
            "cases_with_alternates": len(with_set),
            "alternates": int(sum(row["n_agreeing"] for row in members)),
            "mean_r_with_target": _mean(row["mean_r_with_target"] for row in with_set),
            "ceiling": _mean(row["ceiling"] for row in with_set),
            "alternates_mutual_r": _mean(row["alternates_mutual_r"] for row in with_set),
            "mutual_r": _mean(row["mutual_r"] for row in with_set),
            "limit": _mean(row["limit"] for row in with_set),
            "ours_mean_r_over_set": _mean(row["ours_mean_r_over_set"] for row in with_set),
            "ours_r": _mean(row["ours_r"] for row in with_set),
        }
    return found


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def plan_line(
    mode: str, rows: list[dict], n_background: int, n_explained: int, max_rows: int
) -> str:
    """The report's description of its cases: how many, of which target families, and the rows
    each case explains and mixes with."""
    families = ", ".join(dict.fromkeys(row["family"] for row in rows))
    return (
        f"{mode}: {len(rows)} cases, target families {families}; {n_background} background and "
        f"{n_explained} explained rows, at most {max_rows} context rows"
    )


def markdown(payload: dict) -> str:
    lines = [
        "# Identifiability: models that agree on the context, and their exact SHAP values",
        "",
        f"Machine: {payload['machine']}",
        "",
        f"Command: `{payload['command']}`; {payload['minutes']:.1f} minutes. Cases: "
        f"`bench refinement`'s real tables ({payload['plan']}). Alternates: {', '.join(DISTILLERS)}"
        f" regressors ({DISTILL_ROUNDS} rounds for the boosters; the MLP one-hot (64, 32); extra "
        "trees with a leaf per row, an exact interpolator) fitted "
        f"to the target's outputs on the context rows; kept where their outputs on the context "
        f"agree with the target's to R^2 >= {AGREEMENT_R2}. Ceiling: the highest mean Pearson r "
        "over the target and its agreeing alternates that one answer reaches (see the module "
        "docstring of `benchmarks/diagnose_identifiability.py`).",
        "",
        "| set | cases | with alternates | alternates | r(target, alternate) "
        "| r among alternates | mutual r | ceiling | limit "
        "| ours: mean r over the set | ours: r on the target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, group in payload["summary"].items():
        lines.append(
            f"| {name} | {group['cases']} | {group['cases_with_alternates']} | "
            f"{group['alternates']} | {_num(group['mean_r_with_target'])} | "
            f"{_num(group['alternates_mutual_r'])} | {_num(group['mutual_r'])} | "
            f"{_num(group['ceiling'])} | {_num(group['limit'])} | "
            f"{_num(group['ours_mean_r_over_set'])} | {_num(group['ours_r'])} |"
        )
    lines += [
        "",
        "r among alternates: over the cases with two or more. Mutual r: over every pair of the "
        "set, the target's included. Limit: sqrt(mutual r), the ceiling of an exchangeable set "
        "as it grows.",
    ]
    lines += [
        "",
        "Per case (each alternate: R^2 of its outputs against the target's on the context, "
        "then r of its values with the target's; * below the agreement threshold):",
        "",
        "| case | d | " + " | ".join(DISTILLERS) + " | ceiling | limit | ours r |",
        "| --- | --- | " + " | ".join("---" for _ in DISTILLERS) + " | --- | --- | --- |",
    ]
    for row in payload["cases"]:
        cells = []
        for name in DISTILLERS:
            entry = row["alternates"][name]
            if "r_with_target" in entry:
                cells.append(f"{entry['agreement_r2']:.3f}, r {entry['r_with_target']:.3f}")
            else:
                cells.append(f"{entry['agreement_r2']:.3f}*")
        lines.append(
            f"| {row['case']} | {row['d']} | " + " | ".join(cells) + f" | {_num(row['ceiling'])} | "
            f"{_num(row['limit'])} | {_num(row['ours_r'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 tables, 2 families")
    parser.add_argument(
        "--prior-families",
        action="store_true",
        help="target models of the prior's other families (" + ", ".join(PRIOR_FAMILIES) + ")",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.prior_families:
        plan = replace(plan, families=PRIOR_FAMILIES[: len(plan.families)])
    start = time.perf_counter()
    rows = []
    for case in enumerated_real_table_cases(plan):
        row = diagnose_case(case)
        rows.append(row)
        print(
            f"{row['case']:40s} agreeing {row['n_agreeing']} "
            f"r(target, alternates) {_num(row['mean_r_with_target'])} "
            f"ceiling {_num(row['ceiling'])} ours {row['ours_r']:.3f}",
            flush=True,
        )
    payload = {
        "machine": ", ".join(f"{k} {v}" for k, v in machine_info().items()),
        "command": shlex.join(
            ["python", "-m", MODULE]
            + ["--quick"] * args.quick
            + ["--prior-families"] * args.prior_families
        ),
        "minutes": (time.perf_counter() - start) / 60,
        "plan": plan_line(plan.mode, rows, plan.n_background, plan.n_explained, plan.max_rows),
        "agreement_r2": AGREEMENT_R2,
        "summary": summary(rows),
        "cases": rows,
    }
    stem = "identifiability" + ("_prior" if args.prior_families else "")
    stem += "_quick" if args.quick else ""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(payload))
    print(markdown(payload).split("\n\nPer case")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
