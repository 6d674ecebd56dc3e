"""numba's cache stays out of the installed package (issue 16): where it goes, and who decides."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
