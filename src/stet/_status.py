"""What a store holds and how far a sweep has got: ``stet.status`` and ``stet status``.

:func:`store_status` gathers, in one read of the store, its failures and its claims: the
totals, and per function completed / failed / running, first and last run, mean
duration; given the sweep's settings, done-of-total and an ETA. :class:`StoreStatus`
renders the text ``stet.status`` prints, and :func:`render_grid` draws two key fields as
a grid of done / failed / running / pending cells.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from ._identity import canonical
from ._load import _FLOAT, _INT, display, open_store
from ._schema import (
    DURATION_FIELD,
    ERROR_FIELD,
    ERROR_TYPE_FIELD,
    FUNC_FIELD,
    RESERVED_PREFIX,
    TIMESTAMP_FIELD,
    RunKey,
    format_duration,
    run_key,
)
from .backends._base import Store

__all__ = ["FunctionStatus", "StoreStatus", "SweepProgress", "render_grid", "store_status"]

class FunctionStatus:
    """One function's runs in a store."""

    __slots__ = ("completed", "failed", "first", "last", "latest_error", "mean_duration",
                 "name", "running")

    def __init__(self, name: str) -> None:
        self.name = name  #: ``""`` for records without a function name (stet 0.0.2)
        self.completed = 0
        self.failed = 0  #: failed runs not completed since
        self.running = 0  #: runs claimed by a live worker now
        self.first: str | None = None  #: when the first completed run finished (UTC)
        self.last: str | None = None  #: when the last completed run finished (UTC)
        self.mean_duration: float | None = None  #: seconds, over completed runs
        self.latest_error: str | None = None  #: ``Type: message`` of the latest failure

    def __repr__(self) -> str:
        return (f"FunctionStatus({self.name!r}, completed={self.completed}, "
                f"failed={self.failed}, running={self.running})")


class SweepProgress:
    """How far the sweep given to ``status(..., settings=...)`` has got."""

    __slots__ = ("done", "eta", "failed", "pending", "rate", "running", "total", "workers")

    def __init__(self) -> None:
        self.total = self.done = self.failed = self.running = self.pending = 0
        self.workers = 0
        self.eta: float | None = None  #: seconds left, from the mean duration and workers
        #: planned runs completed per second, between the first and last done (a plan)
        self.rate: float | None = None

    def count(self, done: bool, running: bool, failed: bool) -> None:
        """Count one more setting: done, else running, else failed, else pending."""
        if done:
            self.done += 1
        elif running:
            self.running += 1
        elif failed:
            self.failed += 1
        else:
            self.pending += 1

    def __repr__(self) -> str:
        return (f"SweepProgress(done={self.done}, total={self.total}, failed={self.failed}, "
                f"running={self.running}, pending={self.pending}, eta={self.eta})")


class StoreStatus:
    """The state of a store; ``str()`` is what :func:`stet.status` prints."""

    def __init__(self, path: str, backend: Store) -> None:
        self.path = path
        self.backend = type(backend).__name__
        self.completed = 0
        self.key_fields: list[str] = []
        self.first: str | None = None
        self.last: str | None = None
        self.functions: dict[str, FunctionStatus] = {}
        self.sweep: SweepProgress | None = None
        self.sweep_from_plan = False  #: ``sweep`` counts the store's plans
        self.records: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []  #: failures of runs not completed since
        self.running: list[dict[str, Any]] = []  #: claims held now (func, fields, pid, ...)
        #: the runs sweeps planned in the store (see ``Store.add_plan``), each once
        self.plans: list[dict[str, str]] = []

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.functions.values())

    def lines(self) -> list[str]:
        out = [f"Store: {self.path} ({self.backend})",
               f"Completed runs: {self.completed}",
               f"Key fields: {', '.join(self.key_fields) if self.key_fields else '(none)'}"]
        if self.first:
            out.append(f"First run: {self.first}")
            out.append(f"Last run:  {self.last}")
        if self.functions:
            out.append("Per function:")
        for fs in self.functions.values():
            line = f"  {fs.name or '(any function)'}: {fs.completed} completed"
            if fs.failed:
                line += f", {fs.failed} failed (latest: {fs.latest_error})"
            if fs.running:
                line += f", {fs.running} running now"
            out.append(line)
            if fs.first:
                detail = f"    first {fs.first}, last {fs.last}"
                if fs.mean_duration is not None:
                    detail += f", mean duration {_seconds(fs.mean_duration)}"
                out.append(detail)
        progress = self.progress_line()
        if progress is not None:
            out.append(progress)
        return out

    def progress_line(self) -> str | None:
        """Done / failed / running / pending of the planned (or given) settings, the
        rate and the ETA; ``None`` without a plan or settings."""
        sw = self.sweep
        if sw is None:
            return None
        pct = 100 * sw.done // sw.total if sw.total else 100
        what = "Planned" if self.plans and self.sweep_from_plan else "Sweep"
        line = (f"{what}: {sw.done} of {sw.total} done ({pct}%), {sw.failed} failed, "
                f"{sw.running} running, {sw.pending} pending")
        if sw.rate is not None:
            line += f"; {_rate(sw.rate)}"
        # (a plan's failed runs are not tried again by the sweep that is on)
        left = sw.pending + sw.running if self.sweep_from_plan else sw.total - sw.done
        if sw.rate is not None and left:
            line += f"; ETA {format_duration(left / sw.rate)}"
        elif sw.eta is not None and left:
            line += f"; ETA {format_duration(sw.eta)}"
            line += f" ({sw.workers} worker{'s' if sw.workers != 1 else ''})"
        elif left:
            line += "; ETA unknown (no completed run yet)"
        return line

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return (f"<StoreStatus {self.path}: {self.completed} completed, {self.failed} failed, "
                f"{len(self.running)} running>")


