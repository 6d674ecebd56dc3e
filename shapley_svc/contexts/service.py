"""Contexts as a service, with no transport in sight: content addresses, a single-flight store,
the semantic limits, and fits and explanations on a small pool of compute threads.

Callers hand in canonical numpy arrays and plain values (:class:`ContextSpec`) and say how long
they wait (:class:`Caller`); they get fitted contexts and the estimator's ``Explanation`` back, or
a :mod:`shapley_svc.errors` class whose ``argument`` is the estimator's argument name (``X``,
``predictions``, ``groups``, ``X_query``, ...) or ``context`` for the context as a whole. Numba
kernels release the GIL, so the compute threads run in parallel while the caller's threads stay
free for cheap work.
"""

import concurrent.futures
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shapley_svc.contexts.spec import (
    PATIENT,
    STOPPING,
    Caller,
    ContextLimits,
    ContextSpec,
    calibrated_id,
    content_id,
)
from shapley_svc.contexts.store import ContextStore, StoredContext
from shapley_svc.errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    ShapleyError,
    StorageError,
    UnavailableError,
)
from shapley_svc.estimator import ZeroShotExplainer, load_artifact
from shapley_svc.estimator.calibration import CalibrationProposal, outputs_fingerprint
from shapley_svc.estimator.calibration import default_budget as default_calibration_budget
from shapley_svc.estimator.calibration import minimum_budget as minimum_calibration_budget
from shapley_svc.estimator.explainer import SERIAL_MAX_ROWS, Explanation
from shapley_svc.estimator.persistence import save_explainer, wait_while_replaced
from shapley_svc.estimator.refinement import Proposal, minimum_budget, pairs_within
from shapley_svc.estimator.threading_layer import TurnAbandoned, serialised

Result = TypeVar("Result")
logger = logging.getLogger(__name__)
# Only a content address names a saved context's directory: nothing else reaches the file system.
_CONTEXT_ID = re.compile(r"ctx-[0-9a-f]{40}")
# What a save (``ZeroShotExplainer.save``: ``.<id>.<pid>.<thread>.<token>.partial`` or
# ``.replaced``) or a delete (``_hidden``: ``.<id>.<pid>.<thread>.deleted``) leaves in
# context_dir when its process is killed part way (a SIGKILL during a save of a 20,000 x 200
# context left 4-8 MB, kept across restarts: QA, 2026-12-05).
_LEFTOVER = re.compile(
    r"\.ctx-[0-9a-f]{40}\.\d+\.\d+(?:\.[0-9a-f]+)?\.(?:partial|replaced|deleted)"
)
# A leftover this old is no save in progress on any replica sharing the directory: the largest
# context's save takes seconds.
LEFTOVER_SECONDS = 3600.0


