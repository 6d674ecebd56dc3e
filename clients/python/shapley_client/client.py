"""``ShapleyClient``: the shapley.v1 service from Python, with numpy arrays in and out."""

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from numbers import Integral, Real
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shapley_client._proto import shapley_pb2 as pb
from shapley_client._proto import shapley_pb2_grpc
from shapley_client.tables import code_frame, coded_columns, display_rows, is_data_frame

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
_DTYPES = {"float32": (pb.DTYPE_FLOAT32, "<f4"), "float64": (pb.DTYPE_FLOAT64, "<f8")}
_NUMPY_OF = {pb.DTYPE_FLOAT32: "<f4", pb.DTYPE_FLOAT64: "<f8"}
# ListContexts' page_size is an int32; the server caps each page by its message limit.
_AS_MANY_AS_FIT = 2**31 - 1
# Seeds are ints in [0, 2**32): scikit-learn's range, which the estimator and the server keep.
_SEEDS = 2**32


@dataclass(frozen=True)
class FieldViolation:
    """One ``google.rpc.BadRequest.FieldViolation``: the request ``field`` at fault (e.g.
    "rows", "context.predictions") and the ``description`` of the problem."""

    field: str
    description: str


class ShapleyError(Exception):
    """A call failed: ``code`` (a ``grpc.StatusCode``), ``details`` (the status message) and,
    when the server named them, the request fields at fault: ``violations``, read from the
    ``google.rpc.BadRequest`` of the call's rich status (``grpc-status-details-bin``), and
    ``field``, the first one's field (None when there is none)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, violations: Sequence[FieldViolation] = ()
    ):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.violations = tuple(violations)

    @property
    def field(self) -> str | None:
        return self.violations[0].field if self.violations else None

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "ShapleyError":
        try:
            status = rpc_status.from_call(error)  # None when the call carried no rich status
        except (DecodeError, ValueError):  # garbled, or at odds with the call's own status
            status = None  # the code and message still say what happened
        violations = []
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
        return cls(error.code(), error.details() or "", violations)


class InvalidArgumentError(ShapleyError, ValueError):
    """An argument the client refuses before sending, as the server refuses it in a call that
    carries it whole: code INVALID_ARGUMENT, the request field named (``field``) and the server's
    words. Also a ``ValueError``, like the client's other checks of its arguments."""

    def __init__(self, argument: str, problem: str):
        super().__init__(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{argument}: {problem}",
            [FieldViolation(argument, problem)],
        )


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong type, refused before sending: an :class:`InvalidArgumentError`
    that is still the ``TypeError`` the client raised for it before it named the field."""


@dataclass(frozen=True)
class TlsConfig:
    """PEM bytes: the CA to trust (None: system roots) and, for mutual TLS, a client key pair."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None


class _ReadableByKey:
    """Readable by key too, like the dicts these dataclasses replaced: ``d["weight"]``."""

    def __getitem__(self, key: str):
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True)
class SurrogateDiagnostics(_ReadableByKey):
    """How one zoo surrogate fits the context (proto ``SurrogateDiagnostics``)."""

    name: str
    oof_r2: float  # out-of-fold R^2 of the surrogate on the context's predictions
    weight: float  # its weight in the combined attribution, in [0, 1]


@dataclass(frozen=True)
class CalibrationDiagnostics(_ReadableByKey):
    """How calibration changed one output (proto ``CalibrationDiagnostics``)."""

    scale: float  # what the weighted mix of the surrogates is multiplied by
    gap_r2_zero_shot: float  # R^2 of the proxy's pair gaps against the model's, gate weights
    gap_r2_calibrated: float  # the same with the calibrated weights (fitted to those rows)


@dataclass(frozen=True)
class OutputDiagnostics(_ReadableByKey):
    """Diagnostics of one model output (proto ``OutputDiagnostics``): the predicted fidelity
    (expected Pearson r between the attributions and the true SHAP values), the surrogates
    that applied, in the server's order, and for a calibrated context what calibration did."""

    predicted_fidelity: float
    surrogates: list[SurrogateDiagnostics]
    calibration: CalibrationDiagnostics | None = None

    def __getitem__(self, key: str):
        if key == "surrogates":  # the dict this replaced held them by name
            return {s.name: s for s in self.surrogates}
        return super().__getitem__(key)


def _diagnostics(info: pb.ContextInfo) -> list[OutputDiagnostics]:
    return [
        OutputDiagnostics(
            output.predicted_fidelity,
            [SurrogateDiagnostics(s.name, s.oof_r2, s.weight) for s in output.surrogates],
            CalibrationDiagnostics(
                output.calibration.scale,
                output.calibration.gap_r2_zero_shot,
                output.calibration.gap_r2_calibrated,
            )
            if output.HasField("calibration")
            else None,
        )
        for output in info.outputs
    ]


def _attribution_names(info: pb.ContextInfo) -> list[str]:
    return list(info.attribution_names or info.feature_names)


@dataclass
class Context:
    """A context on the server: its id and diagnostics, and the data to recreate it anywhere.

    ``categories`` maps each column coded from a DataFrame (by feature name) to its labels: code
    c stands for ``labels[c]``. Query DataFrames passed to ``explain`` are coded with them.
    ``calibrations``: for a context from :meth:`ShapleyClient.calibrate`, the Calibrate requests
    (with the model's outputs) that lead from the context ``spec`` creates to this one, in order,
    each naming the context it calibrated: a context calibrated again is recreated anywhere by
    replaying them all. ``spec`` is then the first context's, not this one's.
    """

    context_id: str
    info: pb.ContextInfo
    spec: pb.ContextSpec = field(repr=False)
    categories: dict[str, list] = field(default_factory=dict)
    calibrations: tuple[pb.CalibrateRequest, ...] = field(default=(), repr=False)

    @property
    def calibration(self) -> pb.CalibrateRequest | None:
        """The request that calibrated this context (the last of ``calibrations``); None for a
        context that is not calibrated."""
        return self.calibrations[-1] if self.calibrations else None

    @property
    def calibration_rows(self) -> int:
        """Rows of your model scored to calibrate this context; 0 when not calibrated."""
        return int(self.info.calibration_rows)

    @property
    def calibration_refitted(self) -> bool:
        """True when calibration refitted the surrogates on the context and the scored rows,
        False when it refitted their weights only (or the context is not calibrated)."""
        return bool(self.info.calibration_refitted)

    @property
    def feature_names(self) -> list[str]:
        return list(self.info.feature_names)

    @property
    def categorical_columns(self) -> list[int]:
        """Indices of the columns whose values are category codes (declared or coded)."""
        return list(self.info.categorical_columns)

    def _categories_by_column(self) -> dict[int, list]:
        position = {name: j for j, name in enumerate(self.feature_names)}
        return {position[name]: labels for name, labels in self.categories.items()}

    @property
    def attribution_names(self) -> list[str]:
        """What answers attribute to: the groups' names, or the features' without groups."""
        return _attribution_names(self.info)

    @property
    def diagnostics(self) -> list[OutputDiagnostics]:
        """Per output: the predicted fidelity and each surrogate's out-of-fold R^2 and weight."""
        return _diagnostics(self.info)

    @property
    def aliases(self) -> list[list[str]]:
        """Sets of attribution names that the context's rows cannot tell apart (a copy, x and
        log x, an indicator and its complement): explain's uncertainty for them includes how
        their joint value could split, and a refined answer (``model=``) tells them apart."""
        names = self.attribution_names
        return [[names[j] for j in s.attributions] for s in self.info.aliases]