def _rate(per_second: float) -> str:
    for unit, scale in (("s", 1), ("min", 60), ("h", 3600)):
        if per_second * scale >= 1:
            return f"{per_second * scale:.3g} runs/{unit}"
    return f"{per_second * 86400:.3g} runs/day"


def _seconds(x: float) -> str:
    return f"{x:.3g} s" if x < 60 else f"{x:.0f} s ({format_duration(x)})"


def store_status(
    store: str | os.PathLike[str],
    settings: Iterable[Mapping[str, Any]] | None = None,
    *,
    func: Any = None,
) -> StoreStatus:
    """Gather a store's state; see :func:`stet.status`."""
    run = getattr(func, "__stet_run__", None)
    backend = open_store(store)
    st = StoreStatus(display(store), backend)
    records = st.records = backend.load()
    st.completed = len(records)
    fields: dict[str, None] = {}
    for r in records:
        fields.update((k, None) for k in r if not k.startswith(RESERVED_PREFIX))
    stamps = sorted(r[TIMESTAMP_FIELD] for r in records if r.get(TIMESTAMP_FIELD))
    if stamps:
        st.first, st.last = stamps[0], stamps[-1]

    done_keys = {run_key(r) for r in records}
    failed: dict[str, dict[RunKey, dict[str, Any]]] = {}
    for f in backend.failures():
        k = run_key(f)
        if k not in done_keys:
            failed.setdefault(k[0], {})[k] = f
    st.failures = [f for by_key in failed.values() for f in by_key.values()]
    st.running = backend.claims().running()
    st.key_fields = list(fields)

    by_func: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_func.setdefault(str(r.get(FUNC_FIELD) or ""), []).append(r)
    running_by: dict[str, int] = {}
    for c in st.running:
        name = str(c.get("func", ""))
        running_by[name] = running_by.get(name, 0) + 1
    for name in sorted(set(by_func) | set(failed) | set(running_by)):
        fs = st.functions[name] = FunctionStatus(name)
        recs = by_func.get(name, [])
        fs.completed = len(recs)
        fails = failed.get(name, {})
        fs.failed = len(fails)
        if fails:
            latest = max(fails.values(), key=lambda f: f.get(TIMESTAMP_FIELD, ""))
            fs.latest_error = (f"{latest.get(ERROR_TYPE_FIELD, '?')}: "
                               f"{str(latest.get(ERROR_FIELD, ''))[:80]}")
        fs.running = running_by.get(name, 0)
        times = sorted(r[TIMESTAMP_FIELD] for r in recs if r.get(TIMESTAMP_FIELD))
        if times:
            fs.first, fs.last = times[0], times[-1]
        durations = []
        for r in recs:
            with contextlib.suppress(KeyError, ValueError):
                durations.append(float(r[DURATION_FIELD]))
        if durations:
            fs.mean_duration = statistics.fmean(durations)

    if settings is not None:
        st.sweep = _progress(st, backend, settings, run)
    else:
        st.plans = backend.plans()
        if run is not None:  # stet.status(f): f's plan
            st.plans = [p for p in st.plans if p.get(FUNC_FIELD) == run.name]
        if st.plans:
            st.sweep, st.sweep_from_plan = _plan_progress(st), True
    return st