class ContextService:
    """Fitted contexts by content address, and explanations against them.

    Parameters
    ----------
    limits : the sizes refused.
    compute_threads : threads running fits and large explanations.
    artifact : the meta-learned artifact's manifest path; None for the shipped one.
    describe : called once per fitted context, on the compute thread, and again on the calling
        thread when its bytes grow (``_count_growth``); its result is kept as
        ``StoredContext.description`` (the server keeps its ContextInfo message there).
    context_dir : None, or a directory (e.g. a volume replicas share) where every fitted context
        is saved under its content address; a context not held in memory is loaded from there
        before it is refitted or reported not found. A save is written beside the others under a
        hidden name and renamed into place, so that loaders see a whole saved context or none; a
        save that fails (a read-only or full volume, the directory pruned meanwhile) is logged
        and counted in ``contexts_unsaved``, and the context is still held and served.
    """

    def __init__(
        self,
        limits: ContextLimits,
        compute_threads: int,
        artifact: str | None = None,
        describe: Callable[[StoredContext], Any] = lambda entry: None,
        context_dir: str | Path | None = None,
    ):
        self.limits = limits
        self.context_dir = None if context_dir is None else Path(context_dir)
        if self.context_dir is not None:
            self.context_dir.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(self.context_dir, time.time() - LEFTOVER_SECONDS)
        self.contexts_loaded = 0  # contexts read back from context_dir, not fitted
        self.contexts_fitted = 0
        self.contexts_calibrated = 0
        self.contexts_unsaved = 0  # fitted or calibrated contexts whose save failed
        self.artifact_path = artifact
        loaded = load_artifact(artifact) if artifact else load_artifact()
        self.artifact_version: str = loaded.version
        self.artifact_sha256: str = loaded.manifest["sha256"]
        self.store = ContextStore(limits.max_contexts, limits.max_store_bytes)
        self._describe = describe
        self._compute = concurrent.futures.ThreadPoolExecutor(
            compute_threads, thread_name_prefix="compute"
        )

    def shutdown(self) -> None:
        """Finish the work under way; drop the work still queued."""
        self._compute.shutdown(wait=True, cancel_futures=True)

    def content_id(self, spec: ContextSpec) -> str:
        return content_id(spec, self.artifact_sha256)

    def check_size(self, rows: np.ndarray, predictions: np.ndarray, rows_before: int = 0) -> None:
        """Refuse a context (or one more block of a context that already has ``rows_before``
        rows) larger than the limits, before it is fitted or even fully received."""
        limits = self.limits
        n, d = rows.shape
        if rows_before + n > limits.max_context_rows:
            raise LimitExceededError(
                "X", f"{rows_before + n} rows; the limit is {limits.max_context_rows}"
            )
        if d > limits.max_features:
            raise LimitExceededError("X", f"{d} features; the limit is {limits.max_features}")
        if predictions.ndim == 2 and predictions.shape[1] > limits.max_outputs:
            raise LimitExceededError(
                "predictions", f"{predictions.shape[1]} outputs; the limit is {limits.max_outputs}"
            )

    def get(self, context_id: str, caller: Caller = PATIENT) -> StoredContext:
        """The held context, else the one saved in ``context_dir`` (loaded once however many
        callers ask); ``NotFoundError`` when neither has it."""
        entry = self.store.get(context_id)
        if entry is not None and not self._deleted_elsewhere(entry):
            return entry
        if self._saved(context_id) is None:
            raise _not_held(context_id)

        def load(should_stop: Callable[[], bool]) -> StoredContext:
            # Asked for by id: a saved context too large to hold is refused naming the id.
            entry = self._load(context_id, "context_id", should_stop)
            if entry is None:  # damaged, or saved by another artifact: as if never saved
                raise _not_held(context_id)
            return entry

        return self.store.get_or_build(context_id, load, caller, self._start)[0]

    def _deleted_elsewhere(self, entry: StoredContext) -> bool:
        """Whether ``entry``, loaded from or saved in ``context_dir``, has lost its saved copy
        (another replica's DeleteContext, or the directory pruned): then it is dropped here too.
        Replicas that had loaded a context went on serving it after a delete through another
        (QA, 2026-12-05): the shared directory is what says a context exists."""
        if not entry.saved or self._saved(entry.context_id) is not None:
            return False
        # A save replacing the copy (one that did not load) moves it aside for a moment: given
        # 20 ms to come back, a held context was dropped when the saving thread was held off the
        # CPU longer (the same race failed a load in CI); now waited for while a save is under
        # way, and a copy deleted for good is dropped at once.
        if wait_while_replaced(self.context_dir / entry.context_id):
            return False
        if self.store.drop(entry):
            logger.info("context %s dropped: its saved copy was deleted", entry.context_id)
        return True

    def held(self) -> tuple[list[StoredContext], int]:
        """The contexts held (most recently used first) and their bytes, less those deleted
        elsewhere (``_deleted_elsewhere``)."""
        entries, total = self.store.snapshot()
        if any([self._deleted_elsewhere(entry) for entry in entries]):
            entries, total = self.store.snapshot()
        return entries, total

    def delete(self, context_id: str) -> tuple[StoredContext, int]:
        """Forget the context here and in ``context_dir``: the context, and the bytes that freed
        in memory here (none while a held calibration of it, or the context it calibrates,
        shares its members). A context only saved (after a restart, evicted, or fitted by
        another replica) is deleted there: its entry then holds no explainer and 0 bytes, and
        0 bytes were freed. ``NotFoundError`` when neither had it; ``StorageError``, with
        nothing deleted, when the saved copy cannot be removed (a read-only volume): it answered
        OK and the context, loaded again from the copy, went on being served."""
        # The saved copy first: when it cannot go, the context stays as it was, here too.
        removed = self._remove_saved(context_id)
        entry, freed = self.store.delete(context_id)
        if entry is None:
            if not removed:
                raise _not_held(context_id)
            entry = StoredContext(context_id, None, 0.0, 0)
        return entry, freed

    def _remove_saved(self, context_id: str) -> bool:
        """Remove the saved copy of ``context_id``; whether there was one. It is renamed out of
        the way first, so that a loader (another replica) sees it whole or not at all."""
        saved = self._saved(context_id)
        if saved is None:
            return False
        doomed = saved.with_name(_hidden(context_id, "deleted"))
        try:
            os.rename(saved, doomed)
        except FileNotFoundError:
            return True  # removed meanwhile (by another replica's delete): it was there
        except OSError as error:
            raise StorageError(
                "context_id",
                f"{context_id}'s saved copy {saved} cannot be removed ({_os_problem(error)}); "
                "nothing was deleted",
            ) from None
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _saved(self, context_id: str) -> Path | None:
        """The directory ``context_id`` would be saved in, when there is one."""
        if self.context_dir is None or not _CONTEXT_ID.fullmatch(context_id):
            return None
        path = self.context_dir / context_id
        return path if path.is_dir() else None

    def _load(
        self, context_id: str, argument: str, should_stop: Callable[[], bool]
    ) -> StoredContext | None:
        """The saved context, or None when it does not load; refused (naming ``argument``, what
        the caller gave for it) when it is larger than the whole store."""
        start = time.perf_counter()
        path = self.context_dir / context_id
        try:
            explainer = ZeroShotExplainer.load(path, artifact=self.artifact_path)
        except InvalidArgumentError as error:
            logger.warning("saved context not loaded: %s", error.problem)
            return None
        entry = self._stored(context_id, explainer, time.perf_counter() - start)
        entry.saved = True
        self.store.check_room(entry, argument)
        self.contexts_loaded += 1
        return entry

    def get_or_create(
        self, spec: ContextSpec, caller: Caller = PATIENT
    ) -> tuple[StoredContext, bool]:
        """The context ``spec`` describes, fitted once however many callers ask at the same
        time; and whether it was made during this call (fitted, or loaded from the context
        directory; False: it was held already)."""
        self.check_size(spec.rows, spec.predictions)
        context_id = self.content_id(spec)

        def build(should_stop: Callable[[], bool]) -> StoredContext:
            saved = self._saved(context_id) is not None
            if saved:
                entry = self._load(context_id, "context", should_stop)
                if entry is not None:
                    return entry
            # A saved copy that did not load is replaced by the fit's.
            return self._fit(spec, context_id, saved, should_stop)

        held = self.store.get(context_id)
        if held is not None:
            self._deleted_elsewhere(held)  # then fitted (or loaded) again, as never held
        return self.store.get_or_build(context_id, build, caller, self._start)

    def explain(
        self,
        entry: StoredContext,
        rows: np.ndarray,
        predictions: np.ndarray | None = None,
        *,
        answer_bytes_per_row: int = 0,
        answer_fixed_bytes: int = 0,
        caller: Caller = PATIENT,
    ) -> Explanation:
        """The estimator's explanation of ``rows`` (m, d) against a held context.

        ``answer_bytes_per_row`` is what one row's answer takes as the caller will send it, and
        ``answer_fixed_bytes`` what the rest of the answer takes (its framing, ids, a
        description of the context), at most (both its encoding's business): the whole answer
        must fit in ``limits.max_answer_bytes``.
        """
        m = rows.shape[0]
        self._check_query_size(m, answer_bytes_per_row, answer_fixed_bytes)
        with _naming_context(entry):
            if m <= SERIAL_MAX_ROWS:
                # A few milliseconds on one core: cheaper here than a hand-off to a compute thread.
                return _here(caller, _explain, entry.explainer, rows, predictions)
            return self._on_compute_thread(_explain, caller, entry.explainer, rows, predictions)

    def _check_query_size(
        self, m: int, answer_bytes_per_row: int, answer_fixed_bytes: int = 0
    ) -> None:
        """Refuse more query rows than one request may carry, or than one answer holds."""
        limit = self.limits
        if m > limit.max_explain_rows:
            raise LimitExceededError(
                "X_query", f"{m} rows in one request; the limit is {limit.max_explain_rows}"
            )
        total = answer_fixed_bytes + m * answer_bytes_per_row
        if total > limit.max_answer_bytes:
            most = self._most_rows(answer_bytes_per_row, answer_fixed_bytes)
            raise LimitExceededError(
                "X_query",
                f"the answer for {m} rows would take up to {total} bytes, over the "
                f"{limit.max_answer_bytes}-byte message limit; "
                + (
                    f"send at most {most} rows per message (ExplainStream chunks a large batch)"
                    if most
                    else f"no row fits beside the rest of the answer ({answer_fixed_bytes} "
                    "bytes: the context's description, ids and framing)"
                ),
            )

    def _most_rows(self, row_bytes: int, fixed_bytes: int) -> int:
        """The most rows of ``row_bytes`` each that fit in a message beside ``fixed_bytes``: what
        a refusal advertises is what the check lets through."""
        return max(0, self.limits.max_answer_bytes - fixed_bytes) // row_bytes

    def _rows_per_query(
        self,
        entry: StoredContext,
        rows: np.ndarray,
        predictions_given: bool,
        budget: int,
        answer_fixed_bytes: int,
        refined_row_bytes: int = 0,
    ) -> int:
        """Refuse a budget over ``limits.max_budget``, or whose proposal for ``rows`` would not
        fit in one message beside ``answer_fixed_bytes``, nor the Refine that brings its
        outputs back, nor that Refine's answer (``refined_row_bytes`` an explained row); the
        rows proposed per query row (0 for a budget the estimator will refuse as too small)."""
        limit = self.limits
        if budget > limit.max_budget:
            raise InvalidArgumentError(
                "budget",
                f"{budget} model rows per explained row; the limit is {limit.max_budget}",
            )
        if budget < minimum_budget(predictions_given):
            return 0  # the estimator says what the least budget is
        if len(entry.explainer.attribution_names_) == 1:
            # One player's value is the prediction minus the base value: Explain with the
            # predictions is already exact, and there are no coalitions to propose.
            raise InvalidArgumentError(
                "budget",
                "the context has a single attribution, whose value Explain gives exactly with "
                "the rows' predictions; there is nothing to refine",
            )
        per_query = (0 if predictions_given else 1) + 2 * pairs_within(budget, predictions_given)
        m, d = rows.shape
        k = entry.explainer.n_outputs_
        # Per explained row, the larger of the two messages: the proposal's answer (its rows'
        # d values) and the Refine that brings their K outputs back with the row itself and its
        # predictions. Counting the answer alone let through 97 rows at d = K = 8 whose Refine
        # (111,831 bytes at a 100,000-byte limit) gRPC refused with no field, after the model
        # had scored all 1,552 rows.
        row_bytes = max(
            per_query * d * 8,
            per_query * k * 8 + d * 8 + (k * 8 if predictions_given else 0),
            refined_row_bytes,
        )
        total = answer_fixed_bytes + m * row_bytes
        if total > limit.max_answer_bytes:
            raise LimitExceededError(
                "budget",
                f"the proposal for {m} rows ({per_query} rows each, {d} float64s a row out and "
                f"{k} outputs a row back in Refine) would take up to {total} bytes, over the "
                f"{limit.max_answer_bytes}-byte message limit; send at most "
                f"{self._most_rows(row_bytes, answer_fixed_bytes)} rows per call or lower the "
                "budget",
            )
        return per_query

    def propose(
        self,
        entry: StoredContext,
        rows: np.ndarray,
        predictions: np.ndarray | None,
        budget: int,
        random_state: int | None = None,
        *,
        answer_fixed_bytes: int = 0,
        refined_row_bytes: int = 0,
        caller: Caller = PATIENT,
    ) -> Proposal:
        """The estimator's proposal of rows for the caller's model to score, for ``rows``
        (m, d) against a held context, refused when it, the Refine that brings the outputs
        back, or that Refine's answer (``refined_row_bytes`` an explained row) would not fit in
        one message beside ``answer_fixed_bytes`` (the most any of them takes besides its
        numbers)."""
        self._check_query_size(rows.shape[0], 0)
        per_query = self._rows_per_query(
            entry, rows, predictions is not None, budget, answer_fixed_bytes, refined_row_bytes
        )
        args = (entry.explainer, rows, predictions, budget, random_state)
        return self._refinement_call(entry, rows.shape[0] * per_query, _propose, caller, *args)

    def refine(
        self,
        entry: StoredContext,
        rows: np.ndarray,
        predictions: np.ndarray | None,
        budget: int,
        random_state: int | None,
        outputs: np.ndarray,
        *,
        proposal_sha256: str = "",
        pool_rows: bool = False,
        answer_bytes_per_row: int = 0,
        answer_fixed_bytes: int = 0,
        caller: Caller = PATIENT,
    ) -> Explanation:
        """The refined explanation of ``rows`` from the model's ``outputs`` on the proposal the
        same (rows, predictions, budget, random_state) give, rebuilt here: nothing is kept
        between ``propose`` and ``refine``. ``proposal_sha256``, when not empty, is the
        proposal's ``rows_sha256`` as ``propose`` made it: the rebuilt one must match (another
        version of the service draws other coalitions). ``pool_rows`` as in the estimator's
        ``refine``. The answer's size as in ``explain``."""
        self._check_query_size(rows.shape[0], answer_bytes_per_row, answer_fixed_bytes)
        # The proposal is rebuilt, not sent: counting its rows alone lets through whatever
        # ``propose`` did.
        per_query = self._rows_per_query(entry, rows, predictions is not None, budget, 0)
        args = (
            entry.explainer,
            rows,
            predictions,
            budget,
            random_state,
            outputs,
            proposal_sha256,
            pool_rows,
        )
        return self._refinement_call(entry, rows.shape[0] * per_query, _refine, caller, *args)

    def _refinement_call(
        self,
        entry: StoredContext,
        n_rows: int,
        work: Callable[..., Result],
        caller: Caller,
        *args: Any,
    ) -> Result:
        """``work(*args, should_stop)`` on ``entry``'s explainer: here for up to
        ``SERIAL_MAX_ROWS`` proposed rows, else on a compute thread; then the store counts
        what it kept of the context (``_count_growth``)."""
        try:
            with _naming_context(entry):
                if n_rows <= SERIAL_MAX_ROWS:
                    return _here(caller, work, *args)
                return self._on_compute_thread(work, caller, *args)
        finally:
            self._count_growth(entry)

    def _count_growth(self, entry: StoredContext) -> None:
        """Count in the store what refinement made of ``entry``'s background and keeps (the
        tree members' leaf masks, made on the first call that needs them), whether or not the
        call that made them went on to succeed; the contexts that hold them are described again
        with the bytes they now hold (once per context: the masks are made once)."""
        grown_bytes = entry.explainer.pair_cache_bytes()
        if not self.store.room_for_growth(entry, grown_bytes):
            # The cache alone would take the store past its limit (tree members keep up to
            # 32 MiB of masks each, per output: a 106 MiB context with 8 outputs grew to
            # 509 MiB, 1.7 times a 300 MiB store): it goes, to be made again when needed.
            entry.explainer.release_pair_cache()
            grown_bytes = 0
        for grown in self.store.count_growth(entry, grown_bytes):
            grown.description = self._describe(grown)

    def _check_calibration_size(
        self, entry: StoredContext, budget: int | None, refit: bool, answer_fixed_bytes: int
    ) -> int:
        """The calibration budget (``budget``, or the estimator's default for a refit or for
        the weights alone), refused when its proposal would not fit in one message beside
        ``answer_fixed_bytes``."""
        explainer = entry.explainer
        if budget is None:
            budget = default_calibration_budget(explainer.background_rows_.shape[0], refit)
        d = explainer.n_features_in_
        width = _scored_row_width(explainer)
        total = answer_fixed_bytes + budget * width * 8
        if total > self.limits.max_answer_bytes:
            raise LimitExceededError(
                "budget",
                f"{budget} calibration rows ({_widths(d, width)}) would take up to {total} "
                f"bytes, over the {self.limits.max_answer_bytes}-byte message limit; the most "
                f"is {self._most_rows(width * 8, answer_fixed_bytes)}",
            )
        return budget

    def _check_refit_size(self, spec: ContextSpec, budget: int, n_background: int) -> None:
        """Refuse a refit larger than the largest context: it fits the context's rows and the
        ``budget`` scored rows together."""
        n = spec.rows.shape[0]
        limit = self.limits.max_context_rows
        if n + budget > limit:
            room = (
                f"a budget of at most {limit - n}"
                if limit - n >= minimum_calibration_budget(n_background)
                else "no budget"
            )
            raise LimitExceededError(
                "budget",
                f"a refit fits the context's {n} rows and the {budget} scored rows, "
                f"{n + budget} in all; the limit is {limit} ({room} leaves room for a refit): "
                "calibrate without the context to refit the weights only",
            )

    def propose_calibration(
        self,
        entry: StoredContext,
        budget: int | None,
        random_state: int | None = None,
        *,
        refit: bool = False,
        answer_fixed_bytes: int = 0,
        caller: Caller = PATIENT,
    ) -> CalibrationProposal:
        """The rows the caller's model scores, once, to calibrate a held context; ``refit``
        sizes the default budget for a calibration with the context's data (``calibrate``
        with ``spec``). Refused when the rows would not fit in one message beside
        ``answer_fixed_bytes`` (what the answer takes besides their float64s, at most)."""
        with _naming_context(entry):
            budget = self._check_calibration_size(entry, budget, refit, answer_fixed_bytes)
            return self._on_compute_thread(
                _propose_calibration, caller, entry.explainer, budget, random_state
            )

    def calibrate(
        self,
        entry: StoredContext,
        budget: int | None,
        random_state: int | None,
        outputs: np.ndarray,
        spec: ContextSpec | None = None,
        *,
        proposal_sha256: str = "",
        caller: Caller = PATIENT,
    ) -> tuple[StoredContext, bool]:
        """The context ``entry`` calibrated on the model's ``outputs`` on the proposal the same
        (budget, random_state) give, rebuilt here; held (and saved) under its own content
        address, built once however many callers ask; and whether this call built it. With
        ``spec`` (the context's own, checked by its content address) the zoo is refitted on the
        context's rows and the scored rows; without, only its weights. ``budget`` None: the
        default of ``propose_calibration`` for the same kind (``refit`` when ``spec`` is
        given). ``proposal_sha256``, when not empty, is the proposal's ``rows_sha256`` as
        ``propose_calibration`` made it: where the calibrated context is built, the rebuilt
        proposal must match (another version of the service draws other coalitions)."""
        if spec is not None and self.content_id(spec) != entry.context_id:
            raise InvalidArgumentError(
                "context", f"is not the context {entry.context_id} (its content address differs)"
            )
        with _naming_context(entry):
            by_default = budget is None
            # The proposal is rebuilt, not sent: counting its rows alone lets through whatever
            # ``propose_calibration`` did.
            budget = self._check_calibration_size(entry, budget, spec is not None, 0)
            if spec is not None:
                self._check_refit_size(spec, budget, entry.explainer.background_rows_.shape[0])
            explainer = entry.explainer
            # An out-of-range seed is the estimator's to refuse, when the context is built.
            seed = explainer.random_state_ if random_state is None else int(random_state)
            outputs = np.asarray(outputs, dtype=np.float64)
            context_id = calibrated_id(
                entry.context_id, budget, seed, outputs_fingerprint(outputs), spec is not None
            )

            def build(should_stop: Callable[[], bool]) -> StoredContext:
                saved = self._saved(context_id) is not None
                if saved:
                    loaded = self._load(context_id, "context_id", should_stop)
                    if loaded is not None:
                        return loaded
                return self._calibrate(
                    explainer,
                    budget,
                    seed,
                    outputs,
                    spec,
                    context_id,
                    by_default,
                    saved,
                    proposal_sha256,
                    should_stop,
                )

            held = self.store.get(context_id)
            if held is not None:
                self._deleted_elsewhere(held)
            try:
                return self.store.get_or_build(context_id, build, caller, self._start)
            finally:
                self._count_growth(entry)

    def _calibrate(
        self,
        explainer: ZeroShotExplainer,
        budget: int,
        seed: int,
        outputs: np.ndarray,
        spec: ContextSpec | None,
        context_id: str,
        by_default: bool,
        replace: bool,
        proposal_sha256: str,
        should_stop: Callable[[], bool],
    ) -> StoredContext:
        start = time.perf_counter()
        proposal = explainer.propose_calibration(budget, random_state=seed)
        _check_calibration_outputs(
            outputs, budget, proposal, by_default, spec is not None, explainer
        )
        _check_proposal_sha256(proposal_sha256, proposal.rows_sha256, "ProposeCalibration")
        context = () if spec is None else (_as_fitted(spec.rows), _as_fitted(spec.predictions))
        calibrated = explainer.calibrate(proposal, outputs, *context, should_stop=should_stop)
        entry = self._stored(context_id, calibrated, time.perf_counter() - start)
        # Too large to hold: refused before it is saved or counted (by the id it came from).
        self.store.check_room(entry, "context_id")
        entry.saved = self._save(calibrated, context_id, replace)
        self.contexts_calibrated += 1
        return entry

    def _stored(
        self, context_id: str, explainer: ZeroShotExplainer, seconds: float
    ) -> StoredContext:
        """The store's entry for a fitted ``explainer``, described. Its bytes are those of its
        fitted members (``explainer.context_``), which a weights-only calibration shares with
        the context it came from: the store counts them once. When the cache they built (see
        ``_count_growth``) alone takes it past the store's limit, the cache is released first:
        a weights-only calibration of a context whose cache had grown was refused as larger
        than the store, every time."""
        released = bool(explainer.pair_cache_bytes()) and (
            explainer.memory_bytes() > self.limits.max_store_bytes
        )
        if released:
            explainer.release_pair_cache()
        entry = StoredContext(
            context_id,
            explainer,
            seconds,
            explainer.memory_bytes(),
            holds=explainer.context_,
            grown_bytes=explainer.pair_cache_bytes(),
        )
        if released:  # the held contexts sharing those members hold less now
            for shrunk in self.store.count_growth(entry, 0):
                shrunk.description = self._describe(shrunk)
        entry.description = self._describe(entry)
        return entry

    def _fit(
        self,
        spec: ContextSpec,
        context_id: str,
        replace: bool,
        should_stop: Callable[[], bool],
    ) -> StoredContext:
        start = time.perf_counter()
        explainer = ZeroShotExplainer(random_state=spec.random_state, artifact=self.artifact_path)
        explainer.fit(
            _as_fitted(spec.rows),
            _as_fitted(spec.predictions),
            background=spec.background if spec.background.size else None,
            feature_names=list(spec.feature_names) or None,
            groups=list(spec.groups) or None,
            categorical=spec.categorical_columns.tolist() or None,
            should_stop=should_stop,
        )
        entry = self._stored(context_id, explainer, time.perf_counter() - start)
        # Too large to hold: refused before it is saved or counted.
        self.store.check_room(entry, "context")
        entry.saved = self._save(explainer, context_id, replace)
        self.contexts_fitted += 1
        return entry

    def _save(self, explainer: ZeroShotExplainer, context_id: str, replace: bool) -> bool:
        """Save ``explainer`` in ``context_dir`` under ``context_id``, if there is one. The save
        is whole or not at all (written under a hidden name and renamed into place), so a
        loader (another replica) sees the whole saved context or none. A copy found there is
        replaced if ``replace`` (one that did not load), else kept (another replica's save of
        the same context meanwhile): replacing it moves it aside for a moment, in which the
        replicas holding it took it for deleted (``_deleted_elsewhere``). A save that fails is
        logged (once: the callers of one context share its build) and counted; the context is
        held and served all the same. Whether it was saved."""
        if self.context_dir is None:
            return False
        final = self.context_dir / context_id
        try:
            save_explainer(explainer, final, keep_existing=not replace)
        except (OSError, ShapleyError) as error:
            self.contexts_unsaved += 1
            problem = error.problem if isinstance(error, ShapleyError) else _os_problem(error)
            logger.warning(
                "context %s is held but was not saved in %s: %s", context_id, final, problem
            )
            return False
        return True

    def _start(
        self, build: Callable[[Callable[[], bool]], StoredContext], should_stop: Callable[[], bool]
    ) -> concurrent.futures.Future:
        """``build(should_stop)`` queued for a compute thread (the store's ``run``: the store
        waits for it, for every caller of the same context)."""
        try:
            return self._compute.submit(_taking_turns, build, should_stop)
        except RuntimeError:  # the pool is shut down: the server is stopping
            raise UnavailableError(STOPPING) from None

    def _on_compute_thread(self, work: Callable[..., Result], caller: Caller, *args: Any) -> Result:
        """``work(*args, should_stop)`` on a compute thread, waited for until the deadline.

        The work's ``should_stop`` turns True when the caller goes away or the deadline passes,
        so that work polling it gives its compute thread back.
        """
        remaining = caller.seconds_left()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError("deadline expired")
        abandoned = threading.Event()

        def should_stop() -> bool:
            return abandoned.is_set() or caller.should_stop()

        try:
            future = self._compute.submit(_taking_turns, work, *args, should_stop)
        except RuntimeError:  # the pool is shut down: the server is stopping
            raise UnavailableError(STOPPING) from None
        try:
            return future.result(timeout=remaining)
        except concurrent.futures.CancelledError:  # dropped from the queue by shutdown
            raise UnavailableError(STOPPING) from None
        except concurrent.futures.TimeoutError:
            abandoned.set()
            future.cancel()
            raise DeadlineExceededError(
                f"deadline expired after {remaining:.3f} s while the server was computing"
            ) from None


