"""numba's cache stays out of the installed package (issue 16): where it goes, and who decides."""

import ast
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shapley_svc import _numba_cache
from shapley_svc._numba_cache import numba_cache_dir


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"NUMBA_CACHE_DIR": "/mine", "XDG_CACHE_HOME": "/xdg"}, "/mine"),
        ({"NUMBA_CACHE_DIR": "", "XDG_CACHE_HOME": "/xdg"}, "/xdg/shapley-svc/numba"),
        ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/shapley-svc/numba"),
        ({"XDG_CACHE_HOME": ""}, str(Path.home() / ".cache/shapley-svc/numba")),
    ],
)
def test_the_users_setting_wins_then_the_xdg_cache(environ, expected):
    assert numba_cache_dir(environ) == expected


@pytest.mark.parametrize("numba_first", [False, True])
@pytest.mark.parametrize("own", [None, "own-cache"])
def test_numba_caches_where_the_package_says(tmp_path, numba_first, own):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    if own is not None:
        env["NUMBA_CACHE_DIR"] = str(tmp_path / own)
    # numba's own view, from a fresh interpreter: the directory it will cache the kernels in.
    order = "numba, shapley_svc" if numba_first else "shapley_svc, numba"
    code = f"import {order}; print(numba.config.CACHE_DIR)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    expected = tmp_path / (own or "shapley-svc/numba")
    assert result.stdout.strip() == str(expected), result.stderr


# --- a cold cache, filled by processes side by side ---------------------------------------------

KERNEL_MODULES = sorted(
    path.stem for path in _numba_cache.KERNELS_FOLDER.glob("*.py") if path.stem != "__init__"
)


def _kernel_imports() -> dict[str, set[str]]:
    """Per kernel module, the kernel modules it imports (read from the sources)."""
    found = {}
    for name in KERNEL_MODULES:
        tree = ast.parse((_numba_cache.KERNELS_FOLDER / f"{name}.py").read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        found[name] = {m.rsplit(".", 1)[1] for m in modules if m and m.startswith("shapley_svc.k")}
    return found


def test_every_kernel_module_has_a_compile_time_and_its_imports():
    assert sorted(_numba_cache.KERNEL_COMPILE_SECONDS) == KERNEL_MODULES
    imports = {name: set(_numba_cache.KERNEL_IMPORTS.get(name, ())) for name in KERNEL_MODULES}
    assert imports == _kernel_imports()


def _modules(groups: list[list[str]]) -> list[str]:
    return sorted(name for group in groups for name in group)


def _cache_holding(tmp_path: Path, modules: list[str]) -> dict[str, str]:
    environ = {"NUMBA_CACHE_DIR": str(tmp_path)}
    folder = _numba_cache.kernels_cache_folder(environ)
    folder.mkdir(parents=True)
    for name in modules:
        (folder / f"{name}.some_kernel-12.py311.nbi").touch()
    return environ


def test_a_cold_cache_is_shared_by_compile_time_with_imports_kept_together(tmp_path):
    groups = _numba_cache.cold_kernel_groups(2, _cache_holding(tmp_path, []))
    assert len(groups) == 2 and _modules(groups) == KERNEL_MODULES
    for importer, imported in _numba_cache.KERNEL_IMPORTS.items():
        assert any(importer in group and set(imported) <= set(group) for group in groups)
    seconds = [sum(_numba_cache.KERNEL_COMPILE_SECONDS[name] for name in g) for g in groups]
    assert max(seconds) <= 0.55 * sum(seconds), seconds  # the halves take about as long
    # With a process for each, every module is alone but for the ones it imports.
    imported = {name for names in _numba_cache.KERNEL_IMPORTS.values() for name in names}
    many = _numba_cache.cold_kernel_groups(16, _cache_holding(tmp_path / "b", []))
    assert len(many) == len(KERNEL_MODULES) - len(imported)


def test_only_the_modules_numba_has_not_cached_are_compiled(tmp_path):
    cached = [m for m in KERNEL_MODULES if m not in ("link_additive", "treeshap", "tree_outputs")]
    groups = _numba_cache.cold_kernel_groups(2, _cache_holding(tmp_path, cached))
    assert _modules(groups) == ["link_additive", "tree_outputs", "treeshap"]
    # Nothing to share: one cold module, one core, or a warm cache leave it to the import.
    one_cold = _cache_holding(tmp_path / "b", [m for m in KERNEL_MODULES if m != "splines"])
    assert _numba_cache.cold_kernel_groups(2, one_cold) == []
    assert _numba_cache.cold_kernel_groups(1, _cache_holding(tmp_path / "c", [])) == []
    assert _numba_cache.cold_kernel_groups(2, _cache_holding(tmp_path / "d", KERNEL_MODULES)) == []
    # A cache numba cannot write to (here: under a file) is left to numba's own fallback.
    (tmp_path / "a-file").touch()
    unusable = {"NUMBA_CACHE_DIR": str(tmp_path / "a-file" / "numba")}
    assert _numba_cache.cold_kernel_groups(2, unusable) == []


def test_processes_fill_the_cache_and_a_failed_one_is_reported_not_raised(tmp_path):
    environ = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    failures = _numba_cache.compile_in_processes([["splines"], ["combine"]], environ=environ)
    assert failures == []
    # numba's own locator wrote them where the cold check looks: only the others are cold.
    cold = _modules(_numba_cache.cold_kernel_groups(2, environ))
    assert cold == [m for m in KERNEL_MODULES if m not in ("splines", "combine")]
    failures = _numba_cache.compile_in_processes([["no_such_kernel"]], environ=environ)
    assert len(failures) == 1 and failures[0].startswith("no_such_kernel: exit 1:")
    assert "ModuleNotFoundError" in failures[0]


def test_processes_compile_the_copy_the_server_imported_not_the_one_in_its_folder(tmp_path):
    """As after `pip install .` in a checkout: the server runs from the checkout, whose own
    copy of the package lies in the working directory, and imports the installed copy."""
    installed = tmp_path / "site-packages"
    shutil.copytree(
        _numba_cache.KERNELS_FOLDER.parent,
        installed / "shapley_svc",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # A console script's sys.path starts with its bin folder, not with the working directory.
    code = (
        "import sys; sys.path.pop(0); from shapley_svc import _numba_cache as c; "
        f"assert c.__file__.startswith({str(installed)!r}), c.__file__; "
        "print(c.compile_in_processes([['splines'], ['combine']]))"
    )
    environ = {**os.environ, "PYTHONPATH": str(installed), "NUMBA_CACHE_DIR": str(tmp_path / "nc")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=_numba_cache.KERNELS_FOLDER.parents[1],  # the checkout, its own shapley_svc beside
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]
    source = os.path.abspath(installed / "shapley_svc" / "kernels")
    folders = [path.name for path in (tmp_path / "nc").iterdir()]
    assert folders == [f"kernels_{hashlib.sha1(source.encode()).hexdigest()}"], folders
