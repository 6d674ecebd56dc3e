"""numba's thread count follows the CPUs the process may use, its CPU quota counted."""

import os
import subprocess
import sys

import pytest

from shapley_svc._numba_threads import cap_numba_threads


def test_a_quota_below_the_schedulable_cpus_caps_numba_threads(monkeypatch):
    monkeypatch.delitem(sys.modules, "numba", raising=False)  # as before numba's import
    environ = {}
    assert cap_numba_threads(environ, lambda: 2, lambda: 64) == 2
    assert environ == {"NUMBA_NUM_THREADS": "2"}


@pytest.mark.parametrize(
    ("environ", "usable", "schedulable"),
    [
        ({"NUMBA_NUM_THREADS": "8"}, 2, 64),  # the user's choice stands
        ({}, 64, 64),  # no quota binds: numba's own default
        ({}, 4, 2),  # a quota above the schedulable CPUs changes nothing
    ],
)
def test_nothing_changes_where_the_user_chose_or_no_quota_binds(
    monkeypatch, environ, usable, schedulable
):
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    before = dict(environ)
    assert cap_numba_threads(environ, lambda: usable, lambda: schedulable) is None
    assert environ == before


def test_nothing_changes_once_numba_has_read_its_setting():
    import numba  # noqa: F401  (imported: its thread count is fixed)

    environ = {}
    assert cap_numba_threads(environ, lambda: 1, lambda: 64) is None
    assert environ == {}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 schedulable CPUs")
def test_numba_starts_with_the_cpus_joblib_counts():
    """joblib counts the cgroup quota, and LOKY_MAX_CPU_COUNT below it: a fresh process capped
    to 1 CPU that way starts numba with 1 thread."""
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    script = (
        "from shapley_svc._numba_threads import cap_numba_threads\n"
        "print(cap_numba_threads())\n"
        "import numba\n"
        "print(numba.config.NUMBA_NUM_THREADS)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**environ, "LOKY_MAX_CPU_COUNT": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == ["1", "1"]
