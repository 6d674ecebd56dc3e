"""What another weighing of today's zoo could gain on real tables: the gate against its rivals.

Issue 18 names the gate as the bottleneck. On `bench combiner`'s cases (every development table
as-is x the nine model families x the whole table and a 300-row context, exact truth), this
keeps each member's exact values of the explained rows, the gate's inputs (the context's
features) and the truth, and scores other ways of weighing the same members:

* the gate as shipped, and its softmax sharper or flatter (a temperature), or moved toward
  equal weights;
* each member alone (the exact-linear rule, which stands above the gate, kept for every rule);
* the gate refitted to the exact values of these real cases themselves: the same softmax of the
  same features, started from the shipped parameters and penalised toward them, fitted on four
  fifths of the tables and scored on the fifth it never saw (five folds by table);
* a nonlinear chooser: gradient-boosted trees predicting each member's error from the context's
  features and the member's own, weights a softmax of the predicted errors, tables held out the
  same way (alone, and half-and-half with the gate);
* in hindsight: the best member per output (an oracle, as in `bench combiner`).

With ``--candidate NAME`` (a member of ``bench_combiner.CANDIDATES``, not in the zoo;
repeatable), each context also fits it as the explainer fits its members (out of fold, against
the background), and the gate is refitted on held-out tables for the zoo alone and once with
each candidate beside it (its parameters started from the spline member's), the members'
features rebuilt the same way for every arm: what a gate retrained with that member could gain,
where the hindsight ceilings say only what it could reach.

Every rule's weights go through the same efficiency projection as ours (``combiner.combine``,
with the members' values as the explainer scales them and null players set to zero as explain
sets them). What explain does beyond that (class outputs balanced to sum to zero) is left out,
so the gate's replay, not ``explain``'s own r, is the baseline the rules compare to.

    python -m benchmarks.diagnose_gate            # 588 cases: 8 minutes on 2 cores, with
                                                  # the truth cached in benchmarks/.cache
    python -m benchmarks.diagnose_gate --quick    # 3 tables, 2 families
    python -m benchmarks.diagnose_gate --candidate kernel_machine   # 60 minutes beside a CI run
    python -m benchmarks.diagnose_gate --candidate kernel_machine --candidate anova_kernel  # 45 min

Writes ``gate.{md,json}`` to ``benchmarks/results/`` (``gate_quick.*``; ``gate_candidates.*``
with candidates).
"""

import argparse
import dataclasses
import json
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from sklearn.ensemble import HistGradientBoostingRegressor

