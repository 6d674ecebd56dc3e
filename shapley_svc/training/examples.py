"""Training examples: a prior task run through the estimator's own context step, with its labels."""

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from shapley_svc._numba_threads import usable_cpus
from shapley_svc.estimator.context import ContextFeatures, fit_context
from shapley_svc.estimator.encoding import TableEncoder
from shapley_svc.training.prior import PriorConfig, Task, sample_task


@dataclass
class Example:
    """One output column of one task, as the combiner sees it, with the labels.

    features : the combiner's view of the output (as when serving);
    surrogate_values : (S, m, P); truth, truth_error : (m, P); target_sums : (m,).
    table : the development table of a real-table task; None for a synthetic one.
    """

    features: ContextFeatures
    surrogate_values: np.ndarray
    truth: np.ndarray
    truth_error: np.ndarray
    target_sums: np.ndarray
    family: str
    task: str
    seed: int
    table: str | None = None


def examples_from_task(task: Task, seed: int) -> list[Example]:
    """The task's output columns through the estimator's own fit and member values."""
    outputs = task.predictions if task.predictions.ndim == 2 else task.predictions[:, None]
    truth = task.truth if task.truth.ndim == 3 else task.truth[:, :, None]
    errors = task.truth_error if task.truth_error.ndim == 3 else task.truth_error[:, :, None]
    # Through the explainer's own encoding: missing cells and categorical codes become the same
    # design columns and players as when serving.
    encoder = TableEncoder.fit(task.X, task.categorical, outputs)
    names = [f"x{j}" for j in range(task.X.shape[1])]
    fitted = fit_context(
        encoder.transform(task.X),
        outputs,
        task.background,
        seed,
        players=encoder.players(None, names),
    )
    member_values = fitted.member_values(encoder.transform(task.X[task.explained]))
    return [
        Example(
            context.features,
            values,
            truth[:, :, k],
            errors[:, :, k],
            outputs[task.explained, k] - context.base_value,
            task.family,
            task.task,
            seed,
            task.info.get("table"),
        )
        for k, (context, values) in enumerate(zip(fitted.outputs, member_values, strict=True))
        if context is not None  # a constant output has nothing to attribute
    ]


def _build(args: tuple[int, PriorConfig]) -> list[Example]:
    seed, config = args
    return examples_from_task(sample_task(seed, config), seed)


def _init_worker() -> None:
    import signal
    import warnings

    import numba
    from threadpoolctl import threadpool_limits

    # Ctrl-C reaches the whole process group: the main process stops the run (and these
    # workers) and says so once, instead of every worker printing a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One process per core: nested OpenMP or BLAS pools that spin-wait would slow every fit
    # several-fold.
    numba.set_num_threads(1)
    threadpool_limits(1)
    warnings.filterwarnings("ignore")


def build_examples(
    seeds: list[int], config: PriorConfig, workers: int | None = None, progress: bool = True
) -> list[Example]:
    """Examples of the tasks drawn from ``seeds``, in seed order, built in parallel processes."""
    # The CPU quota counted: a container limited to 2 CPUs on a large node started one 330 MB
    # worker per node core.
    workers = workers or usable_cpus()
    examples: list[Example] = []
    start = time.perf_counter()
    # Spawned, not forked: a fork after numba's OpenMP runtime has started can kill the child.
    context = multiprocessing.get_context("spawn")
    # An executor, not a multiprocessing pool: a worker that dies (the OOM killer) or raises
    # breaks it at once (BrokenProcessPool), where the pool's imap waited for ever.
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        try:
            batches = pool.map(_build, [(s, config) for s in seeds])
            for done, batch in enumerate(batches, start=1):
                examples.extend(batch)
                if progress:
                    _progress(done, len(seeds), time.perf_counter() - start)
        except BaseException:
            _stop_workers(pool)
            raise
    if progress:
        sys.stderr.write("\n")
    return examples


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool``'s workers now: its shutdown waits for their tasks, and a run stopped by
    SIGTERM or Ctrl-C left both running (330 MB each) for as long as their tasks took. The
    executor has no public way to do it before Python 3.14 (``terminate_workers``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)


def _progress(done: int, total: int, elapsed: float) -> None:
    width = 30
    filled = int(width * done / total)
    remaining = elapsed / done * (total - done)
    sys.stderr.write(
        f"\r  tasks [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
        f"{elapsed:6.0f}s elapsed, ~{remaining:5.0f}s left"
    )
    sys.stderr.flush()