def _taking_turns(work: Callable[..., Result], *args: Any) -> Result:
    """``work(*args, should_stop)`` on a compute thread: it may run the estimator's kernels,
    one thread at a time where numba's threading layer cannot take launches from several
    (``threading_layer.serialised``), waiting for its turn until ``should_stop``."""
    return _in_turn(work, args[:-1], args[-1])


def _here(caller: Caller, work: Callable[..., Result], *args: Any) -> Result:
    """``work(*args, caller.should_stop)`` on the calling thread, its turn on the kernels (where
    calls take turns) waited for until the caller goes or its deadline passes."""

    def late() -> bool:
        left = caller.seconds_left()
        return left is not None and left <= 0

    return _in_turn(work, args, caller.should_stop, late)


def _in_turn(
    work: Callable[..., Result],
    args: tuple,
    should_stop: Callable[[], bool],
    late: Callable[[], bool] = lambda: False,
) -> Result:
    """``work(*args, should_stop)`` in its turn on the kernels, waited for until ``should_stop``
    or ``late`` (then ``DeadlineExceededError``, else ``CancelledError``)."""
    try:
        with serialised(lambda: should_stop() or late()):
            return work(*args, should_stop)
    except TurnAbandoned:
        if late():
            raise DeadlineExceededError(
                "deadline expired while the call waited for its turn on the kernels"
            ) from None
        raise CancelledError("the call ended while it waited for its turn on the kernels") from None


