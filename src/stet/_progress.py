"""Progress of a sweep on stderr: a tqdm bar in terminals and notebooks, plain lines in logs.

tqdm (the ``progress`` extra) is imported only when a bar is shown. When stderr is not a
terminal (a batch job's log, a pipe) a bar's carriage returns make a mess, so a plain
line is written instead: at the start, whenever another tenth of the sweep is done, at
least every 30 seconds while runs finish, and at the end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any

from ._schema import format_duration

if TYPE_CHECKING:
    from ._summary import Failure, SweepSummary

__all__ = ["Reporter", "make_reporter"]

#: Seconds between two plain progress lines (besides every tenth of the sweep).
LINE_INTERVAL = 30.0


class Reporter:
    """Reports nothing (``progress=False``)."""

    def start(self, summary: SweepSummary) -> None:
        pass

    def update(self, summary: SweepSummary) -> None:
        pass

    def close(self, summary: SweepSummary) -> None:
        pass

    def tasks(self, summary: SweepSummary, running: int, waiting: int, ended: int) -> None:
        """A job array's tasks changed state (see :mod:`stet._submitit`)."""

    def failed(self, summary: SweepSummary, failure: Failure) -> None:
        """A run failed just now (a line at that moment; nothing without a display)."""

    def note(self, text: str) -> None:
        """A message the user must see whatever the display (e.g. what Ctrl-C does)."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            print(text, file=sys.stderr, flush=True)


def _counts(s: SweepSummary) -> str:
    parts = [f"{s.ran} ran"]
    if s.skipped_done:
        parts.append(f"{s.skipped_done} skipped as done")
    if s.skipped_running:
        parts.append(f"{s.skipped_running} running elsewhere")
    if s.skipped_failed:
        parts.append(f"{s.skipped_failed} failed before")
    parts.append(f"{s.failed} failed")
    return ", ".join(parts)


class LineReporter(Reporter):
    """Plain lines for logs: ``[stet] f: 12/24 (50%) | 6 ran, ... | 1.9 runs/s | ETA``."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.tenth = -1
        self.last_tasks = -LINE_INTERVAL

    def tasks(self, summary: SweepSummary, running: int, waiting: int, ended: int) -> None:
        # The first look, the end, and otherwise at most every LINE_INTERVAL seconds.
        now = time.perf_counter()
        if waiting + running and now - self.last_tasks < LINE_INTERVAL:
            return
        self.last_tasks = now
        self._write(f"[stet] {summary.func}: tasks: {_tasks(running, waiting, ended)}")

    def failed(self, summary: SweepSummary, failure: Failure) -> None:
        self._write(failure_line(summary.func, failure, "[stet] "))

    def _write(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a broken stderr must not stop it
            print(line, file=self.stream, flush=True)

    def _finished(self, s: SweepSummary) -> int:
        return s.total - s.not_run - s.in_flight

    def start(self, summary: SweepSummary) -> None:
        self.t0 = self.last = time.perf_counter()
        s = summary
        todo = s.total - s.skipped_done - s.skipped_failed
        self.tenth = self._finished(s) * 10 // s.total if s.total else 10
        self._write(f"[stet] {s.func}: {s.total} settings, {s.skipped_done} done before, "
                    f"{todo} to run")

    def update(self, summary: SweepSummary) -> None:
        s = summary
        now = time.perf_counter()
        finished = self._finished(s)
        tenth = finished * 10 // s.total if s.total else 10
        if tenth > self.tenth or now - self.last >= LINE_INTERVAL:
            self.tenth = max(tenth, self.tenth)
            self.last = now
            self._write(self._line(s, now))

    def _line(self, s: SweepSummary, now: float) -> str:
        finished = self._finished(s)
        pct = 100 * finished // s.total if s.total else 100
        line = f"[stet] {s.func}: {finished}/{s.total} ({pct}%) | {_counts(s)}"
        attempted = s.ran + s.failed + s.skipped_running
        elapsed = now - self.t0
        if attempted and elapsed > 0:
            rate = attempted / elapsed
            line += f" | {rate:.3g} runs/s" if rate >= 1 else f" | {1 / rate:.3g} s/run"
            left = s.not_run + s.in_flight
            if left:
                line += f" | ETA {format_duration(left / rate)}"
        return line

    def close(self, summary: SweepSummary) -> None:
        for line in final_lines(summary):
            self._write(line)


def _tasks(running: int, waiting: int, ended: int) -> str:
    return f"{running} running, {waiting} waiting, {ended} ended"


class BarReporter(Reporter):
    """A tqdm bar (``tqdm.auto``: a widget in notebooks)."""

    def __init__(self, tqdm: Any, stream: Any) -> None:
        self.tqdm = tqdm
        self.stream = stream
        self.bar: Any = None
        self.task_text = ""

    def tasks(self, summary: SweepSummary, running: int, waiting: int, ended: int) -> None:
        self.task_text = f", tasks running={running}, waiting={waiting}"
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(summary))

    def start(self, summary: SweepSummary) -> None:
        s = summary
        initial = s.skipped_done + s.skipped_failed
        self.bar = self.tqdm(total=s.total, initial=initial, desc=s.func, unit="run",
                             file=self.stream, dynamic_ncols=True, smoothing=0.1)
        self._shown = initial

    def update(self, summary: SweepSummary) -> None:
        s = summary
        finished = s.total - s.not_run - s.in_flight
        if finished > self._shown:
            self.bar.set_postfix_str(self._postfix(s), refresh=False)
            self.bar.update(finished - self._shown)
            self._shown = finished

    def _postfix(self, s: SweepSummary) -> str:
        postfix = f"failed={s.failed}"
        if s.skipped_running:
            postfix += f", elsewhere={s.skipped_running}"
        return postfix + self.task_text

    def failed(self, summary: SweepSummary, failure: Failure) -> None:
        self.note(failure_line(summary.func, failure, "[stet] "))

    def note(self, text: str) -> None:
        if self.bar is None:
            super().note(text)
            return
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.tqdm.write(text, file=self.stream)  # above the bar, which stays whole

    def close(self, summary: SweepSummary) -> None:
        if self.bar is not None:
            if summary.interrupted:
                # The terminal echoed "^C" after the bar (wrapping to a new line when the
                # bar fills it): drawing the bar again would show it twice. Clear the
                # line instead; the summary below says how far the sweep got.
                self.bar.leave = False
            else:
                self.update(summary)
            self.bar.close()
        with contextlib.suppress(OSError, ValueError):
            for line in final_lines(summary):
                print(line, file=self.stream, flush=True)


