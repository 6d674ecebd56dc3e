"""Where ``shapley-svc train`` writes when ``--out`` is not given."""

import pytest

from shapley_svc.estimator.artifact import DEFAULT_ARTIFACT
from shapley_svc.training.pipeline import default_out


def test_train_writes_to_the_current_directory_and_never_into_the_package(tmp_path):
    assert default_out(tmp_path) == tmp_path / "combiner.json"
    with pytest.raises(SystemExit, match="pass --out explicitly"):
        default_out(DEFAULT_ARTIFACT.parent)
