"""Request messages -> canonical arrays for the context service, and its results -> responses.

Decoding checks what the wire can get wrong (a required field missing, a tensor that does not
decode, a streamed context whose blocks disagree) and names the request field; what the values
mean is the context service's and the estimator's to check.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from shapley_svc._proto import shapley_pb2 as pb
from shapley_svc.codecs import (
    DTYPE_FLOAT64,
    decode_tensor,
    dtype_name,
    encode_tensor,
    encode_tensor_values,
    itemsize,
)
from shapley_svc.contexts import ContextSpec, StoredContext
from shapley_svc.errors import InvalidArgumentError, LimitExceededError
from shapley_svc.estimator.explainer import Explanation
from shapley_svc.estimator.surrogates import ZOO


@dataclass(frozen=True)
class AnswerFormat:
    """How an ExplainResponse carries its numbers: ``dtype`` (a DType code) and, for JSON
    callers, ``as_values`` (the Tensor's ``values`` instead of its ``data``)."""

    dtype: int
    as_values: bool

    @property
    def itemsize(self) -> int:
        # Plain values travel as packed doubles whatever dtype rounds them to.
        return 8 if self.as_values else itemsize(self.dtype)

    def tensor(self, array: np.ndarray) -> pb.Tensor:
        if self.as_values:
            code, shape, values = encode_tensor_values(array, self.dtype)
            return pb.Tensor(dtype=code, shape=shape, values=values)
        code, shape, data = encode_tensor(array, self.dtype)
        return pb.Tensor(dtype=code, shape=shape, data=data)


def tensor(
    field: str,
    message: pb.Tensor,
    ndims: tuple[int, ...],
    max_elements: int,
    *,
    allow_nan: bool = False,
):
    """The float array a Tensor message carries (a read-only view of its bytes, or its plain
    ``values``); ``allow_nan`` for rows, whose NaN cells are missing values."""
    return decode_tensor(
        field,
        message.dtype,
        message.shape,
        message.data,
        ndims=ndims,
        max_elements=max_elements,
        values=message.values,
        allow_nan=allow_nan,
    )


def _required(message, names: Iterable[str], prefix: str, where: str = "") -> None:
    for name in names:
        if not message.HasField(name):
            raise InvalidArgumentError(f"{prefix}{name}", f"is required{where}")


def _block(spec: pb.ContextSpec, max_elements: int) -> tuple[np.ndarray, np.ndarray]:
    rows = tensor("context.rows", spec.rows, (2,), max_elements, allow_nan=True)
    predictions = tensor("context.predictions", spec.predictions, (1, 2), max_elements)
    return rows, predictions


def _spec(spec: pb.ContextSpec, rows: np.ndarray, predictions: np.ndarray) -> ContextSpec:
    # Row counts, background indices, names, the seed, the groups and the categorical columns are
    # the estimator's to check.
    return ContextSpec(
        rows,
        predictions,
        background=np.asarray(spec.background, dtype=np.int64),
        feature_names=tuple(spec.feature_names),
        random_state=int(spec.random_state),
        groups=tuple((g.name, np.asarray(g.columns, dtype=np.int64)) for g in spec.groups),
        # A set of columns: sorted, so that one context has one content address however the
        # caller ordered them (a spec already in order keeps the id it had).
        categorical_columns=np.sort(np.asarray(spec.categorical_columns, dtype=np.int64)),
    )


def context_spec(spec: pb.ContextSpec, max_elements: int) -> ContextSpec:
    """A ``context`` field (of CreateContextRequest or ExplainRequest), decoded."""
    _required(spec, ("rows", "predictions"), "context.")
    rows, predictions = _block(spec, max_elements)
    if spec.total_rows and spec.total_rows != rows.shape[0]:
        raise InvalidArgumentError(
            "context.total_rows", f"is {spec.total_rows}; the context has {rows.shape[0]} rows"
        )
    return _spec(spec, rows, predictions)


def streamed_context_spec(
    requests: Iterable[pb.CreateContextRequest],
    max_elements: int,
    check_size: Callable[[np.ndarray, np.ndarray, int], None],
) -> ContextSpec:
    """A streamed context's blocks, checked as they arrive (``check_size(rows, predictions,
    rows_before)`` refuses a context grown too large) and joined in order."""
    row_blocks, prediction_blocks, first = [], [], None
    n_rows = 0
    for index, request in enumerate(requests):
        if not request.HasField("context"):
            raise InvalidArgumentError("context", f"message {index} carries no context block")
        spec = request.context
        _required(spec, ("rows", "predictions"), "context.", f" (message {index})")
        if index == 0:
            first = spec
        else:
            late = [
                name
                for name in (
                    "background",
                    "feature_names",
                    "random_state",
                    "groups",
                    "categorical_columns",
                    "total_rows",
                )
                if getattr(spec, name)
            ]
            if late:
                raise InvalidArgumentError(
                    f"context.{late[0]}",
                    f"message {index} sets it; only the first message of a stream may",
                )
        try:
            rows, predictions = _block(spec, max_elements)
            check_size(rows, predictions, n_rows)
        except (InvalidArgumentError, LimitExceededError) as error:
            # Positions in a block's message are the block's: say where the block starts.
            raise type(error)(
                error.argument,
                f"{error.problem} (in message {index}, whose first row is row {n_rows} of the "
                "context)",
            ) from None
        if predictions.shape[0] != rows.shape[0]:
            raise InvalidArgumentError(
                "context.predictions",
                f"message {index} has {predictions.shape[0]} predictions for {rows.shape[0]} rows",
            )
        if row_blocks and rows.shape[1] != row_blocks[0].shape[1]:
            raise InvalidArgumentError(
                "context.rows",
                f"message {index} has {rows.shape[1]} features; message 0 had "
                f"{row_blocks[0].shape[1]}",
            )
        if row_blocks and predictions.shape[1:] != prediction_blocks[0].shape[1:]:
            raise InvalidArgumentError(
                "context.predictions",
                f"message {index} has predictions shaped {list(predictions.shape)}; message 0 "
                f"had {list(prediction_blocks[0].shape)}",
            )
        if first.total_rows and n_rows + rows.shape[0] > first.total_rows:
            raise InvalidArgumentError(
                "context.total_rows",
                f"is {first.total_rows}; message {index} brings the stream to "
                f"{n_rows + rows.shape[0]} rows",
            )
        row_blocks.append(rows)
        prediction_blocks.append(predictions)
        n_rows += rows.shape[0]
    if first is None:
        raise InvalidArgumentError("context", "the stream carried no messages")
    if first.total_rows and n_rows != first.total_rows:
        raise InvalidArgumentError(
            "context.total_rows",
            f"is {first.total_rows}; the stream ended after {n_rows} rows (cancelled, or its "
            "connection closed part way): nothing was fitted",
        )
    return _spec(first, np.concatenate(row_blocks), np.concatenate(prediction_blocks))


def query(
    request: pb.ExplainRequest, max_elements: int
) -> tuple[np.ndarray, np.ndarray | None, AnswerFormat]:
    """An ExplainRequest's rows, predictions (or None) and answer format."""
    rows, predictions = _rows_and_predictions(request, max_elements)
    return rows, predictions, answer_format(request)


def answer_format(request: pb.ExplainRequest | pb.RefineRequest) -> AnswerFormat:
    dtype = request.output_dtype or DTYPE_FLOAT64
    if dtype not in (pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64):
        raise InvalidArgumentError(
            "output_dtype", f"must be DTYPE_FLOAT32 or DTYPE_FLOAT64; got {dtype_name(dtype)}"
        )
    return AnswerFormat(dtype, request.output_values)


def _rows_and_predictions(request, max_elements: int) -> tuple[np.ndarray, np.ndarray | None]:
    _required(request, ("rows",), "")
    rows = tensor("rows", request.rows, (2,), max_elements, allow_nan=True)
    predictions = None
    if request.HasField("predictions"):
        predictions = tensor("predictions", request.predictions, (1, 2), max_elements)
    return rows, predictions


@dataclass(frozen=True)
class Refinement:
    """What a ProposeRequest or RefineRequest asks of the context service (the proposal is
    rebuilt from these fields alone); ``random_state`` None means the context's seed."""

    context_id: str
    rows: np.ndarray
    predictions: np.ndarray | None
    budget: int
    random_state: int | None


def refinement(request: pb.ProposeRequest | pb.RefineRequest, max_elements: int) -> Refinement:
    """The fields a proposal is made from; the budget and seed are the estimator's to check."""
    if not request.context_id:
        raise InvalidArgumentError("context_id", "is required")
    rows, predictions = _rows_and_predictions(request, max_elements)
    seed = request.random_state if request.HasField("random_state") else None
    return Refinement(request.context_id, rows, predictions, int(request.budget), seed)


@dataclass(frozen=True)
class CalibrationAsked:
    """What a ProposeCalibrationRequest or CalibrateRequest asks: ``budget`` None for the
    default, ``random_state`` None for the context's seed, ``refit`` whether the default budget
    is a refit's (a ProposeCalibrationRequest's ``refit``; a CalibrateRequest with a context)."""

    context_id: str
    budget: int | None
    random_state: int | None
    refit: bool


def calibration(
    request: pb.ProposeCalibrationRequest | pb.CalibrateRequest,
) -> CalibrationAsked:
    """The fields a calibration proposal is made from; the estimator checks the budget's
    least value and the seed's range."""
    if not request.context_id:
        raise InvalidArgumentError("context_id", "is required")
    if request.budget < 0:
        raise InvalidArgumentError(
            "budget", f"must be 0 (the default) or a number of rows; got {request.budget}"
        )
    seed = request.random_state if request.HasField("random_state") else None
    if isinstance(request, pb.CalibrateRequest):
        refit = request.HasField("context")
    else:
        refit = request.refit
    return CalibrationAsked(request.context_id, int(request.budget) or None, seed, refit)


def propose_calibration_response(
    context_id: str,
    rows: np.ndarray,
    budget: int,
    as_values: bool,
    artifact_version: str,
    proposal_sha256: str,
) -> pb.ProposeCalibrationResponse:
    return pb.ProposeCalibrationResponse(
        context_id=context_id,
        rows=AnswerFormat(DTYPE_FLOAT64, as_values).tensor(rows),
        budget=budget,
        artifact_version=artifact_version,
        proposal_sha256=proposal_sha256,
    )


def outputs(request: pb.RefineRequest | pb.CalibrateRequest, max_elements: int) -> np.ndarray:
    """The model's outputs on the proposed rows; their count and values are the estimator's to
    check."""
    _required(request, ("outputs",), "")
    return tensor("outputs", request.outputs, (1, 2), max_elements)


def proposal_sha256(request: pb.RefineRequest | pb.CalibrateRequest) -> str:
    """The request's proposal_sha256 in lower case, checked: empty, or a sha256 in hex."""
    text = request.proposal_sha256
    if text and (len(text) != _SHA256_HEX or any(c not in "0123456789abcdefABCDEF" for c in text)):
        raise InvalidArgumentError(
            "proposal_sha256",
            "must be empty or the proposal_sha256 the proposal came with (64 hexadecimal "
            f"digits); got "
            f"{text[:80]!r}" + (f" ({len(text)} characters)" if len(text) > 80 else ""),
        )
    return text.lower()


def propose_response(
    context_id: str,
    rows: np.ndarray,
    rows_per_query: int,
    as_values: bool,
    artifact_version: str,
    proposal_sha256: str,
) -> pb.ProposeResponse:
    return pb.ProposeResponse(
        context_id=context_id,
        rows=AnswerFormat(DTYPE_FLOAT64, as_values).tensor(rows),
        rows_per_query=rows_per_query,
        artifact_version=artifact_version,
        proposal_sha256=proposal_sha256,
    )


# Upper bounds on what protobuf adds around an answer's numbers. Every field number here is
# below 16, so a tag is one byte; a varint takes at most 10 bytes, and a length prefix at most 5
# (a message is under 4 GiB).
_VARINT = 10
_LENGTH = 5


def _delimited(payload: int) -> int:
    """A length-delimited field of ``payload`` bytes: its tag, length prefix and payload."""
    return 1 + _LENGTH + payload


def _string(text: str) -> int:
    return _delimited(len(text.encode()))


# A Tensor field besides its numbers: its tag and length, the dtype, up to 3 axes of shape, and
# the tag and length of ``data`` (or of the packed ``values``).
_TENSOR_FRAMING = _delimited(2 + _delimited(3 * _VARINT) + 1 + _LENGTH)


def answer_bytes_per_row(info: pb.ContextInfo, answer: AnswerFormat) -> int:
    """The bytes of one row's answer: values and uncertainty per attribution, a base value."""
    return (2 * len(info.attribution_names) + 1) * info.n_outputs * answer.itemsize


def description_bound(spec: ContextSpec, artifact_version: str) -> int:
    """At most what the answer to CreateContext takes for the context ``spec`` describes, known
    before it is fitted: its ContextInfo with the spec's names, groups and categorical columns,
    every zoo member's diagnostics and a calibration's per output, and each number at its
    widest (what Explain's answers carry besides their rows' numbers, too)."""
    d = spec.rows.shape[1]
    n_outputs = 1 if spec.predictions.ndim == 1 else spec.predictions.shape[1]
    names = list(spec.feature_names) or [f"x{j}" for j in range(d)]
    widest = 2**63 - 1
    output = pb.OutputDiagnostics(
        predicted_fidelity=1.0,
        surrogates=[
            pb.SurrogateDiagnostics(name=kind.name, oof_r2=1.0, weight=1.0) for kind in ZOO
        ],
        calibration=pb.CalibrationDiagnostics(
            scale=1.0, gap_r2_zero_shot=1.0, gap_r2_calibrated=1.0
        ),
    )
    info = pb.ContextInfo(
        context_id="ctx-" + "f" * 40,
        n_rows=widest,
        n_features=widest,
        n_outputs=widest,
        single_output=True,
        feature_names=names,
        n_background=widest,
        outputs=[output] * n_outputs,
        artifact_version=artifact_version,
        memory_bytes=widest,
        fit_seconds=1.0,
        groups=[pb.FeatureGroup(name=name, columns=cols.tolist()) for name, cols in spec.groups],
        attribution_names=[name for name, _ in spec.groups] or names,
        categorical_columns=spec.categorical_columns.tolist(),
        calibration_rows=widest,
        calibration_refitted=True,
        # Sets of two take the most bytes per attribution.
        aliases=[pb.AliasSet(attributions=[2**32 - 1] * 2)] * (len(spec.groups or names) // 2),
    )
    return _delimited(info.ByteSize()) + 2  # and ``created``


def answer_fixed_bytes(
    context_id: str, artifact_version: str, described: pb.ContextInfo | None
) -> int:
    """At most what an ExplainResponse takes besides its rows' numbers (``answer_bytes_per_row``
    each): the ids, ``first_row`` and ``model_rows``, the three tensors' framing, and the
    ``described`` context when the answer carries it."""
    fixed = _string(context_id) + _string(artifact_version) + 2 * (1 + _VARINT)
    fixed += 3 * _TENSOR_FRAMING
    if described is not None:
        # Refinement may grow the context before the answer describes it: its memory_bytes, a
        # varint, may then take more bytes than now.
        fixed += _delimited(described.ByteSize() + _VARINT)
    return fixed


# A sha256 in hex: ProposeResponse.proposal_sha256 and RefineRequest.proposal_sha256.
_SHA256_HEX = 64


def proposal_fixed_bytes(context_id: str, artifact_version: str) -> int:
    """At most what a ProposeResponse or ProposeCalibrationResponse takes besides its rows'
    float64s: the ids, ``rows_per_query`` or ``budget``, the proposal's sha256, and the rows'
    tensor framing."""
    return (
        _string(context_id)
        + _string(artifact_version)
        + 1
        + _VARINT
        + _delimited(_SHA256_HEX)
        + _TENSOR_FRAMING
    )


def refine_request_fixed_bytes(context_id: str) -> int:
    """At most what a RefineRequest takes besides its tensors' numbers: the id, ``budget``,
    ``random_state``, ``output_dtype`` and ``output_values``, the proposal's sha256, and three
    tensors' framing."""
    return _string(context_id) + 4 * (1 + _VARINT) + _delimited(_SHA256_HEX) + 3 * _TENSOR_FRAMING


def explain_response(
    context_id: str,
    explanation: Explanation,
    answer: AnswerFormat,
    artifact_version: str,
    first_row: int,
) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        context_id=context_id,
        values=answer.tensor(explanation.values),
        base_values=answer.tensor(explanation.base_values),
        uncertainty=answer.tensor(explanation.uncertainty),
        artifact_version=artifact_version,
        first_row=first_row,
        model_rows=explanation.model_rows,
    )


def context_info(entry: StoredContext) -> pb.ContextInfo:
    """A fitted context as the ContextInfo message: the one place that reads the explainer's
    fitted attributes for the wire."""
    explainer = entry.explainer
    diagnostics = explainer.diagnostics_
    return pb.ContextInfo(
        context_id=entry.context_id,
        n_rows=int(explainer.n_rows_),
        n_features=int(explainer.n_features_in_),
        n_outputs=int(explainer.n_outputs_),
        single_output=bool(explainer.single_output_),
        feature_names=list(explainer.feature_names_),
        n_background=int(explainer.background_.size),
        outputs=[
            pb.OutputDiagnostics(
                predicted_fidelity=output.predicted_fidelity,
                surrogates=[
                    pb.SurrogateDiagnostics(name=s.name, oof_r2=s.oof_r2, weight=s.weight)
                    for s in output.surrogates
                ],
                calibration=None
                if output.calibration is None
                else pb.CalibrationDiagnostics(
                    scale=output.calibration.scale,
                    gap_r2_zero_shot=output.calibration.gap_r2_zero_shot,
                    gap_r2_calibrated=output.calibration.gap_r2_calibrated,
                ),
            )
            for output in diagnostics.outputs
        ],
        calibration_rows=diagnostics.calibration_rows,
        calibration_refitted=bool(
            explainer.calibration_ is not None and explainer.calibration_.refitted
        ),
        artifact_version=diagnostics.artifact_version,
        memory_bytes=entry.memory_bytes,
        fit_seconds=entry.fit_seconds,
        groups=[
            pb.FeatureGroup(name=name, columns=columns) for name, columns in explainer.groups_ or ()
        ],
        attribution_names=explainer.attribution_names_,
        categorical_columns=explainer.categorical_.tolist(),
        aliases=[pb.AliasSet(attributions=members) for members in explainer.alias_sets],
    )


# A page token is the last context id its page listed; the prefix tells a token from an id
# pasted by mistake, and lets a later format be told apart.
_PAGE_TOKEN_PREFIX = "after:"


def contexts_page(
    entries: list[StoredContext], page_size: int, page_token: str, total_bytes: int, limit: int
) -> pb.ListContextsResponse:
    """The ListContexts answer for ``entries`` (most recently used first) within ``limit``
    bytes: all of them in that order when neither ``page_size`` nor ``page_token`` is set (or
    RESOURCE_EXHAUSTED on ``page_size`` when they do not fit), else the page after
    ``page_token`` in context_id order, at most ``page_size`` long and as long as fits."""
    if page_size < 0:
        raise InvalidArgumentError("page_size", f"must be 0 or more, got {page_size}")
    fixed = _delimited(_VARINT) + _delimited(len(_PAGE_TOKEN_PREFIX) + _CONTEXT_ID_BYTES)
    if page_size == 0 and not page_token:
        sizes = [_delimited(entry.description.ByteSize()) for entry in entries]
        if fixed + sum(sizes) > limit:
            raise LimitExceededError(
                "page_size",
                f"the {len(entries)} held contexts' descriptions take {sum(sizes)} bytes, more "
                f"than fit in one {limit}-byte message; list them in pages (page_size > 0)",
            )
        return pb.ListContextsResponse(
            contexts=[entry.description for entry in entries], total_bytes=total_bytes
        )
    after = _page_start(page_token)
    remaining = sorted(
        (entry for entry in entries if entry.context_id > after), key=lambda e: e.context_id
    )
    page: list[pb.ContextInfo] = []
    used = fixed
    for entry in remaining[: page_size or len(remaining)]:
        size = _delimited(entry.description.ByteSize())
        # The first context of a page always goes in: the server refuses, before its fit, a
        # context whose description would not fit in a message alone.
        if page and used + size > limit:
            break
        page.append(entry.description)
        used += size
    more = len(page) < len(remaining)
    return pb.ListContextsResponse(
        contexts=page,
        total_bytes=total_bytes,
        next_page_token=_PAGE_TOKEN_PREFIX + page[-1].context_id if more else "",
    )


# "ctx-" and 40 hex digits (contexts.spec.content_id).
_CONTEXT_ID_BYTES = 44


def _page_start(page_token: str) -> str:
    """The context id a page starts after ("" for the first page)."""
    if not page_token:
        return ""
    after = page_token.removeprefix(_PAGE_TOKEN_PREFIX)
    if after == page_token or not after:
        raise InvalidArgumentError(
            "page_token",
            f"{page_token[:80]!r} is not a next_page_token of ListContexts; "
            "leave it empty for the first page",
        )
    return after
