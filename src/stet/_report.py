"""``stet report STORE -o sweep.html``: a sweep on one self-contained page.

What the page shows is gathered here, in one read of the store (the same read as
``stet status``: its records, its failures and its live claims), and aggregated so that a
store of 100,000 runs gives a page of bounded size: each setting (a function and its key
fields) is in one state, done / failed / running / pending; per key field and value, how
many settings are in each state; the durations of completed runs; the failures of runs
not completed since; and each numeric saved result against each key field, at most
:data:`MAX_POINTS` points per plot (an even sample, and the page says so).

*Pending* is what the sweep planned and nothing has done yet. A store does not record its
sweep's plan yet: :func:`collect` takes one (``plan``), and without it no setting is
pending and the progress is drawn over the values seen in the store. The page itself is
drawn by :mod:`stet._report_html`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["MAX_FAILURES", "MAX_POINTS", "MAX_VALUES", "ReportData", "Setting", "collect",
           "write_report"]

#: States of a setting, in the order the page shows them.
STATES = ("done", "failed", "running", "pending")
#: At most this many points in each scatter plot (an even sample of the runs beyond it).
MAX_POINTS = 2000
#: At most this many values of one key field in the progress heat map.
MAX_VALUES = 120
#: At most this many values along each side of the grid of two key fields.
MAX_GRID = 60
#: At most this many failures listed one by one (all are counted by error type).
MAX_FAILURES = 200
#: At most this many scatter plots (results times key fields).
MAX_PLOTS = 60
#: A traceback longer than this is shown by its end (where the error is).
MAX_TRACEBACK = 20_000

# Field names of a store's records (stet's bookkeeping fields all begin with the prefix).
_PREFIX = "_stet_"
_FUNC = "_stet_func"
_DURATION = "_stet_duration"
_RESULT = "_stet_result"
_TIMESTAMP = "_stet_timestamp"
_ERROR_TYPE = "_stet_error_type"
_ERROR = "_stet_error"
_TRACEBACK = "_stet_traceback"
_HOST = "_stet_host"

Key = tuple[str, tuple[tuple[str, str], ...]]


class GridError(ValueError):
    """The fields asked for the grid are not two key fields of the store's runs."""


@dataclass
class Setting:
    """One setting of a sweep (a function and the canonical texts of its key fields)
    and its state: ``done``, ``failed``, ``running`` or ``pending``."""

    func: str
    values: dict[str, str]
    state: str


@dataclass
class Failure:
    """A failed run (not completed since): its setting, error and, if recorded, the
    traceback."""

    func: str
    values: dict[str, str]
    error_type: str
    message: str
    traceback: str | None
    when: str | None
    host: str | None


@dataclass
class ReportData:
    """Everything the page shows, aggregated (its size does not grow with the store's
    beyond the caps above)."""

    store: str
    backend: str
    generated: str
    planned: bool  #: whether a plan says which settings are pending
    fields: list[str] = field(default_factory=list)  #: key fields, in order of first use
    functions: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  #: settings per state
    #: field -> value text -> state -> settings (values in the heat map's order)
    by_value: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    #: the two key fields drawn as a grid (the first two, unless chosen), and per pair
    #: of their values, settings per state
    grid: tuple[str, str] | None = None
    grid_cells: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)  #: seconds, of completed runs
    failures: list[Failure] = field(default_factory=list)  #: at most MAX_FAILURES
    failure_count: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    #: result name (``result``, ``result.loss``) -> key field -> (x texts, y values)
    results: dict[str, dict[str, tuple[list[str], list[float]]]] = field(default_factory=dict)
    result_runs: int = 0  #: completed runs with a numeric result
    sampled: int = 0  #: runs plotted per scatter plot (``result_runs`` if not sampled)


def _key(func: str, values: Mapping[str, str]) -> Key:
    return func, tuple(sorted(values.items()))


def _values(record: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in record.items() if not k.startswith(_PREFIX)}


def _numbers(prefix: str, value: Any, out: dict[str, float]) -> None:
    """The numeric leaves of a saved result, named ``result`` or ``result.<key>...``."""
    stack = [(prefix, value)]
    while stack:
        name, v = stack.pop()
        if isinstance(v, dict):
            stack.extend(reversed([(f"{name}.{k}", x) for k, x in v.items()]))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)


def _sort_key(text: str) -> tuple[int, float, str]:
    try:
        number = float(text)
    except ValueError:
        return (2, 0.0, text)
    return (0, number, text) if number == number else (1, 0.0, text)


