"""What runs in Spark's Python workers: the shipped context (and the caller's model, to refine
with) loaded once per process, and the Arrow batches explained. No pyspark import: the batch
function sees pyarrow record batches alone, so it runs (and is tested) without Spark too.
"""

import collections
import contextlib
import dataclasses
import pickle
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from shapley_svc.errors import InvalidArgumentError
from shapley_svc.estimator import ZeroShotExplainer
from shapley_svc.estimator.refinement import minimum_budget

# Contexts a worker process keeps loaded, most recently used last: a reused worker that serves
# jobs over a few contexts loads each once.
MAX_LOADED_CONTEXTS = 4
_LOADED: collections.OrderedDict[str, ZeroShotExplainer] = collections.OrderedDict()
_LOADS: collections.Counter[str] = collections.Counter()  # loads done, by checksum


@dataclass(frozen=True)
class ShippedContext:
    """A saved context on its way to the workers.

    ``payload`` is the saved directory's files (name -> bytes), or a Spark broadcast of that
    mapping (anything with ``.value``). ``checksum`` is the sha256 of the manifest, which holds
    the arrays' sha256: equal checksums, equal contexts.
    """

    checksum: str
    artifact: str | None
    payload: object

    def files(self) -> dict[str, bytes]:
        return self.payload if isinstance(self.payload, dict) else self.payload.value


def _kept(kept: collections.OrderedDict, loads: collections.Counter, checksum: str, load):
    """``kept[checksum]``, made by ``load()`` (counted in ``loads``) when this process does not
    keep it; the ``MAX_LOADED_CONTEXTS`` most recently used are kept."""
    value = kept.get(checksum)
    if value is None:
        value = load()
        loads[checksum] += 1
        kept[checksum] = value
        while len(kept) > MAX_LOADED_CONTEXTS:
            kept.popitem(last=False)
    kept.move_to_end(checksum)
    return value


def loaded_explainer(shipped: ShippedContext) -> ZeroShotExplainer:
    """The shipped context as an explainer, loaded at most once per process and checksum."""

    def load() -> ZeroShotExplainer:
        with tempfile.TemporaryDirectory(prefix="shapley-svc-context-") as directory:
            for name, data in shipped.files().items():
                (Path(directory) / name).write_bytes(data)
            return ZeroShotExplainer.load(directory, shipped.artifact)

    return _kept(_LOADED, _LOADS, shipped.checksum, load)


def loads_so_far() -> dict[str, int]:
    """How often this process has loaded each context, by checksum (for tests)."""
    return dict(_LOADS)


def model_loads_so_far() -> dict[str, int]:
    """How often this process has unpickled each model, by checksum (for tests)."""
    return dict(_MODEL_LOADS)


# Refinement's proposed rows per call of the caller's model: at most this many cells (32 MB of
# float64) per slice of a batch, however large the batch and budget.
REFINE_SLICE_CELLS = 1 << 22


@dataclass(frozen=True)
class ShippedModel:
    """The caller's model on its way to the workers, pickled (by cloudpickle, on the driver).

    ``payload`` is the pickled bytes, or a Spark broadcast of them (anything with ``.value``);
    ``checksum`` is their sha256: a worker process unpickles each model once."""

    checksum: str
    payload: object

    def load(self) -> Callable[[np.ndarray], object]:
        """The model, unpickled at most once per process and checksum (the
        ``MAX_LOADED_CONTEXTS`` most recently used are kept)."""

        def unpickled() -> Callable[[np.ndarray], object]:
            data = self.payload if isinstance(self.payload, bytes) else self.payload.value
            return pickle.loads(data)

        return _kept(_MODELS, _MODEL_LOADS, self.checksum, unpickled)


_MODELS: collections.OrderedDict[str, Callable] = collections.OrderedDict()
_MODEL_LOADS: collections.Counter[str] = collections.Counter()  # unpicklings, by checksum