def _explain(
    explainer: ZeroShotExplainer,
    rows: np.ndarray,
    predictions: np.ndarray | None,
    should_stop: Callable[[], bool],
) -> Explanation:
    return explainer.explain(
        np.asarray(rows, dtype=np.float64),
        None if predictions is None else np.asarray(predictions, dtype=np.float64),
        should_stop=should_stop,
    )


def _propose(explainer, rows, predictions, budget, random_state, should_stop) -> Proposal:
    # A copy: the rows may be a read-only view of the request's bytes, which the estimator's
    # numba kernels that fill the proposal do not accept.
    return explainer.propose(
        np.array(rows, dtype=np.float64),
        int(budget),
        None if predictions is None else np.asarray(predictions, dtype=np.float64),
        random_state=random_state,
    )


def _as_fitted(array: np.ndarray) -> np.ndarray:
    """A spec's rows or predictions as the estimator is given them: fit and calibrate alike, so
    that calibrate recognises the context by its fingerprint."""
    return np.asarray(array, dtype=np.float64)


def _check_calibration_outputs(
    outputs: np.ndarray,
    budget: int,
    proposal: CalibrationProposal,
    by_default: bool,
    refit: bool,
    explainer: ZeroShotExplainer,
) -> None:
    """Refuse ``outputs`` that cannot be the scores of ``proposal`` (rebuilt for the request),
    saying why it has as many rows as it has: a caller who left the budget to its default
    (``by_default``) gets the refit's with the context and the weights' without, and may have
    proposed with the other. The estimator checks the rest."""
    rows = proposal.rows.shape[0]
    if outputs.ndim not in (1, 2) or outputs.shape[0] == rows:
        return
    problem = (
        f"has {outputs.shape[0]} rows; the calibration proposal for budget {budget} has {rows}"
    )
    if by_default:
        other = default_calibration_budget(explainer.background_rows_.shape[0], not refit)
        given, default, flag = (
            ("with", "a refit's", "without") if refit else ("without", "the weights'", "with")
        )
        problem += (
            f" ({given} the context, budget 0 is {default} default; ProposeCalibration {flag} "
            f"refit proposes {other} rows)"
        )
    raise InvalidArgumentError(
        "outputs",
        f"{problem}: send the model's outputs on the rows that ProposeCalibration returned for "
        "the same budget, random_state and refit",
    )