def _claimed(c: Mapping[str, Any]) -> RunKey:
    fields = c.get("fields")
    pairs = fields.items() if isinstance(fields, Mapping) else ()
    return str(c.get("func") or ""), tuple(sorted((str(k), str(v)) for k, v in pairs))


def _plan_progress(st: StoreStatus) -> SweepProgress:
    """Done / failed / running / pending of the planned runs, the rate at which planned
    runs were completed, and an ETA from it."""
    sp = SweepProgress()
    done = {run_key(r): r for r in st.records}
    failed = {run_key(f) for f in st.failures}
    running = {_claimed(c) for c in st.running}
    stamps: list[float] = []
    for entry in st.plans:
        k = run_key(entry)
        sp.total += 1
        r = done.get(k) or done.get(("", k[1]))  # (a record of no function: any)
        if r is not None:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                stamps.append(_dt.datetime.fromisoformat(r[TIMESTAMP_FIELD]).timestamp())
        sp.count(r is not None, k in running, k in failed)
    sp.workers = max(1, len(st.running))
    if len(stamps) >= 2 and max(stamps) > min(stamps):
        sp.rate = (len(stamps) - 1) / (max(stamps) - min(stamps))
    durations = [fs.mean_duration for fs in st.functions.values()
                 if fs.mean_duration is not None]
    if durations:
        sp.eta = (sp.pending + sp.running) * statistics.fmean(durations) / sp.workers
    return sp


def _progress(st: StoreStatus, backend: Store, settings: Iterable[Mapping[str, Any]],
              run: Any) -> SweepProgress:
    """Done / failed / running / pending of each setting, and an ETA."""
    sp = SweepProgress()
    name = run.name if run is not None else None
    known = set(st.key_fields) | {k for f in st.failures for k in f
                                  if not k.startswith(RESERVED_PREFIX)}
    # Projections of the store's runs on a setting's fields, built once per field set.
    projections: dict[tuple[str, ...], tuple[set[Any], set[Any], set[Any]]] = {}

    def project(names: tuple[str, ...]) -> tuple[set[Any], set[Any], set[Any]]:
        got = projections.get(names)
        if got is None:
            def rows(items: Iterable[Mapping[str, Any]], claims: bool = False) -> set[Any]:
                out = set()
                for r in items:
                    f = str((r.get("func") if claims else r.get(FUNC_FIELD)) or "")
                    if name is not None and f and f != name:
                        continue
                    values = r.get("fields") if claims else r
                    if isinstance(values, Mapping) and all(n in values for n in names):
                        out.add(tuple(str(values[n]) for n in names))
                return out

            got = projections[names] = (rows(st.records), rows(st.failures),
                                        rows(st.running, claims=True))
        return got

    seen: set[Any] = set()
    for setting in settings:
        if run is not None:
            fields, texts = run.binder.bind((), dict(setting))
            pairs = dict(zip(fields, texts, strict=True))
        else:
            pairs = {k: canonical(v) for k, v in setting.items() if k in known}
        names = tuple(sorted(pairs))
        row = tuple(pairs[n] for n in names)
        if (names, row) in seen:
            continue
        seen.add((names, row))
        sp.total += 1
        if not names:
            sp.pending += 1
            continue
        done, failed, running = project(names)
        sp.count(row in done, row in running, row in failed)
    durations = [fs.mean_duration for n, fs in st.functions.items()
                 if fs.mean_duration is not None and (name is None or n in (name, ""))]
    workers = sum(fs.running for n, fs in st.functions.items() if name is None or n == name)
    sp.workers = max(1, workers)
    if durations:
        sp.eta = (sp.pending + sp.running) * statistics.fmean(durations) / sp.workers
    return sp


# ------------------------------------------------------------------------------- grid
def _sort_key(text: str) -> tuple[int, Any]:
    if _INT.fullmatch(text) or _FLOAT.fullmatch(text):
        value = float(text)
        return (0, value) if value == value else (1, text)
    return (2, text)