@dataclass(frozen=True)
class Refinement:
    """The caller's model, how many of its rows each explained row may use
    (``ZeroShotExplainer.propose``' ``budget``), and the proposals' seed."""

    model: ShippedModel
    budget: int
    random_state: int | None


def rows_per_model_call(budget: int, n_features: int) -> int:
    """Explained rows per call of the caller's model at ``budget``: their proposed rows hold
    ``REFINE_SLICE_CELLS`` cells at most (one row at least)."""
    return max(1, REFINE_SLICE_CELLS // (budget * n_features))


@dataclass(frozen=True)
class BatchPlan:
    """Everything the batch function needs besides the context: the caller's column names and
    the output columns' names, in schema order; with ``refinement``, the attributions are refined
    with the caller's model.

    ``value_columns`` and ``uncertainty_columns`` are (K, P) names (K = 1 for a single-output
    context) and ``base_columns`` K names in the ``"columns"`` layout; in the ``"arrays"``
    layout each holds one name (``[[name]]``, ``[[name]]``, ``[name]``). ``caller_names`` gives
    the caller's name of each input column the job renamed (errors speak the caller's names).
    """

    feature_columns: tuple[str, ...]
    prediction_columns: tuple[str, ...] | None
    layout: str
    value_columns: tuple[tuple[str, ...], ...]
    uncertainty_columns: tuple[tuple[str, ...], ...]
    base_columns: tuple[str, ...]
    batch_rows: int | None
    threads: int
    refinement: Refinement | None = None
    caller_names: dict[str, str] = dataclasses.field(default_factory=dict)

    def new_columns(self) -> list[str]:
        """The added columns in schema order: per output, its values, uncertainties, base."""
        names = []
        for values, uncertainty, base in zip(
            self.value_columns, self.uncertainty_columns, self.base_columns, strict=True
        ):
            names += [*values, *uncertainty, base]
        return names


def _float_column(frame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=np.float64, na_value=np.nan)


def _query(frame, plan: BatchPlan, explainer: ZeroShotExplainer):
    """The feature columns as the explainer's input: float64 rows, or a frame under the fitted
    names when the context coded some columns' labels (they may arrive as strings)."""
    if explainer.categories_:
        import pandas as pd

        return pd.DataFrame(
            {
                name: frame[column].to_numpy()
                for name, column in zip(explainer.feature_names_, plan.feature_columns, strict=True)
            }
        )
    return np.column_stack([_float_column(frame, column) for column in plan.feature_columns])


def _explain(explainer: ZeroShotExplainer, query, outputs, refinement: Refinement | None = None):
    """(values, uncertainty) as (m, P, K) and base values as (m, K), zero-shot or refined. Rows
    whose logged prediction is missing (null or NaN) are explained without predictions."""
    m = len(query)
    missing = None if outputs is None else np.isnan(outputs).any(axis=1)
    lowest = minimum_budget(False)
    if missing is not None and missing.any() and refinement and refinement.budget < lowest:
        # propose's refusal named its budget alone, not the prediction that made it too small.
        row = int(np.flatnonzero(missing)[0])
        raise InvalidArgumentError(
            "predictions_query",
            f"is missing (null or NaN): a row without its prediction is refined at a budget of "
            f"at least {lowest} (the explained row is scored too); the budget is "
            f"{refinement.budget}",
            row=row,
            column=int(np.flatnonzero(np.isnan(outputs[row]))[0]),
        )
    if missing is not None and missing.all():
        outputs, missing = None, None
    if missing is None or not missing.any():
        return _answer(explainer, query, _as_fitted(explainer, outputs), refinement)
    values = np.empty((m, len(explainer.attribution_names_), explainer.n_outputs_))
    uncertainty = np.empty_like(values)
    base_values = np.empty((m, explainer.n_outputs_))
    for rows, given in ((~missing, outputs), (missing, None)):
        if not rows.any():
            continue
        part = query[rows] if isinstance(query, np.ndarray) else query.loc[rows]
        given = None if given is None else _as_fitted(explainer, given[rows])
        with _rows_at(np.flatnonzero(rows)):
            shaped = _answer(explainer, part, given, refinement)
        values[rows], uncertainty[rows], base_values[rows] = shaped
    return values, uncertainty, base_values


def _answer(explainer: ZeroShotExplainer, query, predictions, refinement: Refinement | None):
    """``_shaped`` answers for rows that all have predictions or all lack them: ``explain``'s,
    or refined in slices (``rows_per_model_call``), each slice proposed, scored by the
    caller's model and refined; a row's answer does not depend on the slice it is in."""
    m = len(query)
    if refinement is None:
        return _shaped(explainer, explainer.explain(query, predictions), m)
    values = np.empty((m, len(explainer.attribution_names_), explainer.n_outputs_))
    uncertainty = np.empty_like(values)
    base_values = np.empty((m, explainer.n_outputs_))
    step = rows_per_model_call(refinement.budget, explainer.n_features_in_)
    model = refinement.model.load()
    for first in range(0, m, step):
        rows = slice(first, min(m, first + step))
        part = query[rows] if isinstance(query, np.ndarray) else query.iloc[rows]
        with _rows_at(np.arange(rows.start, rows.stop)):
            proposal = explainer.propose(
                part,
                refinement.budget,
                None if predictions is None else predictions[rows],
                random_state=refinement.random_state,
            )
        scored = model(np.array(proposal.rows))
        answer = explainer.refine(proposal, scored)
        values[rows], uncertainty[rows], base_values[rows] = _shaped(
            explainer, answer, rows.stop - first
        )
    return values, uncertainty, base_values


# The arguments whose rows are the explained rows: the model's outputs on proposed rows
# ("outputs") count other rows.
_BY_EXPLAINED_ROW = ("X_query", "predictions_query")


@contextlib.contextmanager
def _rows_at(positions: np.ndarray) -> Iterator[None]:
    """Refusals of a value in some of the explained rows given (``error.row``) located at their
    position in the rows given the caller (``positions[error.row]``), for ``explain_batches`` to
    report which of the batch's rows it was."""
    try:
        yield
    except InvalidArgumentError as error:
        if error.row is not None and error.argument in _BY_EXPLAINED_ROW:
            error.row = int(positions[error.row])
        raise


def _refused_in_table(error: InvalidArgumentError, frame, plan: BatchPlan) -> Exception:
    """The estimator's refusal of one value of the batch in the table's terms: row numbers in a
    batch mean nothing to whoever reads a failed job's log, so the caller's column is named and
    the row shown by its values, which find it in the table."""
    by_argument = {"X_query": plan.feature_columns, "predictions_query": plan.prediction_columns}
    columns = by_argument.get(error.argument)
    if columns is None or error.row is None or error.column is None:
        return error
    shown = [*plan.feature_columns, *(plan.prediction_columns or ())]

    def caller(column: str) -> str:
        return plan.caller_names.get(column, column)

    def shown_value(column: str) -> str:
        value = frame.at[error.row, column]  # not frame.iloc[row]: it casts ints to a float row
        return repr(value.item() if isinstance(value, np.generic) else value)

    values = ", ".join(f"{caller(name)}={shown_value(name)}" for name in shown[:MAX_SHOWN_COLUMNS])
    if len(shown) > MAX_SHOWN_COLUMNS:
        values += f", ... ({len(shown) - MAX_SHOWN_COLUMNS} more columns)"
    column = columns[error.column]
    return InvalidArgumentError(
        caller(column),
        f"holds {shown_value(column)} in the row with {values}, which the estimator refused: "
        f"{error.argument} {error.unlocated}",
    )


# Columns of a refused row shown in the job's error: enough to find the row, short enough to read.
MAX_SHOWN_COLUMNS = 12


def _as_fitted(explainer: ZeroShotExplainer, outputs):
    """(m, K) outputs shaped as the context's predictions were: (m,) for a single output."""
    if outputs is None or not explainer.single_output_:
        return outputs
    return outputs[:, 0]


def _shaped(explainer: ZeroShotExplainer, explanation, m: int):
    k = explainer.n_outputs_
    p = len(explainer.attribution_names_)
    return (
        explanation.values.reshape(m, p, k),
        explanation.uncertainty.reshape(m, p, k),
        explanation.base_values.reshape(m, k),
    )


def _list_array(values: np.ndarray):
    """(m, A) or (m, A, B) float64 as an Arrow list<double> or list<list<double>> column, made
    from offsets over the flat values (no Python object per row)."""
    import pyarrow as pa

    array = pa.array(np.ascontiguousarray(values, dtype=np.float64).ravel())
    for width in reversed(values.shape[1:]):
        offsets = pa.array(np.arange(0, len(array) + 1, width, dtype=np.int32))
        array = pa.ListArray.from_arrays(offsets, array)
    return array


def _added(plan: BatchPlan, explainer: ZeroShotExplainer, values, uncertainty, base_values):
    """The added columns, name -> Arrow array, in schema order."""
    import pyarrow as pa

    columns = {}
    if plan.layout == "columns":
        for k in range(len(plan.base_columns)):
            for p, name in enumerate(plan.value_columns[k]):
                columns[name] = pa.array(values[:, p, k])
            for p, name in enumerate(plan.uncertainty_columns[k]):
                columns[name] = pa.array(uncertainty[:, p, k])
            columns[plan.base_columns[k]] = pa.array(base_values[:, k])
        return columns
    # Arrays: each row's slice of the explanation, shaped as Explanation's per row:
    # (P,) for a single output, (P, K) as P lists of K for several (and base values (K,)).
    if explainer.single_output_:
        rows = (
            _list_array(values[:, :, 0]),
            _list_array(uncertainty[:, :, 0]),
            pa.array(base_values[:, 0]),
        )
    else:
        rows = (_list_array(values), _list_array(uncertainty), _list_array(base_values))
    names = (plan.value_columns[0][0], plan.uncertainty_columns[0][0], plan.base_columns[0])
    return dict(zip(names, rows, strict=True))


def explain_batches(batches: Iterator, plan: BatchPlan, shipped: ShippedContext) -> Iterator:
    """``mapInArrow``' function: each Arrow record batch's columns as they came, plus the
    attributions. Only the feature and prediction columns are read through pandas; the batch's
    columns go back untouched (through ``mapInPandas`` every column made the round trip, which
    rounded a long id past 2**53 in a batch with a null, turned NaN into null and moved a
    timestamp in the repeated daylight-saving hour; a vector column failed the job: QA,
    2026-12-06)."""
    import pyarrow as pa

    numba.set_num_threads(min(plan.threads, numba.config.NUMBA_NUM_THREADS))
    explainer = None
    read = list(dict.fromkeys([*plan.feature_columns, *(plan.prediction_columns or ())]))
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if explainer is None:  # partitions without rows never load the context
            explainer = loaded_explainer(shipped)
        step = plan.batch_rows or batch.num_rows
        for first in range(0, batch.num_rows, step):
            part = batch.slice(first, step)
            frame = pa.Table.from_batches([part]).select(read).to_pandas()
            outputs = None
            if plan.prediction_columns is not None:
                outputs = np.column_stack(
                    [_float_column(frame, column) for column in plan.prediction_columns]
                )
            try:
                with threadpool_limits(plan.threads):
                    query = _query(frame, plan, explainer)
                    answers = _explain(explainer, query, outputs, plan.refinement)
            except InvalidArgumentError as error:
                raise _refused_in_table(error, frame, plan) from None
            added = _added(plan, explainer, *answers)
            yield pa.RecordBatch.from_arrays(
                [*part.columns, *added.values()], names=[*part.schema.names, *added]
            )