def _check_proposal_sha256(given: str, rebuilt: str, rpc: str) -> None:
    """Refuse outputs scored on another proposal than the one rebuilt here, when the caller
    sent the ``given`` fingerprint (empty: not checked)."""
    if given and given != rebuilt:
        raise InvalidArgumentError(
            "proposal_sha256",
            f"is {given!r}, but the rows {rpc} proposes here for the same fields have "
            f"{rebuilt!r}: the outputs were scored on another proposal (made by another "
            f"version of the service, which draws other coalitions, or for other fields); "
            f"call {rpc} again and score its rows",
        )


def _propose_calibration(explainer, budget, random_state, should_stop) -> CalibrationProposal:
    return explainer.propose_calibration(budget, random_state=random_state)


def _refine(
    explainer,
    rows,
    predictions,
    budget,
    random_state,
    outputs,
    proposal_sha256,
    pool_rows,
    should_stop,
) -> Explanation:
    proposal = _propose(explainer, rows, predictions, budget, random_state, should_stop)
    _check_proposal_sha256(proposal_sha256, proposal.rows_sha256, "Propose")
    return explainer.refine(
        proposal,
        np.asarray(outputs, dtype=np.float64),
        pool_rows=pool_rows,
        should_stop=should_stop,
    )


@contextmanager
def _naming_context(entry: StoredContext) -> Iterator[None]:
    """The estimator checks the rows against what it was fitted on; a caller holding several
    contexts also needs to know which one."""
    try:
        yield
    except InvalidArgumentError as error:
        raise InvalidArgumentError(
            error.argument, f"{error.problem} (context {entry.context_id})"
        ) from None


