"""Sweeps through submitit: the pending settings as one job array, ``chunk`` per task.

:func:`stet.sweep` with a submitit executor submits the settings not done, in chunks,
with one ``map_array`` (one SLURM job array), and follows the tasks as they end. Each
task runs its chunk one setting after another, each through the decorated function's
claim and record, so a task killed halfway leaves the runs it finished recorded, and the
sweep run again submits only the rest. :func:`submit` submits the same array and returns.

A task stops early, without recording the run it was in, when its job is told to stop:
SIGINT (``LocalExecutor``'s time limit, ``job.cancel()``), SIGTERM (SLURM's time limit,
``scancel``) or submitit's timeout signal (USR2). It then returns what it did, so the
sweep knows each setting's outcome. Ctrl-C in the sweep works through a
:class:`~stet._interrupt.StopFlag` whose files are in the executor's folder, which every
task shares: after the first, no task starts a run (tasks not started are cancelled);
after the second, every task is cancelled, and what they finish is not recorded.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._execute import execute, worker_lost
from ._interrupt import ABANDON, STOP, SigintWatch, StopFlag
from ._run import Setting, plan_sweep, run_of
from ._summary import Outcome

if TYPE_CHECKING:
    from ._summary import SweepSummary


class _Runner(Protocol):
    """What a job array needs of the sweep's runner (:class:`stet._sweep._Runner`)."""

    func: Any
    summary: SweepSummary
    reporter: Any
    keep_results: bool

    def settle(self, setting: Setting, outcome: Outcome) -> None: ...
    def settle_lost(self, setting: Setting) -> None: ...
    def recorded(self, setting: Setting) -> bool: ...
    def stopping(self) -> bool: ...

__all__ = ["check_chunk", "default_chunk", "run_array", "run_chunk", "submit"]

#: submitit job states of a task not started yet (SLURM's, and the debug executor's).
_NOT_STARTED = {"PENDING", "REQUEUED", "QUEUED", "CONFIGURING"}


# ------------------------------------------------------------------------- in the task
class _TaskStopped(BaseException):
    """The task was told to stop (a signal) while a run was in progress."""


class _TaskFlag(StopFlag):
    """A task's view of its sweep's stop: the sweep's flag (files in the executor's
    folder), or a signal the task received."""

    def __init__(self, sweep_flag: StopFlag | None) -> None:  # no super(): nothing on disk
        self.sweep_flag = sweep_flag
        self.remote = False  # the task handles its signals itself
        self.signalled = False
        self.in_run = False

    def stopped(self) -> bool:
        return self.signalled or (self.sweep_flag is not None and self.sweep_flag.stopped())

    def begin_record(self) -> bool:
        return self.sweep_flag is None or self.sweep_flag.begin_record()

    def end_record(self) -> None:
        pass

    def on_signal(self, signum: int, frame: Any) -> None:
        self.signalled = True
        if self.in_run:  # only the user's function is stopped, never a record being written
            raise _TaskStopped(signum)


class _Guarded:
    """A run whose function marks when it runs (for :meth:`_TaskFlag.on_signal`).
    Not callable: :func:`stet._execute.execute` takes it as a :class:`~stet._run.Run`."""

    def __init__(self, func: Any, flag: _TaskFlag) -> None:
        run = run_of(func)
        self.begin, self._func, self._flag = run.begin, run.func, flag

    def func(self, **setting: Any) -> Any:
        self._flag.in_run = True
        try:
            if self._flag.signalled:
                raise _TaskStopped()
            return self._func(**setting)
        finally:
            self._flag.in_run = False


def _stop_signals() -> list[int]:
    sigs: list[int] = [signal.SIGINT, signal.SIGTERM]
    with contextlib.suppress(Exception):
        from submitit.core.job_environment import JobEnvironment

        sigs.append(JobEnvironment._usr_sig())
    return sigs


def run_chunk(func: Any, settings: list[Setting], keep: bool, stop: StopFlag | None,
              owner: int | None) -> list[Outcome]:
    """One task of the array: run ``settings`` in turn; the outcome of each.

    Runs in the job's process, where a stop signal ends the run in progress unrecorded
    and no further run starts. In ``owner``'s process (submitit's ``DebugExecutor`` runs
    tasks in the sweep's own process) the signals are left alone.
    """
    flag = _TaskFlag(stop)
    run = _Guarded(func, flag)
    previous: dict[int, Any] = {}
    if os.getpid() != owner and threading.current_thread() is threading.main_thread():
        for sig in _stop_signals():
            with contextlib.suppress(ValueError, OSError):
                previous[sig] = signal.signal(sig, flag.on_signal)
    outcomes: list[Outcome] = []
    try:
        for setting in settings:
            if flag.stopped():
                outcomes.append(Outcome.not_run())
                continue
            try:
                outcomes.append(execute(run, setting, True, keep, flag))
            except _TaskStopped:  # its claim is released, nothing recorded
                outcomes.append(Outcome.not_run())
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
    return outcomes


