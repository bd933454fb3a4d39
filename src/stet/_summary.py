"""What a sweep did: each run's :class:`Outcome`, the :class:`Failure` of a run that
raised, and the :class:`SweepSummary` counting them (with :class:`SweepInterrupted`, the
Ctrl-C that carries one)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ._run import Setting, Skip

__all__ = ["Error", "Failure", "Kind", "Outcome", "SweepInterrupted", "SweepSummary"]


class Kind(enum.Enum):
    """What became of one setting a sweep tried to run."""

    RAN = "ran"  #: it ran and was recorded as done
    FAILED = "failed"  #: it raised (recorded as failed)
    SKIPPED = "skipped"  #: it did not run: :attr:`Outcome.skip` says why
    NOT_RUN = "not-run"  #: the sweep stopped before it started, or stopped it midway


@dataclass(frozen=True, slots=True)
class Error:
    """A run's exception as it comes back from where it ran: the exception itself
    (``None`` if it could not be brought back from a worker), its type's name, its
    message and its traceback text."""

    exception: BaseException | None
    error_type: str
    message: str
    traceback: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """One setting's outcome, sent back from where it ran."""

    kind: Kind
    seconds: float = 0.0
    value: Any = None  #: RAN: the return value (``None`` without ``keep_results``)
    skip: Skip | None = None  #: SKIPPED: why
    error: Error | None = None  #: FAILED: the error

    @classmethod
    def ran(cls, value: Any, seconds: float) -> Outcome:
        return cls(Kind.RAN, seconds, value=value)

    @classmethod
    def failed(cls, error: Error, seconds: float = 0.0) -> Outcome:
        return cls(Kind.FAILED, seconds, error=error)

    @classmethod
    def skipped(cls, skip: Skip) -> Outcome:
        return cls(Kind.SKIPPED, skip=skip)

    @classmethod
    def not_run(cls, seconds: float = 0.0) -> Outcome:
        return cls(Kind.NOT_RUN, seconds)


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
        not_run: settings not run because the sweep was stopped (Ctrl-C,
            ``stop_on_error``), including runs stopped midway (nothing recorded).
        results: ``(setting, return value)`` of every run executed in this sweep (empty
            with ``keep_results=False``; without the few runs counted in ``ran`` from
            the store because Ctrl-C stopped their worker just after their record).
        elapsed: seconds the sweep took.
        interrupted: whether Ctrl-C stopped it.

    Each run is counted once: ``ran`` are the runs this sweep recorded as done, even when
    Ctrl-C came while they finished.
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
    """Ctrl-C stopped a sweep; ``.summary`` says what was done (claims are released).

    Raised in a script's main thread (not in an interactive session or a notebook), it
    is an instance of a subclass that is also a :class:`SystemExit` with code 130: left
    uncaught, it ends the process as Ctrl-C does (exit status 130), without a traceback
    and without printing the summary again (the sweep printed it). ``except
    stet.SweepInterrupted`` and ``except KeyboardInterrupt`` catch it all the same.
    """

    summary: SweepSummary

    def __new__(cls, summary: SweepSummary) -> SweepInterrupted:
        if cls is SweepInterrupted and _ends_the_process_if_uncaught():
            cls = _SweepInterruptedExit
        return super().__new__(cls, summary)

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__(str(summary))
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:  # (by the public class: see _SweepInterruptedExit)
        return SweepInterrupted, (self.summary,)


class _SweepInterruptedExit(SweepInterrupted, SystemExit):
    """A :class:`SweepInterrupted` that, uncaught, exits with status 130 (Python exits
    quietly with the code of an uncaught ``SystemExit``; an uncaught subclass of
    ``KeyboardInterrupt`` would exit 1 after a traceback repeating the summary)."""

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__(summary)
        self.code = 130  # (128 + SIGINT, what a shell reports for Ctrl-C)


def _ends_the_process_if_uncaught() -> bool:
    """Whether an uncaught exception here ends the process: the main thread of a script,
    not an interactive session (``python -i``, the REPL, IPython or Jupyter)."""
    import sys
    import threading

    return (threading.current_thread() is threading.main_thread()
            and not sys.flags.interactive and not hasattr(sys, "ps1")
            and "IPython" not in sys.modules)


SweepInterrupted.__module__ = "stet"  # shown as stet.SweepInterrupted in tracebacks
_SweepInterruptedExit.__module__ = "stet"
_SweepInterruptedExit.__qualname__ = _SweepInterruptedExit.__name__ = "SweepInterrupted"