def _scored_row_width(explainer: ZeroShotExplainer) -> int:
    """Float64s per proposed row in the larger of the two messages it travels in: its d values
    in the proposal's answer, its K outputs in the Refine or Calibrate that brings them back.
    Counting d alone let through a proposal whose outputs no message could carry (600 rows at
    d = 3, K = 40: the model scored them all, then Calibrate was refused with no field)."""
    return max(explainer.n_features_in_, explainer.n_outputs_)


def _widths(d: int, width: int) -> str:
    return f"{d} float64s each" if width == d else f"each row's {width} outputs as float64s"


def _hidden(context_id: str, purpose: str) -> str:
    """A name beside ``context_id``'s in ``context_dir`` that no loader takes for a saved context
    (only content addresses are loaded), unique to this process and thread."""
    return f".{context_id}.{os.getpid()}.{threading.get_ident()}.{purpose}"


def _remove_leftovers(context_dir: Path, before: float) -> None:
    """Remove what killed saves and deletes left in ``context_dir`` (``_LEFTOVER``) that was last
    changed before ``before`` (a time.time()); logged, never raised: it is housekeeping."""
    removed = 0
    try:
        with os.scandir(context_dir) as entries:
            stale = [
                entry.path
                for entry in entries
                if _LEFTOVER.fullmatch(entry.name) and _changed(entry) < before
            ]
    except OSError as error:
        logger.warning("leftovers in %s not looked for: %s", context_dir, _os_problem(error))
        return
    for path in stale:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass  # another replica starting removed it
        except OSError as error:
            logger.warning("leftover %s not removed: %s", path, _os_problem(error))
    if removed:
        logger.info("removed %d leftovers of killed saves or deletes in %s", removed, context_dir)


def _changed(entry: os.DirEntry) -> float:
    """When ``entry`` last changed, a rename included: a rename keeps the modification time, so
    a copy a live save moved aside a moment ago had the age of the context it held (QA)."""
    info = entry.stat(follow_symlinks=False)
    return max(info.st_mtime, info.st_ctime)


def _os_problem(error: OSError) -> str:
    """An OSError as a log line reads it: the error and the path it concerns."""
    if error.strerror and error.filename:
        return f"{error.strerror}: {error.filename} (errno {error.errno})"
    return str(error) or type(error).__name__


def _not_held(context_id: str) -> NotFoundError:
    return NotFoundError(
        "context_id",
        f"{context_id!r} is not held by this server (never created here, deleted or evicted); "
        "send the context inline or call CreateContext again",
    )
