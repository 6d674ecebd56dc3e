"""The ``shapley.v1.Shapley`` servicer: request validation, the context store and the estimator.

Every request is checked before any work: tensors decode without copies (or fail with the field
named), shapes are matched against the context, and sizes against the limits. Fits and
explanations run in a small pool of compute threads (numba kernels release the GIL), so the gRPC
handler threads stay free for health checks and cheap calls.
"""

import concurrent.futures
import functools
import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import numpy as np

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc._proto import shapley_pb2_grpc
from shapley_svc.codecs import (
    DTYPE_FLOAT64,
    decode_tensor,
    dtype_name,
    encode_tensor,
    encode_tensor_values,
)
from shapley_svc.errors import CancelledError, LimitExceededError, ShapleyError
from shapley_svc.estimator import ZeroShotExplainer, load_artifact
from shapley_svc.estimator.explainer import SERIAL_MAX_ROWS
from shapley_svc.server.metrics import Metrics
from shapley_svc.server.settings import Settings
from shapley_svc.server.store import ContextStore, StoredContext, StoreFullError

log = logging.getLogger("shapley_svc.server")
ERROR_FIELD_KEY = "shapley-error-field"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Shapley"].full_name
_NO_DEADLINE = 10.0 * 365 * 24 * 3600
# The estimator's fit arguments, as the request fields that carry them.
_ESTIMATOR_ARGUMENTS = {
    "X": "context.rows",
    "predictions": "context.predictions",
    "background": "context.background",
    "feature_names": "context.feature_names",
    "random_state": "context.random_state",
    "groups": "context.groups",
}


class RequestError(Exception):
    """A request the server refuses: a status code, the field at fault and the reason."""

    def __init__(self, code: grpc.StatusCode, field: str, problem: str):
        super().__init__(f"{field}: {problem}" if field else problem)
        self.code = code
        self.field = field
        self.problem = problem


def _invalid(field: str, problem: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, field, problem)


def _too_large(field: str, problem: str) -> RequestError:
    return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, field, problem)


def _not_held(context_id: str) -> RequestError:
    return RequestError(
        grpc.StatusCode.NOT_FOUND,
        "context_id",
        f"{context_id!r} is not held by this server (never created here, deleted or evicted); "
        "send the context inline or call CreateContext again",
    )


def _estimator_error(error: ValueError, default_field: str) -> RequestError:
    """The estimator names its argument first ("predictions are constant ...", "groups['a']
    lists ..."): map it to the request field."""
    message = str(error)
    first, _, rest = message.partition(" ")
    argument = re.match(r"\w*", first).group()
    if argument in _ESTIMATOR_ARGUMENTS:
        return _invalid(_ESTIMATOR_ARGUMENTS[argument], rest if first == argument else message)
    return _invalid(default_field, message)


def _handled(method: Callable) -> Callable:
    """Map refusals to status codes, record metrics, hide unexpected failures behind an id."""
    name = method.__name__

    def fail(context: grpc.ServicerContext, error: Exception) -> str:
        if isinstance(error, RequestError):
            if error.field:
                context.set_trailing_metadata(((ERROR_FIELD_KEY, error.field),))
            context.abort(error.code, str(error))
        correlation = uuid.uuid4().hex[:16]
        log.exception("internal error in %s (correlation id %s)", name, correlation)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error (correlation id {correlation})")

    def code_of(error: Exception) -> str:
        return error.code.name if isinstance(error, RequestError) else "INTERNAL"

    if name == "ExplainStream":

        @functools.wraps(method)
        def streaming(self, request_iterator, context):
            start, code = time.perf_counter(), "OK"
            try:
                yield from method(self, request_iterator, context)
            except Exception as error:
                code = _cancel_code(context) or code_of(error)
                if code != "CANCELLED":
                    fail(context, error)
            finally:
                self.metrics.observe(name, code, time.perf_counter() - start)

        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        start, code = time.perf_counter(), "OK"
        try:
            return method(self, request, context)
        except Exception as error:
            code = code_of(error)
            fail(context, error)
        finally:
            self.metrics.observe(name, code, time.perf_counter() - start)

    return unary


