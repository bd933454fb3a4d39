"""One run of a sweep, wherever it runs (here, in a pool's worker, in a submitit task):
through the decorated function's claim, into an :class:`~stet._summary.Outcome` that can
travel back by pickle."""

from __future__ import annotations

import inspect
import time
from typing import Any

from ._interrupt import StopFlag, ignore_sigint_in_worker
from ._run import Setting, Skip, run_of
from ._summary import Error, Outcome

__all__ = ["error_of", "execute", "worker_lost"]


def execute(func: Any, setting: Setting, remote: bool = False, keep: bool = True,
             stop: StopFlag | None = None) -> Outcome:
    """Run one setting through the decorated function's claim (in a worker, or here);
    without ``keep``, its return value is not sent back. Once ``stop`` says the sweep
    stopped, the run does not start ("not-run"), or, if it had, is not recorded."""
    run = func if not callable(func) else run_of(func)
    if stop is not None:
        if stop.remote:
            ignore_sigint_in_worker(stop.owner)
        if stop.stopped():
            return Outcome.not_run()
    ticket = run.begin((), setting, quiet=True)
    if isinstance(ticket, Skip):
        return Outcome.skipped(ticket)
    if stop is not None and stop.stopped():  # stopped while this run was being claimed
        ticket.failed(KeyboardInterrupt())  # releases the claim, records nothing
        return Outcome.not_run()
    t0 = time.perf_counter()
    try:
        result = run.func(**setting)
        if inspect.iscoroutine(result):
            result = _run_coroutine(result)
    except BaseException as exc:
        ticket.failed(exc)
        if not isinstance(exc, Exception):
            raise  # Ctrl-C, SystemExit: the claim is released, nothing recorded
        return Outcome.failed(error_of(exc, remote), time.perf_counter() - t0)
    if stop is None:
        ticket.done(result)
    elif not stop.begin_record():  # the sweep was stopped at once: run it next time
        ticket.failed(KeyboardInterrupt())
        return Outcome.not_run(time.perf_counter() - t0)
    else:
        try:
            ticket.done(result)
        finally:
            stop.end_record()
    return Outcome.ran(result if keep else None, time.perf_counter() - t0)


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


def error_of(exc: BaseException, remote: bool) -> Error:
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
    return Error(carried, type(exc).__qualname__, str(exc), text)


def worker_lost(exc: BaseException) -> Error:
    message = f"the run's result could not be had from the executor: {exc}"
    return Error(exc, type(exc).__qualname__, message, message)