# ------------------------------------------------------------------ in the submitter
def _inner(executor: Any) -> Any:
    return getattr(executor, "_executor", executor)  # AutoExecutor wraps the real one


def _is_debug(executor: Any) -> bool:
    return type(_inner(executor)).__name__ == "DebugExecutor"


def default_chunk(executor: Any, n: int) -> int:
    """Settings per task by default: ``n`` spread evenly over as many tasks as may run at
    once (SLURM's ``array_parallelism``, 256 unless set; this machine's CPUs for a
    ``LocalExecutor``, whose tasks all start at once; one task for ``DebugExecutor``)."""
    inner = _inner(executor)
    if _is_debug(executor):
        tasks = 1
    elif type(inner).__name__ == "LocalExecutor":
        tasks = os.cpu_count() or 1
    else:
        tasks = int(getattr(inner, "parameters", {}).get("array_parallelism", 256))
    return max(1, math.ceil(n / max(1, tasks)))


def _chunks(pending: list[Setting], chunk: int) -> list[list[Setting]]:
    return [pending[i:i + chunk] for i in range(0, len(pending), chunk)]


def check_chunk(chunk: int | None) -> None:
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                              or chunk < 1):
        raise ValueError(f"chunk= takes a number of settings per task (1 or more), "
                         f"not {chunk!r}")


def _submit_array(executor: Any, func: Any, pending: list[Setting], chunk: int | None,
                  keep: bool, stop: StopFlag | None, owner: int | None
                  ) -> tuple[list[Any], list[list[Setting]]]:
    size = chunk if chunk is not None else default_chunk(executor, len(pending))
    chunks = _chunks(pending, size)
    n = len(chunks)
    if not n:
        return [], []
    jobs = executor.map_array(run_chunk, [func] * n, chunks, [keep] * n, [stop] * n,
                              [owner] * n)
    return list(jobs), chunks


def submit(func: Any, settings: Iterable[Mapping[str, Any]], *, executor: Any,
           chunk: int | None = None) -> list[Any]:
    """Submit the pending settings of a sweep to a submitit executor, and return at once.

    The settings already done are left out (looked up in bulk, as :func:`stet.sweep`
    does); the rest are submitted as one job array, ``chunk`` settings per task, and run
    there as :func:`stet.sweep` would run them: each through the function's claim and
    record, so the submitting process (a login node's shell) may log out. Follow the
    progress with ``stet status STORE``; run ``submit`` (or ``stet.sweep``) again to
    submit what is still not done, e.g. the rest of a task killed by its time limit.

    Args:
        func: A function decorated with :func:`stet.once`, importable by the jobs.
        settings: Dicts of keyword arguments, e.g. :func:`stet.grid`.
        executor: A submitit executor (``AutoExecutor``, ``SlurmExecutor``,
            ``LocalExecutor``, ...), its parameters (time limit, partition, ...) set.
        chunk: Settings per task (default: spread evenly over as many tasks as may run
            at once: SLURM's ``array_parallelism``, 256 unless set).

    Returns:
        The submitit jobs, one per task, in the order of the settings (each task's
        ``result()`` is the list of its runs' outcomes); an empty list when every
        setting is done.
    """
    from ._executors import is_submitit

    if not is_submitit(executor):
        cls = type(executor)
        raise TypeError(f"submit(executor=...) takes a submitit executor (AutoExecutor, "
                        f"SlurmExecutor, LocalExecutor, ...), not a {cls.__module__}."
                        f"{cls.__qualname__}; for other executors use stet.sweep")
    check_chunk(chunk)
    run = run_of(func)
    pending = plan_sweep(run, settings, record=True).pending
    jobs, _ = _submit_array(executor, func, pending, chunk, False, None, None)
    return jobs