def _cancel_code(context: grpc.ServicerContext) -> str | None:
    return None if context.is_active() else "CANCELLED"


class MalformedRequest:
    """Bytes that did not parse as the request message (gRPC would answer INTERNAL)."""

    def __init__(self, message: str, size: int):
        self.message, self.size = message, size


def _lenient(message_class) -> Callable[[bytes], object]:
    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except Exception:  # protobuf's DecodeError and friends: all mean "not this message"
            return MalformedRequest(message_class.DESCRIPTOR.full_name, len(data))

    return parse


def _parsed(request):
    if isinstance(request, MalformedRequest):
        raise _invalid("", f"{request.size} bytes do not parse as a {request.message} message")
    return request


# RPC name -> (request streaming, response streaming, request class, response class).
RPCS = {
    "CreateContext": (False, False, pb.CreateContextRequest, pb.CreateContextResponse),
    "Explain": (False, False, pb.ExplainRequest, pb.ExplainResponse),
    "ExplainStream": (True, True, pb.ExplainRequest, pb.ExplainResponse),
    "CreateContextStream": (True, False, pb.CreateContextRequest, pb.CreateContextResponse),
    "GetContext": (False, False, pb.GetContextRequest, pb.ContextInfo),
    "DeleteContext": (False, False, pb.DeleteContextRequest, pb.DeleteContextResponse),
    "ListContexts": (False, False, pb.ListContextsRequest, pb.ListContextsResponse),
    "GetServerInfo": (False, False, pb.GetServerInfoRequest, pb.ServerInfo),
}