def final_lines(summary: SweepSummary, show: int = 5) -> list[str]:
    """The summary, and the first few failures (setting and error)."""
    lines = [f"[stet] {summary}"]
    lines.extend(failure_line(summary.func, f, "[stet]   ")
                 for f in summary.failures[:show])
    if len(summary.failures) > show:
        lines.append(f"[stet]   ... and {len(summary.failures) - show} more "
                     f"(summary.failures holds each error and traceback)")
    return lines


def failure_line(func: str, f: Failure, prefix: str) -> str:
    """``failed: train(lr=0.1, seed=1): KeyError: 'missing_key'``."""
    setting = ", ".join(f"{k}={v!r}" for k, v in f.setting.items())
    return f"{prefix}failed: {func}({setting}): {f.error_type}: {f.message[:300]}"


def _in_notebook(stream: Any) -> bool:
    return type(stream).__module__.startswith("ipykernel")


def make_reporter(progress: bool | str) -> Reporter:
    """The reporter for ``progress``: ``True`` (bar or lines, as fits stderr), ``False``,
    ``"bar"`` or ``"lines"``."""
    if progress is False or progress is None:
        return Reporter()
    if progress not in (True, "bar", "lines"):
        raise ValueError(f"progress= takes True, False, 'bar' or 'lines', not {progress!r}")
    stream = sys.stderr
    if stream is None:
        return Reporter()
    if progress == "lines":
        return LineReporter(stream)
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    notebook = _in_notebook(stream)
    if progress is True and not (tty or notebook):
        return LineReporter(stream)
    import importlib
    import importlib.util

    if notebook and progress is True and importlib.util.find_spec("ipywidgets") is None:
        # tqdm's widget needs ipywidgets; without it tqdm.auto warns "IProgress not
        # found" and draws a text bar a notebook shows badly: plain lines, quietly.
        return LineReporter(stream)
    try:
        import warnings

        with warnings.catch_warnings():  # ("IProgress not found": handled above)
            warnings.filterwarnings("ignore", message=".*IProgress not found")
            tqdm = importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        if progress == "bar":
            raise ImportError(
                "progress='bar' needs tqdm: pip install 'stet[progress]'"
            ) from None
        return LineReporter(stream)  # no tqdm: plain lines still show progress
    return BarReporter(tqdm, stream)