from benchmarks._machine import machine_info
from benchmarks.accuracy_cases import pearson
from benchmarks.bench_combiner import (
    CANDIDATES,
    FAMILIES,
    QUICK_FAMILIES,
    QUICK_TABLES,
    WIDE_FROM,
    _as_3d,
    benchmark_cases,
    contexts_of,
    fit_context,
)
from shapley_svc.estimator.artifact import load_artifact
from shapley_svc.estimator.combiner import (
    CombinerParameters,
    combine,
    exact_linear_member,
    normalised_features,
    without_null_players,
)
from shapley_svc.estimator.context import GLOBAL_FEATURES, member_agreement, member_features
from shapley_svc.estimator.surrogates import (
    ZOO,
    Role,
    SurrogateKind,
    fit_surrogate,
    members_with_role,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SEED = 0
FOLDS = 5
TEMPERATURES = (0.5, 0.75, 1.5, 2.0)
TOWARD_EQUAL = (0.25, 0.5)
# The refit's penalty toward the shipped parameters, per squared unit of the parameters.
REFIT_PENALTIES = (0.01, 0.1)
CHOOSER_TEMPERATURES = (0.25, 0.5)
# A member's error as the chooser predicts it: log of its squared error over the truth's
# variance, floored so that exact members do not dominate the fit.
ERROR_FLOOR = 1e-4


@dataclass
class OutputCase:
    """One output of one case: what a weighing rule needs, and the truth.

    members : (S, m, P) each member's values as the explainer scales them (zeros if absent).
    available, features (G,) normalised, surrogate_features (S, F), weights (S,) the gate's,
    exact : the exact-linear rule took one member, spread_scale and floor : the stated terms,
    sums (m,) : what efficiency makes the values sum to, truth (m, P).
    """

    k: int
    members: np.ndarray
    available: np.ndarray
    features: np.ndarray
    surrogate_features: np.ndarray
    weights: np.ndarray
    exact: bool
    spread_scale: float
    floor: float
    sums: np.ndarray
    truth: np.ndarray
    # name -> (out-of-fold R^2, (m, P) values as the explainer scales them), with --candidate
    candidates: dict = field(default_factory=dict)


@dataclass
class GateCase:
    """One context of one table and family: its outputs, explain's own values and the truth."""

    table: str
    family: str
    task: str
    d: int
    context: str
    outputs: list[OutputCase]
    values: np.ndarray  # (m, P, K) explain's answer
    truth: np.ndarray  # (m, P, K)
    null: np.ndarray  # (m, P) the null players explain sets to zero


def collect_case(
    case, rows: np.ndarray, params: CombinerParameters, candidates: tuple[str, ...] = (), **meta
) -> GateCase:
    """The ``GateCase`` of the context ``rows`` of a benchmark case, with the ``candidates``
    (names in ``bench_combiner.CANDIDATES``) fitted on the context as members are."""
    explainer = fit_context(case, rows)
    query, predictions = case.X[case.explained], case.predictions[case.explained]
    explanation = explainer.explain(query, predictions)
    truth = _as_3d(case.truth)
    outputs_given = np.asarray(predictions, dtype=np.float64).reshape(len(query), -1)
    member_values = explainer.context_.member_values(explainer.encoder_.transform(query))
    context_outputs = np.asarray(case.predictions[rows], dtype=np.float64).reshape(len(rows), -1)
    fits = candidate_fits(explainer, candidates, case.X[rows], context_outputs, query)
    outputs = []
    for k, context in enumerate(explainer.context_.outputs):
        if context is None:
            continue
        spread_scale, floor = explainer._stated_terms(k)
        outputs.append(
            OutputCase(
                k=k,
                members=np.ascontiguousarray(explainer._scaled(member_values[k], k)),
                available=np.asarray(context.features.available, dtype=bool),
                features=normalised_features(context.features, params),
                surrogate_features=np.asarray(context.features.surrogate_features),
                weights=np.asarray(explainer.weights_[k], dtype=np.float64),
                exact=exact_linear_member(context.features) is not None,
                spread_scale=float(spread_scale),
                floor=float(floor),
                sums=outputs_given[:, k] - context.base_value,
                truth=truth[:, :, k],
                candidates=fits[k],
            )
        )
    return GateCase(
        **meta,
        outputs=outputs,
        values=_as_3d(explanation.values),
        truth=truth,
        null=explainer._null_players(query),
    )


def candidate_fits(
    explainer, names: tuple[str, ...], context_rows: np.ndarray, outputs: np.ndarray, query
) -> list[dict]:
    """Per output k, {name: (out-of-fold R^2, (m, P) values of ``query``)} of each candidate
    in ``names`` fitted on the context (``context_rows``, their (n, K) ``outputs``) as the
    explainer fits its members (``fit_surrogate``: folds, background, players), the values
    scaled as it scales its members'. The rows are encoded and standardised once."""
    if not names:
        return [{} for _ in range(outputs.shape[1])]
    standardised = explainer.context_.standardiser.transform
    design = standardised(explainer.encoder_.transform(context_rows))
    background = standardised(explainer.encoder_.transform(explainer.background_rows_))
    explained = standardised(explainer.encoder_.transform(query))
    found = []
    for k in range(outputs.shape[1]):
        fits = {}
        for name in names:
            kind = SurrogateKind(name, Role.SMOOTH, CANDIDATES[name][1])
            fitted = fit_surrogate(
                kind,
                design,
                outputs[:, k],
                explainer.random_state_,
                background,
                explainer.context_.players,
            )
            values = explainer.scales_[k] * fitted.model.attributions(explained)
            fits[name] = (float(fitted.oof_r2), values)
        found.append(fits)
    return found


def collect(
    tables, families, max_rows: int, use_cache: bool, progress, candidates: tuple[str, ...] = ()
) -> list[GateCase]:
    params = load_artifact().parameters
    cases = []
    for table, family, case in benchmark_cases(tables, families, max_rows, use_cache):
        meta = {"table": table.id, "family": family, "task": table.task, "d": int(case.X.shape[1])}
        for context, rows in contexts_of(case).items():
            cases.append(collect_case(case, rows, params, candidates, **meta, context=context))
        progress(f"{table.id}/{family}")
    return cases


# --- weighing rules: (OutputCase) -> (S,) weights ------------------------------------------


def gate(output: OutputCase) -> np.ndarray:
    return output.weights


def with_temperature(temperature: float):
    """The gate's softmax with its logits divided by ``temperature``."""

    def rule(output: OutputCase) -> np.ndarray:
        if output.exact:
            return output.weights
        logits = np.where(
            output.available, np.log(np.maximum(output.weights, 1e-300)) / temperature, -np.inf
        )
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    return rule


def toward_equal(share: float):
    """The gate's weights moved ``share`` of the way to equal weights over the members."""

    def rule(output: OutputCase) -> np.ndarray:
        if output.exact:
            return output.weights
        equal = output.available / output.available.sum()
        return (1.0 - share) * output.weights + share * equal

    return rule


def member_alone(member: int):
    """Member ``member`` alone where it applies (the gate's weights where it does not)."""

    def rule(output: OutputCase) -> np.ndarray:
        if output.exact or not output.available[member]:
            return output.weights
        return np.eye(len(output.weights))[member]

    return rule


def projected(output: OutputCase, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return combine(output.members, weights, output.spread_scale, output.floor, output.sums)


def case_values(case: GateCase, rule) -> np.ndarray:
    """(m, P, K) the case's values with ``rule``'s weights, projected as explain projects."""
    values = np.array(case.values)
    std = np.zeros_like(values)
    for output in case.outputs:
        values[:, :, output.k], std[:, :, output.k] = projected(output, rule(output))
    if case.null.any():
        values, std = without_null_players(values, std, case.null)
    return values


def best_member_in_hindsight(output: OutputCase) -> np.ndarray:
    """The available member whose projected values have the highest r with the truth."""
    if output.exact:
        return output.weights
    eye = np.eye(len(output.weights))
    scores = [
        pearson(projected(output, eye[s])[0], output.truth) if output.available[s] else -np.inf
        for s in range(len(eye))
    ]
    return eye[int(np.argmax(scores))]


# --- rules fitted on the real cases, scored on held-out tables --------------------------------


def table_folds(cases: list[GateCase], n_folds: int = FOLDS) -> list[set[str]]:
    """The tables split into ``n_folds`` seeded folds (fewer when there are fewer tables)."""
    tables = np.array(sorted({case.table for case in cases}))
    order = np.random.default_rng(SEED).permutation(len(tables))
    return [set(tables[order[f::n_folds]]) for f in range(min(n_folds, len(tables)))]


def flat_parameters(params: CombinerParameters) -> np.ndarray:
    return np.concatenate([params.gate_bias, params.gate_global.ravel(), params.gate_surrogate])


def softmax_weights(theta: np.ndarray, output: OutputCase) -> np.ndarray:
    """(S,) the gate's softmax with the flat parameters ``theta`` (``flat_parameters``)."""
    n_members, n_global = output.members.shape[0], output.features.size
    bias = theta[:n_members]
    global_ = theta[n_members : n_members * (1 + n_global)].reshape(n_members, n_global)
    logits = (
        bias
        + global_ @ output.features
        + output.surrogate_features @ theta[n_members * (1 + n_global) :]
    )
    logits = np.where(output.available, logits, -np.inf)
    weights = np.exp(logits - logits[output.available].max())
    return weights / weights.sum()


def refit_loss(theta: np.ndarray, outputs: list[OutputCase], start: np.ndarray, penalty: float):
    """Mean over ``outputs`` of the mix's squared error over the truth's variance (before the
    projection), plus ``penalty`` |theta - start|^2; and its gradient."""
    n_members = len(outputs[0].weights)
    n_global = outputs[0].features.size
    total, grad = 0.0, np.zeros_like(theta)
    for output in outputs:
        flat = output.members.reshape(n_members, -1)
        truth = output.truth.ravel()
        scale = max(float(np.sum((truth - truth.mean()) ** 2)), 1e-12)
        weights = softmax_weights(theta, output)
        residual = weights @ flat - truth
        total += residual @ residual / scale
        d_weights = 2.0 * (flat @ residual) / scale
        d_logits = np.where(output.available, weights * (d_weights - weights @ d_weights), 0.0)
        grad[:n_members] += d_logits
        grad[n_members : n_members * (1 + n_global)] += np.outer(d_logits, output.features).ravel()
        grad[n_members * (1 + n_global) :] += output.surrogate_features.T @ d_logits
    gap = theta - start
    return total / len(outputs) + penalty * gap @ gap, grad / len(outputs) + 2 * penalty * gap


def refitted_gate(train: list[OutputCase], start: np.ndarray, penalty: float) -> np.ndarray:
    """The gate's flat parameters fitted to ``train``'s truth (L-BFGS from ``start``)."""
    fitted = minimize(
        refit_loss,
        start,
        args=(train, start, penalty),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 300},
    )
    return fitted.x


def chooser_rows(output: OutputCase) -> tuple[np.ndarray, np.ndarray]:
    """(available members, features) of one output for the chooser: the context's features,
    the member's own, which member it is, and the best of each member feature."""
    members = np.flatnonzero(output.available)
    eye = np.eye(len(output.weights))
    best = output.surrogate_features[members].max(axis=0)
    rows = [
        np.concatenate([output.features, output.surrogate_features[s], eye[s], best])
        for s in members
    ]
    return members, np.array(rows)


def member_errors(output: OutputCase) -> np.ndarray:
    """log of each available member's squared error over the truth's variance."""
    truth = output.truth.ravel()
    scale = max(float(np.sum((truth - truth.mean()) ** 2)), 1e-12)
    members = np.flatnonzero(output.available)
    errors = [np.sum((output.members[s].ravel() - truth) ** 2) / scale for s in members]
    return np.log(np.array(errors) + ERROR_FLOOR)


def held_out_refit(cases: list[GateCase], start: np.ndarray, penalty: float) -> dict:
    """{id(output): weights} of the gate refitted (``refitted_gate``) with each output's table
    held out; the exact-linear rule's outputs keep their weights."""
    found = {}
    for fold in table_folds(cases):
        train = [o for c in cases if c.table not in fold for o in c.outputs if not o.exact]
        if not train:
            continue
        theta = refitted_gate(train, start, penalty)
        for output in (o for c in cases if c.table in fold for o in c.outputs):
            found[id(output)] = output.weights if output.exact else softmax_weights(theta, output)
    return found


def held_out_rules(cases: list[GateCase], params: CombinerParameters) -> dict[str, dict]:
    """Per fitted rule, {id(output): weights} fitted with the output's table held out."""
    found: dict[str, dict] = {
        f"refitted gate, penalty {p}": held_out_refit(cases, flat_parameters(params), p)
        for p in REFIT_PENALTIES
    }
    for tau in CHOOSER_TEMPERATURES:
        found[f"chooser, temperature {tau}"] = {}
        found[f"chooser, temperature {tau}, half gate"] = {}
    for fold in table_folds(cases):
        train = [o for c in cases if c.table not in fold for o in c.outputs if not o.exact]
        test = [o for c in cases if c.table in fold for o in c.outputs]
        if not train:
            continue
        features = np.concatenate([chooser_rows(o)[1] for o in train])
        errors = np.concatenate([member_errors(o) for o in train])
        model = HistGradientBoostingRegressor(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=SEED
        ).fit(features, errors)
        for output in test:
            members, rows = chooser_rows(output)
            predicted = model.predict(rows)
            for tau in CHOOSER_TEMPERATURES:
                weights = np.zeros(len(output.weights))
                logits = -predicted / tau
                weights[members] = np.exp(logits - logits.max())
                weights /= weights.sum()
                if output.exact:
                    weights = output.weights
                found[f"chooser, temperature {tau}"][id(output)] = weights
                found[f"chooser, temperature {tau}, half gate"][id(output)] = 0.5 * (
                    weights + output.weights
                )
    return found


def rules(cases: list[GateCase], params: CombinerParameters) -> dict:
    """Every rule by name: (OutputCase) -> weights."""
    found = {"gate (replayed)": gate}
    found.update({f"temperature {t}": with_temperature(t) for t in TEMPERATURES})
    found.update({f"toward equal weights, {a}": toward_equal(a) for a in TOWARD_EQUAL})
    found.update({f"{kind.name} alone": member_alone(s) for s, kind in enumerate(ZOO)})
    for name, weights in held_out_rules(cases, params).items():
        found[name] = lambda output, weights=weights: weights[id(output)]
    found["best member in hindsight"] = best_member_in_hindsight
    return found


# The smooth members, and where the gate's global features hold the best fit and the tree
# members' gain over the smooth ones: a candidate member changes both.
_SMOOTH = members_with_role(Role.SMOOTH)
_TREES = members_with_role(Role.TREE)
_BEST_FIT = GLOBAL_FEATURES.index("best_oof_r2")
_TREE_GAIN = GLOBAL_FEATURES.index("tree_gain")


def with_members(output: OutputCase, candidate: str | None, params) -> OutputCase:
    """``output`` as a gate would see it with ``candidate`` (a smooth member) beside the zoo's
    members, or the zoo alone (None), its member features rebuilt the same way in both: the
    members' agreement on the explained rows (the explainer takes it on 32 background rows), the
    best fit and the trees' gain over the smooth members recomputed."""
    members, available = output.members, output.available
    oof = np.where(available, output.surrogate_features[:, 0], 0.0)
    weights, smooth = output.weights, [s for s in _SMOOTH if available[s]]
    if candidate is not None:
        candidate_oof, values = output.candidates[candidate]
        members = np.concatenate([members, values[None]])
        available = np.append(available, True)
        oof = np.append(oof, np.clip(candidate_oof, -1.0, 1.0))
        weights = np.append(weights, 0.0)
        smooth = [*smooth, len(oof) - 1]
    best = oof[available].max()
    features = output.features.copy()
    raw = {_BEST_FIT: best, _TREE_GAIN: oof[_TREES].max() - oof[smooth].max()}
    for j, value in raw.items():
        features[j] = (value - params.feature_mean[j]) / params.feature_scale[j]
    return dataclasses.replace(
        output,
        members=np.ascontiguousarray(members),
        available=available,
        features=features,
        surrogate_features=member_features(oof, available, member_agreement(members, available)),
        weights=weights,
    )


def candidate_summaries(cases: list[GateCase], params, candidates: tuple[str, ...]) -> dict:
    """The gate refitted on held-out tables (penalty 0.1) with the member features rebuilt
    (``with_members``), for the zoo alone and with each candidate beside it (its parameters
    started from the spline member's), and each arm's best member in hindsight."""
    found = {}
    spline = [kind.name for kind in ZOO].index("spline")
    for candidate in (None, *candidates):
        arm = [
            dataclasses.replace(c, outputs=[with_members(o, candidate, params) for o in c.outputs])
            for c in cases
        ]
        start = flat_parameters(params)
        label = "the zoo"
        if candidate is not None:
            grown = dataclasses.replace(
                params,
                gate_bias=np.append(params.gate_bias, params.gate_bias[spline]),
                gate_global=np.vstack([params.gate_global, params.gate_global[spline]]),
            )
            start, label = flat_parameters(grown), f"the zoo + {CANDIDATES[candidate][0]}"
        weights = held_out_refit(arm, start, 0.1)
        found[f"refitted gate, features rebuilt, {label}"] = groups(
            arm, scored(arm, lambda output, weights=weights: weights[id(output)])
        )
        found[f"best member in hindsight, {label}"] = groups(
            arm, scored(arm, best_member_in_hindsight)
        )
    return found


def scored(cases: list[GateCase], rule) -> list[float]:
    return [pearson(case_values(case, rule), case.truth) for case in cases]


def groups(cases: list[GateCase], scores: list[float]) -> dict[str, float]:
    """Mean r over all cases, by context, d >= ``WIDE_FROM`` and by family."""
    scores_ = np.array(scores)

    def mean(mask) -> float | None:
        mask = np.asarray(mask, dtype=bool)
        return float(scores_[mask].mean()) if mask.any() else None

    found = {"all": mean(np.ones(len(cases)))}
    for context in ("full", "300"):
        found[f"context {context}"] = mean([c.context == context for c in cases])
    found[f"d >= {WIDE_FROM}"] = mean([c.d >= WIDE_FROM for c in cases])
    for family in sorted({c.family for c in cases}):
        found[family] = mean([c.family == family for c in cases])
    return found


def markdown(payload: dict) -> str:
    columns = list(next(iter(payload["summary"].values())))
    lines = [
        "# What another weighing of the zoo could gain on real tables",
        "",
        f"`{payload['settings']['command']}`: {payload['n_cases']} cases "
        f"({payload['machine']['cpus_available']} CPUs, {payload['seconds']:.0f} s); explain's "
        f"own mean r {payload['explain_mean_r']:.4f}. Mean Pearson r against the exact values; "
        "see the module docstring for each rule.",
        "",
        "| rule | " + " | ".join(columns) + " |",
        "| " + " | ".join(["---"] * (len(columns) + 1)) + " |",
    ]
    for rule, found in payload["summary"].items():
        cells = " | ".join("-" if found[c] is None else f"{found[c]:.4f}" for c in columns)
        lines.append(f"| {rule} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 small tables, 2 families")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        choices=sorted(CANDIDATES),
        help="also refit the gate with this member beside the zoo (repeatable; slow)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    if args.quick:
        tables, families, max_rows, use_cache, stem = (
            QUICK_TABLES,
            QUICK_FAMILIES,
            600,
            False,
            "gate_quick",
        )
    else:
        tables, families, max_rows, use_cache, stem = None, FAMILIES, 2_000, True, "gate"
    if args.candidate:
        stem += "_candidates"
    candidates = tuple(dict.fromkeys(args.candidate))
    cases = collect(tables, families, max_rows, use_cache, progress, candidates)
    params = load_artifact().parameters
    summary = {}
    for name, rule in rules(cases, params).items():
        summary[name] = groups(cases, scored(cases, rule))
        progress(f"{name}: {summary[name]['all']:.4f}")
    if candidates:
        summary.update(candidate_summaries(cases, params, candidates))
    payload = {
        "benchmark": "gate",
        "machine": machine_info(),
        "settings": {
            "mode": "quick" if args.quick else "full",
            "command": shlex.join(
                ["python", "-m", "benchmarks.diagnose_gate", *(argv or sys.argv[1:])]
            ),
            "seed": SEED,
            "folds": FOLDS,
            "families": list(families),
            "candidates": list(candidates),
        },
        "n_cases": len(cases),
        "explain_mean_r": float(np.mean([pearson(c.values, c.truth) for c in cases])),
        "summary": summary,
        "seconds": time.perf_counter() - started,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    text = markdown(payload)
    (args.out_dir / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