@dataclass(frozen=True)
class Explanation:
    """Attributions of m rows, with the rows and the context's diagnostics.

    Attributes
    ----------
    values : (m, P) for a single-output context, (m, P, K) for K outputs; P is d, or the number
        of groups for a context with groups.
    base_values : (m,) or (m, K): the mean prediction over the context's background rows.
    uncertainty : like ``values``: the standard deviation of each estimate.
    attribution_names : the P names along ``values``' second axis: the groups', or the
        features' for a context without groups.
    data : (m, d): the explained rows as sent (float32 rows stay float32, the rest is float64;
        a DataFrame's coded columns as their codes, -1 for a label the context never showed,
        NaN for missing values).
    feature_names : the d names of ``data``'s columns.
    grouped : True for a context with groups: ``data``'s d columns do not line up with the P
        values.
    diagnostics : per output, the context's :class:`OutputDiagnostics`.
    context_id, artifact_version : what answered.
    display_data : None, or (m, d) objects for a context with coded columns: a query
        DataFrame's own values (labels, None for a missing label), or the labels of the codes
        sent in an array (None for a missing or unknown code).
    model_rows : rows of your model the answer used per explained row: 0 for a zero-shot
        answer, the proposal's ``rows_per_query`` for a refined one (``explain(model=...)``).
    """

    values: np.ndarray
    base_values: np.ndarray
    uncertainty: np.ndarray
    attribution_names: list[str]
    data: np.ndarray
    feature_names: list[str]
    grouped: bool
    diagnostics: list[OutputDiagnostics]
    context_id: str
    artifact_version: str
    display_data: np.ndarray | None = None
    model_rows: int = 0

    def to_shap(self):
        """A ``shap.Explanation`` for shap's plots (needs shap: ``pip install shap``).

        It carries ``data`` and ``feature_names``, so a beeswarm colours each point by its
        feature's value and a waterfall prints the values (``display_data``: the labels of coded
        columns); ``uncertainty`` is its ``error_std``. With groups there is no single value per
        group: the plots get the group names and no data (points in grey, no values printed).
        """
        try:
            import shap
        except ImportError:
            raise ImportError("to_shap() needs the shap package: pip install shap") from None
        return shap.Explanation(
            values=self.values,
            base_values=self.base_values,
            data=None if self.grouped else self.data,
            display_data=None if self.grouped else self.display_data,
            feature_names=list(self.attribution_names),
            error_std=self.uncertainty,
        )

    def to_pandas(self):
        """A tidy ``pandas.DataFrame``, one line per value (needs pandas: ``pip install pandas``).

        Columns: ``row`` (0..m-1), ``attribution`` (a feature's or a group's name, categorical in
        ``attribution_names`` order), ``output`` (0..K-1, only for a K-output context),
        ``value`` and ``uncertainty``. Rows run over ``row``, then ``attribution``, then
        ``output``, like ``values.ravel()``.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs the pandas package: pip install pandas") from None
        m, players = self.values.shape[:2]
        outputs = self.values.shape[2] if self.values.ndim == 3 else 1
        names = pd.Categorical.from_codes(
            np.tile(np.repeat(np.arange(players), outputs), m), categories=self.attribution_names
        )
        columns = {"row": np.repeat(np.arange(m), players * outputs), "attribution": names}
        if self.values.ndim == 3:
            columns["output"] = np.tile(np.arange(outputs), m * players)
        columns["value"] = self.values.ravel()
        columns["uncertainty"] = self.uncertainty.ravel()
        return pd.DataFrame(columns)


@dataclass(frozen=True)
class Proposal:
    """The rows the server proposes for your model to score (:meth:`ShapleyClient.propose`).

    rows : (m * rows_per_query, d) float64, a block of ``rows_per_query`` rows per explained
        row, in order (NaN where a background row has a missing value); score them all and pass
        the outputs to :meth:`ShapleyClient.refine` with the same rows, predictions, budget and
        random_state.
    rows_per_query : R <= budget.
    context_id, artifact_version : what proposed them.
    proposal_sha256 : the rows' sha256 (hex), as the server computed it: pass it to
        :meth:`ShapleyClient.refine`, which then refuses outputs scored on rows other than the
        ones the refining server would propose (a replica of another version).
    """

    rows: np.ndarray
    rows_per_query: int
    context_id: str
    artifact_version: str
    proposal_sha256: str = ""


@dataclass(frozen=True)
class CalibrationProposal:
    """The rows the server proposes for your model to score, once, to calibrate a context
    (:meth:`ShapleyClient.propose_calibration`).

    rows : (rows, d) float64 (NaN where a background row has a missing value).
    budget : the budget they were drawn for; send it back with the outputs.
    context_id, artifact_version : what proposed them.
    proposal_sha256 : the rows' sha256 (hex), as the server computed it; :meth:`calibrate`
        sends it back, so that a server that would propose other rows (another version)
        refuses the outputs instead of calibrating on them.
    """

    rows: np.ndarray
    budget: int
    context_id: str
    artifact_version: str
    proposal_sha256: str = ""


def _column_names(table) -> list[str] | None:
    """A DataFrame's column names as strings (duck-typed: no pandas needed); None for arrays."""
    columns = getattr(table, "columns", None)
    return None if columns is None else [str(name) for name in columns]


def _check_columns(names: list[str] | None, rows) -> None:
    """A DataFrame explained against a context must have its ``names``, in order: the server
    sees only numbers and would attribute them to the wrong names. As the estimator rules: a
    context with the default names x0, x1, ... takes columns named as you like, but not those
    names in another order."""
    columns = _column_names(rows)
    if columns is None or names is None:
        return
    if columns != names and (
        names != [f"x{j}" for j in range(len(names))] or sorted(columns) == sorted(names)
    ):
        raise InvalidArgumentError(
            "rows",
            f"has columns {columns}; the context was fitted on {names} (same names, same order)",
        )


