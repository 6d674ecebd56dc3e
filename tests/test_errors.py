"""Domain errors as data: picklable (a worker process's refusal reaches its parent whole), and
a located refusal says where, with the problem apart from the place."""

import pickle

import pytest

from shapley_svc import errors


@pytest.mark.parametrize(
    "error",
    [
        errors.InvalidArgumentError("X", "must be finite; found inf", row=3, column=1),
        errors.InvalidArgumentError("outputs", "must be finite", row=2, column=0, axis="output"),
        errors.UnsupportedModelError("model", "is not a tree ensemble"),
        errors.LimitExceededError("rows", "more than 10"),
        errors.NotFoundError("context_id", "ctx-1 is not held"),
        errors.CancelledError(),
        errors.DeadlineExceededError(),
        errors.UnavailableError("the server is stopping"),
        errors.ArtifactError("weights fail their sha256 check"),
        errors.StorageError("context_id", "read-only"),
        errors.NotFittedError(),
    ],
)
def test_every_error_survives_pickling(error):
    # The default pickling passes the joined message to an __init__ that takes two arguments:
    # a training worker's refusal broke its process pool.
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert (again.argument, again.problem) == (error.argument, error.problem)
    if isinstance(error, errors.InvalidArgumentError):
        assert (again.row, again.column, again.unlocated) == (
            error.row,
            error.column,
            error.unlocated,
        )


def test_a_located_refusal_ends_with_its_place():
    error = errors.InvalidArgumentError("X", "must be finite; found inf", row=3, column=1)
    assert str(error) == "X must be finite; found inf at row 3, column 1"
    assert error.unlocated == "must be finite; found inf"
    output = errors.InvalidArgumentError("p", "must be finite", row=2, column=0, axis="output")
    assert output.problem == "must be finite at row 2, output 0"
    assert errors.InvalidArgumentError("p", "is empty").problem == "is empty"
