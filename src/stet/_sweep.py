"""``stet.sweep``: run every pending setting of a sweep, here or on any executor.

The done settings are found first, in bulk (one index lookup per setting, nothing
printed); only the rest are run, in this process or through any
:class:`concurrent.futures.Executor` (a process pool, a thread pool, Dask's
``Client.get_executor()``, ...). Each run still goes through the decorated function's
claim, so several sweeps (or plain loops) sharing a store never run a setting twice.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._identity import UnstableValueError, format_call

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

    from ._decorator import _Run

__all__ = ["Failure", "SweepInterrupted", "SweepSummary", "pending_settings", "sweep"]

Setting = dict[str, Any]


class Failure:
    """A run of the sweep that raised: its setting, the error, and the traceback text."""

    __slots__ = ("error_type", "exception", "message", "setting", "traceback")

    def __init__(self, setting: Setting, exception: BaseException | None, error_type: str,
                 message: str, traceback: str) -> None:
        self.setting = setting
        #: The exception itself (``None`` if it could not be brought back from a worker).
        self.exception = exception
        self.error_type = error_type
        self.message = message
        self.traceback = traceback

    def __repr__(self) -> str:
        return f"Failure({self.setting!r}, {self.error_type}: {self.message[:200]!r})"


class SweepSummary:
    """What :func:`sweep` did. ``str()`` gives a one-line account.

    Attributes:
        func: the function's name.
        total: distinct settings in the sweep (``duplicates`` more were given twice).
        ran: runs executed and recorded as done in this sweep.
        skipped_done: settings already done (before the sweep or meanwhile elsewhere).
        skipped_running: settings another worker was running, so this sweep left them.
        skipped_failed: settings that failed before, skipped with ``skip_failed=True``.
        failed: runs that raised (``failures`` has each setting with its error).
        not_run: settings not attempted because the sweep was stopped (Ctrl-C,
            ``stop_on_error``).
        results: ``(setting, return value)`` of every run executed in this sweep (empty
            with ``keep_results=False``).
        elapsed: seconds the sweep took.
        interrupted: whether Ctrl-C stopped it.
    """

    def __init__(self, func: str) -> None:
        self.func = func
        self.total = 0
        self.duplicates = 0
        self.ran = 0
        self.skipped_done = 0
        self.skipped_running = 0
        self.skipped_failed = 0
        self.failures: list[Failure] = []
        self.results: list[tuple[Setting, Any]] = []
        self.not_run = 0
        self.in_flight = 0
        self.elapsed = 0.0
        self.interrupted = False

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def ok(self) -> bool:
        """No run failed and none was left out by a stop."""
        return not self.failures and not self.not_run and not self.interrupted

    @property
    def complete(self) -> bool:
        """Every setting is done (ran now, or before)."""
        return self.ran + self.skipped_done == self.total

    def __str__(self) -> str:
        parts = [f"{self.ran} ran", f"{self.skipped_done} skipped as done"]
        if self.skipped_running:
            parts.append(f"{self.skipped_running} skipped as running elsewhere")
        if self.skipped_failed:
            parts.append(f"{self.skipped_failed} skipped as failed before")
        parts.append(f"{self.failed} failed")
        if self.not_run:
            parts.append(f"{self.not_run} not run")
        text = f"{self.func}: {self.total} settings: {', '.join(parts)} in {self.elapsed:.1f} s"
        if self.interrupted:
            text += " (interrupted; run the sweep again to resume)"
        elif self.failures:
            f = self.failures[-1]
            text += f"; last error: {f.error_type}: {f.message[:200]}"
        return text

    def __repr__(self) -> str:
        return f"<SweepSummary {self}>"


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep; ``.summary`` says what was done (claims are released)."""

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__(str(summary))
        self.summary = summary


SweepInterrupted.__module__ = "stet"  # shown as stet.SweepInterrupted in tracebacks


# ----------------------------------------------------------------------------- planning
def _run_of(func: Any) -> _Run:
    run = getattr(func, "__stet_run__", None)
    if run is None:
        raise TypeError(
            f"sweep() runs a function decorated with @stet.once; {func!r} is not "
            f"(decorate it, e.g. @stet.once(store='runs.csv'))"
        )
    return run  # type: ignore[no-any-return]


class _Plan:
    __slots__ = ("done", "duplicates", "failed_before", "pending", "total")

    def __init__(self) -> None:
        self.pending: list[Setting] = []
        self.done = self.failed_before = self.duplicates = self.total = 0