def _query_rows(
    context: "Context | str", rows, info: pb.ContextInfo | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows as sent and their display data: a DataFrame's coded columns take the context's
    labels (a label it never showed becomes an unseen category); an array's codes are shown as
    the labels they stand for. Display data only for a context with coded columns.

    ``info``, for a DataFrame with a context id: the context's (``GetContext``), whose names
    the frame's columns are checked against, as a :class:`Context`'s are. Its categorical
    columns are refused in a frame: a frame holds labels there, which only the Context that
    ``create_context`` returned can code (numbers there would be sent as codes: labels 0, 10,
    20 as codes 0, 10, 20)."""
    if isinstance(context, Context):
        names, categories = context.feature_names, context._categories_by_column()
    else:
        names = None if info is None else list(info.feature_names)
        categories = None
    _check_columns(names, rows)
    if is_data_frame(rows):
        if categories is None and coded_columns(rows):
            raise InvalidArgumentError(
                "rows",
                f"columns {coded_columns(rows)} hold labels: coding them needs the Context "
                "that create_context returned (it keeps the labels), not a context id",
            )
        if categories is None and info is not None and info.categorical_columns:
            columns = [names[j] for j in info.categorical_columns if j < len(names)]
            raise InvalidArgumentError(
                "rows",
                f"columns {columns} are categorical in context {info.context_id}: a "
                "DataFrame holds labels there, which only the Context that create_context "
                "returned can code; pass that Context, or the rows as an array of codes",
            )
        coded = code_frame(rows, categories or {}, "rows")
        return coded.rows, coded.display if categories else None
    data = _as_sent(rows, "rows")
    if categories and data.ndim == 2:
        return data, display_rows(data, categories)
    return data, None


def _categorical_indices(categorical_columns, names: list[str]) -> list[int]:
    """Column indices from indices or names (resolved against ``names``). Indices are not
    checked against d: the server refuses them naming ``context.categorical_columns``."""
    if categorical_columns is None:
        return []
    if isinstance(categorical_columns, str | bytes) or not hasattr(categorical_columns, "__iter__"):
        raise TypeError(
            "categorical_columns must be a list of column indices or names; got "
            f"{type(categorical_columns).__name__}"
        )
    indices = []
    for item in categorical_columns:
        if isinstance(item, str):
            if item not in names:
                raise ValueError(
                    f"categorical_columns names column {item!r}, which is not a feature name "
                    f"({names})"
                )
            indices.append(names.index(item))
        elif isinstance(item, int | np.integer) and not isinstance(item, bool | np.bool_):
            if item < 0:
                raise ValueError(f"categorical_columns holds {int(item)}; indices are >= 0")
            indices.append(int(item))
        else:
            raise TypeError(f"categorical_columns must hold column indices or names; got {item!r}")
    return indices


def _feature_groups(groups, d: int | None) -> list[pb.FeatureGroup]:
    """The groups as sent, taken as the estimator's ``groups=`` takes them: a mapping of group
    name to column indices, or a sequence of (name, indices) pairs; integer indices only (not
    floats, bools or names, which the estimator refuses too). What the wire cannot carry (the
    shapes, non-integer indices, indices past int64) is refused here in the estimator's words,
    naming ``context.groups`` as the server names its refusals of groups; so are columns
    outside [0, d), as the server refuses them. Overlaps, uncovered columns and the names are
    left to the server."""
    if groups is None:
        return []
    if isinstance(groups, Mapping):
        items = list(groups.items())
    elif isinstance(groups, Sequence) and not isinstance(groups, str | bytes):
        items = list(groups)
        for position, item in enumerate(items):
            if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
                raise InvalidArgumentError(
                    "context.groups",
                    f"item {position} must be a (name, column indices) pair; got {item!r}",
                )
    else:
        raise InvalidArgumentError(
            "context.groups",
            "must map group names to column indices (or be a list of (name, indices) pairs); "
            f"got {type(groups).__name__}",
        )
    if not items:
        raise InvalidArgumentError("context.groups", "must hold at least one group")
    sent = []
    for name, members in items:
        name = str(name)
        try:
            indices = np.asarray(members)
        except ValueError:  # ragged
            raise InvalidArgumentError(
                "context.groups",
                f"must list non-empty integer column indices; group {name!r} has {members!r}",
            ) from None
        if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
            raise InvalidArgumentError(
                "context.groups",
                f"must list non-empty integer column indices; group {name!r} has dtype "
                f"{indices.dtype}, shape {indices.shape}",
            )
        bound = 2**63 if d is None else d  # d unknown: the server refuses the rows first
        outside = indices[(indices < 0) | (indices >= bound)]
        if outside.size:
            raise InvalidArgumentError(
                "context.groups",
                f"must hold columns of X; group {name!r} holds column {int(outside[0])}, "
                f"outside [0, {bound})",
            )
        sent.append(pb.FeatureGroup(name=name, columns=indices.tolist()))
    return sent


def _background_indices(background, n: int | None) -> list[int]:
    """The background's row indices as sent: integers only, refused naming
    ``context.background`` otherwise (0.5 went as row 0, True as row 1, unseen). Indices
    outside [0, n) are refused here in the server's words: past int64 the wire cannot carry
    them (protobuf raised a bare ValueError). ``n`` None (rows that are not a matrix, which the
    server refuses first): only indices outside int64 are."""
    if background is None:
        return []
    try:
        indices = np.asarray(background)
    except ValueError:  # ragged
        indices = np.asarray([None])
    # Python ints numpy cannot hold as one integer dtype (past int64 with negatives: float64;
    # past uint64: objects) are taken as the ints they are.
    given = indices if isinstance(background, np.ndarray) else background
    if (
        indices.ndim == 1
        and indices.dtype.kind in "fO"
        and all(isinstance(i, Integral) and not isinstance(i, bool | np.bool_) for i in given)
    ):
        values = [int(i) for i in given]
    elif indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise InvalidArgumentError(
            "context.background",
            f"must be 1-D integer row indices; got dtype {indices.dtype}, shape {indices.shape}",
        )
    else:
        values = indices.tolist()
    bound = 2**63 if n is None else n
    if values and (min(values) < 0 or max(values) >= bound):
        raise InvalidArgumentError(
            "context.background",
            f"indices must lie in [0, {bound}); got values from {min(values)} to {max(values)}",
        )
    return values


def _as_sent(array, name: str) -> np.ndarray:
    """The array as it goes on the wire: float32 stays float32, anything else becomes float64;
    contiguous and little-endian."""
    array = np.asarray(array)
    if array.ndim == 0:  # ascontiguousarray would make it one value along one axis
        raise InvalidArgumentError(name, f"must be an array, not a scalar; got {array.item()!r}")
    if array.dtype == np.float32:
        return np.ascontiguousarray(array, dtype="<f4")
    try:
        return np.ascontiguousarray(array, dtype="<f8")
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold numbers; got dtype {array.dtype}") from None


def _pool_rows(pool_rows) -> bool:
    """``pool_rows``, checked: a bool (numpy's too)."""
    if not isinstance(pool_rows, bool | np.bool_):
        raise InvalidArgumentTypeError(
            "pool_rows", f"must be True or False; got {pool_rows!r} ({type(pool_rows).__name__})"
        )
    return bool(pool_rows)


def _tensor(array, name: str) -> pb.Tensor:
    array = _as_sent(array, name)
    code = _DTYPES["float32" if array.dtype == np.float32 else "float64"][0]
    return pb.Tensor(dtype=code, shape=list(array.shape), data=array.tobytes())


DEFAULT_MAX_ATTEMPTS = 5


def retry_service_config(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict:
    """gRPC's service config retrying every Shapley call that fails UNAVAILABLE: the same
    policy as the Node client's (``retryServiceConfig``)."""
    if max_attempts <= 1:
        return {}
    return {
        "methodConfig": [
            {
                "name": [{"service": "shapley.v1.Shapley"}],
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }


def _array(tensor: pb.Tensor) -> np.ndarray:
    return np.frombuffer(tensor.data, dtype=_NUMPY_OF[tensor.dtype]).reshape(tuple(tensor.shape))


class ShapleyClient:
    """A connection to a shapley-svc server.

    Parameters
    ----------
    target : "host:port".
    tls : False for plaintext, True for TLS with the system's roots, or a :class:`TlsConfig`.
    token : bearer token sent with every call, when the server requires one: a string of
        printable ASCII (what gRPC metadata carries). Anything else (a line break left by
        reading it from a file, a non-ASCII character, bytes) is refused here, as
        :class:`InvalidArgumentError` on ``token``, without quoting the token.
    timeout : deadline of each call in seconds (None: no deadline).
    max_message_bytes : the largest request this client sends, and what its chunks and
        streamed contexts are sized to; match the server's limit. Answers are
        not capped on this side, as in the Node client: the server keeps its answers within its
        own limit (a cap here refused a calibration proposal that the server had sent whole).
    max_attempts : tries of a call that fails UNAVAILABLE (a replica stopping or killed, a
        proxy with no upstream), with exponential backoff from 0.1 s, by gRPC's own retry
        policy (a service config on the channel); 1 turns retries off. Every call is safe to
        retry: contexts are content-addressed and explanations have no side effects. gRPC caps
        it at 5. Calls of any size up to ``max_message_bytes`` are retried (gRPC keeps a
        request for retries only up to its retry buffer, 256 KiB unless told: a 4 MB
        CreateContext whose replica was killed failed at once).
    channel_options : more gRPC channel arguments, after this client's own, e.g.
        ``[("grpc.lb_policy_name", "round_robin")]`` to spread calls over every address a
        ``dns:///`` target resolves to (a Kubernetes headless service); gRPC's default sends
        them all to the first.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: bool | TlsConfig = False,
        token: str | None = None,
        timeout: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        channel_options: Sequence[tuple[str, Any]] = (),
    ):
        if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 5:
            raise ValueError(f"max_attempts must be an int in [1, 5]; got {max_attempts!r}")
        _check_token(token)
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", int(max_attempts > 1)),
            ("grpc.service_config", json.dumps(retry_service_config(max_attempts))),
            ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
            *channel_options,
        ]
        if tls is False:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            config = tls if isinstance(tls, TlsConfig) else TlsConfig()
            credentials = grpc.ssl_channel_credentials(
                config.root_certificates, config.private_key, config.certificate_chain
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = shapley_pb2_grpc.ShapleyStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ShapleyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise ShapleyError.from_rpc(error) from None

    # --- contexts ----------------------------------------------------------------------------

    def create_context(
        self,
        rows,
        predictions,
        *,
        background: Sequence[int] | None = None,
        feature_names: Sequence[str] | None = None,
        random_state: int = 0,
        groups: Mapping[str, Sequence[int]] | Sequence[tuple[str, Sequence[int]]] | None = None,
        categorical_columns: Sequence[int | str] | None = None,
    ) -> Context:
        """Fit a context on the server (or find it held: ids are content addresses).

        rows : (n, d) numbers (NaN: a missing value), or a pandas DataFrame; predictions : (n,)
        or (n, K), the model's outputs on rows; background : row indices (default: a seeded
        sample of min(n, 100)); feature_names : d names (default: a DataFrame's columns);
        random_state : an int in [0, 2**32); groups : optional ``{name: column indices}`` (or
        a list of (name, column indices) pairs) partitioning the d columns, to get one
        attribution per group: integer indices, as the estimator's ``groups=`` takes them
        (anything else is refused naming ``context.groups``); categorical_columns : indices or
        feature names of the columns whose values are category codes (integers, NaN for
        missing).

        A DataFrame's ``category``, ``object``/string and ``bool`` columns are sent as codes
        (category order, sorted distinct labels, False < True; missing: NaN) and declared
        categorical along with ``categorical_columns``; the returned :class:`Context` keeps
        their labels in ``categories``. Other non-numeric dtypes (datetime, timedelta, complex)
        are refused with a TypeError naming the column; so are labels other than strings, bools
        or numbers (dates, Decimals, lists), and bools with numbers in one column, with an
        :class:`InvalidArgumentError`. A context larger than one message is sent in blocks of
        rows over ``CreateContextStream``.
        """
        coded = code_frame(rows, None, "context.rows") if is_data_frame(rows) else None
        data = coded.rows if coded is not None else _as_sent(rows, "rows")
        if feature_names is None:  # a DataFrame's columns (any table with columns, duck-typed)
            feature_names = coded.names if coded is not None else _column_names(rows)
        names = (
            [str(n) for n in feature_names]
            if feature_names is not None
            else [f"x{j}" for j in range(data.shape[1] if data.ndim == 2 else 0)]
        )
        declared = _categorical_indices(categorical_columns, names)
        found = sorted(coded.categories) if coded is not None else []
        spec = pb.ContextSpec(
            rows=_tensor(data, "rows"),
            predictions=_tensor(predictions, "predictions"),
            background=_background_indices(background, data.shape[0] if data.ndim == 2 else None),
            feature_names=names if feature_names is not None else [],
            random_state=_seed(random_state, "context.random_state"),
            groups=_feature_groups(groups, data.shape[1] if data.ndim == 2 else None),
            # Sorted, so that the order they were listed in does not change the context id.
            categorical_columns=sorted(declared + [j for j in found if j not in declared]),
        )
        context = self._create(spec)
        if coded is not None:
            context.categories = {
                context.feature_names[j]: labels for j, labels in coded.categories.items()
            }
        return context

    def _create(self, spec: pb.ContextSpec) -> Context:
        if spec.ByteSize() <= int(0.9 * self.max_message_bytes):
            request = pb.CreateContextRequest(context=spec)
            response = self._call(self._stub.CreateContext, request)
        else:
            n, n_predictions = spec.rows.shape[0], spec.predictions.shape[0]
            if n_predictions != n:  # blocks pair rows with their predictions: refuse, not cut
                raise ValueError(
                    f"predictions must have shape ({n},) or ({n}, K); got "
                    f"{tuple(spec.predictions.shape)}"
                )
            try:
                response = self._stub.CreateContextStream(
                    self._context_blocks(spec), timeout=self.timeout, metadata=self._metadata
                )
            except grpc.RpcError as error:
                raise ShapleyError.from_rpc(error) from None
        return Context(response.context.context_id, response.context, spec)

    def _context_blocks(self, spec: pb.ContextSpec) -> Iterator[pb.CreateContextRequest]:
        """The spec as blocks of rows that each fit in a message; settings in the first."""
        rows, predictions = _array(spec.rows), _array(spec.predictions)
        per_row = rows[0].nbytes + predictions[0].nbytes
        block = max(1, int(0.8 * self.max_message_bytes) // per_row)
        for start in range(0, rows.shape[0], block):
            part = pb.ContextSpec(
                rows=_tensor(rows[start : start + block], "rows"),
                predictions=_tensor(predictions[start : start + block], "predictions"),
            )
            if start == 0:
                # The server refuses a stream that ends short of it (cancelled, or cut off).
                part.total_rows = rows.shape[0]
                part.background.extend(spec.background)
                part.feature_names.extend(spec.feature_names)
                part.random_state = spec.random_state
                part.groups.extend(spec.groups)
                part.categorical_columns.extend(spec.categorical_columns)
            yield pb.CreateContextRequest(context=part)

    def get_context(self, context: Context | str) -> pb.ContextInfo:
        return self._call(
            self._stub.GetContext, pb.GetContextRequest(context_id=_context_id(context))
        )

    def delete_context(self, context: Context | str) -> int:
        """Drop a context from the server; returns the bytes it freed (0 while the server holds
        a context sharing its members: a weights-only calibration of it, or the context it
        calibrates)."""
        response = self._call(
            self._stub.DeleteContext, pb.DeleteContextRequest(context_id=_context_id(context))
        )
        return response.freed_bytes

    def list_contexts(self, page_size: int | None = None) -> list[pb.ContextInfo]:
        """Every context the server holds. In one call, most recently used first, when their
        descriptions fit in one message; else, or with ``page_size``, in calls of at most
        ``page_size`` contexts each (as many as fit in a message when None), in context_id
        order, so that none is listed twice or skipped."""
        if page_size is None:
            try:
                return list(self._call(self._stub.ListContexts, pb.ListContextsRequest()).contexts)
            except ShapleyError as error:
                if error.code != grpc.StatusCode.RESOURCE_EXHAUSTED or error.field != "page_size":
                    raise
            page_size = _AS_MANY_AS_FIT
        elif isinstance(page_size, bool) or not isinstance(page_size, Integral) or page_size < 1:
            raise InvalidArgumentError("page_size", f"must be an integer >= 1, got {page_size!r}")
        listed: list[pb.ContextInfo] = []
        token = ""
        while True:
            page = self._call(
                self._stub.ListContexts,
                pb.ListContextsRequest(
                    page_size=min(int(page_size), _AS_MANY_AS_FIT), page_token=token
                ),
            )
            listed.extend(page.contexts)
            token = page.next_page_token
            if not token:
                return listed

    def server_info(self) -> pb.ServerInfo:
        return self._call(self._stub.GetServerInfo, pb.GetServerInfoRequest())

    # --- explanations ------------------------------------------------------------------------

    def explain(
        self,
        context: Context | str,
        rows,
        predictions=None,
        *,
        model=None,
        budget: int | None = None,
        random_state: int | None = None,
        output_dtype: str = "float64",
        pool_rows: bool = False,
    ) -> Explanation:
        """Attributions of ``rows`` (m, d) in one message; exactly efficient when the model's
        ``predictions`` on them are given. A :class:`Context` the server no longer holds (another
        replica, evicted) is recreated from its data and the call retried once.

        ``rows`` may be a DataFrame: its columns coded at create time are coded with the
        context's labels (a label the context never showed is an unseen category, not an error)
        and ``display_data`` carries its values.

        Refinement: with ``model`` and ``budget`` (given together), the answer goes past the
        zero-shot estimate. ``model`` is called on the (rows, d) float64 numpy array of rows the
        server proposes (columns in the context's order; coded columns as their codes, -1 for a
        label the context never showed, NaN for a missing value) and returns the outputs on
        them, (rows,) or (rows, K) like the context's predictions, on the same scale.
        ``budget`` is the most rows ``model`` scores per explained row (at least 4 with
        ``predictions``, 5 without). The rows go in chunks that fit in a message (Propose,
        your model, Refine per chunk); ``random_state`` seeds the proposal (default: the
        context's). ``model_rows`` on the answer says how many rows each explained row used.
        ``pool_rows=True`` lets each row also learn from the other rows refined with it (the
        rows of its chunk: one Refine call; see ``RefineRequest.pool_rows``): more accurate on
        smooth models in many columns, but a row's answer then depends on the rows sent with it.
        """
        _pool_rows(pool_rows)
        if (model is None) != (budget is None):
            missing = "budget" if budget is None else "model"
            raise InvalidArgumentError(
                missing, f"is required with {'model' if model is not None else 'budget'}"
            )
        if model is not None:
            return self._refined(
                context, rows, predictions, model, budget, random_state, output_dtype, pool_rows
            )
        if random_state is not None:
            raise InvalidArgumentError(
                "random_state", "seeds a refinement: it needs model and budget"
            )
        if pool_rows:
            raise InvalidArgumentError("pool_rows", "pools a refinement: it needs model and budget")
        data, display = self._query_rows(context, rows)
        request = pb.ExplainRequest(rows=_tensor(data, "rows"), output_dtype=_dtype(output_dtype))
        if predictions is not None:
            request.predictions.CopyFrom(_tensor(predictions, "predictions"))
        response = self._call_with_context(context, self._stub.Explain, request)
        return _single_explanation(response, data, display)

    def _query_rows(self, context: Context | str, rows) -> tuple[np.ndarray, np.ndarray | None]:
        """``_query_rows``, given the context's info when a DataFrame comes with a context id (a
        :class:`Context` carries it): one GetContext, so that the frame is checked as it is
        against a Context (QA, 2026-12-06: its columns in another order were explained under
        the context's names)."""
        data, display, _ = self._query_rows_and_info(context, rows)
        return data, display

    def _query_rows_and_info(
        self, context: Context | str, rows
    ) -> tuple[np.ndarray, np.ndarray | None, pb.ContextInfo | None]:
        """``_query_rows`` and the context's info where it is known without a call: a
        :class:`Context`'s own, or the one fetched to check a DataFrame (else None)."""
        info = context.info if isinstance(context, Context) else None
        if info is None and is_data_frame(rows):
            info = self.get_context(context)
        data, display = _query_rows(context, rows, None if isinstance(context, Context) else info)
        return data, display, info

    def _info(self, context: Context | str, known: pb.ContextInfo | None) -> pb.ContextInfo:
        """The context's info: ``known`` (from ``_query_rows_and_info``), else one GetContext."""
        return known if known is not None else self.get_context(context)

    def _call_with_context(self, context: Context | str, method, request):
        """``method(request)`` against the context; a :class:`Context` the server no longer
        holds is recreated from its data and the call retried once."""
        request.context_id = _context_id(context)
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or not _recreatable(context):
                raise ShapleyError.from_rpc(error) from None
            self._recreate(context)
            request.context_id = context.context_id
            return self._call(method, request)

    # --- refinement --------------------------------------------------------------------------

    def propose(
        self,
        context: Context | str,
        rows,
        predictions=None,
        *,
        budget: int,
        random_state: int | None = None,
    ) -> Proposal:
        """The rows your model should score to refine the explanation of ``rows`` (m, d) in
        one message (:meth:`explain` with ``model=`` does the whole round trip, in chunks).
        The same arguments always give the same proposal."""
        data, _ = self._query_rows(context, rows)
        request = pb.ProposeRequest(rows=_tensor(data, "rows"), budget=_budget(budget))
        _set_refinement(request, context, predictions, random_state)
        response = self._call_with_context(context, self._stub.Propose, request)
        return Proposal(
            _array(response.rows),
            response.rows_per_query,
            response.context_id,
            response.artifact_version,
            response.proposal_sha256,
        )

    def refine(
        self,
        context: Context | str,
        rows,
        outputs,
        predictions=None,
        *,
        budget: int,
        random_state: int | None = None,
        output_dtype: str = "float64",
        proposal_sha256: str = "",
        pool_rows: bool = False,
    ) -> Explanation:
        """Refined attributions of ``rows`` from your model's ``outputs`` on the rows that
        :meth:`propose` returned for the same rows, predictions, budget and random_state.
        ``proposal_sha256``: that proposal's (``Proposal.proposal_sha256``); the server
        rebuilds the proposal and, given it, refuses outputs scored on other rows
        (InvalidArgumentError on ``proposal_sha256``). ``pool_rows``: each row also learns
        from the other rows of this call (``RefineRequest.pool_rows``)."""
        data, display = self._query_rows(context, rows)
        request = pb.RefineRequest(
            rows=_tensor(data, "rows"),
            budget=_budget(budget),
            outputs=_tensor(_outputs(outputs, "got"), "outputs"),
            output_dtype=_dtype(output_dtype),
            proposal_sha256=proposal_sha256,
            pool_rows=_pool_rows(pool_rows),
        )
        _set_refinement(request, context, predictions, random_state)
        response = self._call_with_context(context, self._stub.Refine, request)
        return _single_explanation(response, data, display)

    def _refined(
        self, context, rows, predictions, model, budget, random_state, output_dtype, pool_rows
    ) -> Explanation:
        if not callable(model):
            raise TypeError(f"model must be callable; got {type(model).__name__}")
        budget = _budget(budget)  # refused before anything is asked of the server
        if random_state is not None:  # refused before the first chunk goes
            _seed(random_state, context=context)
        data, display, known = self._query_rows_and_info(context, rows)
        if data.ndim != 2 or data.shape[0] == 0:
            raise ValueError(f"rows must be a non-empty (m, d) array; got shape {data.shape}")
        predictions = _checked_predictions(context, data, predictions)
        info = self._info(context, known)
        message_bytes, max_rows = self._chunk_limits()
        chunk = self._refined_rows_per_message(
            data.shape[1],
            len(_attribution_names(info)),
            max(1, info.n_outputs),
            budget,
            message_bytes,
        )
        # Propose and Refine take at most max_explain_rows explained rows each, like Explain;
        # the model rows they carry are bounded by the message size alone.
        chunk = min(chunk, max_rows)
        answers = []
        for start in range(0, data.shape[0], chunk):
            part = data[start : start + chunk]
            given = None if predictions is None else predictions[start : start + chunk]
            proposal = self.propose(context, part, given, budget=budget, random_state=random_state)
            outputs = _model_outputs(model, proposal.rows)
            answers.append(
                self.refine(
                    context,
                    part,
                    outputs,
                    given,
                    budget=budget,
                    random_state=random_state,
                    output_dtype=output_dtype,
                    proposal_sha256=proposal.proposal_sha256,
                    pool_rows=pool_rows,
                )
            )
        first = answers[0]
        return replace(
            first,
            values=np.concatenate([a.values for a in answers]),
            base_values=np.concatenate([a.base_values for a in answers]),
            uncertainty=np.concatenate([a.uncertainty for a in answers]),
            data=data,
            display_data=display,
        )

    @staticmethod
    def _refined_rows_per_message(
        d: int, players: int, outputs: int, budget: int, message_bytes: int
    ) -> int:
        """Explained rows per Propose/Refine pair: the proposal ((m * R, d) float64, R <=
        budget), the outputs sent back ((m * R, K)) and the answer each fit in a tenth less
        than ``message_bytes``."""
        per_row = max(
            budget * d * 8,
            budget * outputs * 8 + (d + outputs) * 8,
            (2 * players + 1) * outputs * 8,
        )
        return max(1, int(0.9 * message_bytes) // per_row)

    def _chunk_limits(self) -> tuple[int, int]:
        """What bounds a chunk of rows: the largest message both this client and the server take,
        and the most rows the server explains per request (its ``max_explain_rows``). A limit
        the server leaves at 0 (one older than the field) is one it does not state."""
        limits = self.server_info().limits
        message_bytes = min(self.max_message_bytes, limits.max_message_bytes or sys.maxsize)
        return message_bytes, limits.max_explain_rows or sys.maxsize

    def explain_stream(
        self,
        context: Context | str,
        rows,
        predictions=None,
        *,
        chunk_rows: int | None = None,
        output_dtype: str = "float64",
    ) -> Explanation:
        """Like :meth:`explain` for batches of any size: sent in chunks over ``ExplainStream``,
        reassembled in order. The default chunk is the most rows the server explains per request
        (``server_info().limits.max_explain_rows``) whose answer fits in a message both ways.
        The whole call's rows and predictions are checked before the first chunk goes, and
        refused as :meth:`explain` refuses them."""
        rows, display, known = self._query_rows_and_info(context, rows)
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise ValueError(f"rows must be a non-empty (m, d) array; got shape {rows.shape}")
        predictions = _checked_predictions(context, rows, predictions)
        if chunk_rows is None:
            chunk_rows = self._stream_rows_per_message(self._info(context, known), rows.shape[1])
        if not isinstance(chunk_rows, int | np.integer) or isinstance(chunk_rows, bool | np.bool_):
            raise InvalidArgumentTypeError("chunk_rows", f"must be an int; got {chunk_rows!r}")
        if chunk_rows < 1:
            raise InvalidArgumentError("chunk_rows", f"must be >= 1; got {chunk_rows}")
        chunk_rows = int(chunk_rows)
        try:
            answer = self._stream(context, rows, predictions, chunk_rows, output_dtype)
        except ShapleyError as error:
            if error.code != grpc.StatusCode.NOT_FOUND or not _recreatable(context):
                raise
            self._recreate(context)
            answer = self._stream(context, rows, predictions, chunk_rows, output_dtype)
        return replace(answer, display_data=display)

    def _stream_rows_per_message(self, info: pb.ContextInfo, d: int) -> int:
        # The context's outputs, not the predictions': a K-output context explained without
        # predictions still answers (m, d, K).
        message_bytes, max_rows = self._chunk_limits()
        return min(self._rows_per_message(d, max(1, info.n_outputs), message_bytes), max_rows)

    @staticmethod
    def _rows_per_message(d: int, outputs: int, message_bytes: int) -> int:
        # The answer (values and uncertainty, (m, d, K), plus base values) is the larger message;
        # keep a tenth of the limit for framing and the context's diagnostics.
        per_row = (2 * d + 1) * outputs * 8 + d * 8
        return max(1, int(0.9 * message_bytes) // per_row)

    def _stream(self, context, rows, predictions, chunk_rows, output_dtype) -> Explanation:
        context_id = _context_id(context)
        dtype = _dtype(output_dtype)

        def requests() -> Iterator[pb.ExplainRequest]:
            for start in range(0, rows.shape[0], chunk_rows):
                request = pb.ExplainRequest(
                    rows=_tensor(rows[start : start + chunk_rows], "rows"), output_dtype=dtype
                )
                if start == 0:
                    request.context_id = context_id
                if predictions is not None:
                    request.predictions.CopyFrom(
                        _tensor(predictions[start : start + chunk_rows], "predictions")
                    )
                yield request

        responses, parts = [], []
        try:
            for response in self._stub.ExplainStream(
                requests(), timeout=self.timeout, metadata=self._metadata
            ):
                responses.append(response)
                parts.append(
                    (
                        _array(response.values),
                        _array(response.base_values),
                        _array(response.uncertainty),
                    )
                )
        except grpc.RpcError as error:
            raise ShapleyError.from_rpc(error) from None
        # The first response carries the context's info; the others leave it unset.
        return _explanation(
            responses[0], rows, *(np.concatenate(p) for p in zip(*parts, strict=True))
        )

    # --- calibration -------------------------------------------------------------------------

    def propose_calibration(
        self,
        context: Context | str,
        *,
        budget: int | None = None,
        random_state: int | None = None,
        refit: bool = False,
    ) -> CalibrationProposal:
        """The rows your model should score, once, to calibrate ``context``
        (:meth:`calibrate` does the whole round trip). The same arguments always give the same
        rows. ``budget`` defaults to 10 rows per background row, or 20 with ``refit`` (for a
        calibration that sends the context's data along: a refit of the surrogates keeps
        gaining from more rows, the weights alone do not). ``refit`` is a bool (a numpy bool;
        None is False); anything else is refused naming ``refit``."""
        request = pb.ProposeCalibrationRequest(
            budget=0 if budget is None else _budget(budget), refit=bool(_refit(refit))
        )
        if random_state is not None:
            request.random_state = _seed(random_state, context=context)
        response = self._call_with_context(context, self._stub.ProposeCalibration, request)
        return CalibrationProposal(
            _array(response.rows),
            response.budget,
            response.context_id,
            response.artifact_version,
            response.proposal_sha256,
        )

    def calibrate(
        self,
        context: Context | str,
        model,
        *,
        budget: int | None = None,
        random_state: int | None = None,
        refit: bool | None = None,
    ) -> Context:
        """``context`` calibrated on your ``model``: a new context (the one given is left as
        it was) fitted, once, to the model's outputs on rows the server proposes; explain,
        refine and stream against it as against any context.

        ``refit``: True sends the context's data along, and the server refits the surrogates
        on the context's rows and the scored rows (the more accurate; two fits' time); False
        refits their weights only. None (default): True when this client holds the context's
        data (a :class:`Context` from :meth:`create_context`), it fits in one message with
        the outputs, and its rows and the budget together are within the server's
        ``max_context_rows`` (n + budget, as the server counts them), else False: decided
        before ``model`` runs, so that it scores the default budget of what runs (where the
        refit's default does not fit, or the server cannot propose it within its message
        limit, the weights' default, refitted on when that fits). ``calibration_refitted`` on
        the answer says which ran. ``refit=True`` that does not fit is refused before
        ``model`` runs: a ValueError when the context and the outputs do not fit in one
        message, RESOURCE_EXHAUSTED on ``budget`` (as the server refuses it) past
        ``max_context_rows``; with no ``budget``, on the weights' default when the refit's
        does not fit. ``refit`` is True, False or None (numpy bools are taken as the bools
        they are); anything else (0, 1, a string) is refused, :class:`InvalidArgumentError`
        on ``refit``.
        A context that is itself calibrated has no data of its own to send (the server takes
        only the spec whose content address is the context's id): calibrating it again refits
        the weights only, and ``refit=True`` is refused before anything is sent.

        ``model`` is called once on a (rows, d) float64 numpy array (as in :meth:`explain`)
        and returns the outputs, (rows,) or (rows, K) like the context's predictions.
        ``budget`` is the most rows it scores in all (None or 0, the default: 10 per background
        row, 1,000 for the default background; 20 per background row when the context's data
        can go along for a refit). A :class:`Context` the server no longer holds is
        recreated; so is the calibrated one, from the outputs it keeps (every calibration
        that led to it, in order), without calling ``model`` again (when ``context`` is an id
        alone, neither can be).
        """
        if not callable(model):
            raise TypeError(f"model must be callable; got {type(model).__name__}")
        refit = _refit(refit)
        if budget is not None:
            # 0 is the default, as the server and the Node client read it: the same call gives
            # the same context from both clients.
            budget = _budget(budget) or None
        seed = None if random_state is None else _seed(random_state, context=context)
        if refit is True and not _refittable(context):
            raise ValueError(_no_refit(context))
        proposal, refit_bytes = self._calibration_proposal(context, budget, random_state, refit)
        outputs = _model_outputs(model, proposal.rows)
        request = pb.CalibrateRequest(
            budget=proposal.budget,
            outputs=_tensor(outputs, "outputs"),
            proposal_sha256=proposal.proposal_sha256,
        )
        if seed is not None:
            request.random_state = seed
        # The outputs were sized before the model ran, as float64 shaped like the predictions:
        # more than that is a shape the server refuses (naming outputs), context or not.
        if refit_bytes and _calibration_bytes(context.spec, request) <= refit_bytes:
            request.context.CopyFrom(context.spec)
        response = self._call_with_context(context, self._stub.Calibrate, request)
        calibrated_request = pb.CalibrateRequest()
        calibrated_request.CopyFrom(request)  # context_id: the context it calibrated
        base = context if isinstance(context, Context) else None
        return Context(
            response.context.context_id,
            response.context,
            pb.ContextSpec() if base is None else base.spec,
            {} if base is None else dict(base.categories),
            () if base is None else (*base.calibrations, calibrated_request),
        )

    def _calibration_proposal(
        self, context: Context | str, budget: int | None, random_state, refit: bool | None
    ) -> tuple[CalibrationProposal, int]:
        """The rows ``calibrate`` has the model score and, when the context's data goes along
        (a refit), the most bytes that request may take (0: the weights only). Decided before
        the model runs, so that the default budget is the one for what runs (20 rows per
        background row for a refit, 10 for the weights alone) and the model scores no rows
        that only a refit needed. ``refit`` is True, False or None, as :func:`_refit` gives it.

        A refit needs the context's data and the outputs in one message (the smaller of this
        client's and the server's limit) and the context's rows and the budget within the
        server's ``max_context_rows`` (counted as the server counts them: n + the budget).
        With ``budget`` None, where the refit's default does not fit (or the server refuses to
        propose it, over its message limit), the weights' default budget: a refit on it when
        that fits, by default only the weights otherwise. With ``refit=True``, a refit that
        does not fit is refused here, before the model runs: as a ValueError past the message,
        as the server refuses it (RESOURCE_EXHAUSTED, field ``budget``) past
        ``max_context_rows``.
        """
        if refit is False or not _refittable(context):
            return self.propose_calibration(context, budget=budget, random_state=random_state), 0
        limits = self.server_info().limits
        message_bytes = min(self.max_message_bytes, limits.max_message_bytes or sys.maxsize)
        bound = int(0.9 * message_bytes)
        max_rows = limits.max_context_rows or sys.maxsize
        spec = context.spec
        n = spec.rows.shape[0]

        def fits(proposal: CalibrationProposal | None) -> tuple[bool, bool]:
            """Whether a refit on ``proposal`` (None: on no rows) fits the message, and the
            server's largest context; its outputs as float64, shaped like the predictions."""
            rows = 0 if proposal is None else proposal.rows.shape[0]
            shape = [rows, *spec.predictions.shape[1:]]
            request = pb.CalibrateRequest(
                context_id=context.context_id,
                budget=0 if proposal is None else proposal.budget,
                outputs=pb.Tensor(
                    dtype=pb.DTYPE_FLOAT64, shape=shape, data=bytes(8 * int(np.prod(shape)))
                ),
                proposal_sha256="0" * 64,  # as long as the proposal's, sent with the outputs
            )
            if random_state is not None:
                request.random_state = int(random_state)
            # The server counts the budget, not the rows proposed for it (at most as many).
            in_rows = n + (0 if proposal is None else proposal.budget) <= max_rows
            return _calibration_bytes(spec, request) <= bound, in_rows

        too_large = ValueError(
            f"the context and the outputs do not fit in one {message_bytes}-byte message: pass "
            "refit=False (weights only)"
        )
        if not fits(None)[0]:  # the context alone fills a message (it was streamed)
            if refit:
                raise too_large
            return self.propose_calibration(context, budget=budget, random_state=random_state), 0
        proposal = None
        try:
            proposal = self.propose_calibration(
                context, budget=budget, random_state=random_state, refit=True
            )
        except ShapleyError as error:
            # The refit's default budget (20 rows per background row) over the server's
            # message limit: the weights' default below may fit.
            if not (
                budget is None
                and error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                and error.field == "budget"
            ):
                raise
        in_message = in_rows = False
        if proposal is not None:
            in_message, in_rows = fits(proposal)
        if not (in_message and in_rows) and budget is None:  # the weights' default
            proposal = self.propose_calibration(context, random_state=random_state)
            in_message, in_rows = fits(proposal)
        if in_message and in_rows:
            return proposal, bound
        if refit is None:
            return proposal, 0
        if not in_message:
            raise too_large
        if budget is None:
            advice = " (the weights' default budget; the refit's is larger)"
        elif max_rows > n:
            advice = f", or a budget of at most {max_rows - n}"
        else:
            advice = ""
        problem = (
            f"a refit fits the context's {n} rows and the {proposal.budget} scored rows, "
            f"{n + proposal.budget} in all; the limit is {max_rows} (the server's "
            f"max_context_rows): pass refit=False to refit the weights only{advice}"
        )
        raise ShapleyError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"budget: {problem}",
            [FieldViolation("budget", problem)],
        )

    def _recreate(self, context: Context) -> None:
        """Create ``context`` again from the data it keeps: its spec, then every calibration
        that led to it, in order, each checked to give the id the client recorded. A context
        that comes back under another id is another context (a server with another artifact,
        or data changed since): it is refused, never explained against in the lost one's place.
        """
        # The id after each step: the created context, each calibrated one, this one.
        expected = [request.context_id for request in context.calibrations] + [context.context_id]
        with _recreating(context, "its spec"):
            info = self._create(context.spec).info
        _check_recreated(context, "its spec", info.context_id, expected[0])
        for step, kept in enumerate(context.calibrations, 1):
            request = pb.CalibrateRequest()
            request.CopyFrom(kept)  # names the context the previous step recreated
            what = f"calibration {step} of {len(context.calibrations)}"
            with _recreating(context, what):
                info = self._call(self._stub.Calibrate, request).context
            _check_recreated(context, what, info.context_id, expected[step])
        context.info = info


def _refit(refit) -> bool | None:
    """``refit`` as ``calibrate`` decides on it: None, True or False (a numpy bool as the bool
    it is), refused naming ``refit`` otherwise: 0 or an empty string went as None, the
    automatic choice, and refitted."""
    if refit is None or isinstance(refit, bool):
        return refit
    if isinstance(refit, np.bool_):
        return bool(refit)
    raise InvalidArgumentTypeError(
        "refit", f"must be True, False or None; got {refit!r} ({type(refit).__name__})"
    )


def _check_token(token) -> None:
    """Refuse a token gRPC metadata cannot carry (printable ASCII only), naming ``token`` and
    never quoting it: gRPC would fail every call INTERNAL ('Invalid metadata'), naming nothing,
    and log the error from its C core."""
    if token is None:
        return
    if not isinstance(token, str):
        raise InvalidArgumentTypeError("token", f"must be a string; got {type(token).__name__}")
    for index, character in enumerate(token):
        if not " " <= character <= "~":
            hint = (
                " (a token read from a file keeps its line break: strip it)"
                if character in "\r\n"
                else ""
            )
            raise InvalidArgumentError(
                "token",
                "has a character gRPC metadata cannot carry (printable ASCII only): "
                f"U+{ord(character):04X} at index {index} of {len(token)}{hint}",
            )


def _calibration_bytes(spec: pb.ContextSpec, request: pb.CalibrateRequest) -> int:
    """The size of ``request`` with ``spec`` as its context: the spec's bytes, its field's tag
    (one byte: field 5) and its length (a varint). Without the last two this came out 3 bytes
    short of the message sent, and decided a refit the Node client did not (agreement test)."""
    size = spec.ByteSize()
    return request.ByteSize() + 1 + _varint_bytes(size) + size


def _varint_bytes(value: int) -> int:
    """Bytes of ``value`` (>= 0) as a protobuf varint: 7 bits each."""
    return max(1, (value.bit_length() + 6) // 7)


def _budget(budget) -> int:
    """``budget`` as sent: an int (not a bool), refused naming ``budget`` otherwise (a
    TypeError too, as it was), and past int64, which the wire cannot carry. Too small a budget
    is the server's to refuse, in its words."""
    if not isinstance(budget, int | np.integer) or isinstance(budget, bool | np.bool_):
        raise InvalidArgumentTypeError("budget", f"must be an int; got {budget!r}")
    if not -(2**63) <= budget < 2**63:
        raise InvalidArgumentError("budget", f"must be an int below 2**63; got {int(budget)}")
    return int(budget)


def _set_refinement(request, context, predictions, random_state) -> None:
    """The optional fields a ProposeRequest and a RefineRequest share."""
    if random_state is not None:
        request.random_state = _seed(random_state, context=context)
    if predictions is not None:
        request.predictions.CopyFrom(_tensor(predictions, "predictions"))


def _seed(random_state, field: str = "random_state", context: "Context | str | None" = None) -> int:
    """``random_state`` as sent, refused unless an int in [0, 2**32), in the server's words (the
    estimator's range): protobuf would refuse a negative one naming no field, and a bool or a
    float would go as the int it truncates to."""
    if (
        isinstance(random_state, int | np.integer)
        and not isinstance(random_state, bool | np.bool_)
        and 0 <= random_state < _SEEDS
    ):
        return int(random_state)
    whole = isinstance(random_state, Integral) and not isinstance(random_state, bool | np.bool_)
    shown = int(random_state) if whole else repr(random_state)
    if context is None:  # a spec's, as the server words it
        problem = f"must be an int in [0, 2**32) (scikit-learn's seed range); got {shown}"
    else:
        problem = f"must be an int in [0, 2**32); got {shown} (context {_context_id(context)})"
    raise InvalidArgumentError(field, problem)


def _outputs(outputs, given: str) -> np.ndarray:
    """``outputs`` (``given``: "got", or "the model returned") as an array of numbers, refused
    naming ``outputs`` otherwise: None (a model that returns nothing) would go as a NaN, which
    the server refuses as not finite, and text as whatever number it parses as."""
    try:
        array = None if outputs is None else np.asarray(outputs)
    except (TypeError, ValueError):  # ragged
        array = None
    if array is not None and (
        array.dtype.kind in "biuf"
        or (array.dtype == object and array.size and all(isinstance(v, Real) for v in array.flat))
    ):
        return array
    if outputs is None:
        shown = "None"
    elif array is None:
        shown = f"{type(outputs).__name__} (not an array)"
    else:
        shown = f"{type(outputs).__name__} (dtype {array.dtype})"
    raise InvalidArgumentError(
        "outputs", f"must be an array of numbers, (rows,) or (rows, K); {given} {shown}"
    )


def _model_outputs(model, rows: np.ndarray) -> np.ndarray:
    """``model``'s outputs on proposed ``rows`` (a copy: the model may write to it)."""
    return _outputs(model(np.array(rows)), "the model returned")


def _single_explanation(
    response: pb.ExplainResponse, data: np.ndarray, display_data: np.ndarray | None
) -> Explanation:
    """The Explanation of ``data`` that one unary response carries whole."""
    return _explanation(
        response,
        data,
        _array(response.values),
        _array(response.base_values),
        _array(response.uncertainty),
        display_data,
    )


def _explanation(
    first: pb.ExplainResponse,
    data: np.ndarray,
    values,
    base_values,
    uncertainty,
    display_data: np.ndarray | None = None,
) -> Explanation:
    """An Explanation of ``data`` from its answers, named by the first (or only) response."""
    info = first.context
    return Explanation(
        values,
        base_values,
        uncertainty,
        _attribution_names(info),
        data,
        list(info.feature_names),
        len(info.groups) > 0,
        _diagnostics(info),
        first.context_id,
        first.artifact_version,
        display_data,
        first.model_rows,
    )


def _recreatable(context: Context | str) -> bool:
    """Whether the client holds the data to create ``context`` again (not an id alone, nor a
    context calibrated from an id alone)."""
    return isinstance(context, Context) and context.spec.HasField("rows")


def _refittable(context: Context | str) -> bool:
    """Whether Calibrate can refit ``context``: the server takes only the spec whose content
    address is the context's id, and a calibrated context's id is no spec's."""
    return _recreatable(context) and not context.calibrations


def _no_refit(context: Context | str) -> str:
    """Why ``refit=True`` cannot calibrate ``context``."""
    if _recreatable(context):
        return (
            f"refit=True refits a context created from data, and {context.context_id} is a "
            "calibrated context (the server refits only the spec whose content address is the "
            "context's id): pass refit=False or leave it None to calibrate its weights, or "
            "calibrate the Context from create_context with refit=True"
        )
    return (
        "refit=True needs the context's data in one message with the outputs: pass "
        "the Context from create_context (not an id), or refit=False"
    )


@contextmanager
def _recreating(context: Context, what: str) -> Iterator[None]:
    """One step of recreating ``context``. A refusal of it (by a replica with lower limits, say)
    says which context could not be recreated and at which step, and names ``context_id``, the
    argument the caller gave: the replayed request's own fields are not ones the caller sent.
    Failures that name no field (unavailable, past the deadline) are left as they are, for the
    caller's retries."""
    try:
        yield
    except ShapleyError as error:
        if not error.violations:
            raise
        problem = (
            f"{context.context_id!r} is not held by this server and could not be created again: "
            f"{what} was refused ({error.code.name}: {error.details})"
        )
        raise ShapleyError(
            error.code, f"context_id: {problem}", [FieldViolation("context_id", problem)]
        ) from error


def _check_recreated(context: Context, what: str, got: str, expected: str) -> None:
    """Refuse a recreated context whose id is not the one the client recorded for that step."""
    if got != expected:
        problem = (
            f"{context.context_id!r} is not held by this server, and the data the Context keeps "
            f"makes another context here: {what} gave {got}, not {expected} (a server with "
            "another artifact or version than the one that built it, or a Context changed "
            "since); create or calibrate it again to explain against this server"
        )
        raise ShapleyError(
            grpc.StatusCode.NOT_FOUND,
            f"context_id: {problem}",
            [FieldViolation("context_id", problem)],
        )


def _context_id(context: Context | str) -> str:
    return context.context_id if isinstance(context, Context) else str(context)


def _checked_predictions(
    context: Context | str, rows: np.ndarray, predictions
) -> np.ndarray | None:
    """``predictions`` as sent, refused unless there is one per row of ``rows``: a call that goes
    in chunks would otherwise cut them chunk by chunk (or drop the extra ones unseen). Refused
    in the words the server uses for the same call in one message."""
    if predictions is None:
        return None
    sent = _as_sent(predictions, "predictions")
    m = rows.shape[0]
    # The server's checks, in its order: the tensor's axes, then its rows against the query's.
    if sent.ndim not in (1, 2):
        raise InvalidArgumentError(
            "predictions", f"expected 1 or 2 axes; got shape {list(sent.shape)}"
        )
    if 0 in sent.shape:
        raise InvalidArgumentError(
            "predictions", f"every axis must have length >= 1; got shape {list(sent.shape)}"
        )
    if sent.shape[0] != m:
        raise InvalidArgumentError(
            "predictions",
            f"must have shape ({m},) or ({m}, K); got {sent.shape} "
            f"(context {_context_id(context)})",
        )
    return sent


def _dtype(name: str) -> int:
    if name not in _DTYPES:
        raise ValueError(f"output_dtype must be 'float32' or 'float64'; got {name!r}")
    return _DTYPES[name][0]
