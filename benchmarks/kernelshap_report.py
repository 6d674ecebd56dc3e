"""Summaries, Markdown, README block and plots of the KernelSHAP comparison (``bench_kernelshap``).

Pure functions of the JSON payload the benchmark writes, so that the README can be regenerated
from the committed JSON (``scripts/update_readme_benchmarks.py``) without re-running anything.
Only the plots need matplotlib, imported when they are drawn.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BUDGETS = ("1d", "2d", "4d", "10d", "default")
README_START = "<!-- bench:kernelshap:start -->"
README_END = "<!-- bench:kernelshap:end -->"
BENCH_EXTRA_HINT = "pip install 'shapley-svc[bench]'"
PLOTS = ("accuracy_vs_time", "by_family", "by_d")
LOAD_LIMIT = 0.10  # share of the CPUs other processes may take before times are flagged

# Published figures of ExplainerPFN (arXiv 2601.23068, 2026): mean Pearson r over 11 UCI data sets
# against exact SHAP. Its weights need a download at run time, which this machine cannot do.
QUOTED_EXPLAINERPFN: dict[str, Any] = {
    "label": "ExplainerPFN (quoted, not re-run: weights cannot be downloaded here)",
    "source": (
        "arXiv 2601.23068 (2026): 11 small UCI binary data sets, d = 4-10, exact SHAP truth, "
        "MLP(12,12) and RF(500) targets"
    ),
    "pearson": {"mlp": 0.40, "random_forest": 0.44},
    "jaccard": {"mlp": 0.42, "random_forest": 0.35},
    "seconds_per_1000_cells": [0.8, 0.9],
    "pearson_by_d_synthetic": {"4": 0.85, "16": 0.47, "20": 0.47},
}


def method_label(method: str) -> str:
    if method == "zero_shot":
        return "ZeroShotExplainer (ours)"
    if method == "surrogate":
        return "best single surrogate (boosted trees)"
    if method.startswith("kernelshap_"):
        budget = method.removeprefix("kernelshap_")
        return "KernelSHAP, default budget" if budget == "default" else f"KernelSHAP, {budget}"
    return method


def kernel_methods(methods: Sequence[str]) -> list[str]:
    """The KernelSHAP methods present, cheapest budget first."""
    return [f"kernelshap_{b}" for b in BUDGETS if f"kernelshap_{b}" in methods]


def equivalent_budget(ours: float, kernel: Mapping[str, float], digits: int = 3) -> str:
    """The smallest KernelSHAP budget whose accuracy matches or beats ``ours``.

    ``kernel`` maps budget labels ("1d", "2d", "4d", "10d", "default") to accuracies. Values are
    compared as the report prints them (rounded to ``digits``), so a printed tie counts as a match.
    Returns the label, or "> LARGEST" naming the largest budget that was run when none matches.
    """
    ran = [b for b in BUDGETS if b in kernel]
    if not ran:
        raise ValueError("no KernelSHAP budget to compare with")
    for budget in ran:
        if round(kernel[budget], digits) >= round(ours, digits):
            return budget
    return f"> {ran[-1]}"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarise_group(cases: list[dict]) -> dict:
    """Mean accuracies and median time per row of each method over ``cases``."""
    methods = list(cases[0]["methods"])
    summary: dict[str, Any] = {"cases": len(cases), "methods": {}}
    for method in methods:
        scores = [case["methods"][method] for case in cases]
        times = [s["seconds_per_row"] for s in scores]
        entry = {
            "pearson": _mean([s["pearson"] for s in scores]),
            "jaccard": _mean([s["jaccard"] for s in scores]),
            "r2": _mean([s["r2"] for s in scores]),
            # The mean of R^2 is dominated by KernelSHAP's wildest case at 1d-2d (-1e30 and
            # worse); the median says what a typical case looks like.
            "r2_median": float(np.median([s["r2"] for s in scores])),
            "seconds_per_row_median": float(np.median(times)),
            "seconds_per_row_min": float(np.min(times)),
            "seconds_per_row_max": float(np.max(times)),
        }
        if method == "zero_shot":
            explain = [s["explain_seconds_per_row"] for s in scores]
            entry["explain_seconds_per_row_median"] = float(np.median(explain))
            entry["pearson_all_rows"] = _mean([s["pearson_all_rows"] for s in scores])
        summary["methods"][method] = entry
    kernel = {
        m.removeprefix("kernelshap_"): summary["methods"][m]["pearson"]
        for m in kernel_methods(methods)
    }
    if kernel:
        summary["equivalent_budget"] = equivalent_budget(
            summary["methods"]["zero_shot"]["pearson"], kernel
        )
        counts = Counter(case["equivalent_budget"] for case in cases)
        order = [*kernel, f"> {list(kernel)[-1]}"]
        summary["equivalent_budget_per_case"] = {b: counts[b] for b in order if counts[b]}
    return summary


def summarise(cases: list[dict]) -> dict:
    """Overall, by model family, by d and by source (public data sets or synthetic)."""
    families = sorted({case["family"] for case in cases})
    dims = sorted({case["d"] for case in cases})
    sources = sorted({case["source"] for case in cases})
    return {
        "overall": summarise_group(cases),
        "by_family": {f: summarise_group([c for c in cases if c["family"] == f]) for f in families},
        "by_d": {str(d): summarise_group([c for c in cases if c["d"] == d]) for d in dims},
        "by_source": {s: summarise_group([c for c in cases if c["source"] == s]) for s in sources},
    }


def _ms(seconds: float) -> str:
    ms = seconds * 1000.0
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 1:
        return f"{ms:.1f} ms"
    return f"{ms:.3f} ms"


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _partial(payload: dict) -> str:
    """What a run that is not the full benchmark was."""
    cases, rows = payload["summary"]["overall"]["cases"], payload["settings"]["kernel_rows"]
    if payload["mode"] == "quick":
        return f"Quick mode, a smoke run: {cases} cases, {rows} rows each"
    return f"A subset of the cases (--only): {cases} cases, {rows} rows each"


def _load_warning(payload: dict) -> list[str]:
    """A warning when other processes competed for the CPUs: the times are then not clean."""
    share = payload.get("foreign_cpu_share")
    if share is None:
        return []
    busy = [c["case"] for c in payload["cases"] if (c.get("foreign_cpu_share") or 0.0) > LOAD_LIMIT]
    if share <= LOAD_LIMIT and not busy:
        return [f"Other processes used {share:.0%} of the CPUs during the run.", ""]
    return [
        f"> **Warning**: other processes used {share:.0%} of the CPUs during the run (more than "
        f"{LOAD_LIMIT:.0%} during {len(busy)} of {len(payload['cases'])} cases). Times are then "
        "inflated, the numba-parallel ones (ours, the surrogate's TreeSHAP) most; re-run on an "
        "idle machine before quoting them.",
        "",
    ]


def headline_table(payload: dict) -> list[str]:
    """One row per method: mean accuracies over every case and the median time per row."""
    overall = payload["summary"]["overall"]
    rows_compared = payload["settings"]["kernel_rows"]
    lines = [
        f"| method (all {overall['cases']} cases, {rows_compared} rows each) | mean Pearson r "
        "| mean top-d/3 Jaccard | median R^2 | time per explained row, median (range over cases) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, s in overall["methods"].items():
        time_cell = (
            f"{_ms(s['seconds_per_row_median'])} ({_ms(s['seconds_per_row_min'])} - "
            f"{_ms(s['seconds_per_row_max'])})"
        )
        label = method_label(method)
        if method == "zero_shot":
            label += ", fit + explain"
            time_cell += f"; explain only {_ms(s['explain_seconds_per_row_median'])}"
        lines.append(
            f"| {label} | {_f(s['pearson'])} | {_f(s['jaccard'])} | {_f(s['r2_median'])} "
            f"| {time_cell} |"
        )
    quoted = payload.get("quoted", QUOTED_EXPLAINERPFN)
    low, high = quoted["seconds_per_1000_cells"]
    lines.append(
        f"| {quoted['label']} | {quoted['pearson']['mlp']:.2f} (MLP) / "
        f"{quoted['pearson']['random_forest']:.2f} (RF) | {quoted['jaccard']['mlp']:.2f} / "
        f"{quoted['jaccard']['random_forest']:.2f} | - | {low}-{high} s per 1,000 row x feature "
        "cells (other data sets) |"
    )
    return lines


def _equivalent_sentence(summary: dict) -> str:
    if "equivalent_budget" not in summary:
        return ""
    per_case = ", ".join(f"{b}: {n}" for b, n in summary["equivalent_budget_per_case"].items())
    return (
        f"Equivalent KernelSHAP budget (the smallest whose mean r matches ours): "
        f"**{summary['equivalent_budget']}**; case by case: {per_case}."
    )


def _group_table(groups: dict, key_label: str, methods: list[str], extra: dict | None) -> list[str]:
    kernel = kernel_methods(methods)
    header = [key_label, "cases", "ours r", "surrogate r"]
    header += [f"KS {m.removeprefix('kernelshap_')} r" for m in kernel]
    header += ["equivalent budget", "ours ms/row (fit+explain / explain)"]
    if kernel:
        header.append(f"KS {kernel[-1].removeprefix('kernelshap_')} ms/row")
    if extra is not None:
        header.append(extra["title"])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for key, g in groups.items():
        m = g["methods"]
        cells = [str(key), str(g["cases"]), _f(m["zero_shot"]["pearson"])]
        cells.append(_f(m["surrogate"]["pearson"]) if "surrogate" in m else "-")
        cells += [_f(m[k]["pearson"]) for k in kernel]
        cells.append(g.get("equivalent_budget", "-"))
        z = m["zero_shot"]
        cells.append(
            f"{_ms(z['seconds_per_row_median'])} / {_ms(z['explain_seconds_per_row_median'])}"
        )
        if kernel:
            cells.append(_ms(m[kernel[-1]]["seconds_per_row_median"]))
        if extra is not None:
            value = extra["values"].get(str(key))
            cells.append("-" if value is None else f"{value:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def where_we_lose(payload: dict) -> list[str]:
    """Plain statements of the cases where a cheaper or simpler method does as well or better."""
    cases = payload["cases"]
    notes = []
    cheap = [
        c
        for c in cases
        if c["equivalent_budget"] in ("1d", "2d") and "kernelshap_1d" in c["methods"]
    ]
    if cheap:
        notes.append(
            "KernelSHAP at 1d or 2d coalitions already matches our r on "
            + ", ".join(f"{c['case']} ({c['equivalent_budget']})" for c in cheap)
            + "."
        )
    surrogate = [
        c
        for c in cases
        if "surrogate" in c["methods"]
        and round(c["methods"]["surrogate"]["pearson"], 3)
        > round(c["methods"]["zero_shot"]["pearson"], 3)
    ]
    if surrogate:
        notes.append(
            "The single boosted-tree surrogate beats us on "
            + ", ".join(
                f"{c['case']} ({c['methods']['surrogate']['pearson']:.3f} vs "
                f"{c['methods']['zero_shot']['pearson']:.3f})"
                for c in surrogate
            )
            + "."
        )
    kernel = kernel_methods(list(cases[0]["methods"]))
    if kernel:
        largest = kernel[-1]
        faster = [
            c
            for c in cases
            if c["methods"][largest]["seconds_per_row"]
            <= c["methods"]["zero_shot"]["seconds_per_row"]
        ]
        if faster:
            notes.append(
                f"KernelSHAP at its {largest.removeprefix('kernelshap_')} budget costs no more "
                "time per row than our fit + explain (the fit spread over the rows compared) on "
                + ", ".join(
                    f"{c['case']} ({_ms(c['methods'][largest]['seconds_per_row'])} vs "
                    f"{_ms(c['methods']['zero_shot']['seconds_per_row'])})"
                    for c in faster
                )
                + ": small d and cheap models make the real model cheap to call, and we pay a fit."
            )
        exact = [c["case"] for c in cases if c["methods"][largest].get("enumerates_all")]
        if exact:
            notes.append(
                f"At d <= 11 KernelSHAP's {largest.removeprefix('kernelshap_')} budget enumerates "
                "every coalition and is exact (r = 1 up to the truth's own error): "
                + ", ".join(exact)
                + ". With access to a cheap model, use it there."
            )
    worst = sorted(cases, key=lambda c: c["methods"]["zero_shot"]["pearson"])[:3]
    notes.append(
        "Our weakest cases: "
        + ", ".join(f"{c['case']} (r {c['methods']['zero_shot']['pearson']:.3f})" for c in worst)
        + "."
    )
    noisy = [c for c in cases if c["truth_ceiling_r"] < 0.99]
    if noisy:
        notes.append(
            "Sampled truth limits the attainable r (ceiling from its standard errors) on "
            + ", ".join(f"{c['case']} ({c['truth_ceiling_r']:.3f})" for c in noisy)
            + "."
        )
    return notes


def plot_names(suffix: str) -> dict[str, str]:
    return {plot: f"kernelshap_{plot}{suffix}.png" for plot in PLOTS}


def markdown(payload: dict) -> str:
    """The full report."""
    settings, summary, info = payload["settings"], payload["summary"], payload["machine"]
    methods = list(summary["overall"]["methods"])
    lines = ["# ZeroShotExplainer against KernelSHAP: accuracy and cost", ""]
    if payload["mode"] != "full":
        lines += [f"> **{_partial(payload)}**: not the benchmark's figures.", ""]
    lines += [
        f"Measured {info['date']} with `{payload['command']}` in "
        f"{payload['elapsed_seconds'] / 60:.1f} minutes.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "date"),
        "",
        *_load_warning(payload),
        f"Setup: {len(payload['cases'])} cases ({settings['case_description']}). Each case's "
        f"context is every row of its data set with the model's outputs; "
        f"{settings['background_rows']} background rows and {settings['explained_rows']} "
        f"explained rows are drawn with a fixed seed. Every method is scored on the same "
        f"{settings['kernel_rows']} of those rows (KernelSHAP is run on those only), against the "
        "same truth, with the same background. KernelSHAP: `shap.KernelExplainer(model output, "
        "background)`, `l1_reg=False`, `np.random.seed(0)` before each call, budgets "
        + ", ".join(settings["budgets"])
        + " coalitions (default = 2d + 2048); its time includes its calls to the real model. "
        "Ours: `ZeroShotExplainer(random_state=0)` fitted on all rows and outputs, then "
        f"`explain` of all {settings['explained_rows']} rows with their outputs; time per row = "
        f"the fit spread over the {settings['kernel_rows']} rows compared (KernelSHAP's rows) + "
        "explain per row, and explain only. The surrogate: boosted trees fitted on (rows, "
        "outputs), TreeSHAP, residual split equally.",
        "",
        "## Headline",
        "",
        *headline_table(payload),
        "",
        _equivalent_sentence(summary["overall"]),
        "",
        f"Our mean r on all {settings['explained_rows']} explained rows per case: "
        f"{summary['overall']['methods']['zero_shot']['pearson_all_rows']:.3f}.",
        "",
        "## By model family",
        "",
    ]
    quoted = payload.get("quoted", QUOTED_EXPLAINERPFN)
    lines += _group_table(
        summary["by_family"],
        "family",
        methods,
        {"title": "ExplainerPFN r (quoted)", "values": quoted["pearson"]},
    )
    lines += [
        "",
        "## By number of features d",
        "",
        *_group_table(
            summary["by_d"],
            "d",
            methods,
            {
                "title": "ExplainerPFN r (quoted, its synthetic data)",
                "values": quoted["pearson_by_d_synthetic"],
            },
        ),
        "",
        "## By source",
        "",
        *_group_table(summary["by_source"], "source", methods, None),
        "",
        "## Where we lose",
        "",
        *[f"- {note}" for note in where_we_lose(payload)],
        "",
        "## Per case",
        "",
    ]
    kernel = kernel_methods(methods)
    header = ["case", "d", "truth", "ceiling r", "ours r", "surrogate r"]
    header += [f"KS {m.removeprefix('kernelshap_')} r" for m in kernel]
    header += ["equivalent", "ours ms/row (fit+explain / explain)"]
    header += [f"KS {m.removeprefix('kernelshap_')} ms/row" for m in kernel[-1:]]
    header += ["case s", "other load"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for c in payload["cases"]:
        m = c["methods"]
        cells = [c["case"], str(c["d"]), c["truth_method"], _f(c["truth_ceiling_r"])]
        cells += [_f(m["zero_shot"]["pearson"]), _f(m["surrogate"]["pearson"])]
        cells += [_f(m[k]["pearson"]) for k in kernel]
        cells += [
            c["equivalent_budget"],
            f"{_ms(m['zero_shot']['seconds_per_row'])} / "
            f"{_ms(m['zero_shot']['explain_seconds_per_row'])}",
        ]
        cells += [_ms(m[k]["seconds_per_row"]) for k in kernel[-1:]]
        share = c.get("foreign_cpu_share")
        cells += [f"{c.get('case_seconds', 0.0):.0f}", "-" if share is None else f"{share:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    names = plot_names(payload["plot_suffix"])
    lines += [
        "",
        "## Plots",
        "",
        f"![accuracy against time per row]({names['accuracy_vs_time']})",
        "",
        f"![accuracy by model family]({names['by_family']})",
        "",
        f"![accuracy against d]({names['by_d']})",
        "",
        "## How to read this",
        "",
        "- Pearson r is over every cell (row x feature x output) of a case, then averaged over "
        "cases; Jaccard compares the top floor(d/3) features by |phi| per row; R^2 is "
        "1 - SS_residual / SS_total over the cells (the headline gives its median over cases; "
        "the JSON also has the mean).",
        "- Truth: enumeration up to 12 features (13 for the bundled data sets), TreeSHAP for "
        f"random forests, otherwise unbiased permutation sampling ({settings['sampling_budget']:,} "
        "model calls per row) with a standard error; 'ceiling r' is the r a perfect method "
        "could reach against that noisy truth.",
        "- At 1d-2d coalitions KernelSHAP solves an under-determined weighted regression: a few "
        "wild values can make its R^2 hugely negative while its r stays moderate.",
        "- Our time per row spreads one fit over the rows compared; with more rows it "
        "falls towards the explain-only figure. KernelSHAP's grows with the model's cost and "
        "the background's size.",
        f"- ExplainerPFN: {quoted['source']}. Its figures are quoted from the paper and were "
        "not measured here.",
        "",
    ]
    return "\n".join(lines)


def readme_block(payload: dict, json_path: str) -> str:
    """What goes between the README's markers: generated, never typed by hand."""
    info, summary = payload["machine"], payload["summary"]
    lines = [
        README_START,
        f"<!-- generated by scripts/update_readme_benchmarks.py from {json_path}; do not edit -->",
    ]
    if payload["mode"] != "full":
        lines += [
            "",
            f"> **{_partial(payload)}**: these are not the benchmark's figures; regenerate "
            "from a full run.",
        ]
    warning = _load_warning(payload)
    if warning and warning[0].startswith(">"):
        lines += ["", *warning[:1]]
    lines += [
        "",
        f"Measured {info['date'][:10]} on {info['cpus_available']} CPUs ({info['processor']}, "
        f"{info['platform']}; Python {info['python']}, shap {info['shap']}, scikit-learn "
        f"{info['sklearn']}) with `{payload['command']}`:",
        "",
        *headline_table(payload),
        "",
        _equivalent_sentence(summary["overall"]),
        "",
    ]
    names = plot_names(payload["plot_suffix"])
    results = Path(json_path).parent.as_posix()
    report = Path(json_path).with_suffix(".md").as_posix()
    if payload["mode"] == "full":
        lines += [
            f"![accuracy against time per explained row]({results}/{names['accuracy_vs_time']})",
            "",
            f"By model family, by d, per case and where we lose: [{report}]({report}).",
        ]
    else:
        lines.append(
            f"A {payload['mode']} run's report ({report}) and plots "
            f"({results}/{names['accuracy_vs_time']} and two more) are not committed."
        )
    lines.append(README_END)
    return "\n".join(lines)