def _plan(run: _Run, settings: Iterable[Mapping[str, Any]]) -> _Plan:
    """Sort settings into done, failed before (skip_failed) and pending, in bulk."""
    if isinstance(settings, Mapping) or not isinstance(settings, Iterable):
        raise TypeError(
            f"settings must be an iterable of dicts of keyword arguments (e.g. "
            f"stet.grid(...) or a list of dicts), not {type(settings).__name__}"
        )
    backend = run.get_backend()
    binder = run.binder
    plan = _Plan()
    seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for setting in settings:
        if not isinstance(setting, Mapping):
            raise TypeError(f"a setting must be a dict of keyword arguments, not {setting!r}")
        setting = dict(setting)
        try:
            fields, texts = binder.bind((), setting)
        except UnstableValueError:
            raise
        except TypeError as exc:
            raise TypeError(
                f"setting {setting!r} does not fit {run.func.__qualname__}"
                f"{binder.signature}: {exc}"
            ) from None
        ident = binder.sorted_view(fields, texts)
        if ident in seen:
            plan.duplicates += 1
            continue
        seen.add(ident)
        plan.total += 1
        if backend.contains_run(run.name, *ident):
            plan.done += 1
        elif run.skip_failed and backend.contains_failure(run.name, *ident):
            plan.failed_before += 1
        else:
            plan.pending.append(setting)
    return plan


def pending_settings(run: _Run, settings: Iterable[Mapping[str, Any]]) -> list[Setting]:
    """The settings whose runs are not done (nor failed, with ``skip_failed``)."""
    return _plan(run, settings).pending


# ---------------------------------------------------------------------------- executing
# An outcome: (kind, payload, seconds). kind "ran": payload is the return value;
# "failed": (exception or None, type name, message, traceback text); "done",
# "running", "failed-before": skipped, payload None.
Outcome = tuple[str, Any, float]


def _execute(func: Any, setting: Setting, remote: bool = False, keep: bool = True) -> Outcome:
    """Run one setting through the decorated function's claim (in a worker, or here);
    without ``keep``, its return value is not sent back."""
    run = func if not callable(func) else _run_of(func)
    skipped: list[str] = []
    ticket = run.begin((), setting, skipped)
    if ticket is None:
        why = skipped[0] if skipped else "done"
        return ("failed-before" if why == "failed" else why), None, 0.0
    t0 = time.perf_counter()
    try:
        result = run.func(**setting)
        if inspect.iscoroutine(result):
            result = _run_coroutine(result)
    except BaseException as exc:
        ticket.failed(exc)
        if not isinstance(exc, Exception):
            raise  # Ctrl-C, SystemExit: the claim is released, nothing recorded
        return "failed", _failure_payload(exc, remote), time.perf_counter() - t0
    ticket.done(result)
    return "ran", result if keep else None, time.perf_counter() - t0


def _run_coroutine(coro: Any) -> Any:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop runs in this thread (a notebook): run the coroutine in a thread of its own.
    import threading

    box: list[Any] = []

    def target() -> None:
        try:
            box.append((True, asyncio.run(coro)))
        except BaseException as exc:
            box.append((False, exc))

    t = threading.Thread(target=target)
    t.start()
    t.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _failure_payload(exc: BaseException, remote: bool) -> tuple[Any, ...]:
    import traceback

    text = "".join(traceback.format_exception(exc))
    carried: BaseException | None = exc
    if remote:  # the exception travels back by pickle: make sure it can
        import pickle

        try:
            pickle.loads(pickle.dumps(exc))
            carried = exc
        except Exception:
            carried = None
        if carried is not None:
            carried.__traceback__ = None
    return carried, type(exc).__qualname__, str(exc), text


class _Runner:
    """Runs a plan and keeps the summary and the progress display up to date."""

    def __init__(self, func: Any, run: _Run, summary: SweepSummary, reporter: Any,
                 stop_on_error: bool, keep_results: bool) -> None:
        self.func, self.run, self.summary = func, run, summary
        self.reporter = reporter
        self.stop_on_error = stop_on_error
        self.keep_results = keep_results
        self.first_error: BaseException | None = None

    def settle(self, setting: Setting, outcome: Outcome) -> None:
        kind, payload, _ = outcome
        s = self.summary
        s.in_flight -= 1
        if kind == "ran":
            s.ran += 1
            if self.keep_results:
                s.results.append((setting, payload))
        elif kind == "done":
            s.skipped_done += 1
        elif kind == "running":
            s.skipped_running += 1
        elif kind == "failed-before":
            s.skipped_failed += 1
        else:
            exc, error_type, message, text = payload
            s.failures.append(Failure(setting, exc, error_type, message, text))
            if self.first_error is None:
                self.first_error = exc if exc is not None else RuntimeError(
                    f"{error_type}: {message}")
        self.reporter.update(s)

    def stopping(self) -> bool:
        return self.stop_on_error and self.first_error is not None

    # -- in this process -------------------------------------------------------
    def here(self, pending: list[Setting]) -> None:
        s = self.summary
        for setting in pending:
            s.not_run -= 1
            s.in_flight += 1
            outcome = _execute(self.run, setting, keep=self.keep_results)
            self.settle(setting, outcome)
            if self.stopping():
                return

    # -- through an executor ---------------------------------------------------
    def pool(self, executor: Executor, pending: list[Setting], window: int) -> None:
        from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, CancelledError, wait

        s = self.summary
        todo = iter(pending)
        in_flight: dict[Future[Outcome], Setting] = {}

        def fill() -> None:
            while len(in_flight) < window and not self.stopping():
                setting = next(todo, None)
                if setting is None:
                    return
                fut = executor.submit(_execute, self.func, setting, True, self.keep_results)
                in_flight[fut] = setting
                s.not_run -= 1
                s.in_flight += 1

        try:
            fill()
            while in_flight:
                finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                broken: BaseException | None = None
                for fut in finished:
                    setting = in_flight.pop(fut)
                    try:
                        outcome = fut.result()
                    except CancelledError:
                        s.in_flight -= 1
                        s.not_run += 1
                        continue
                    except BrokenExecutor as exc:
                        broken = exc
                        outcome = ("failed", _worker_lost(exc), 0.0)
                    except Exception as exc:  # e.g. Dask's KilledWorker, unpicklable result
                        outcome = ("failed", _worker_lost(exc), 0.0)
                    self.settle(setting, outcome)
                if broken is not None:
                    raise broken
                if self.stopping():
                    _cancel(in_flight)
                fill()
        except BaseException:
            _cancel(in_flight)
            raise


