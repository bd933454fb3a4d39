"""``stet status --watch`` (the status refreshed in place, or plain lines in a log) and
``stet show`` (every field of matching runs and failures, a failure's whole traceback);
the tail of a failure's traceback ``stet ls --failed`` prints under its table.

Registered by :mod:`stet._cli`, which passes in what it shares (the imports go one way).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from ._schema import (
    BOOKKEEPING_ORDER,
    ERROR_TYPE_FIELD,
    FUNC_FIELD,
    RESERVED_PREFIX,
    TRACEBACK_FIELD,
)
from ._status import StoreStatus

__all__ = ["failure_title", "show", "traceback_tails", "watch"]

#: How many of a traceback's last lines ``stet ls --failed`` shows.
TAIL_LINES = 3


def failure_title(record: Mapping[str, Any]) -> str:
    """``train(lr=0.1, seed=1)``: a run as a call."""
    args = ", ".join(f"{k}={v}" for k, v in record.items() if not k.startswith(RESERVED_PREFIX))
    return f"{record.get(FUNC_FIELD) or '(any function)'}({args})"


def traceback_tails(rows: list[dict[str, Any]], lines: int = TAIL_LINES) -> list[str]:
    """Under ``stet ls --failed``'s table: each failure's last traceback lines."""
    out: list[str] = []
    for r in rows:
        tb = str(r.get(TRACEBACK_FIELD) or "").rstrip("\n")
        if not tb:
            continue
        out.append(f"{failure_title(r)}:")
        out.extend("    " + line for line in tb.splitlines()[-lines:])
    if out:
        out.append("(the whole traceback: stet show STORE --where FIELD=VALUE)")
    return out


def show(records: list[dict[str, Any]], failures: list[dict[str, Any]],
         out: TextIO) -> None:
    """Every field of each run, in full; a failure's traceback last, whole."""
    for kind, items in (("completed run", records), ("failure", failures)):
        for r in items:
            print(f"== {kind}: {failure_title(r)}", file=out)
            keys = [k for k in r if not k.startswith(RESERVED_PREFIX)]
            book = [k for k in BOOKKEEPING_ORDER if k in r]
            rest = [k for k in r if k.startswith(RESERVED_PREFIX) and k not in book
                    and k != TRACEBACK_FIELD]
            width = max(len(k) for k in [*keys, *book, *rest, "x"])
            for k in [*keys, *book, *rest]:
                print(f"  {k.ljust(width)}  {r[k]}", file=out)
            tb = r.get(TRACEBACK_FIELD)
            if tb:
                print(f"  {TRACEBACK_FIELD}:", file=out)
                for line in str(tb).rstrip("\n").splitlines():
                    print(f"    {line}", file=out)
            elif kind == "failure" and r.get(ERROR_TYPE_FIELD):
                print("  (no traceback kept: recorded by a stet before 0.1)", file=out)
            print(file=out)


def _finished(st: StoreStatus) -> bool:
    """A plan, and none of it pending or running."""
    sw = st.sweep
    return bool(st.sweep_from_plan and sw is not None and not sw.pending and not sw.running)


def watch(status: Callable[[], StoreStatus], render: Callable[[StoreStatus], str],
          interval: float, out: TextIO) -> int:
    """Refresh the status every ``interval`` seconds until the planned runs are all
    done or failed (or Ctrl-C): in place in a terminal (ANSI), else one plain line per
    refresh (for a log). Returns the exit status: 0."""
    tty = out.isatty()
    shown = 0
    while True:
        st = status()
        stamp = _dt.datetime.now(_dt.UTC).strftime("%H:%M:%S")
        if tty:
            text = f"{render(st)}\n\n(every {interval:g} s, {stamp} UTC; Ctrl-C to stop)"
            lines = text.split("\n")
            # Up to the first line shown last time, clear below, draw anew.
            out.write((f"\x1b[{shown}F" if shown else "") + "\x1b[J" + text + "\n")
            shown = len(lines)
        else:
            line = st.progress_line() or (f"Completed runs: {st.completed}, "
                                          f"{st.failed} failed, {len(st.running)} running")
            out.write(f"{stamp} {line}\n")
        out.flush()
        if _finished(st):
            return 0
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return 0
