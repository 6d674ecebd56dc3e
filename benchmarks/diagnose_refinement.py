"""Where refinement's error comes from, on the refinement benchmark's real-table cases.

Refine merges two estimates of each explained row's values (``shapley_svc.estimator.refinement``):
the zero-shot one (the prior) and the pairs' unbiased one, each pair a coalition, its complement
and one background row. Per budget (d, 2d, 4d, 10d model rows per explained row) this reports the
mean Pearson r against the exact values of:

* zero-shot: the prior alone;
* pairs alone: the estimate from the proposal's pairs (mixed with one background row each, or
  with the background's centre where refine chooses it: ``Proposal.centre``);
* refined: what ``refine`` returns (the merge);
* best share in hindsight: per row and output, the point between the prior and the pairs' estimate
  closest to the truth, an oracle that bounds any merge weighing the two per row;
* pairs over every background row: the same coalitions, each scored against every background row
  instead of one (n_background times the model rows) and averaged. Its distance from "pairs
  alone" is the share of the pairs' error that comes from drawing one background row per pair
  rather than from drawing the coalitions.

    python -m benchmarks.diagnose_refinement            # the 50 cases: about 2.5 minutes
    python -m benchmarks.diagnose_refinement --quick    # 2 tables, 2 families

Writes ``refinement_noise.{md,json}`` to ``benchmarks/results/`` (``refinement_noise_quick.*``).
"""

import argparse
import dataclasses
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

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
MULTIPLES = (1, 2, 4, 10)
ESTIMATES = (
    ("zero_shot", "zero-shot"),
    ("pairs", "pairs alone"),
    ("refined", "refined"),
    ("best_share", "best share in hindsight"),
    ("pairs_every_background", "pairs over every background row"),
)


def best_share_in_hindsight(
    prior: np.ndarray, estimate: np.ndarray, truth: np.ndarray
) -> np.ndarray:
    """Per row and output of (m, P, K) arrays, the point prior + s (estimate - prior), s in
    [0, 1], nearest the truth over the row's P values."""
    step = estimate - prior
    norm = np.sum(step * step, axis=1, keepdims=True)
    reach = np.sum(step * (truth - prior), axis=1, keepdims=True)
    share = np.clip(np.divide(reach, norm, out=np.zeros_like(norm), where=norm > 0), 0.0, 1.0)
    return prior + share * step


def pairs_over_every_background(explainer, predict, proposal) -> np.ndarray:
    """(m, P, K) the pairs' unbiased estimate with each of ``proposal``'s coalitions scored
    against every background row and averaged: the estimate is linear in the pair gaps, so the
    average of the per-background-row estimates is the estimate from the averaged gaps."""
    from shapley_svc.kernels.coalitions import fill_paired_rows

    n_background = explainer.background_rows_.shape[0]
    m = proposal.query.shape[0]
    block = proposal.lead + 2 * proposal.n_pairs
    total = None
    for row in range(n_background):
        picks = np.full_like(proposal.background, row)
        rows = np.empty((m * block, proposal.rows.shape[1]))
        fill_paired_rows(
            proposal.query,
            explainer.background_rows_,
            explainer._player_of_column(),
            proposal.masks,
            picks,
            proposal.lead,
            rows.reshape(m, block, -1),
        )
        # The values' pairs alone (no scale pairs: those measure the centre's game).
        moved = dataclasses.replace(
            proposal,
            rows=rows,
            rows_per_query=block,
            background=picks,
            centre=False,
            scale_masks=None,
            scale_background=None,
        )
        refined = explainer._refinement_parts(moved, predict(rows)).refined
        total = refined if total is None else total + refined
    return total / n_background


def diagnose_case(explainer, predict, query, predictions, truth) -> dict:
    """Per budget multiple, the r of each estimate (``ESTIMATES``) against ``truth``."""
    d = query.shape[1]
    shaped = truth.reshape(truth.shape[0], truth.shape[1], -1)
    results = {}
    for multiple in MULTIPLES:
        proposal = explainer.propose(query, multiple * d, predictions, random_state=SEED)
        parts = explainer._refinement_parts(proposal, predict(proposal.rows))
        estimates = {
            "zero_shot": parts.prior,
            "pairs": parts.refined,
            "refined": explainer._merged(parts, proposal.n_pairs)[0],
            "best_share": best_share_in_hindsight(parts.prior, parts.refined, shaped),
            "pairs_every_background": pairs_over_every_background(explainer, predict, proposal),
        }
        results[str(multiple)] = {
            key: pearson(np.ravel(values), shaped.ravel()) for key, values in estimates.items()
        }
    return results


def cases(plan, progress) -> list[dict]:
    rows = []
    for case in enumerated_real_table_cases(plan):
        found = diagnose_case(
            fitted_explainer(case),
            case.predict,
            case.X[case.explained],
            case.predictions[case.explained],
            case.truth,
        )
        d = int(case.X.shape[1])
        rows.append({"case": case.name, "family": case.family, "d": d, "r": found})
        progress(f"{case.name}: " + ", ".join(_cells(found["4"])) + " at 4d")
    return rows


def _cells(found: dict) -> list[str]:
    return [f"{label} {found[key]:.3f}" for key, label in ESTIMATES]


def summary(rows: list[dict]) -> dict:
    return {
        str(multiple): {
            key: float(np.mean([row["r"][str(multiple)][key] for row in rows]))
            for key, _ in ESTIMATES
        }
        for multiple in MULTIPLES
    }


def markdown(payload: dict) -> str:
    labels = " | ".join(label for _, label in ESTIMATES)
    rule = "| " + " | ".join(["---"] * (len(ESTIMATES) + 1)) + " |"
    lines = [
        "# Where refinement's error comes from",
        "",
        f"`{payload['settings']['command']}`, {len(payload['cases'])} real-table cases "
        f"({payload['machine']['cpus_available']} CPUs, {payload['seconds']:.0f} s). Mean Pearson "
        "r against the exact values; see the module docstring for what each column is.",
        "",
        f"| rows per explained row | {labels} |",
        rule,
    ]
    for multiple, found in payload["summary"].items():
        cells = " | ".join(f"{found[key]:.3f}" for key, _ in ESTIMATES)
        lines.append(f"| {multiple}d | {cells} |")
    lines += ["", "## Per case at 4d", "", f"| case | {labels} |", rule]
    for row in payload["cases"]:
        cells = " | ".join(f"{row['r']['4'][key]:.3f}" for key, _ in ESTIMATES)
        lines.append(f"| {row['case']} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 small tables, 2 families")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    plan = QUICK if args.quick else FULL
    stem = "refinement_noise" if plan.mode == "full" else "refinement_noise_quick"
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    rows = cases(plan, progress)
    payload = {
        "benchmark": "refinement_noise",
        "machine": machine_info(),
        "settings": {
            "mode": plan.mode,
            "command": shlex.join(
                ["python", "-m", "benchmarks.diagnose_refinement", *(argv or sys.argv[1:])]
            ),
            "seed": SEED,
            "multiples": list(MULTIPLES),
            "tables": list(plan.tables),
            "families": list(plan.families),
            "n_background": plan.n_background,
            "n_explained": plan.n_explained,
        },
        "summary": summary(rows),
        "cases": rows,
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
