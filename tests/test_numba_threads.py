"""numba's thread count follows the CPUs the process may use, its CPU quota counted."""

import os
import subprocess
import sys

import pytest

from shapley_svc._numba_threads import cap_numba_threads, cpu_quota, schedulable_cpus, usable_cpus


def _cgroup(root, v2=None, v1=None):
    if v2 is not None:
        (root / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (root / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return root


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [
        ("200000 100000", None, 2.0),  # cgroup v2: 2 CPUs
        ("150000 100000", None, 1.5),
        ("max 100000", None, None),  # v2 without a quota
        (None, (50000, 100000), 0.5),  # cgroup v1
        (None, (-1, 100000), None),  # v1 without a quota
        (None, None, None),  # no cgroup files
        ("garbage", (300000, 100000), 3.0),  # an unreadable v2 file: v1's
    ],
)
def test_the_quota_is_read_from_cgroup_v2_else_v1(tmp_path, v2, v1, expected):
    assert cpu_quota(_cgroup(tmp_path, v2, v1), tmp_path / "no membership") == expected


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.mark.parametrize(
    ("membership", "files", "expected"),
    [
        # a systemd unit's CPUQuota=, below the root (cgroup v2)
        (
            "0::/system.slice/svc.service",
            {"system.slice/svc.service/cpu.max": "150000 100000"},
            1.5,
        ),
        # the kernel enforces every level: the smallest quota on the way up binds
        (
            "0::/system.slice/svc.service",
            {"system.slice/cpu.max": "100000 100000", "system.slice/svc.service/cpu.max": "max 1"},
            1.0,
        ),
        # cgroup v1's cpu hierarchy, the controllers listed together
        (
            "4:cpu,cpuacct:/user.slice/job\n0::/user.slice/job",
            {
                "cpu/user.slice/job/cpu.cfs_quota_us": "50000",
                "cpu/user.slice/job/cpu.cfs_period_us": "100000",
            },
            0.5,
        ),
        # a v1 container sees the host's path, which is not under its mount: the root applies
        (
            "4:cpu,cpuacct:/docker/abc",
            {"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"},
            2.0,
        ),
        ("0::/", {}, None),
    ],
)
def test_a_quota_set_on_the_process_cgroup_or_above_it_counts(
    tmp_path, membership, files, expected
):
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in files.items():
        _write(root / name, text)
    _write(tmp_path / "membership", membership)
    assert cpu_quota(root, tmp_path / "membership") == expected


def test_usable_cpus_round_a_quota_up_and_never_exceed_the_schedulable_ones(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "huge").mkdir()
    none = tmp_path / "no membership"
    assert usable_cpus(_cgroup(tmp_path / "half", "50000 100000"), none) == 1
    assert usable_cpus(_cgroup(tmp_path / "huge", "12800000 100000"), none) == schedulable_cpus()
    assert usable_cpus(tmp_path, none) == schedulable_cpus()  # no quota


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


_CAPPED_PROCESS = """
import sys
from pathlib import Path
from shapley_svc import _numba_threads as threads
print(threads.cap_numba_threads(usable=lambda: threads.usable_cpus(Path(sys.argv[1]))))
import numba
print(numba.config.NUMBA_NUM_THREADS)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 schedulable CPUs")
def test_a_fresh_process_under_a_one_cpu_quota_starts_numba_with_one_thread(tmp_path):
    """joblib's ``LOKY_MAX_CPU_COUNT`` plays no part: a value that is not an integer made the
    server's start fail with a traceback (QA, 2026-12-06)."""
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    environ["LOKY_MAX_CPU_COUNT"] = "not a number"
    out = subprocess.run(
        [sys.executable, "-c", _CAPPED_PROCESS, str(_cgroup(tmp_path, "100000 100000"))],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == ["1", "1"]
