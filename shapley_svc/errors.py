"""Domain errors: what went wrong, as data, with no transport in sight.

Every layer below the server raises these (the estimator, feature groups, the codecs, the context
service); the server maps each class to a gRPC status in one table and puts ``argument`` into the
standard ``google.rpc.BadRequest`` details after translating it into the request field that
carried it. Nothing parses error text.

``argument`` names what the raising function was given (``"X_query"``, ``"groups"``,
``"context.rows"`` for a codec that decodes a request field); ``problem`` says what is wrong with
it, phrased to follow the name ("must be finite; found inf at row 3, column 1"). ``str(error)`` is
the two joined, so existing callers that print or match messages keep working.
"""


class ShapleyError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, argument: str, problem: str):
        super().__init__(f"{argument} {problem}" if argument else problem)
        self.argument = argument
        self.problem = problem

    def __reduce__(self):
        # Picklable, as exceptions raised in worker processes must be: the default passes
        # ``args`` (the joined message) to an __init__ that takes two arguments, and a training
        # worker's refusal broke its pool.
        return (_shapley_error, (type(self), self.argument, self.problem))


def _shapley_error(kind, argument, problem):
    error = kind.__new__(kind)
    ShapleyError.__init__(error, argument, problem)
    return error


class InvalidArgumentError(ShapleyError, ValueError):
    """An argument is malformed or inconsistent with the others (gRPC: INVALID_ARGUMENT).

    ``row`` and ``column`` (an ``axis``: "column", or "output" for model outputs), when given,
    locate the refused value in the argument's array: the problem ends with them ("... at row
    3, column 1"), and ``unlocated`` is the problem without them, for a caller that cut the array
    from a larger table (a Spark batch) and says where the value is in its own terms.
    """

    def __init__(
        self,
        argument: str,
        problem: str,
        *,
        row: int | None = None,
        column: int | None = None,
        axis: str = "column",
    ):
        self.unlocated = problem
        if row is not None:
            problem += f" at row {row}" + ("" if column is None else f", {axis} {column}")
        super().__init__(argument, problem)
        self.row = row
        self.column = column
        self.axis = axis

    def __reduce__(self):  # picklable (a worker process's refusal reaches its parent)
        return (
            _invalid_argument,
            (type(self), self.argument, self.unlocated, self.row, self.column, self.axis),
        )


class UnsupportedModelError(InvalidArgumentError, TypeError):
    """A model of a kind the function cannot read (INVALID_ARGUMENT); also a ``TypeError``,
    which such a refusal was before it was a ``ShapleyError``."""


def _invalid_argument(kind, argument, problem, row, column, axis):
    return kind(argument, problem, row=row, column=column, axis=axis)


class LimitExceededError(ShapleyError, ValueError):
    """An argument is well formed but larger than a configured limit (RESOURCE_EXHAUSTED)."""


class NotFoundError(ShapleyError, KeyError):
    """A named thing (a context id) is not held (NOT_FOUND)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class NotFittedError(ShapleyError, ValueError, AttributeError):
    """A method that needs a fitted estimator was called before ``fit`` (as scikit-learn's,
    also an ``AttributeError``)."""

    def __init__(self, problem: str = "this ZeroShotExplainer is not fitted yet: call fit first"):
        super().__init__("", problem)


class CancelledError(ShapleyError):
    """The caller's ``should_stop`` said to stop before the work was done (CANCELLED)."""

    def __init__(self, problem: str = "the work was cancelled"):
        super().__init__("", problem)


class DeadlineExceededError(ShapleyError):
    """The caller's deadline passed before the work was done (DEADLINE_EXCEEDED)."""

    def __init__(self, problem: str = "the deadline passed"):
        super().__init__("", problem)


class UnavailableError(ShapleyError):
    """The service cannot do the work now, and another replica or a retry may (UNAVAILABLE):
    e.g. the server is stopping."""

    def __init__(self, problem: str):
        super().__init__("", problem)


class StorageError(ShapleyError, OSError):
    """Saved state cannot be changed as asked (FAILED_PRECONDITION): e.g. a saved context that
    cannot be removed from a read-only volume. Nothing was changed."""


class ArtifactError(ShapleyError, RuntimeError):
    """The meta-learned artifact is missing, corrupted or does not match this code."""

    def __init__(self, problem: str):
        super().__init__("", problem)


__all__ = [
    "ArtifactError",
    "CancelledError",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "LimitExceededError",
    "NotFittedError",
    "NotFoundError",
    "ShapleyError",
    "StorageError",
    "UnavailableError",
    "UnsupportedModelError",
]
