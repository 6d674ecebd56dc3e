"""Fill the READMEs' example blocks from real runs, so no printed output can go stale.

Each block between ``<!-- example:NAME:start -->`` and ``<!-- example:NAME:end -->`` shows an
example's code (read from its file) and what running it printed. Examples that talk to the
service run against a server this script starts on a loopback port (``SHAPLEY_TARGET``).

    python scripts/update_readme_examples.py            # run every example, rewrite the blocks
    python scripts/update_readme_examples.py --check    # exit 1 if a block differs from a run
    python scripts/update_readme_examples.py --only demo estimator

Outputs are compared with durations masked (``1.4 s``, ``50.1 ms``): they are measured, not
part of the answer. Everything else, numbers and context ids included, is deterministic: every
example seeds its randomness, and context ids are content addresses.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NODE_CLIENT = ROOT / "clients" / "node"
BIN = Path(sys.executable).parent
DURATION = re.compile(r"\b\d[\d,]*(?:\.\d+)? ?(?:ms|s)\b")
# Full-precision floats (grpcurl prints the JSON's doubles whole) are compared to 12 significant
# digits: the same request gave 0.4332727065881969 on one machine and ...968 on another (another
# CPU, another summation order in the vectorised kernels), which is no stale example.
FULL_PRECISION = re.compile(r"-?\d+\.\d{13,}(?:[eE][-+]?\d+)?")
RUNS_AT_ONCE = 2  # examples run side by side (see ``outputs``)


@dataclass(frozen=True)
class Example:
    """How to run one example and where its block lives.

    ``code`` is shown in the block (None: the block shows the command and its output only);
    ``command`` runs it from ``cwd``; ``server`` says it needs a running server; ``max_lines``
    cuts a long output (the cut is said in the block).
    """

    readme: Path
    command: tuple[str, ...]
    code: Path | None = None
    language: str = "python"
    cwd: Path = ROOT
    server: bool = False
    max_lines: int | None = None
    needs: str | None = None  # an executable that must be on PATH (node)


EXAMPLES = {
    # The longest first: the others run beside them (``outputs``).
    "calibration": Example(
        README,
        (sys.executable, "examples/calibration.py"),
        ROOT / "examples" / "calibration.py",
    ),
    "refinement": Example(
        README,
        (sys.executable, "examples/refinement.py"),
        ROOT / "examples" / "refinement.py",
    ),
    "demo": Example(README, (str(BIN / "shapley-svc"), "demo")),
    "estimator": Example(
        README,
        (sys.executable, "examples/estimator_quickstart.py"),
        ROOT / "examples" / "estimator_quickstart.py",
    ),
    "real-table": Example(
        README,
        (sys.executable, "examples/real_table.py"),
        ROOT / "examples" / "real_table.py",
    ),
    "python-client": Example(
        README,
        (sys.executable, "clients/python/examples/quickstart.py"),
        ROOT / "clients" / "python" / "examples" / "quickstart.py",
        server=True,
    ),
    "python-client-table": Example(
        README,
        (sys.executable, "clients/python/examples/real_table.py"),
        ROOT / "clients" / "python" / "examples" / "real_table.py",
        server=True,
    ),
    "python-client-readme": Example(
        ROOT / "clients" / "python" / "README.md",
        (sys.executable, "clients/python/examples/quickstart.py"),
        ROOT / "clients" / "python" / "examples" / "quickstart.py",
        server=True,
    ),
    "python-client-table-readme": Example(
        ROOT / "clients" / "python" / "README.md",
        (sys.executable, "clients/python/examples/real_table.py"),
        ROOT / "clients" / "python" / "examples" / "real_table.py",
        server=True,
    ),
    "grpcurl": Example(
        README,
        ("bash", "examples/grpcurl_explain.sh"),
        ROOT / "examples" / "grpcurl_explain.sh",
        language="bash",
        server=True,
        max_lines=32,
    ),
    "node-client": Example(
        NODE_CLIENT / "README.md",
        ("node", "examples/quickstart.js"),
        NODE_CLIENT / "examples" / "quickstart.js",
        language="js",
        cwd=NODE_CLIENT,
        server=True,
        needs="node",
    ),
    "node-client-table": Example(
        NODE_CLIENT / "README.md",
        ("node", "examples/real_table.js"),
        NODE_CLIENT / "examples" / "real_table.js",
        language="js",
        cwd=NODE_CLIENT,
        server=True,
        needs="node",
    ),
}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- example:{name}:start -->", f"<!-- example:{name}:end -->"


def prepare(example: Example) -> None:
    """Install what the example's folder needs (the Node client's packages), once."""
    if (example.cwd / "package.json").exists() and not (example.cwd / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=example.cwd, check=True)


def run(example: Example, target: str | None) -> str:
    """What the example prints (stdout, then stderr if any), as a user would see it (after
    ``prepare``)."""
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if target is not None:
        env["SHAPLEY_TARGET"] = target
    result = subprocess.run(
        example.command, cwd=example.cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(example.command)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result.stdout.rstrip("\n")


def block(name: str, example: Example, output: str) -> str:
    """The generated block, markers included."""
    start, end = _markers(name)
    source = (
        example.code.relative_to(ROOT).as_posix()
        if example.code
        else " ".join(
            Path(part).name if part.startswith(str(BIN)) else part for part in example.command
        )
    )
    lines = [
        start,
        f"<!-- generated by scripts/update_readme_examples.py from {source}; do not edit -->",
    ]
    if example.code is not None:
        lines += [f"```{example.language}", example.code.read_text().rstrip("\n"), "```", ""]
        lines.append(
            "Its output (a real run; durations vary):"
            if DURATION.search(output)
            else "Its output (a real run):"
        )
        lines.append("")
    shown = output.splitlines()
    if example.max_lines is not None and len(shown) > example.max_lines:
        cut = len(shown) - example.max_lines
        shown = [*shown[: example.max_lines], f"... ({cut} more lines: the context's diagnostics)"]
    lines += ["```", *shown, "```", end]
    return "\n".join(lines)


def replace_block(text: str, name: str, new_block: str, path: Path) -> str:
    start, end = _markers(name)
    if text.count(start) != 1 or text.count(end) != 1:
        raise SystemExit(f"{path} must hold one {start} ... {end} pair")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return head + new_block + tail


def masked(text: str) -> str:
    """``text`` as the staleness check compares it: durations masked, long floats rounded."""
    rounded = FULL_PRECISION.sub(lambda found: f"{float(found.group()):.12g}", text)
    return DURATION.sub("<duration>", rounded)


def outputs(chosen: dict[str, Example], target: str | None) -> dict[str, str]:
    """Each chosen example's output. Examples that run the same command share one run, and
    ``RUNS_AT_ONCE`` run side by side: each is a process of its own, mostly single-threaded
    (imports, fits, the model's own predict): on 2 cores the check took 153 s one at a time and
    110 s two at a time; 82 s once the calibration example's SVR truth came from product games
    instead of enumeration (the example alone 83 s -> 26 s)."""
    runs: dict[tuple, list[str]] = {}
    for name, example in chosen.items():
        runs.setdefault((example.command, example.cwd, example.server), []).append(name)
    for names in runs.values():
        prepare(chosen[names[0]])  # before the runs: two in one folder would race
    with ThreadPoolExecutor(RUNS_AT_ONCE) as pool:
        started = {
            key: pool.submit(run, chosen[names[0]], target if key[2] else None)
            for key, names in runs.items()
        }
    return {name: started[key].result() for key, names in runs.items() for name in names}


def _serve():
    """A warmed-up server of this checkout on a loopback port, and its address."""
    from shapley_svc.server import Settings, start_server, warm_up

    running = start_server(Settings(address="127.0.0.1:0", metrics_address=""))
    warm_up(running)
    return running, f"127.0.0.1:{running.port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    parser.add_argument("--only", nargs="+", choices=sorted(EXAMPLES), help="these examples only")
    args = parser.parse_args(argv)
    chosen = {name: EXAMPLES[name] for name in (args.only or EXAMPLES)}
    skipped = [n for n, e in chosen.items() if e.needs and shutil.which(e.needs) is None]
    for name in skipped:
        print(f"skipped {name}: {chosen.pop(name).needs} is not installed", file=sys.stderr)
    running, target = _serve() if any(e.server for e in chosen.values()) else (None, None)
    stale = []
    try:
        printed = outputs(chosen, target)
        for name, example in chosen.items():
            output = printed[name]
            text = example.readme.read_text()
            updated = replace_block(text, name, block(name, example, output), example.readme)
            if masked(updated) != masked(text):
                stale.append(name)
            if updated != text and not args.check:
                example.readme.write_text(updated)  # fresh durations too
    finally:
        if running is not None:
            running.stop(1.0)
    if args.check and stale:
        print(f"stale example blocks: {', '.join(stale)}; run scripts/update_readme_examples.py")
        return 1
    print(("rewrote: " + ", ".join(stale)) if stale else "example blocks are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
