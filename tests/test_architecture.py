"""The one-way arrows of the layout, checked by walking every import of the package.

server -> contexts -> estimator -> reference -> kernels; training -> estimator; spark ->
estimator; codecs know no estimator; nothing below the server imports grpc; only spark imports
pyspark; kernels import only numpy and numba.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = "shapley_svc"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Rooms of the package and the rooms each may import from (itself always allowed).
ALLOWED_ROOMS = {
    "kernels": set(),
    "reference": {"kernels"},
    "estimator": {"reference", "kernels"},
    "training": {"estimator", "reference", "kernels"},
    "codecs": set(),
    # Contexts as a service without a transport: the estimator's public API, no wire formats.
    "contexts": {"estimator"},
    # The server reaches the estimator through the context service and the estimator's public
    # API, never the layers below.
    "server": {"contexts", "estimator", "codecs", "_proto"},
    "_proto": set(),
    # Spark sits above the estimator as the server does: its public API and saved contexts.
    "spark": {"estimator"},
}
# Top-level modules (the CLI, the package's __init__) wire rooms together and may import any.
TOP_LEVEL = "<top>"
# Leaf modules at the top of the package that every room may import: the domain errors, where
# numba keeps the kernels' compiled code (which the server fills in parallel when cold), how
# many threads it runs them on (set before numba's import), and the byte form in which floats
# are hashed (context ids above the estimator, fingerprints and seeds in it).
SHARED_MODULES = {"errors", "_numba_cache", "_numba_threads", "canonical"}
GRPC_ROOMS = {"server", "_proto", TOP_LEVEL}
SPARK_ROOMS = {"spark"}
KERNEL_THIRD_PARTY = {"numpy", "numba", "math"}


def _room_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else TOP_LEVEL


def _imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """Absolute module names imported by a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = [PACKAGE, *path.relative_to(root).parts[:-1]]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((module, node.lineno))
    return found


def _violations(root: Path = ROOT) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        room = _room_of(path, root)
        where = path.relative_to(root.parent)
        for module, line in _imports(path, root):
            top = module.split(".")[0]
            if top == PACKAGE:
                parts = module.split(".")
                target = parts[1] if len(parts) > 1 else TOP_LEVEL
                if target in SHARED_MODULES:
                    continue
                if room in ALLOWED_ROOMS and target != room and target not in ALLOWED_ROOMS[room]:
                    problems.append(f"{where}:{line} ({room}) imports {module}")
            elif top in {"grpc", "grpc_health", "grpc_reflection"} and room not in GRPC_ROOMS:
                problems.append(f"{where}:{line} ({room}) imports {module}: grpc is server-only")
            elif top == "pyspark" and room not in SPARK_ROOMS:
                problems.append(f"{where}:{line} ({room}) imports {module}: pyspark is spark-only")
            elif room == "kernels" and top not in KERNEL_THIRD_PARTY and top != "__future__":
                problems.append(f"{where}:{line} (kernels) imports {module}: kernels are numba")
    return problems


def test_package_has_the_rooms_it_declares():
    rooms = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms <= set(ALLOWED_ROOMS), f"undeclared rooms: {rooms - set(ALLOWED_ROOMS)}"
    assert {"kernels", "reference"} <= rooms


def test_imports_point_one_way():
    problems = _violations()
    assert not problems, "imports against the layout:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("room", "source", "expected"),
    [
        ("kernels", "from shapley_svc.reference import exact_shapley", "imports shapley_svc"),
        ("reference", "import grpc", "grpc is server-only"),
        ("kernels", "import scipy.special", "kernels are numba"),
        ("reference", "from ..estimator import x", "imports shapley_svc.estimator"),
        ("contexts", "import grpc", "grpc is server-only"),
        ("contexts", "from shapley_svc.server import status", "imports shapley_svc.server"),
        ("contexts", "from shapley_svc.codecs import decode_tensor", "imports shapley_svc.codecs"),
        ("estimator", "import pyspark.sql", "pyspark is spark-only"),
        ("server", "from pyspark.sql import DataFrame", "pyspark is spark-only"),
        ("spark", "from shapley_svc.server import app", "imports shapley_svc.server"),
        ("spark", "from shapley_svc.contexts import store", "imports shapley_svc.contexts"),
    ],
)
def test_the_checker_catches_violations(tmp_path, room, source, expected):
    fake_root = tmp_path / PACKAGE
    (fake_root / room).mkdir(parents=True)
    (fake_root / room / "module.py").write_text(source + "\n")
    problems = _violations(fake_root)
    assert any(expected in problem for problem in problems), problems
