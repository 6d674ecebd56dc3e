"""Domain errors -> gRPC statuses: one table, and the standard rich status refusals carry.

A refusal answers its status code with a ``google.rpc.Status`` whose ``google.rpc.BadRequest``
details name the request field at fault (``FieldViolation.field``) and the problem
(``description``), so grpcurl and clients in any language read the field with their stock
``grpc-status-details-bin`` support. The message is ``"<field>: <problem>"`` (or the problem alone
when no field is at fault). Unexpected failures become INTERNAL with a correlation id that points
into the server log; their text never reaches the caller.

The layers below raise :mod:`shapley_svc.errors` classes whose ``argument`` names what they were
given: codecs the request field itself, the estimator and the context service its own argument
names, translated here by the tables :data:`CONTEXT_FIELDS` and :data:`QUERY_FIELDS`.
"""

import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from shapley_svc.errors import (
    ArtifactError,
    CancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    LimitExceededError,
    NotFittedError,
    NotFoundError,
    ShapleyError,
    StorageError,
    UnavailableError,
    UnsupportedModelError,
)

log = logging.getLogger("shapley_svc.server")

# Each domain error class, as the status it answers. A class missing here (and every exception
# that is not a ShapleyError) is a bug: INTERNAL, behind a correlation id.
STATUS_CODES: dict[type[ShapleyError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    UnsupportedModelError: grpc.StatusCode.INVALID_ARGUMENT,
    LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    NotFittedError: grpc.StatusCode.FAILED_PRECONDITION,
    CancelledError: grpc.StatusCode.CANCELLED,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    StorageError: grpc.StatusCode.FAILED_PRECONDITION,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    # The artifact was verified at start-up: failing later is the server's fault, not the call's.
    ArtifactError: grpc.StatusCode.INTERNAL,
}

# A context's arguments (the estimator's fit and the context service), as the request fields
# that carry them: ``CreateContextRequest.context`` and ``ExplainRequest.context`` alike.
CONTEXT_FIELDS: Mapping[str, str] = {
    "X": "context.rows",
    "predictions": "context.predictions",
    "background": "context.background",
    "feature_names": "context.feature_names",
    "random_state": "context.random_state",
    "groups": "context.groups",
    "categorical": "context.categorical_columns",
}
# An explanation's arguments (the estimator's explain), as ``ExplainRequest`` fields.
QUERY_FIELDS: Mapping[str, str] = {
    "X_query": "rows",
    "predictions_query": "predictions",
}


@contextmanager
def naming_request_fields(fields: Mapping[str, str]) -> Iterator[None]:
    """Within the block, domain errors whose ``argument`` is a key of ``fields`` name the request
    field instead. Two tables, one per kind of call, because ``predictions`` is both the fit's
    argument (``context.predictions``) and an ``ExplainRequest`` field the codecs name."""
    try:
        yield
    except ShapleyError as error:
        error.argument = fields.get(error.argument, error.argument)
        raise


def status_code(error: BaseException) -> grpc.StatusCode:
    """The status ``error`` answers: its class's (or nearest base's) entry, else INTERNAL."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def refusal(error: ShapleyError) -> grpc.Status:
    """The rich status of a refusal: code, message, and BadRequest details when a field is named."""
    code = status_code(error)
    details = []
    if error.argument:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.argument, description=error.problem
        )
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        details.append(packed)
    message = f"{error.argument}: {error.problem}" if error.argument else error.problem
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=details)
    )


def abort(context: grpc.ServicerContext, error: BaseException, method: str) -> NoReturn:
    """End the call with the status ``error`` answers (``context.abort`` raises)."""
    if isinstance(error, ShapleyError) and status_code(error) != grpc.StatusCode.INTERNAL:
        context.abort_with_status(refusal(error))
    correlation = uuid.uuid4().hex[:16]
    log.error("internal error in %s (correlation id %s)", method, correlation, exc_info=error)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (correlation id {correlation})")
