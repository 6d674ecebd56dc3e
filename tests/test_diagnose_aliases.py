"""The aliases diagnostic: its corner spread and its report."""

import json

import numpy as np
import pytest

from benchmarks import diagnose_aliases as diagnose
from shapley_svc.estimator.aliases import widened_for_aliases
from tests.quick_runs import need_real_tables, run_quick


def test_the_corners_spread_more_than_the_uniform_split_and_as_their_formula_says():
    values = np.array([[[1.0], [1.0], [0.5]]])
    std = np.zeros_like(values)
    null = np.zeros((1, 3), dtype=bool)
    corners = diagnose.corner_spread(values, std, [[0, 1]], null)
    # T = 2 on member 0 or on member 1: each misses by 1 either way.
    np.testing.assert_allclose(corners[0, :, 0], [1.0, 1.0, 0.0])
    uniform = widened_for_aliases(values, std, [[0, 1]], null)
    assert np.all(uniform[0, :2] < corners[0, :2])


@pytest.mark.slow
def test_quick_mode_writes_its_report(tmp_path):
    need_real_tables()
    run_quick(diagnose.MODULE, tmp_path)
    payload = json.loads((tmp_path / "aliases_quick.json").read_text())
    assert (tmp_path / "aliases_quick.md").read_text().startswith("# Aliases")
    assert [case["family"] for case in payload["cases"]] == list(diagnose.QUICK_FAMILIES)
    for case in payload["cases"]:
        assert case["table"] == "ces11" and case["alias_sets"] == [["province", "population"]]
        assert case["values_unchanged"]
        coverage = case["coverage_80"]
        # Each statement adds to the one before it: coverage cannot fall.
        assert coverage["without"]["aliases"] <= coverage["uniform"]["aliases"]
        assert coverage["uniform"]["aliases"] <= coverage["corners"]["aliases"]