def replace_readme_block(readme: str, block: str) -> str:
    """``readme`` with the span between the block's own first and last lines (its markers)
    replaced by the block."""
    first, last = block.split("\n", 1)[0], block.rsplit("\n", 1)[-1]
    start, end = readme.find(first), readme.find(last)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {first} ... {last} markers")
    return readme[:start] + block + readme[end + len(last) :]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(f"the plots need matplotlib: {BENCH_EXTRA_HINT}") from None
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _colours(methods: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    blues = plt.get_cmap("Blues")
    kernel = kernel_methods(methods)
    colours: dict[str, Any] = {"zero_shot": "tab:red", "surrogate": "tab:green"}
    for i, method in enumerate(kernel):
        colours[method] = blues(0.35 + 0.6 * i / max(1, len(kernel) - 1))
    return colours


def _title(payload: dict, text: str) -> str:
    mode = payload["mode"]
    return text if mode == "full" else f"{text} ({_partial(payload)})"


def _finish(fig, ax, path: Path) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()
    _pyplot().close(fig)


def plot_accuracy_vs_time(payload: dict, path: Path) -> None:
    """Mean r against the median time per row: one point per method and KernelSHAP budget."""
    plt = _pyplot()
    overall = payload["summary"]["overall"]["methods"]
    methods = list(overall)
    colours = _colours(methods)
    fig, ax = plt.subplots(figsize=(10, 5.2))
    kernel = kernel_methods(methods)
    ax.plot(
        [overall[m]["seconds_per_row_median"] * 1e3 for m in kernel],
        [overall[m]["pearson"] for m in kernel],
        color="tab:blue",
        lw=1,
        alpha=0.5,
    )
    for method in methods:
        s = overall[method]
        x, y = s["seconds_per_row_median"] * 1e3, s["pearson"]
        label = method_label(method)
        if method == "zero_shot":
            label += ", fit + explain"
        ax.scatter(x, y, color=colours[method], s=60, zorder=3, label=label)
        if method in kernel:
            budget = method.removeprefix("kernelshap_")
            ax.annotate(budget, (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    z = overall["zero_shot"]
    x_explain = z["explain_seconds_per_row_median"] * 1e3
    ax.plot([x_explain, z["seconds_per_row_median"] * 1e3], [z["pearson"]] * 2, "r:", lw=1)
    ax.scatter(
        x_explain,
        z["pearson"],
        color="tab:red",
        marker="D",
        s=40,
        zorder=3,
        label="ZeroShotExplainer (ours), explain only (fit done)",
    )
    quoted = payload.get("quoted", QUOTED_EXPLAINERPFN)
    # The paper gives seconds per 1,000 cells; at d = 10, its largest data sets, that is per row.
    q_ms = float(np.mean(quoted["seconds_per_1000_cells"])) * 10
    q_r = float(np.mean(list(quoted["pearson"].values())))
    ax.scatter(
        q_ms,
        q_r,
        facecolors="none",
        edgecolors="grey",
        s=60,
        zorder=3,
        label="ExplainerPFN at d = 10 (quoted, other data, not re-run)",
    )
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.set_xlim(low / 2, high * 2)
    ax.set_xlabel("time per explained row, median over cases (ms, log scale)")
    ax.set_ylabel(f"mean Pearson r over {payload['summary']['overall']['cases']} cases")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(_title(payload, "Accuracy against cost per explained row"), fontsize=10)
    _finish(fig, ax, path)


def _bars(payload: dict, groups: dict, xlabel: str, title: str, path: Path, extra: dict) -> None:
    plt = _pyplot()
    methods = list(payload["summary"]["overall"]["methods"])
    colours = _colours(methods)
    keys = list(groups)
    width = 0.8 / (len(methods) + 1)
    fig, ax = plt.subplots(figsize=(max(9.0, 1.2 * len(keys) + 5), 4.8))
    positions = np.arange(len(keys))
    for i, method in enumerate(methods):
        values = [groups[k]["methods"][method]["pearson"] for k in keys]
        ax.bar(
            positions + i * width, values, width, color=colours[method], label=method_label(method)
        )
    values = [extra["values"].get(str(k), np.nan) for k in keys]
    ax.bar(
        positions + len(methods) * width,
        values,
        width,
        color="white",
        edgecolor="grey",
        hatch="//",
        label=extra["label"],
    )
    ax.set_xticks(positions + width * len(methods) / 2)
    ax.set_xticklabels([f"{k}\n({groups[k]['cases']} cases)" for k in keys], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean Pearson r")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.axhline(0.0, color="black", lw=0.5)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(_title(payload, title), fontsize=10)
    _finish(fig, ax, path)


def plot_by_family(payload: dict, path: Path) -> None:
    quoted = payload.get("quoted", QUOTED_EXPLAINERPFN)
    _bars(
        payload,
        payload["summary"]["by_family"],
        "model family",
        "Accuracy by model family",
        path,
        {"values": quoted["pearson"], "label": "ExplainerPFN (quoted, other data)"},
    )


def plot_by_d(payload: dict, path: Path) -> None:
    plt = _pyplot()
    groups = payload["summary"]["by_d"]
    methods = list(payload["summary"]["overall"]["methods"])
    colours = _colours(methods)
    dims = [int(d) for d in groups]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for method in methods:
        values = [groups[str(d)]["methods"][method]["pearson"] for d in dims]
        style = "-o" if method in ("zero_shot", "surrogate") else "--."
        ax.plot(dims, values, style, color=colours[method], label=method_label(method))
    quoted = payload.get("quoted", QUOTED_EXPLAINERPFN)
    qd = [int(d) for d in quoted["pearson_by_d_synthetic"]]
    ax.scatter(
        qd,
        list(quoted["pearson_by_d_synthetic"].values()),
        facecolors="none",
        edgecolors="grey",
        label="ExplainerPFN (quoted, its synthetic data)",
        zorder=3,
    )
    ticks = sorted(set(dims) | set(qd))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(d) for d in ticks])
    ax.set_xlabel(
        "number of features d (log scale); each point: the mean over the cases with that d"
    )
    ax.set_ylabel("mean Pearson r")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.grid(True, alpha=0.3)
    ax.set_title(_title(payload, "Accuracy against the number of features"), fontsize=10)
    _finish(fig, ax, path)


def write_plots(payload: dict, out_dir: Path) -> list[Path]:
    names = plot_names(payload["plot_suffix"])
    drawers = {
        "accuracy_vs_time": plot_accuracy_vs_time,
        "by_family": plot_by_family,
        "by_d": plot_by_d,
    }
    paths = []
    for plot, draw in drawers.items():
        path = out_dir / names[plot]
        draw(payload, path)
        paths.append(path)
    return paths