def _worker_lost(exc: BaseException) -> tuple[Any, ...]:
    message = f"the run's result could not be had from the executor: {exc}"
    return exc, type(exc).__qualname__, message, message


def _cancel(in_flight: dict[Any, Setting]) -> None:
    """Cancel what has not started (a running run finishes, or stops with its worker)."""
    for fut in in_flight:
        dask_future = getattr(fut, "dask_future", None)
        if fut.cancel() and dask_future is not None:
            with contextlib.suppress(Exception):
                dask_future.cancel()


def _window(executor: Any) -> int:
    workers = getattr(executor, "_max_workers", None)
    if not workers:
        client = getattr(executor, "_client", None)  # Dask's ClientExecutor
        try:
            workers = sum(client.nthreads().values()) if client is not None else None
        except Exception:
            workers = None
    return 2 * max(int(workers or os.cpu_count() or 4), 1) + 2


# ------------------------------------------------------------------------------ the API
def sweep(
    func: Any,
    settings: Iterable[Mapping[str, Any]],
    *,
    executor: Executor | None = None,
    progress: bool | str = True,
    stop_on_error: bool = False,
    max_in_flight: int | None = None,
    keep_results: bool = True,
) -> SweepSummary:
    """Run every pending setting of a sweep through a ``@stet.once`` function.

    The settings already done are found first, in bulk: one lookup in the store's
    index per setting, without calling the function or printing. The rest run in this
    process, or through ``executor``: any :class:`concurrent.futures.Executor`, such as a
    ``ProcessPoolExecutor`` or Dask's ``Client(...).get_executor()``. Each run is claimed
    as with a plain call, so any number of sweeps and loops may share the store: a
    setting another worker is running is left to it (``skipped_running``).

    A run that raises is recorded as failed and the sweep goes on, unless
    ``stop_on_error=True``: then no new run starts, runs already started finish, and the
    first error is raised (with the summary as a note). Ctrl-C stops the sweep: claims
    are released, nothing half-done is recorded, runs not yet started are cancelled, and
    :class:`SweepInterrupted` (a ``KeyboardInterrupt``) is raised with the ``summary`` of
    what was done.

    Args:
        func: A function decorated with :func:`stet.once`. For a process pool or Dask it
            must be importable by the workers (a module-level function; functions of a
            script's ``__main__`` work with pools that fork and with Dask).
        settings: Dicts of keyword arguments, e.g. :func:`stet.grid`. A setting given
            twice runs once.
        executor: Where to run; ``None`` runs one at a time in this process.
        progress: ``True``: a tqdm bar on stderr (a widget in notebooks) or, when stderr
            is not a terminal, a plain line per tenth of the sweep; ``"bar"``,
            ``"lines"``, or ``False`` for nothing.
        stop_on_error: Stop at the first run that raises, and raise its exception.
        max_in_flight: Runs submitted to the executor at once (default: twice its
            workers, plus two). Fewer pending submissions make Ctrl-C and
            ``stop_on_error`` quicker.
        keep_results: Keep each run's return value in ``summary.results``. ``False``
            keeps none (workers do not even send them back): for sweeps of millions of
            runs, or of large return values that ``save_result`` or the function itself
            stores anyway.

    Returns:
        A :class:`SweepSummary`: ran, skipped as done, skipped as running elsewhere,
        failed (with each error), and the return values of the runs that ran (unless
        ``keep_results=False``).

    Raises:
        TypeError: ``func`` is not decorated, or a setting does not fit its signature.
        SweepInterrupted: Ctrl-C.
    """
    from ._progress import make_reporter

    run = _run_of(func)
    reporter = make_reporter(progress)
    t0 = time.perf_counter()
    summary = SweepSummary(run.name)
    plan = _plan(run, settings)
    summary.total, summary.duplicates = plan.total, plan.duplicates
    summary.skipped_done, summary.skipped_failed = plan.done, plan.failed_before
    summary.not_run = len(plan.pending)
    runner = _Runner(func, run, summary, reporter, stop_on_error, keep_results)
    reporter.start(summary)
    try:
        if executor is None:
            runner.here(plan.pending)
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