class _ArrayRun:
    """A sweep's job array, followed until every task has ended."""

    def __init__(self, runner: _Runner, executor: Any, debug: bool) -> None:
        self.runner, self.executor, self.debug = runner, executor, debug
        self.in_flight: dict[Any, list[Setting]] = {}
        self.lost_since: dict[Any, float] = {}
        self.total = 0  # tasks in the array
        self.states = (0, 0, 0)  # tasks running, waiting, ended: as last reported

    def finished(self, job: Any) -> bool:
        """Whether the task ended and its outcome can be had (a result file may reach a
        shared filesystem late: it is waited for, as submitit waits)."""
        if not job.done():
            return False
        if self.debug or job.paths.result_pickle.exists():
            return True
        local = type(job).__module__.startswith("submitit.local")
        grace = 0.0 if local else float(getattr(job, "_results_timeout_s", 15))
        since = self.lost_since.setdefault(job, time.monotonic())
        return time.monotonic() - since >= grace

    def settle(self, job: Any, chunk: list[Setting]) -> None:
        runner = self.runner
        outcomes: Any = None
        error: BaseException | None = None
        if self.debug or job.paths.result_pickle.exists():
            try:
                outcomes = job.result()
            except Exception as exc:
                error = exc
        if isinstance(outcomes, list) and len(outcomes) == len(chunk):
            for setting, outcome in zip(chunk, outcomes, strict=True):
                runner.settle(setting, outcome)
        elif error is not None and type(error).__name__ != "UncompletedJobError":
            # The task itself failed (e.g. the function cannot be imported where it runs).
            for setting in chunk:
                runner.settle(setting, Outcome.ran(None, 0.0) if runner.recorded(setting)
                              else Outcome.failed(worker_lost(error)))
        else:  # killed, cancelled or timed out without a word: the store says
            for setting in chunk:
                runner.settle_lost(setting)

    def poll(self) -> bool:
        """Settle the tasks that ended; tell the reporter how many run and wait."""
        progressed = False
        running = 0
        for job in list(self.in_flight):
            if self.finished(job):
                self.settle(job, self.in_flight.pop(job))
                progressed = True
            elif not self.debug and _state(job) not in _NOT_STARTED:
                running += 1
        states = (running, len(self.in_flight) - running, self.total - len(self.in_flight))
        if states != self.states:
            self.states = states
            self.runner.reporter.tasks(self.runner.summary, *states)
        return progressed

    def cancel_not_started(self) -> int:
        n = 0
        for job in self.in_flight:
            if _state(job) in _NOT_STARTED:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)
                    n += 1
        return n

    def cancel_all(self) -> None:
        for job in self.in_flight:
            with contextlib.suppress(Exception):
                job.cancel(check=False)


def _state(job: Any) -> str:
    """A task's state as submitit knows it (SLURM's is refreshed now and then)."""
    try:
        return str(job.state).upper()
    except Exception:
        return "UNKNOWN"


def run_array(runner: _Runner, executor: Any, pending: list[Setting],
              chunk: int | None) -> None:
    """Run ``pending`` through a submitit executor as one job array; raises
    KeyboardInterrupt once Ctrl-C stopped it."""
    if not pending:
        return
    s = runner.summary
    debug = _is_debug(executor)
    stop = StopFlag(files=True, directory=executor.folder)
    jobs, chunks = _submit_array(executor, runner.func, pending, chunk, runner.keep_results,
                                 stop, os.getpid())
    array = _ArrayRun(runner, executor, debug)
    array.in_flight = dict(zip(jobs, chunks, strict=True))
    array.total = len(jobs)
    s.not_run -= len(pending)
    s.in_flight += len(pending)
    keep_files = False
    stopped = False
    # DebugExecutor runs the tasks here, within job.done(): Ctrl-C must reach the run as
    # in a sweep without executor, so no watch is installed.
    watch = SigintWatch()
    with contextlib.nullcontext() if debug else watch:
        try:
            pause = 0.05
            while array.in_flight:
                if watch.count:
                    keep_files = _wind_down(array, stop, watch)
                    raise KeyboardInterrupt
                if array.poll():
                    pause = 0.05
                if runner.stopping() and not stopped:
                    stopped = True
                    stop.set(STOP)
                    array.cancel_not_started()
                if array.in_flight:
                    time.sleep(pause)
                    pause = min(pause * 1.5, 2.0)
        except KeyboardInterrupt:
            if debug:
                for job, chunk_ in list(array.in_flight.items()):
                    if str(job.state) == "DONE":  # done() would run the task again
                        array.settle(job, chunk_)
                    else:
                        for setting in chunk_:
                            runner.settle_lost(setting)
                array.in_flight.clear()
            raise
        except BaseException:
            keep_files = True  # tasks may still run: they must see the stop
            stop.set(STOP)
            array.cancel_not_started()
            raise
        finally:
            if not keep_files:
                stop.remove()


def _wind_down(array: _ArrayRun, stop: StopFlag, watch: SigintWatch) -> bool:
    """After Ctrl-C: tasks not started are cancelled, the others start no new run; wait
    for the runs in progress, or, at a second Ctrl-C, cancel every task. Returns whether
    tasks may still be running (the stop files must stay)."""
    stop.set(STOP)
    cancelled = array.cancel_not_started()
    reporter = array.runner.reporter
    if array.in_flight:
        running = len(array.in_flight) - cancelled
        reporter.note(
            f"[stet] Ctrl-C: no new run starts; cancelled {cancelled} tasks not started; "
            f"waiting for the runs in progress in {running} tasks to finish and be recorded "
            f"(press Ctrl-C again to cancel them at once: they will run again next time)")
    pause = 0.05
    while array.in_flight:
        if watch.count >= 2:
            stop.set(ABANDON)
            array.cancel_all()
            array.poll()
            for chunk in list(array.in_flight.values()):
                for setting in chunk:
                    array.runner.settle_lost(setting)
            array.in_flight.clear()
            reporter.note("[stet] Ctrl-C again: cancelled every task; the runs in progress "
                          "are not recorded: they will run again next time.")
            return True
        if array.poll():
            pause = 0.05
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
    return False
