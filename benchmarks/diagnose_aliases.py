"""Aliases and the uncertainty stated for them: 80 % coverage of the exact values.

Columns that the context's rows cannot tell apart (``shapley_svc.estimator.aliases``) split
their joint value as the surrogates' habits say, not as the model does. For every development
table that has such sets and at most ``MAX_ENUMERATED_FEATURES`` columns (exact truth by
enumeration), and each of ``bench combiner``'s model families, the explainer is fitted on the
whole table (up to 2,000 rows; the combiner's 40 background rows and 12 explained rows) and
its values' 80 % intervals are scored against the exact ones, three ways from the same fit:

* ``without``: the uncertainty as stated before aliases were found (the members' alone);
* ``uniform``: what ``explain`` states, the members' plus the spread of every split of the set's
  joint value, taken as equally likely (``widened_for_aliases``);
* ``corners``: the members' plus the spread of the set's joint value on one member at a time.

Coverage is reported for the aliases' values and for all values, per family and overall.

    python -m benchmarks.diagnose_aliases            # 6 tables x 9 families: about 15 minutes
    python -m benchmarks.diagnose_aliases --quick    # 1 table, 2 families

Writes ``aliases.{md,json}`` (``aliases_quick.*`` with ``--quick``) to ``benchmarks/results/``.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._machine import machine_info
from benchmarks.accuracy_cases import pearson
from benchmarks.bench_combiner import FAMILIES, N_BACKGROUND, N_EXPLAINED, Z_80, _as_3d
from benchmarks.real_tables import MAX_ENUMERATED_FEATURES, build_case, encode
from shapley_svc import ZeroShotExplainer
from shapley_svc.estimator.aliases import alias_sets
from shapley_svc.training.tables import load_table, table_specs

MODULE = "benchmarks.diagnose_aliases"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MAX_ROWS = 2_000
QUICK_TABLES = ("ces11",)
QUICK_FAMILIES = ("linear", "xgboost")
STATEMENTS = ("without", "uniform", "corners")


def corner_spread(
    values: np.ndarray, std: np.ndarray, sets: list[list[int]], null: np.ndarray
) -> np.ndarray:
    """(m, P, K) ``std`` widened by the mean square error of each alias's value when the set's
    joint value T lies on one member: ((T - phi_j)^2 + (a - 1) phi_j^2) / a."""
    variance = std**2
    for members in sets:
        index = np.asarray(members, dtype=np.int64)
        live = ~null[:, index]
        part = np.where(live[:, :, None], values[:, index], 0.0)
        size = live.sum(axis=1)[:, None, None].astype(np.float64)
        total = part.sum(axis=1, keepdims=True)
        spread = ((total - part) ** 2 + (size - 1) * part**2) / np.maximum(size, 1.0)
        variance[:, index] += np.where(live[:, :, None] & (size >= 2), spread, 0.0)
    return np.sqrt(variance)


def tables_with_aliases(only: tuple[str, ...] | None) -> list:
    """The development tables (as-is) with alias sets and exact truth by enumeration."""
    found = []
    for spec in table_specs():
        if only is not None and spec["id"] not in only:
            continue
        table = load_table(spec, max_rows=MAX_ROWS)
        encoded = encode(table, "as_is")
        if encoded is None or encoded[0].shape[1] > MAX_ENUMERATED_FEATURES:
            continue
        if alias_sets(encoded[0], encoded[1]):
            found.append(table)
    return found


def diagnose_case(case) -> dict:
    kwargs = {"background": case.background}
    if case.categorical.size:
        kwargs["categorical"] = case.categorical.tolist()
    explainer = ZeroShotExplainer(random_state=0).fit(case.X, case.predictions, **kwargs)
    sets = explainer.alias_sets
    query, predictions = case.X[case.explained], case.predictions[case.explained]
    stated = explainer.explain(query, predictions)
    explainer.__dict__.pop("alias_sets_")
    without = explainer.explain(query, predictions)
    values, truth = _as_3d(stated.values), _as_3d(case.truth)
    null = explainer._null_players(query)
    stds = {
        "without": _as_3d(without.uncertainty),
        "uniform": _as_3d(stated.uncertainty),
        "corners": corner_spread(values, _as_3d(without.uncertainty), sets, null),
    }
    alias = np.zeros(truth.shape[1], dtype=bool)
    alias[[j for members in sets for j in members]] = True
    coverage = {}
    for name, std in stds.items():
        inside = np.abs(values - truth) <= Z_80 * std
        coverage[name] = {
            "aliases": float(inside[:, alias].mean()),
            "all": float(inside.mean()),
        }
    return {
        "table": case.table,
        "family": case.family,
        "d": int(case.X.shape[1]),
        "k": 1 if case.predictions.ndim == 1 else int(case.predictions.shape[1]),
        "alias_sets": [[case.feature_names[j] for j in members] for members in sets],
        "pearson": pearson(values, truth),
        "values_unchanged": bool(np.array_equal(stated.values, without.values)),
        "coverage_80": coverage,
    }


def _means(rows: list[dict]) -> dict:
    return {
        name: {
            part: float(np.mean([row["coverage_80"][name][part] for row in rows]))
            for part in ("aliases", "all")
        }
        for name in STATEMENTS
    }


def summary(rows: list[dict]) -> dict:
    families = sorted({row["family"] for row in rows})
    return {
        "cases": len(rows),
        "tables": sorted({row["table"] for row in rows}),
        "overall": _means(rows),
        "by_family": {f: _means([r for r in rows if r["family"] == f]) for f in families},
    }


def markdown(payload: dict) -> str:
    overall = payload["summary"]["overall"]
    lines = [
        "# Aliases: 80 % coverage of the exact values",
        "",
        f"Measured on {payload['machine']} with `{payload['command']}` in "
        f"{payload['minutes']:.0f} minutes; {payload['summary']['cases']} cases on "
        f"{', '.join(payload['summary']['tables'])} (full contexts, {N_BACKGROUND} background "
        f"rows, {N_EXPLAINED} explained).",
        "",
        "| family | aliases: without | uniform (stated) | corners | all values: without | "
        "uniform (stated) | corners |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups = {**payload["summary"]["by_family"], "all cases": overall}
    for label, means in groups.items():
        lines.append(
            f"| {label} | "
            + " | ".join(f"{means[name]['aliases']:.3f}" for name in STATEMENTS)
            + " | "
            + " | ".join(f"{means[name]['all']:.3f}" for name in STATEMENTS)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 table, 2 families")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    families = QUICK_FAMILIES if args.quick else FAMILIES
    rows = []
    for table in tables_with_aliases(QUICK_TABLES if args.quick else None):
        for family in families:
            case = build_case(
                table,
                "as_is",
                family,
                n_background=N_BACKGROUND,
                n_explained=N_EXPLAINED,
                use_cache=not args.quick,
            )
            if case is None:
                continue
            row = diagnose_case(case)
            rows.append(row)
            print(
                f"{case.table}/{family:24s} aliases "
                + " ".join(
                    f"{name} {row['coverage_80'][name]['aliases']:.3f}" for name in STATEMENTS
                ),
                flush=True,
            )
    payload = {
        "machine": ", ".join(f"{k} {v}" for k, v in machine_info().items()),
        "command": shlex.join(["python", "-m", MODULE] + ["--quick"] * args.quick),
        "minutes": (time.perf_counter() - start) / 60,
        "summary": summary(rows),
        "cases": rows,
    }
    stem = "aliases_quick" if args.quick else "aliases"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
