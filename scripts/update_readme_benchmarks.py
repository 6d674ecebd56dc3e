"""Fill the README's benchmark blocks from the benchmarks' JSON reports.

The blocks between ``<!-- bench:kernelshap:start -->`` and ``<!-- bench:kernelshap:end -->``
(``shapley-svc bench accuracy``), between ``<!-- bench:service:start -->`` and
``<!-- bench:service:end -->`` (``shapley-svc bench service``), between
``<!-- bench:embeddings:start -->`` and ``<!-- bench:embeddings:end -->``
(``shapley-svc bench embeddings``), between ``<!-- bench:real_tables:start -->`` and
``<!-- bench:real_tables:end -->`` (``shapley-svc bench real-tables``) and between
``<!-- bench:refinement:start -->`` and ``<!-- bench:refinement:end -->``
(``shapley-svc bench refinement``) and between ``<!-- bench:combiner:start -->`` and
``<!-- bench:combiner:end -->`` (``shapley-svc bench combiner``) are generated: tables,
plot link, machine, date and command all come from the JSON the benchmark wrote, so no number
in them is typed by hand.

    python scripts/update_readme_benchmarks.py           # from benchmarks/results/*.json
    python scripts/update_readme_benchmarks.py --json benchmarks/results/kernelshap_quick.json
    python scripts/update_readme_benchmarks.py --check   # exit 1 when the README is stale
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the checkout, not an installed package

from benchmarks import (  # noqa: E402
    bench_combiner,
    bench_embeddings,
    bench_real_tables,
    bench_refinement,
    bench_service,
)
from benchmarks import kernelshap_report as kernelshap  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_JSON = (
    RESULTS / "kernelshap.json",
    RESULTS / "service.json",
    RESULTS / "embeddings.json",
    RESULTS / "real_tables.json",
    RESULTS / "refinement.json",
    RESULTS / "combiner.json",
)
README = ROOT / "README.md"
BLOCKS = {
    "kernelshap": kernelshap.readme_block,
    "service": bench_service.readme_block,
    "embeddings": bench_embeddings.readme_block,
    "real_tables": bench_real_tables.readme_block,
    "refinement": bench_refinement.readme_block,
    "combiner": bench_combiner.readme_block,
}


def render(readme: str, json_path: Path) -> str:
    """The README with the block of the report at ``json_path`` regenerated from it."""
    payload = json.loads(json_path.read_text())
    block = BLOCKS.get(payload.get("benchmark"))
    if block is None:
        raise SystemExit(f"{json_path} is not a report of {' or '.join(BLOCKS)}")
    try:
        shown = json_path.resolve().relative_to(ROOT).as_posix()
    except ValueError:  # a report outside the checkout: name it as given
        shown = json_path.as_posix()
    return kernelshap.replace_readme_block(readme, block(payload, shown))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json",
        type=Path,
        action="append",
        help="a report's JSON (default: every full report the README quotes)",
    )
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a block is stale"
    )
    args = parser.parse_args(argv)
    paths = args.json or list(DEFAULT_JSON)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(
            f"{', '.join(map(str, missing))} not found: run `shapley-svc bench accuracy` and "
            "`shapley-svc bench service` first, or pass --json",
            file=sys.stderr,
        )
        return 2
    readme = args.readme.read_text()
    updated = readme
    for path in paths:
        updated = render(updated, path)
    if args.check:
        if updated != readme:
            print(
                f"{args.readme}'s benchmark blocks do not match {', '.join(map(str, paths))}: "
                "run python scripts/update_readme_benchmarks.py",
                file=sys.stderr,
            )
            return 1
        return 0
    args.readme.write_text(updated)
    print(f"{args.readme}: benchmark blocks regenerated from {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
