"""Time to first answer: a context loaded from a context directory against the same context fitted.

A replica or a restarted server asked for a context it does not hold either loads it from
``--context-dir`` or refits it from the spec. This measures both on an embedding-like context
(d = 1,024 columns, n = 10,000 rows, an MLP-like target), each in a fresh process-level service,
and the saved directory's size.

    python -m benchmarks.bench_saved_contexts            # d = 1,024, n = 10,000
    python -m benchmarks.bench_saved_contexts --quick    # d = 64, n = 2,000

Writes ``saved_contexts.{md,json}`` to ``benchmarks/results/`` (``*_quick.*`` in quick mode).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._machine import machine_info
from shapley_svc.contexts import ContextLimits, ContextService, ContextSpec

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LIMITS = ContextLimits(
    max_context_rows=100_000,
    max_features=4_096,
    max_outputs=16,
    max_explain_rows=10_000,
    max_answer_bytes=1 << 30,
    max_contexts=8,
    max_store_bytes=8 << 30,
)


def context(n: int, d: int, seed: int = 0) -> ContextSpec:
    """Rows on a few directions (as embeddings lie) and a small random network's probability."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, 16)) @ rng.normal(size=(16, d)) + 0.3 * rng.normal(size=(n, d))
    hidden = np.tanh(rows @ rng.normal(size=(d, 32)) / np.sqrt(d))
    logits = hidden @ rng.normal(size=32)
    return ContextSpec(rows, 1.0 / (1.0 + np.exp(-logits)))


def first_answer(service: ContextService, spec: ContextSpec, context_id: str | None) -> float:
    """Seconds from the request to the first explained row: ``get`` of a saved id, else a fit."""
    start = time.perf_counter()
    if context_id is None:
        entry, _ = service.get_or_create(spec)
    else:
        entry = service.get(context_id)
    service.explain(entry, spec.rows[:1], spec.predictions[:1])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, d = (2_000, 64) if args.quick else (10_000, 1_024)
    spec = context(n, d)
    with tempfile.TemporaryDirectory() as directory:
        fitting = ContextService(LIMITS, 2, context_dir=directory)
        fit_seconds = first_answer(fitting, spec, None)
        context_id = fitting.content_id(spec)
        fitting.shutdown()
        saved = Path(directory) / context_id
        saved_bytes = sum(path.stat().st_size for path in saved.iterdir())
        loading = ContextService(LIMITS, 2, context_dir=directory)
        load_seconds = first_answer(loading, spec, context_id)
        assert loading.contexts_loaded == 1
        loading.shutdown()
    result = {
        "machine": machine_info(),
        "n": n,
        "d": d,
        "fit_first_answer_seconds": fit_seconds,
        "load_first_answer_seconds": load_seconds,
        "speedup": fit_seconds / load_seconds,
        "saved_megabytes": saved_bytes / 1e6,
    }
    stem = "saved_contexts_quick" if args.quick else "saved_contexts"
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = (
        f"# Saved contexts: time to first answer (n = {n:,}, d = {d:,})\n\n"
        f"Machine: {result['machine']['date']}, {result['machine']['cpus_available']} CPUs.\n\n"
        "| path | seconds to the first answer |\n| --- | --- |\n"
        f"| fit from the spec | {fit_seconds:.2f} |\n"
        f"| load from the context directory | {load_seconds:.2f} |\n\n"
        f"Loading is {fit_seconds / load_seconds:.0f}x faster; the saved directory takes "
        f"{saved_bytes / 1e6:.1f} MB.\n"
    )
    (RESULTS_DIR / f"{stem}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