def _sample(n: int, cap: int) -> list[int]:
    """``cap`` indices spread evenly over ``range(n)`` (all of them if ``n <= cap``)."""
    if n <= cap:
        return list(range(n))
    return [i * n // cap for i in range(cap)]


def collect(store: str | os.PathLike[str],
            plan: Iterable[Mapping[str, Any]] | None = None, *,
            grid: tuple[str, str] | None = None) -> ReportData:
    """What the report of ``store`` shows.

    Args:
        store: A store path or URL.
        plan: The sweep's settings (key field -> canonical text, and ``_stet_func`` for
            the function if the store holds several), if known: those not done, failed
            or running are pending. Without a plan nothing is pending.
        grid: Two key fields to draw as a grid (default: the first two).

    Raises:
        FileNotFoundError: There is no store at ``store``.
        GridError: A field of ``grid`` is no key field of the store's runs.
    """
    from ._status import store_status

    st = store_status(store)
    data = ReportData(store=st.path, backend=st.backend, planned=plan is not None,
                      generated=datetime.datetime.now(datetime.UTC).strftime(
                          "%Y-%m-%d %H:%M:%S UTC"))
    states: dict[Key, str] = {}
    settings: dict[Key, Setting] = {}

    def add(func: str, values: dict[str, str], state: str) -> None:
        k = _key(func, values)
        if k not in states:
            states[k] = state
            settings[k] = Setting(func, values, state)

    # done first: a run done once is done, whatever failed or is claimed since
    done = [_values(r) for r in st.records]
    for r, values in zip(st.records, done, strict=True):
        add(str(r.get(_FUNC) or ""), values, "done")
    for c in st.running:
        claimed = c.get("fields")
        if isinstance(claimed, Mapping):
            add(str(c.get("func") or ""), _values(claimed), "running")
    for f in st.failures:  # failures of runs not completed since, one per setting
        add(str(f.get(_FUNC) or ""), _values(f), "failed")
    for p in plan or ():
        add(str(p.get(_FUNC) or ""), _values(p), "pending")

    fields: dict[str, None] = {}
    functions: dict[str, None] = {}
    data.counts = dict.fromkeys(STATES, 0)
    by_value: dict[str, dict[str, dict[str, int]]] = {}
    for s in settings.values():
        data.counts[s.state] += 1
        functions[s.func] = None
        for name, text in s.values.items():
            fields[name] = None
            cell = by_value.setdefault(name, {}).setdefault(text, dict.fromkeys(STATES, 0))
            cell[s.state] += 1
    data.fields = list(fields)
    data.functions = list(functions)
    data.by_value = {name: {v: by_value[name][v] for v in sorted(by_value[name], key=_sort_key)}
                     for name in data.fields}
    if grid is not None:
        for name in grid:
            if name not in fields:
                raise GridError(f"no run in {data.store} has the field {name!r}; key "
                                 f"fields: {', '.join(data.fields) or '(none)'}")
        if grid[0] == grid[1]:
            raise GridError("--grid takes two different fields")
    elif len(data.fields) >= 2:
        grid = (data.fields[0], data.fields[1])
    if grid is not None:
        data.grid = grid
        for s in settings.values():
            if grid[0] in s.values and grid[1] in s.values:
                pair = (s.values[grid[0]], s.values[grid[1]])
                cell = data.grid_cells.setdefault(pair, dict.fromkeys(STATES, 0))
                cell[s.state] += 1

    for r in st.records:
        try:
            seconds = float(r.get(_DURATION) or "nan")
        except ValueError:
            continue
        if math.isfinite(seconds):
            data.durations.append(seconds)

    failed = [f for f in st.failures if states.get(_key(str(f.get(_FUNC) or ""), _values(f)))
              == "failed"]
    data.failure_count = len(failed)
    for f in failed:
        kind = str(f.get(_ERROR_TYPE) or "(unknown error)")
        data.error_types[kind] = data.error_types.get(kind, 0) + 1
    failed.sort(key=lambda f: str(f.get(_TIMESTAMP) or ""), reverse=True)  # latest first
    for f in failed[:MAX_FAILURES]:
        tb = f.get(_TRACEBACK)
        tb = None if tb is None else str(tb)
        if tb is not None and len(tb) > MAX_TRACEBACK:
            tb = "…" + tb[-MAX_TRACEBACK:]
        data.failures.append(Failure(
            func=str(f.get(_FUNC) or ""), values=_values(f),
            error_type=str(f.get(_ERROR_TYPE) or "(unknown error)"),
            message=str(f.get(_ERROR) or ""), traceback=tb,
            when=None if f.get(_TIMESTAMP) is None else str(f.get(_TIMESTAMP)),
            host=None if f.get(_HOST) is None else str(f.get(_HOST))))

    _collect_results(data, st.records, done)
    return data


def _collect_results(data: ReportData, records: list[dict[str, Any]],
                     keys: list[dict[str, str]]) -> None:
    """Each numeric saved result against each key field, an even sample of the runs
    that saved a result (only the sample's results are decoded)."""
    saved = [i for i, r in enumerate(records) if r.get(_RESULT) is not None]
    data.result_runs = len(saved)
    picked: list[tuple[dict[str, str], dict[str, float]]] = []
    for i in (saved[j] for j in _sample(len(saved), MAX_POINTS)):
        try:
            value = json.loads(records[i][_RESULT])
        except (ValueError, RecursionError, TypeError):
            continue
        numbers: dict[str, float] = {}
        _numbers("result", value, numbers)
        picked.append((keys[i], numbers))
    data.sampled = len(picked)
    names: dict[str, None] = {}
    for _, numbers in picked:
        names.update(dict.fromkeys(numbers))
    plots = 0
    for name in names:
        for f in data.fields:
            if plots >= MAX_PLOTS:
                return
            xs: list[str] = []
            ys: list[float] = []
            for values, numbers in picked:
                if name in numbers and f in values:
                    xs.append(values[f])
                    ys.append(numbers[name])
            if xs:
                data.results.setdefault(name, {})[f] = (xs, ys)
                plots += 1


# ------------------------------------------------------------------------- command
def add_parser(sub: Any) -> None:
    """Register ``stet report`` with the ``stet`` command's subparsers."""
    s = sub.add_parser(
        "report", help="write a sweep's report: one self-contained HTML page",
        description="Write one HTML file showing a store's sweep: progress by key field "
                    "(done / failed / running), the distribution of durations, the "
                    "failures with their errors, and each numeric saved result against "
                    "each key field. The file needs no network (no scripts, fonts or "
                    "styles from elsewhere): open it from a cluster's scratch directory.")
    s.add_argument("store", metavar="STORE")
    s.add_argument("-o", "--output", metavar="OUT.html", required=True,
                   help="the HTML file to write")
    s.add_argument("--grid", metavar="X,Y",
                   help="the two key fields to draw as a grid (default: the first two)")
    s.add_argument("-f", "--force", action="store_true",
                   help="replace OUT if it exists (never a store, nor a file beside one)")
    s.set_defaults(handler=cmd_report)


def _check_target(store: str, out: str, force: bool) -> None:
    """Refuse to write the report onto the store, a file beside it, a store, a
    directory or (without ``force``) any existing file."""
    from pathlib import Path

    from ._cli import UsageError, _clash
    from ._sidecar import sidecars

    if "://" in out:
        raise UsageError(f"-o {out} is a URL; the report is an HTML file: give its path.")
    clash = _clash(store, out)
    if clash is not None:
        raise UsageError(f"-o {out} is {clash}; the report is written to a new file and "
                         f"never onto a store. Give another -o.")
    if os.path.isdir(out):
        raise UsageError(f"-o {out} is a directory; give the path of a file to write "
                         f"(e.g. {os.path.join(out, 'sweep.html')}).")
    if not os.path.lexists(out):
        return
    if not force:
        raise UsageError(f"-o {out} exists; the report does not replace files unless told: "
                         f"give another -o, or pass --force to replace it.")
    beside = [p for p in sidecars(Path(out))[:4] if os.path.lexists(p)]
    if beside:
        raise UsageError(f"-o {out} is a stet store (it has {beside[0].name} beside it); "
                         f"the report never replaces a store, even with --force.")


def write_report(store: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 force: bool = False, grid: tuple[str, str] | None = None) -> ReportData:
    """Write the report of ``store`` to the HTML file ``out``; returns what it shows.

    Raises:
        FileNotFoundError: There is no store at ``store``.
        stet.StoreError: ``out`` cannot be written.
    """
    from ._cli import _write_new
    from ._report_html import render

    store, out = os.fspath(store), os.fspath(out)
    _check_target(store, out, force)
    data = collect(store, grid=grid)
    page = render(data).encode("utf-8", errors="backslashreplace")
    def write(fh: IO[bytes]) -> None:
        fh.write(page)

    _write_new(out, force, write)
    return data


def cmd_report(args: argparse.Namespace) -> int:
    from ._cli import UsageError

    grid = None
    if args.grid is not None:
        axes = [a.strip() for a in args.grid.split(",")]
        if len(axes) != 2 or not all(axes):
            raise UsageError(f"--grid takes two key fields, e.g. --grid lr,seed, "
                             f"not {args.grid!r}")
        grid = (axes[0], axes[1])
    try:
        data = write_report(args.store, args.output, force=args.force, grid=grid)
    except GridError as exc:
        raise UsageError(str(exc)) from None
    c = data.counts
    print(f"Wrote {args.output}: {c['done']} done, {c['failed']} failed, {c['running']} "
          f"running" + (f", {c['pending']} pending" if data.planned else "")
          + f" ({data.store}).")
    return 0
