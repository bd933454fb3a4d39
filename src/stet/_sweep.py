"""``stet.sweep``: run every pending setting of a sweep, here or on any executor.

The done settings are found first, in bulk (one index lookup per setting, nothing
printed); only the rest are run, in this process or through any
:class:`concurrent.futures.Executor` (a process pool, a thread pool, Dask's
``Client.get_executor()``, ...). Each run still goes through the decorated function's
claim, so several sweeps (or plain loops) sharing a store never run a setting twice.

The plan (which settings are pending) and each call's claim are :mod:`stet._run`'s; the
summary types are :mod:`stet._summary`'s.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._execute import execute, worker_lost
from ._executors import executor_kind
from ._identity import format_call
from ._interrupt import ABANDON, STOP, SigintWatch, StopFlag, kill_workers
from ._progress import make_reporter
from ._run import Run, Setting, Skip, plan_sweep, run_of
from ._submitit import check_chunk, run_array
from ._summary import Failure, Kind, Outcome, SweepInterrupted, SweepSummary

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

__all__ = ["Failure", "SweepInterrupted", "SweepSummary", "sweep"]


class _Runner:
    """Runs a plan and keeps the summary and the progress display up to date."""

    def __init__(self, func: Any, run: Run, summary: SweepSummary, reporter: Any,
                 stop_on_error: bool, keep_results: bool) -> None:
        self.func, self.run, self.summary = func, run, summary
        self.reporter = reporter
        self.stop_on_error = stop_on_error
        self.keep_results = keep_results
        self.first_error: BaseException | None = None

    def settle(self, setting: Setting, outcome: Outcome) -> None:
        s = self.summary
        s.in_flight -= 1
        kind = outcome.kind
        if kind is Kind.RAN:
            s.ran += 1
            if self.keep_results:
                s.results.append((setting, outcome.value))
        elif kind is Kind.SKIPPED:
            if outcome.skip is Skip.RUNNING:
                s.skipped_running += 1
            elif outcome.skip is Skip.FAILED_BEFORE:
                s.skipped_failed += 1
            else:
                s.skipped_done += 1
        elif kind is Kind.NOT_RUN:  # cancelled, refused once stopped, or stopped midway
            s.not_run += 1
        else:
            e = outcome.error
            assert e is not None
            s.failures.append(Failure(setting, e.exception, e.error_type, e.message,
                                      e.traceback))
            self.reporter.failed(s, s.failures[-1])
            if self.first_error is None:
                self.first_error = e.exception if e.exception is not None else RuntimeError(
                    f"{e.error_type}: {e.message}")
        self.reporter.update(s)

    def stopping(self) -> bool:
        return self.stop_on_error and self.first_error is not None

    def recorded(self, setting: Setting) -> bool:
        """Whether the store holds the run of ``setting`` (for a run whose outcome was
        lost: its worker was killed, or Ctrl-C came as it ended). Such a run may have
        started, and then it held its claim: a record there is this sweep's."""
        try:
            fields, texts = self.run.binder.bind((), setting)
            names, sorted_texts = self.run.binder.sorted_view(fields, texts)
            return self.run.get_backend().contains_run(self.run.name, names, sorted_texts)
        except Exception:
            return False

    def settle_lost(self, setting: Setting) -> None:
        self.settle(setting, Outcome.ran(None, 0.0) if self.recorded(setting)
                    else Outcome.not_run())

    # -- in this process -------------------------------------------------------
    def here(self, pending: list[Setting]) -> None:
        s = self.summary
        for setting in pending:
            s.not_run -= 1
            s.in_flight += 1
            try:
                outcome = execute(self.run, setting, keep=self.keep_results)
            except KeyboardInterrupt:
                # Ctrl-C lands in the run (nothing recorded), or just after its record.
                self.settle_lost(setting)
                raise
            self.settle(setting, outcome)
            if self.stopping():
                return

    # -- through an executor ---------------------------------------------------
    def pool(self, executor: Executor, pending: list[Setting], window: int) -> None:
        """Run ``pending`` through ``executor``, at most ``window`` submitted at once.

        Raises KeyboardInterrupt once Ctrl-C stopped it (see :mod:`stet._interrupt`).
        """
        from concurrent.futures import ThreadPoolExecutor

        in_flight: dict[Future[Outcome], Setting] = {}
        stop = StopFlag(files=not isinstance(executor, ThreadPoolExecutor))
        keep_files = False
        with SigintWatch() as watch:
            try:
                try:
                    self._submit_all(executor, iter(pending), window, in_flight, stop, watch)
                except KeyboardInterrupt:  # not through the watch (another thread's
                    watch.count = max(watch.count, 1)  # sweep, a handler of the user's)
                if watch.count:
                    keep_files = self._wind_down(executor, in_flight, stop, watch)
                    raise KeyboardInterrupt
            except BaseException:
                stop.set(STOP)
                _cancel(executor, in_flight, stop)
                raise
            finally:
                if not keep_files:
                    stop.remove()

    def _outcome(self, fut: Future[Outcome]) -> Outcome | BaseException:
        """A finished future's outcome, or the exception that lost it."""
        if fut.cancelled():
            return Outcome.not_run()
        exc = fut.exception()
        if exc is None:
            return fut.result()
        return exc

    def _settle_future(self, fut: Future[Outcome], setting: Setting,
                       watch: SigintWatch) -> BaseException | None:
        """Account for a finished future; returns a broken executor's error."""
        from concurrent.futures import BrokenExecutor

        outcome = self._outcome(fut)
        if not isinstance(outcome, BaseException):
            self.settle(setting, outcome)
            return None
        if isinstance(outcome, KeyboardInterrupt):  # Ctrl-C reached the worker's run
            watch.count = max(watch.count, 1)
            self.settle_lost(setting)
            return None
        if watch.count:  # stopping: the worker may have been stopped by Ctrl-C too
            self.settle_lost(setting)
            return None
        self.settle(setting, Outcome.failed(worker_lost(outcome)))  # e.g. Dask's
        return outcome if isinstance(outcome, BrokenExecutor) else None  # KilledWorker

    def _submit_all(self, executor: Executor, todo: Any, window: int,
                    in_flight: dict[Future[Outcome], Setting], stop: StopFlag,
                    watch: SigintWatch) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        s = self.summary

        def fill() -> None:
            while len(in_flight) < window and not self.stopping() and not watch.count:
                setting = next(todo, None)
                if setting is None:
                    return
                fut = executor.submit(execute, self.func, setting, True, self.keep_results,
                                      stop)
                in_flight[fut] = setting
                s.not_run -= 1
                s.in_flight += 1

        fill()
        while in_flight and not watch.count:
            finished, _ = wait(list(in_flight), timeout=watch.poll,
                               return_when=FIRST_COMPLETED)
            broken: BaseException | None = None
            for fut in finished:
                broken = self._settle_future(fut, in_flight.pop(fut), watch) or broken
            if broken is not None:
                raise broken
            if self.stopping():
                stop.set(STOP)
                _cancel(executor, in_flight, stop)
            fill()

    def _wind_down(self, executor: Executor, in_flight: dict[Future[Outcome], Setting],
                   stop: StopFlag, watch: SigintWatch) -> bool:
        """After Ctrl-C: no run starts any more; wait for the runs in progress, or, at a
        second Ctrl-C, stop at once. Returns whether runs of the sweep may still be
        going on elsewhere (so the stop files must stay)."""
        from concurrent.futures import FIRST_COMPLETED, wait

        stop.set(STOP)
        _cancel(executor, in_flight, stop)
        for fut in [f for f in in_flight if f.done()]:
            self._settle_future(fut, in_flight.pop(fut), watch)
        if in_flight:
            n = min(len(in_flight), _workers(executor) or len(in_flight))
            self.reporter.note(
                f"[stet] Ctrl-C: no new run starts; waiting for {_runs(n)} in progress to "
                f"finish and be recorded (press Ctrl-C again to stop them at once: they "
                f"will run again next time)")
        looked = time.monotonic()
        while in_flight:
            if watch.count >= 2:
                return self._abandon(executor, in_flight, stop)
            if _is_dask(executor) and time.monotonic() - looked > 1:
                looked = time.monotonic()
                if not _workers(executor):  # Ctrl-C reached a LocalCluster's workers too
                    return self._abandon(executor, in_flight, stop, workers_gone=True)
            try:
                finished, _ = wait(list(in_flight), timeout=watch.poll,
                                   return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                watch.count = max(watch.count, 2)
                continue
            for fut in finished:
                self._settle_future(fut, in_flight.pop(fut), watch)
        return False

    def _abandon(self, executor: Executor, in_flight: dict[Future[Outcome], Setting],
                 stop: StopFlag, workers_gone: bool = False) -> bool:
        """The second Ctrl-C: stop the runs in progress without recording them (or, with
        ``workers_gone``, account for those the executor lost with its workers)."""
        from concurrent.futures import ThreadPoolExecutor

        stop.set(ABANDON)  # from now on no run of this sweep is recorded (in this process)
        killed = kill_workers(executor)
        if not killed:
            for fut in in_flight:
                fut.cancel()  # Dask: the scheduler forgets the task
        n = min(len(in_flight), _workers(executor) or len(in_flight))
        for fut, setting in list(in_flight.items()):
            outcome = self._outcome(fut) if fut.done() else None
            if isinstance(outcome, Outcome) and not (fut.cancelled() and _is_dask(executor)):
                self.settle(setting, outcome)
            else:  # killed, or cancelled by Dask even if running: the store says
                self.settle_lost(setting)
        in_flight.clear()
        if workers_gone:
            text = ("[stet] the executor has no workers left (Ctrl-C reached them too): the "
                    "runs they had in progress will not be recorded; they will run again "
                    "next time.")
        elif killed:
            text = (f"[stet] Ctrl-C again: stopped at once; killed the worker processes "
                    f"({_runs(n)} in progress, unrecorded: they will run again next time).")
        elif isinstance(executor, ThreadPoolExecutor):
            text = (f"[stet] Ctrl-C again: stopped at once; {_runs(n)} in progress go on in "
                    f"their threads (a thread cannot be stopped; the pool's shutdown waits "
                    f"for them) but will not be recorded: they will run again next time.")
        else:
            text = (f"[stet] Ctrl-C again: stopped at once; cancelled the runs submitted "
                    f"({_runs(n)} in progress will not be recorded: they will run again "
                    f"next time).")
        self.reporter.note(text)
        # Tasks Dask cancelled, or whose worker left the cluster, may still be running in
        # their worker's process: they must go on seeing the stop, so its files stay (two
        # empty files in the temporary directory).
        return not (killed or isinstance(executor, ThreadPoolExecutor))


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _cancel(executor: Any, in_flight: dict[Any, Setting], stop: StopFlag) -> None:
    """Cancel the futures that have not started (a run in progress finishes).

    Dask's futures say "cancelled" even for a task its worker is running (the task goes
    on, and may be recorded), and a Ray future cancels even while its task runs: they
    are left to the stop flag, which keeps a queued task
    from starting and lets the sweep learn each one's outcome. So are a process pool's,
    when the flag's files exist: Python 3.11's pool breaks down (a traceback, its
    manager thread gone) if its workers are killed while it holds cancelled futures.
    """
    from concurrent.futures import ProcessPoolExecutor

    if _is_dask(executor) or _is_ray(executor):
        return
    if isinstance(executor, ProcessPoolExecutor) and stop.written:
        return
    for fut in in_flight:
        fut.cancel()


def _is_ray(executor: Any) -> bool:
    """A :class:`stet.RayExecutor` (``stet._ray`` imports concurrent.futures: it is
    imported only when one was made)."""
    ray = sys.modules.get("stet._ray")
    return ray is not None and isinstance(executor, ray.RayExecutor)


def _is_dask(executor: Any) -> bool:
    return type(executor).__module__.startswith("distributed")


def _workers(executor: Any) -> int | None:
    workers = getattr(executor, "_max_workers", None)
    if not workers:
        client = getattr(executor, "_client", None)  # Dask's ClientExecutor
        try:
            workers = sum(client.nthreads().values()) if client is not None else None
        except Exception:
            workers = None
    return int(workers) if workers else None


def _window(executor: Any) -> int:
    return 2 * max(_workers(executor) or os.cpu_count() or 4, 1) + 2


# ------------------------------------------------------------------------------ the API
def sweep(
    func: Any,
    settings: Iterable[Mapping[str, Any]],
    *,
    executor: Any = None,
    progress: bool | str = True,
    stop_on_error: bool = False,
    max_in_flight: int | None = None,
    keep_results: bool = True,
    chunk: int | None = None,
) -> SweepSummary:
    """Run every pending setting of a sweep through a ``@stet.once`` function.

    The settings already done are found first, in bulk: one lookup in the store's
    index per setting, without calling the function or printing. The rest run in this
    process, or through ``executor``: any :class:`concurrent.futures.Executor`, such as a
    ``ProcessPoolExecutor``, Dask's ``Client(...).get_executor()`` or
    :class:`stet.RayExecutor`, or a submitit executor, to which the pending settings go
    as one job array of ``chunk`` settings per task. Each run is claimed
    as with a plain call, so any number of sweeps and loops may share the store: a
    setting another worker is running is left to it (``skipped_running``).

    A run that raises is recorded as failed and the sweep goes on, unless
    ``stop_on_error=True``: then no new run starts, runs already started finish, and the
    first error is raised (with the summary as a note).

    Ctrl-C stops the sweep; no run starts after it. In this process, it stops the run in
    progress (which records nothing). Through an executor, the runs in progress finish and
    are recorded (a line on stderr says so), unless Ctrl-C is pressed again: then the
    sweep stops at once (a process pool's workers are killed; a thread pool's threads go
    on, but what they finish is not recorded). Either way, claims are released, nothing
    half-done is recorded, and :class:`SweepInterrupted` (a ``KeyboardInterrupt``) is
    raised with the ``summary``: ``ran`` counts the runs recorded, ``not_run`` the rest,
    which run when the sweep is run again.

    Args:
        func: A function decorated with :func:`stet.once`. For a process pool or Dask it
            must be importable by the workers (a module-level function; functions of a
            script's ``__main__`` work with pools that fork and with Dask).
        settings: Dicts of keyword arguments, e.g. :func:`stet.grid`. A setting given
            twice runs once.
        executor: Where to run; ``None`` runs one at a time in this process. Anything
            else than the executors above is refused with a ``TypeError``, before
            anything is submitted.
        progress: ``True``: a tqdm bar on stderr (a widget in notebooks) or, when stderr
            is not a terminal, a plain line per tenth of the sweep; ``"bar"``,
            ``"lines"``, or ``False`` for nothing.
        stop_on_error: Stop at the first run that raises, and raise its exception.
        max_in_flight: Runs submitted to the executor at once (default: twice its
            workers, plus two). A submitit executor gets every pending setting at once,
            as one job array.
        keep_results: Keep each run's return value in ``summary.results``. ``False``
            keeps none (workers do not even send them back): for sweeps of millions of
            runs, or of large return values that ``save_result`` or the function itself
            stores anyway.
        chunk: With a submitit executor: settings per task of the job array (default:
            the pending settings spread evenly over as many tasks as may run at once:
            SLURM's ``array_parallelism``, 256 unless set; the CPUs for a
            ``LocalExecutor``). Give a chunk whose runs fit in a task's time limit: a
            task killed by it leaves the runs it finished recorded, and the rest run
            when the sweep is run again.

    Returns:
        A :class:`SweepSummary`: ran, skipped as done, skipped as running elsewhere,
        failed (with each error), and the return values of the runs that ran (unless
        ``keep_results=False``).

    Raises:
        TypeError: ``func`` is not decorated, or a setting does not fit its signature.
        SweepInterrupted: Ctrl-C.
    """
    run = run_of(func)
    kind = executor_kind(executor)
    if chunk is not None and kind != "submitit":
        raise TypeError("chunk= is for submitit executors (a job array's settings per "
                        "task); other executors take one run per call")
    check_chunk(chunk)
    reporter = make_reporter(progress)
    t0 = time.perf_counter()
    summary = SweepSummary(run.name)
    plan = plan_sweep(run, settings, record=True)
    summary.total, summary.duplicates = plan.total, plan.duplicates
    summary.skipped_done, summary.skipped_failed = plan.done, plan.failed_before
    summary.not_run = len(plan.pending)
    runner = _Runner(func, run, summary, reporter, stop_on_error, keep_results)
    reporter.start(summary)
    try:
        if kind == "here":
            runner.here(plan.pending)
        elif kind == "submitit":
            run_array(runner, executor, plan.pending, chunk)
        else:
            window = max_in_flight if max_in_flight is not None else _window(executor)
            runner.pool(executor, plan.pending, max(1, window))
    except KeyboardInterrupt:
        summary.interrupted = True
        summary.not_run += summary.in_flight
        summary.in_flight = 0
        summary.elapsed = time.perf_counter() - t0
        _close(reporter, summary)
        raise SweepInterrupted(summary) from None
    except BaseException as exc:
        summary.not_run += summary.in_flight
        summary.in_flight = 0
        summary.elapsed = time.perf_counter() - t0
        _close(reporter, summary)
        exc.add_note(f"[stet] sweep stopped: {summary}")
        raise
    summary.elapsed = time.perf_counter() - t0
    _close(reporter, summary)
    if runner.stopping():
        error = runner.first_error
        assert error is not None
        failure = summary.failures[0]
        call = format_call(run.func.__name__, tuple(failure.setting),
                           tuple(map(repr, failure.setting.values())))
        error.add_note(f"[stet] {call} failed; sweep stopped (stop_on_error=True): {summary}")
        if error.__traceback__ is None and failure.traceback:
            error.add_note("Traceback in the worker:\n" + failure.traceback.rstrip())
        raise error
    return summary


def _close(reporter: Any, summary: SweepSummary) -> None:
    try:
        reporter.close(summary)
    except Exception:  # a display problem must not hide the sweep's outcome
        with contextlib.suppress(Exception):
            print(f"[stet] {summary}", file=sys.stderr)
