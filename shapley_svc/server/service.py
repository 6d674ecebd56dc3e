"""The ``shapley.v1.Shapley`` servicer: each RPC decodes its request, asks the context service,
and encodes the answer.

Decoding and encoding are :mod:`shapley_svc.server.messages`; contexts, limits, fits and
explanations on compute threads are :mod:`shapley_svc.contexts`; statuses, metrics and the
handler table are :mod:`shapley_svc.server.rpcs` and :mod:`shapley_svc.server.status`.
"""

import threading
import time
from collections.abc import Iterator

import grpc

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.codecs import DTYPE_FLOAT64
from shapley_svc.contexts import Caller, ContextService, ContextSpec, StoredContext
from shapley_svc.errors import InvalidArgumentError, LimitExceededError
from shapley_svc.server import messages
from shapley_svc.server.metrics import Metrics
from shapley_svc.server.rpcs import SERVICE_NAME, add_to_server, handled
from shapley_svc.server.settings import Settings
from shapley_svc.server.status import CONTEXT_FIELDS, QUERY_FIELDS, naming_request_fields

__all__ = ["SERVICE_NAME", "ShapleyService", "add_to_server"]

# What Calibrate's refit of the zoo is given, as CalibrateRequest fields.
REFIT_FIELDS = {
    "X": "context.rows",
    "predictions": "context.predictions",
    # A context whose background cannot be calibrated is the one the request names.
    "background": "context_id",
}
# gRPC reports "no deadline" as one in the far future.
_NO_DEADLINE = 10.0 * 365 * 24 * 3600