_SYMBOL = {"done": "●", "partly": "◐", "failed": "✗", "running": "▶", "pending": "·",
           "unplanned": " "}
_COLOR = {"done": "32", "partly": "36", "failed": "31", "running": "33", "pending": "2",
          "unplanned": "0"}


def render_grid(st: StoreStatus, x: str, y: str, *, func: str | None = None,
                color: bool = False) -> str:
    """Two key fields as a grid: one row per value of ``x``, one column per value of
    ``y``; each cell done, partly done (other fields vary), failed, running or pending.

    Raises:
        ValueError: ``x`` or ``y`` is not a key field of any run in the store.
    """
    runs: dict[str, list[tuple[str, str, tuple[Any, ...]]]] = {
        "done": [], "failed": [], "running": [], "planned": []}
    fields_seen: set[str] = set()
    sources = (("done", st.records), ("failed", st.failures), ("running", st.running),
               ("planned", st.plans))
    for state, items in sources:
        for r in items:
            claim = state == "running"
            f = str((r.get("func") if claim else r.get(FUNC_FIELD)) or "")
            if func is not None and f and f != func:
                continue
            values = r.get("fields") if claim else r
            if not isinstance(values, Mapping):
                continue
            keys = {k: str(v) for k, v in values.items() if not k.startswith(RESERVED_PREFIX)}
            fields_seen.update(keys)
            if x in keys and y in keys:
                rest = tuple(sorted((k, v) for k, v in keys.items() if k not in (x, y)))
                runs[state].append((keys[x], keys[y], rest))
    for axis in (x, y):
        if axis not in fields_seen:
            shown = ", ".join(sorted(fields_seen)) or "(none)"
            raise ValueError(f"no run in {st.path} has the field {axis!r}; key fields: {shown}")
    if x == y:
        raise ValueError("--grid takes two different fields")
    xs = sorted({r[0] for rs in runs.values() for r in rs}, key=_sort_key)
    ys = sorted({r[1] for rs in runs.values() for r in rs}, key=_sort_key)
    rests = {r[2] for rs in runs.values() for r in rs}
    cells: dict[tuple[str, str], dict[str, set[Any]]] = {}
    for state, rs in runs.items():
        for xv, yv, rest in rs:
            cells.setdefault((xv, yv), {}).setdefault(state, set()).add(rest)

    planned = bool(st.plans)

    def state_of(xv: str, yv: str) -> str:
        c = cells.get((xv, yv), {})
        done = c.get("done", set())
        if c.get("running"):
            return "running"
        if c.get("failed", set()) - done:
            return "failed"
        if planned:  # pending: planned and not done; a cell no plan has is left blank
            left = c.get("planned", set()) - done
            if not left:
                return "done" if done else "unplanned"
            return "partly" if done else "pending"
        if done and done >= rests:
            return "done"
        return "partly" if done else "pending"

    counts = dict.fromkeys(_SYMBOL, 0)
    corner = f"{x} \\ {y}"
    width = max([len(corner), *map(len, xs)])
    cw = max([1, *map(len, ys)]) + 1
    lines = [corner.ljust(width) + " " + "".join(v.rjust(cw) for v in ys)]
    for xv in xs:
        row = [xv.ljust(width), " "]
        for yv in ys:
            state = state_of(xv, yv)
            counts[state] += 1
            sym = _SYMBOL[state]
            if color:
                sym = f"\x1b[{_COLOR[state]}m{sym}\x1b[0m"
            row.append(" " * (cw - 1) + sym)
        lines.append("".join(row))
    legend = "  ".join(f"{_SYMBOL[s]} {s.replace('partly', 'partly done')} {counts[s]}"
                       for s in _SYMBOL if s not in ("partly", "unplanned") or counts[s])
    lines.append("")
    lines.append(legend)
    if len(rests) > 1:
        others = sorted({k for rest in rests for k, _ in rest})
        lines.append(f"(each cell covers {len(rests)} combinations of "
                     f"{', '.join(others)}; pending: none of them done)")
    if planned:
        lines.append("(pending cells hold runs a sweep planned that are not done yet)")
    else:
        lines.append("(pending cells are combinations of values seen in the store with no "
                     "run recorded)")
    return "\n".join(lines)