def add_to_server(service: "ShapleyService", server: grpc.Server) -> None:
    """Register like the generated ``add_ShapleyServicer_to_server``, but with deserializers
    that let malformed bytes reach the handler, which answers INVALID_ARGUMENT."""
    makers = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
    }
    handlers = {
        name: makers[(streams_in, streams_out)](
            getattr(service, name),
            request_deserializer=_lenient(request_class),
            response_serializer=response_class.SerializeToString,
        )
        for name, (streams_in, streams_out, request_class, response_class) in RPCS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class ShapleyService(shapley_pb2_grpc.ShapleyServicer):
    def __init__(self, settings: Settings, metrics: Metrics, version: str):
        self.settings = settings
        self.metrics = metrics
        self.version = version
        self.store = ContextStore(settings.max_contexts, settings.max_context_store_bytes)
        self.artifact_path = settings.artifact or None
        artifact = load_artifact(self.artifact_path) if self.artifact_path else load_artifact()
        self.artifact_version = artifact.version
        self.artifact_sha256 = artifact.manifest["sha256"]
        self._compute = concurrent.futures.ThreadPoolExecutor(
            settings.compute_threads, thread_name_prefix="compute"
        )
        self._streams = threading.BoundedSemaphore(settings.max_concurrent_streams)

    def shutdown(self) -> None:
        self._compute.shutdown(wait=True, cancel_futures=True)

    # --- helpers -----------------------------------------------------------------------------

    def _run(
        self,
        context: grpc.ServicerContext,
        work: Callable,
        *args,
        stop: threading.Event | None = None,
    ):
        """Run ``work`` on a compute thread within the call's deadline.

        ``stop``, when given, is set once the call ends (cancelled, deadline passed) so that work
        polling it gives its compute thread back instead of finishing for nobody.
        """
        remaining = context.time_remaining()
        if remaining is not None and remaining > _NO_DEADLINE:
            remaining = None  # gRPC reports "no deadline" as a very distant one
        if remaining is not None and remaining <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "", "deadline expired")
        if stop is not None:
            context.add_callback(stop.set)
        future = self._compute.submit(work, *args)
        try:
            return future.result(timeout=remaining)
        except CancelledError:
            raise RequestError(grpc.StatusCode.CANCELLED, "", "the call was cancelled") from None
        except concurrent.futures.TimeoutError:
            if stop is not None:
                stop.set()
            future.cancel()
            raise RequestError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "",
                f"deadline expired after {remaining:.3f} s while the server was computing",
            ) from None

    def _tensor(self, field: str, tensor: pb.Tensor, ndims: tuple[int, ...]) -> np.ndarray:
        limit = self.settings.max_message_bytes // 4  # no message holds more float32s
        try:
            return decode_tensor(
                field,
                tensor.dtype,
                tensor.shape,
                tensor.data,
                ndims=ndims,
                max_elements=limit,
                values=tensor.values,
            )
        except ShapleyError as error:
            code = (
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if isinstance(error, LimitExceededError)
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            raise RequestError(code, error.argument, error.problem) from None

    def _decode_spec(self, spec: pb.ContextSpec, prefix: str):
        if not spec.HasField("rows"):
            raise _invalid(f"{prefix}rows", "is required")
        if not spec.HasField("predictions"):
            raise _invalid(f"{prefix}predictions", "is required")
        rows, predictions = self._decode_block(spec, prefix, 0)
        return (rows, predictions, *self._spec_settings(spec))

    def _decode_block(self, spec: pb.ContextSpec, prefix: str, rows_before: int):
        """A spec's rows and predictions, checked against the limits (``rows_before`` rows
        already received in a stream)."""
        limits = self.settings
        rows = self._tensor(f"{prefix}rows", spec.rows, (2,))
        n, d = rows.shape
        if rows_before + n > limits.max_context_rows:
            raise _too_large(
                f"{prefix}rows",
                f"{rows_before + n} rows; the limit is {limits.max_context_rows}",
            )
        if d > limits.max_features:
            raise _too_large(f"{prefix}rows", f"{d} features; the limit is {limits.max_features}")
        predictions = self._tensor(f"{prefix}predictions", spec.predictions, (1, 2))
        if predictions.ndim == 2 and predictions.shape[1] > limits.max_outputs:
            raise _too_large(
                f"{prefix}predictions",
                f"{predictions.shape[1]} outputs; the limit is {limits.max_outputs}",
            )
        return rows, predictions

    @staticmethod
    def _spec_settings(spec: pb.ContextSpec):
        """Background, names, seed and groups of a spec, as the estimator takes them."""
        # Row counts, background indices, names, the seed and the groups are the estimator's to
        # check: its ValueErrors name the argument, which _estimator_error maps to the field.
        background = np.asarray(spec.background, dtype=np.int64)
        names = list(spec.feature_names)
        groups = [(group.name, np.asarray(group.columns, dtype=np.int64)) for group in spec.groups]
        return background, names, int(spec.random_state), groups

    def _context_id(self, rows, predictions, background, names, random_state, groups) -> str:
        digest = hashlib.sha256(b"shapley.v1/context\0")
        digest.update(self.artifact_sha256.encode())
        for array in (rows, predictions):
            canonical = np.ascontiguousarray(array, dtype="<f8")
            digest.update(repr(canonical.shape).encode())
            digest.update(canonical.tobytes())
        digest.update(np.ascontiguousarray(background, dtype="<i8").tobytes())
        digest.update(
            b"\0".join(name.encode() for name in names) + b"\0" + repr(len(names)).encode()
        )
        digest.update(random_state.to_bytes(8, "little"))
        # Only contexts with groups hash them, so ids of contexts without groups are unchanged.
        for name, columns in groups:
            digest.update(b"group\0" + name.encode() + b"\0")
            digest.update(
                repr(columns.size).encode() + np.ascontiguousarray(columns, "<i8").tobytes()
            )
        return "ctx-" + digest.hexdigest()[:40]

    def _fit(self, stop, context_id, rows, predictions, background, names, random_state, groups):
        start = time.perf_counter()
        explainer = ZeroShotExplainer(random_state=random_state, artifact=self.artifact_path)
        try:
            explainer.fit(
                np.asarray(rows, dtype=np.float64),
                np.asarray(predictions, dtype=np.float64),
                background=background if background.size else None,
                feature_names=names or None,
                groups=groups or None,
                should_stop=stop.is_set,
            )
        except ValueError as error:
            raise _estimator_error(error, "context") from None
        info = self._info(context_id, explainer, time.perf_counter() - start)
        return StoredContext(context_id, explainer, info, info.memory_bytes)

    def _info(self, context_id: str, explainer, fit_seconds: float) -> pb.ContextInfo:
        diagnostics = explainer.diagnostics_
        return pb.ContextInfo(
            context_id=context_id,
            n_rows=int(explainer.n_rows_),
            n_features=int(explainer.n_features_in_),
            n_outputs=int(explainer.n_outputs_),
            single_output=bool(explainer.single_output_),
            feature_names=list(explainer.feature_names_),
            n_background=int(explainer.background_.size),
            outputs=[
                pb.OutputDiagnostics(
                    predicted_fidelity=output["predicted_fidelity"],
                    surrogates=[
                        pb.SurrogateDiagnostics(name=name, oof_r2=s["oof_r2"], weight=s["weight"])
                        for name, s in output["surrogates"].items()
                    ],
                )
                for output in diagnostics["outputs"]
            ],
            artifact_version=diagnostics["artifact"],
            memory_bytes=explainer.memory_bytes(),
            fit_seconds=fit_seconds,
            groups=[]
            if explainer.players_ is None
            else [
                pb.FeatureGroup(
                    name=name, columns=np.flatnonzero(explainer.players_.of_feature == g)
                )
                for g, name in enumerate(explainer.players_.names)
            ],
            attribution_names=explainer.player_names_,
        )

    def _create(self, spec: pb.ContextSpec, prefix: str, context) -> tuple[StoredContext, bool]:
        return self._create_decoded(self._decode_spec(spec, prefix), prefix, context)

    def _create_decoded(self, decoded: tuple, prefix: str, context) -> tuple[StoredContext, bool]:
        context_id = self._context_id(*decoded)

        def build() -> StoredContext:
            stop = threading.Event()
            return self._run(context, self._fit, stop, context_id, *decoded, stop=stop)

        try:
            return self.store.get_or_build(context_id, build)
        except StoreFullError as error:
            raise _too_large(prefix.rstrip(".") or "context", str(error)) from None

    def _take_stream_slot(self) -> None:
        """One of the concurrent stream slots (release it when the stream ends), or refuse."""
        if not self._streams.acquire(blocking=False):
            raise _too_large(
                "",
                f"{self.settings.max_concurrent_streams} streams are already being served; "
                "retry later",
            )

    def _held(self, context_id: str) -> StoredContext:
        entry = self.store.get(context_id)
        if entry is None:
            raise _not_held(context_id)
        return entry

    def _resolve(self, request: pb.ExplainRequest, context) -> StoredContext:
        source = request.WhichOneof("source")
        if source == "context_id":
            return self._held(request.context_id)
        if source == "context":
            return self._create(request.context, "context.", context)[0]
        raise _invalid("context_id", "set context_id or an inline context")

    def _explain(self, entry: StoredContext, request: pb.ExplainRequest, context, first_row: int):
        explainer = entry.explainer
        if not request.HasField("rows"):
            raise _invalid("rows", "is required")
        rows = self._tensor("rows", request.rows, (2,))
        m, d = rows.shape
        if d != explainer.n_features_in_:
            raise _invalid(
                "rows",
                f"has {d} features; context {entry.context_id} has {explainer.n_features_in_}",
            )
        if m > self.settings.max_explain_rows:
            raise _too_large(
                "rows", f"{m} rows in one message; the limit is {self.settings.max_explain_rows}"
            )
        output_dtype = request.output_dtype or DTYPE_FLOAT64
        if output_dtype not in (pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64):
            raise _invalid(
                "output_dtype",
                f"must be DTYPE_FLOAT32 or DTYPE_FLOAT64; got {dtype_name(output_dtype)}",
            )
        # Plain values travel as packed doubles whatever output_dtype rounds them to.
        itemsize = 4 if output_dtype == pb.DTYPE_FLOAT32 and not request.output_values else 8
        n_players = len(explainer.player_names_)
        answer_bytes = (2 * m * n_players + m) * explainer.n_outputs_ * itemsize
        if answer_bytes > self.settings.max_message_bytes:
            most = max(
                1,
                self.settings.max_message_bytes
                // ((2 * n_players + 1) * explainer.n_outputs_ * itemsize),
            )
            raise _too_large(
                "rows",
                f"the answer for {m} rows would take {answer_bytes} bytes, over the "
                f"{self.settings.max_message_bytes}-byte message limit; send at most {most} rows "
                "per message (ExplainStream chunks a large batch)",
            )
        predictions = None
        if request.HasField("predictions"):
            predictions = self._tensor("predictions", request.predictions, (1, 2))
            expected = (m,) if explainer.single_output_ else (m, explainer.n_outputs_)
            if predictions.shape != expected:
                raise _invalid(
                    "predictions",
                    f"has shape {list(predictions.shape)}; expected {list(expected)} for {m} rows "
                    f"of context {entry.context_id}",
                )
        if m <= SERIAL_MAX_ROWS:
            # A few milliseconds on one core: cheaper here than a hand-off to a compute thread.
            parts = [_explain_rows(explainer, rows, predictions)]
        else:
            stop = threading.Event()
            parts = [
                self._run(
                    context, _explain_rows, explainer, rows, predictions, stop.is_set, stop=stop
                )
            ]
        self.metrics.add_rows_explained(m)
        return pb.ExplainResponse(
            context_id=entry.context_id,
            values=_joined(parts, "values", output_dtype, request.output_values),
            base_values=_joined(parts, "base_values", output_dtype, request.output_values),
            uncertainty=_joined(parts, "uncertainty", output_dtype, request.output_values),
            artifact_version=self.artifact_version,
            first_row=first_row,
        )

    # --- RPCs --------------------------------------------------------------------------------

    @_handled
    def CreateContext(self, request, context):
        request = _parsed(request)
        if not request.HasField("context"):
            raise _invalid("context", "is required")
        entry, created = self._create(request.context, "context.", context)
        return pb.CreateContextResponse(context=entry.info, created=created)

    @_handled
    def CreateContextStream(self, request_iterator, context):
        self._take_stream_slot()
        try:
            decoded = self._received_context(request_iterator)
        finally:
            self._streams.release()
        entry, created = self._create_decoded(decoded, "context.", context)
        return pb.CreateContextResponse(context=entry.info, created=created)

    def _received_context(self, request_iterator) -> tuple:
        """A streamed context's blocks, checked as they arrive and joined in order."""
        row_blocks, prediction_blocks, settings = [], [], None
        n_rows = 0
        for index, request in enumerate(map(_parsed, request_iterator)):
            if not request.HasField("context"):
                raise _invalid("context", f"message {index} carries no context block")
            spec = request.context
            for name in ("rows", "predictions"):
                if not spec.HasField(name):
                    raise _invalid(f"context.{name}", f"is required (message {index})")
            if index == 0:
                settings = self._spec_settings(spec)
            else:
                for name in ("background", "feature_names", "groups"):
                    if len(getattr(spec, name)):
                        raise _invalid(
                            f"context.{name}",
                            f"message {index} sets it; only the first message of a stream may",
                        )
                if spec.random_state:
                    raise _invalid(
                        "context.random_state",
                        f"message {index} sets it; only the first message of a stream may",
                    )
            try:
                rows, predictions = self._decode_block(spec, "context.", n_rows)
            except RequestError as error:
                # Positions in a block's message are the block's: say where the block starts.
                raise RequestError(
                    error.code,
                    error.field,
                    f"{error.problem} (in message {index}, whose first row is row {n_rows} of the "
                    "context)",
                ) from None
            if predictions.shape[0] != rows.shape[0]:
                raise _invalid(
                    "context.predictions",
                    f"message {index} has {predictions.shape[0]} predictions for "
                    f"{rows.shape[0]} rows",
                )
            if row_blocks:
                if rows.shape[1] != row_blocks[0].shape[1]:
                    raise _invalid(
                        "context.rows",
                        f"message {index} has {rows.shape[1]} features; message 0 had "
                        f"{row_blocks[0].shape[1]}",
                    )
                if predictions.shape[1:] != prediction_blocks[0].shape[1:]:
                    raise _invalid(
                        "context.predictions",
                        f"message {index} has predictions shaped {list(predictions.shape)}; "
                        f"message 0 had {list(prediction_blocks[0].shape)}",
                    )
            row_blocks.append(rows)
            prediction_blocks.append(predictions)
            n_rows += rows.shape[0]
        if settings is None:
            raise _invalid("context", "the stream carried no messages")
        return (np.concatenate(row_blocks), np.concatenate(prediction_blocks), *settings)

    @_handled
    def Explain(self, request, context):
        request = _parsed(request)
        entry = self._resolve(request, context)
        response = self._explain(entry, request, context, 0)
        response.context.CopyFrom(entry.info)
        return response

    @_handled
    def ExplainStream(self, request_iterator, context) -> Iterator[pb.ExplainResponse]:
        self._take_stream_slot()
        try:
            entry, first_row = None, 0
            for index, request in enumerate(map(_parsed, request_iterator)):
                source = request.WhichOneof("source")
                if entry is None:
                    if source is None:
                        raise _invalid(
                            "context_id",
                            "the first message of a stream must set context_id or context",
                        )
                    entry = self._resolve(request, context)
                elif source == "context_id" and request.context_id != entry.context_id:
                    raise _invalid(
                        "context_id",
                        f"message {index} names {request.context_id!r}; the stream explains "
                        f"{entry.context_id}",
                    )
                elif source == "context":
                    decoded = self._decode_spec(request.context, "context.")
                    if self._context_id(*decoded) != entry.context_id:
                        raise _invalid(
                            "context", f"message {index} carries a different context than message 0"
                        )
                response = self._explain(entry, request, context, first_row)
                if index == 0:
                    response.context.CopyFrom(entry.info)
                first_row += response.values.shape[0]
                yield response
        finally:
            self._streams.release()

    @_handled
    def GetContext(self, request, context):
        request = _parsed(request)
        return self._held(request.context_id).info

    @_handled
    def DeleteContext(self, request, context):
        request = _parsed(request)
        entry = self.store.delete(request.context_id)
        if entry is None:
            raise _not_held(request.context_id)
        return pb.DeleteContextResponse(context_id=entry.context_id, freed_bytes=entry.memory_bytes)

    @_handled
    def ListContexts(self, request, context):
        request = _parsed(request)
        entries, total = self.store.snapshot()
        return pb.ListContextsResponse(contexts=[e.info for e in entries], total_bytes=total)

    @_handled
    def GetServerInfo(self, request, context):
        request = _parsed(request)
        s = self.settings
        entries, total = self.store.snapshot()
        return pb.ServerInfo(
            version=self.version,
            artifact_version=self.artifact_version,
            artifact_sha256=self.artifact_sha256,
            limits=pb.Limits(
                max_message_bytes=s.max_message_bytes,
                max_context_rows=s.max_context_rows,
                max_features=s.max_features,
                max_outputs=s.max_outputs,
                max_explain_rows=s.max_explain_rows,
                max_contexts=s.max_contexts,
                max_context_store_bytes=s.max_context_store_bytes,
                max_concurrent_streams=s.max_concurrent_streams,
            ),
            contexts_held=len(entries),
            context_store_bytes=total,
        )


def _explain_rows(explainer, rows: np.ndarray, predictions: np.ndarray | None, should_stop=None):
    return explainer.explain(
        np.asarray(rows, dtype=np.float64),
        None if predictions is None else np.asarray(predictions, dtype=np.float64),
        should_stop=should_stop,
    )


def _joined(parts: list, name: str, dtype: int, as_values: bool) -> pb.Tensor:
    arrays = [getattr(part, name) for part in parts]
    array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    if as_values:
        code, shape, values = encode_tensor_values(array, dtype)
        return pb.Tensor(dtype=code, shape=shape, values=values)
    code, shape, data = encode_tensor(array, dtype)
    return pb.Tensor(dtype=code, shape=shape, data=data)