class ShapleyService(shapley_pb2_grpc.ShapleyServicer):
    def __init__(self, settings: Settings, metrics: Metrics, version: str):
        self.settings = settings
        self.metrics = metrics
        self.version = version
        self.contexts = ContextService(
            settings.context_limits(),
            settings.compute_threads,
            settings.artifact or None,
            describe=messages.context_info,
            context_dir=settings.context_dir or None,
        )
        # No message holds more float32s: a larger tensor cannot be what its bytes say.
        self._max_elements = settings.max_message_bytes // 4
        self._streams = threading.BoundedSemaphore(settings.max_concurrent_streams)

    def shutdown(self) -> None:
        self.contexts.shutdown()

    # --- the calls' shared steps -------------------------------------------------------------

    @staticmethod
    def _caller(context: grpc.ServicerContext) -> Caller:
        remaining = context.time_remaining()
        no_deadline = remaining is None or remaining > _NO_DEADLINE
        return Caller(
            deadline=None if no_deadline else time.monotonic() + remaining,
            should_stop=lambda: not context.is_active(),
        )

    def _create(self, spec: ContextSpec, context) -> tuple[StoredContext, bool]:
        self._check_description(spec)
        with naming_request_fields(CONTEXT_FIELDS):
            return self.contexts.get_or_create(spec, self._caller(context))

    def _check_description(self, spec: ContextSpec) -> None:
        """Refuse, before the fit, a context whose description would not fit in a message: the
        server fitted and kept it, then could answer neither CreateContext nor Explain (a
        60 KB request of five 10,100-character names at a 100,000-byte limit)."""
        bound = messages.description_bound(spec, self.contexts.artifact_version)
        limit = self.settings.max_message_bytes
        if bound <= limit:
            return
        group_bytes = sum(len(name.encode()) for name, _ in spec.groups)
        name_bytes = sum(len(name.encode()) for name in spec.feature_names)
        raise LimitExceededError(
            "context.groups" if group_bytes > name_bytes else "context.feature_names",
            f"make the context's description (its names, groups and diagnostics) up to {bound} "
            f"bytes, more than a message's {limit}: shorter names, or a larger "
            "--max-message-bytes",
        )

    def _resolve(self, request: pb.ExplainRequest, context) -> StoredContext:
        source = request.WhichOneof("source")
        if source == "context_id":
            return self.contexts.get(request.context_id, self._caller(context))
        if source == "context":
            return self._create(
                messages.context_spec(request.context, self._max_elements), context
            )[0]
        raise InvalidArgumentError("context_id", "set context_id or an inline context")

    def _explain(
        self, entry: StoredContext, request, context, first_row: int, described: bool
    ) -> pb.ExplainResponse:
        """The answer to one ExplainRequest, carrying the context's description if
        ``described``."""
        rows, predictions, answer = messages.query(request, self._max_elements)
        with naming_request_fields(QUERY_FIELDS):
            explanation = self.contexts.explain(
                entry,
                rows,
                predictions,
                answer_bytes_per_row=messages.answer_bytes_per_row(entry.description, answer),
                answer_fixed_bytes=self._answer_fixed_bytes(entry, described),
                caller=self._caller(context),
            )
        self.metrics.add_rows_explained(rows.shape[0])
        response = messages.explain_response(
            entry.context_id, explanation, answer, self.contexts.artifact_version, first_row
        )
        if described:
            response.context.CopyFrom(entry.description)
        return response

    def _answer_fixed_bytes(self, entry: StoredContext, described: bool) -> int:
        return messages.answer_fixed_bytes(
            entry.context_id,
            self.contexts.artifact_version,
            entry.description if described else None,
        )

    def _proposal_fixed_bytes(self, entry: StoredContext) -> int:
        return messages.proposal_fixed_bytes(entry.context_id, self.contexts.artifact_version)

    def _take_stream_slot(self) -> None:
        """One of the concurrent stream slots (release it when the stream ends), or refuse."""
        if not self._streams.acquire(blocking=False):
            raise LimitExceededError(
                "",
                f"{self.settings.max_concurrent_streams} streams are already being served; "
                "retry later",
            )

    def _stream_context(self, held: StoredContext | None, index: int, request, context):
        """The context a stream explains: message 0 names it, later ones may repeat it."""
        source = request.WhichOneof("source")
        if held is None:
            if source is None:
                raise InvalidArgumentError(
                    "context_id", "the first message of a stream must set context_id or context"
                )
            return self._resolve(request, context)
        if source == "context_id" and request.context_id != held.context_id:
            raise InvalidArgumentError(
                "context_id",
                f"message {index} names {request.context_id!r}; the stream explains "
                f"{held.context_id}",
            )
        if source == "context":
            spec = messages.context_spec(request.context, self._max_elements)
            if self.contexts.content_id(spec) != held.context_id:
                raise InvalidArgumentError(
                    "context", f"message {index} carries a different context than message 0"
                )
        return held

    # --- RPCs --------------------------------------------------------------------------------

    @handled
    def CreateContext(self, request, context):
        if not request.HasField("context"):
            raise InvalidArgumentError("context", "is required")
        spec = messages.context_spec(request.context, self._max_elements)
        entry, created = self._create(spec, context)
        return pb.CreateContextResponse(context=entry.description, created=created)

    @handled
    def CreateContextStream(self, request_iterator, context):
        self._take_stream_slot()
        try:
            with naming_request_fields(CONTEXT_FIELDS):
                spec = messages.streamed_context_spec(
                    request_iterator, self._max_elements, self.contexts.check_size
                )
        finally:
            self._streams.release()
        entry, created = self._create(spec, context)
        return pb.CreateContextResponse(context=entry.description, created=created)

    @handled
    def Explain(self, request, context):
        entry = self._resolve(request, context)
        return self._explain(entry, request, context, 0, described=True)

    @handled
    def ExplainStream(self, request_iterator, context) -> Iterator[pb.ExplainResponse]:
        self._take_stream_slot()
        try:
            entry, first_row = None, 0
            for index, request in enumerate(request_iterator):
                entry = self._stream_context(entry, index, request, context)
                try:
                    response = self._explain(entry, request, context, first_row, index == 0)
                except (InvalidArgumentError, LimitExceededError) as error:
                    if index == 0:
                        raise
                    # Positions in a message are its own rows': say where its rows start, as
                    # CreateContextStream does for its blocks.
                    raise type(error)(
                        error.argument,
                        f"{error.problem} (in message {index}, whose first row is row "
                        f"{first_row} of the stream)",
                    ) from None
                first_row += response.values.shape[0]
                yield response
        finally:
            self._streams.release()

    @handled
    def Propose(self, request, context):
        asked = messages.refinement(request, self._max_elements)
        entry = self.contexts.get(asked.context_id, self._caller(context))
        with naming_request_fields(QUERY_FIELDS):
            proposal = self.contexts.propose(
                entry,
                asked.rows,
                asked.predictions,
                asked.budget,
                asked.random_state,
                # The Refine that brings the outputs back must fit too, and its answer (in
                # float64, the widest it may ask for).
                answer_fixed_bytes=max(
                    self._proposal_fixed_bytes(entry),
                    messages.refine_request_fixed_bytes(entry.context_id),
                    self._answer_fixed_bytes(entry, described=True),
                ),
                refined_row_bytes=messages.answer_bytes_per_row(
                    entry.description, messages.AnswerFormat(DTYPE_FLOAT64, as_values=False)
                ),
                caller=self._caller(context),
            )
        return messages.propose_response(
            entry.context_id,
            proposal.rows,
            proposal.rows_per_query,
            request.output_values,
            self.contexts.artifact_version,
            proposal.rows_sha256,
        )

    @handled
    def Refine(self, request, context):
        asked = messages.refinement(request, self._max_elements)
        answer = messages.answer_format(request)
        outputs = messages.outputs(request, self._max_elements)
        entry = self.contexts.get(asked.context_id, self._caller(context))
        with naming_request_fields(QUERY_FIELDS):
            explanation = self.contexts.refine(
                entry,
                asked.rows,
                asked.predictions,
                asked.budget,
                asked.random_state,
                outputs,
                proposal_sha256=messages.proposal_sha256(request),
                pool_rows=bool(request.pool_rows),
                answer_bytes_per_row=messages.answer_bytes_per_row(entry.description, answer),
                answer_fixed_bytes=self._answer_fixed_bytes(entry, described=True),
                caller=self._caller(context),
            )
        self.metrics.add_rows_explained(asked.rows.shape[0])
        response = messages.explain_response(
            entry.context_id, explanation, answer, self.contexts.artifact_version, 0
        )
        response.context.CopyFrom(entry.description)
        return response

    @handled
    def ProposeCalibration(self, request, context):
        asked = messages.calibration(request)
        entry = self.contexts.get(asked.context_id, self._caller(context))
        with naming_request_fields(REFIT_FIELDS):
            proposal = self.contexts.propose_calibration(
                entry,
                asked.budget,
                asked.random_state,
                refit=asked.refit,
                answer_fixed_bytes=self._proposal_fixed_bytes(entry),
                caller=self._caller(context),
            )
        return messages.propose_calibration_response(
            entry.context_id,
            proposal.rows,
            proposal.budget,
            request.output_values,
            self.contexts.artifact_version,
            proposal.rows_sha256,
        )

    @handled
    def Calibrate(self, request, context):
        asked = messages.calibration(request)
        outputs = messages.outputs(request, self._max_elements)
        spec = None
        if request.HasField("context"):
            spec = messages.context_spec(request.context, self._max_elements)
            with naming_request_fields(CONTEXT_FIELDS):
                self.contexts.check_size(spec.rows, spec.predictions)
        entry = self.contexts.get(asked.context_id, self._caller(context))
        # The refit's own arguments are the spec's fields; the budget, seed and outputs keep
        # their names.
        with naming_request_fields(REFIT_FIELDS):
            calibrated, created = self.contexts.calibrate(
                entry,
                asked.budget,
                asked.random_state,
                outputs,
                spec,
                proposal_sha256=messages.proposal_sha256(request),
                caller=self._caller(context),
            )
        return pb.CreateContextResponse(context=calibrated.description, created=created)

    @handled
    def GetContext(self, request, context):
        return self.contexts.get(request.context_id, self._caller(context)).description

    @handled
    def DeleteContext(self, request, context):
        entry, freed = self.contexts.delete(request.context_id)
        return pb.DeleteContextResponse(context_id=entry.context_id, freed_bytes=freed)

    @handled
    def ListContexts(self, request, context):
        entries, total = self.contexts.held()
        return messages.contexts_page(
            entries, request.page_size, request.page_token, total, self.settings.max_message_bytes
        )

    @handled
    def GetServerInfo(self, request, context):
        # The store's own counts: the clients call this before every chunked call, and
        # ``held()`` checks each context's saved copy on disk (ListContexts does).
        entries, total = self.contexts.store.snapshot()
        # Every Limits field is the setting of the same name.
        limits = {
            field.name: getattr(self.settings, field.name) for field in pb.Limits.DESCRIPTOR.fields
        }
        return pb.ServerInfo(
            version=self.version,
            artifact_version=self.contexts.artifact_version,
            artifact_sha256=self.contexts.artifact_sha256,
            limits=pb.Limits(**limits),
            contexts_held=len(entries),
            context_store_bytes=total,
        )
