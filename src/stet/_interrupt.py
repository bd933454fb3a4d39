"""Ctrl-C during a sweep through an executor: stop starting runs, then stop at once.

The first Ctrl-C stops the sweep from starting runs: futures not yet started are
cancelled, and a run already handed to a worker (a process pool queues a call or more
beyond the running ones, Dask queues many on its workers) refuses to start, as its
:class:`StopFlag` says the sweep stopped. Runs in progress finish and are recorded. The
second Ctrl-C stops at once: a process pool's workers are killed, threads (which nothing
can stop) are left to finish their calls without recording them. Either way the runs
not recorded run again next time, and the summary counts what the store holds.

Ctrl-C reaches the sweep through :class:`SigintWatch`, a SIGINT handler that only counts
presses, so a press never lands in the middle of the sweep's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import uuid
from types import FrameType
from typing import Any

from ._fork import pid

__all__ = ["ABANDON", "RUNNING", "STOP", "SigintWatch", "StopFlag", "kill_workers"]

RUNNING, STOP, ABANDON = 0, 1, 2


class StopFlag:
    """Whether the runs of one sweep may still start (and be recorded).

    ``STOP``: no run may start any more. ``ABANDON``: a run that finishes is not recorded
    either (its claim is released: it runs again next time). In this process (a thread
    pool) the flag is read from memory, and :meth:`set` waits for recordings in progress,
    so that once it returns no run of the sweep is recorded any more. A copy sent to
    another process (pickled) reads two files in this machine's temporary directory,
    created when the sweep stops: a worker on another machine does not see them (unless
    they are put in a ``directory`` it shares).
    """

    def __init__(self, files: bool = True, directory: str | os.PathLike[str] | None = None) -> None:
        # ``directory``: where the files go, for workers that share it but not this
        # machine's temporary directory (a submitit job array's folder).
        base = os.path.join(directory if directory is not None else tempfile.gettempdir(),
                            f"stet-sweep-{pid()}-{uuid.uuid4().hex}")
        self.base = base
        self.owner = pid()  # the sweep's process (a worker compares its own)
        self.files = files  # copies may go to other processes: write the files
        self.remote = False  # a copy in another process: read the files
        self.state = RUNNING
        self.written = False  # the files exist: copies elsewhere see the stop
        self._cond = threading.Condition()
        self._recording = 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (_remote_flag, (self.base, self.owner))

    # -- read by the runs ----------------------------------------------------------
    def stopped(self) -> bool:
        """The sweep stopped: a run must not start."""
        if self.remote:
            return os.path.exists(self.base + ".stop")
        return self.state != RUNNING

    def begin_record(self) -> bool:
        """Whether a run that finished may be recorded; if so, :meth:`end_record` must
        follow the recording."""
        if self.remote:
            return not os.path.exists(self.base + ".abandon")
        with self._cond:
            if self.state == ABANDON:
                return False
            self._recording += 1
            return True

    def end_record(self) -> None:
        if not self.remote:
            with self._cond:
                self._recording -= 1
                self._cond.notify_all()

    # -- set by the sweep ----------------------------------------------------------
    def set(self, state: int) -> None:
        """Raise the flag to ``state``; with ``ABANDON``, return once no run of this
        process is being recorded."""
        with self._cond:
            if state <= self.state:
                return
            self.state = state
            if state == ABANDON:
                # A recording is a few writes: wait for it, so the store is whole and
                # the summary can tell whether the run was recorded.
                self._cond.wait_for(lambda: self._recording == 0, timeout=60)
        if self.files:
            names = [".stop"] if state == STOP else [".stop", ".abandon"]
            self.written = all([_create(self.base + name) for name in names])

    def remove(self) -> None:
        """Remove the files (once no run of the sweep can still read them)."""
        for name in (".stop", ".abandon"):
            with contextlib.suppress(OSError):
                os.unlink(self.base + name)


def _remote_flag(base: str, owner: int) -> StopFlag:
    flag = StopFlag.__new__(StopFlag)
    flag.base, flag.owner, flag.files, flag.remote, flag.state = base, owner, False, True, RUNNING
    flag.written = False
    flag._cond = threading.Condition()
    flag._recording = 0
    return flag


def _create(path: str) -> bool:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.close(os.open(path, flags, 0o644))
    except FileExistsError:
        pass
    except OSError:  # no writable temporary directory: cancelling still stops most runs
        return False
    return True


_ignoring_sigint = False


def ignore_sigint_in_worker(owner: int) -> None:
    """In a worker process (its main thread runs our calls, as in a process pool): ignore
    Ctrl-C, which the terminal sends to the whole process group. The sweep's process
    (``owner``, never affected) handles it: a run in progress finishes, or the worker is
    killed by the second one."""
    global _ignoring_sigint
    if (_ignoring_sigint or pid() == owner
            or threading.current_thread() is not threading.main_thread()):
        return
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _ignoring_sigint = True


class SigintWatch:
    """Counts Ctrl-C presses while a sweep waits for its executor.

    Installed only in the main thread over Python's default handler. A press raises
    nothing: the sweep sees ``count`` at its next look (every ``poll`` seconds). After
    the second press the previous handler is back, so a third raises KeyboardInterrupt
    wherever the process is (should stopping itself ever hang).
    """

    def __init__(self) -> None:
        self.count = 0
        self.installed = False
        self._previous: Any = None
        self._handler = self._on_sigint

    @property
    def poll(self) -> float | None:
        """Seconds between looks at ``count`` (``None``: KeyboardInterrupt comes as ever)."""
        return 0.1 if self.installed else None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2:
            self._restore()

    def _restore(self) -> None:
        if self.installed:
            self.installed = False
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> SigintWatch:
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, TypeError):
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    self._previous = signal.signal(signal.SIGINT, self._handler)
                    self.installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()


def kill_workers(executor: Any) -> bool:
    """Kill the worker processes of a ``ProcessPoolExecutor`` (and wait for them to be
    gone), or the running tasks of a :class:`stet.RayExecutor`; ``False`` if the executor
    has none to kill."""
    from concurrent.futures import ProcessPoolExecutor

    from ._ray import RayExecutor

    if isinstance(executor, RayExecutor):
        return executor._kill_running()
    if not isinstance(executor, ProcessPoolExecutor):
        return False
    processes = list((getattr(executor, "_processes", None) or {}).values())
    if not processes:
        return False
    for p in processes:
        with contextlib.suppress(Exception):
            p.kill()
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(5)
    return True
