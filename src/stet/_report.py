"""``stet report STORE -o sweep.html``: a sweep on one self-contained page.

What the page shows is gathered here, in one read of the store (the same read as
``stet status``: its records, its failures and its live claims), and aggregated so that a
store of 100,000 runs gives a page of bounded size: each setting (a function and its key
fields) is in one state, done / failed / running / pending; per key field and value, how
many settings are in each state; the durations of completed runs; the failures of runs
not completed since; and each numeric saved result against each key field, at most
:data:`MAX_POINTS` points per plot (an even sample, and the page says so).

*Pending* is what the sweep planned and nothing has done yet: the plans sweeps recorded
in the store (``Store.plans``), or the one :func:`collect` is given (``plan``); without
either no setting is pending and the progress is drawn over the values seen in the store.
The page is drawn by :mod:`stet._report_html`, and :mod:`stet._report_cli` is the command.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._schema import (
    DURATION_FIELD,
    ERROR_FIELD,
    ERROR_TYPE_FIELD,
    FUNC_FIELD,
    HOST_FIELD,
    RESERVED_PREFIX,
    RESULT_FIELD,
    TIMESTAMP_FIELD,
    TRACEBACK_FIELD,
)
from ._status import store_status

__all__ = ["MAX_FAILURES", "MAX_GRID", "MAX_POINTS", "MAX_VALUES", "STATES", "Failure",
           "GridError", "ReportData", "Setting", "collect"]

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
#: A traceback (or error message) longer than this is shown by its end (where the error is).
MAX_TRACEBACK = 20_000

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
    return {k: str(v) for k, v in record.items() if not k.startswith(RESERVED_PREFIX)}


def _numbers(prefix: str, value: Any, out: dict[str, float]) -> None:
    """The numeric leaves of a saved result, named ``result`` or ``result.<key>...``."""
    stack = [(prefix, value)]
    while stack:
        name, v = stack.pop()
        if isinstance(v, dict):
            stack.extend(reversed([(f"{name}.{k}", x) for k, x in v.items()]))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)


def _tail(text: str) -> str:
    """``text``, or its last :data:`MAX_TRACEBACK` characters (where the error is)."""
    return text if len(text) <= MAX_TRACEBACK else "…" + text[-MAX_TRACEBACK:]


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
            or running are pending. Default: the plans recorded in the store; without
            any, nothing is pending.
        grid: Two key fields to draw as a grid (default: the first two).

    Raises:
        FileNotFoundError: There is no store at ``store``.
        GridError: A field of ``grid`` is no key field of the store's runs.
    """
    st = store_status(store)
    if plan is None and st.plans:
        plan = st.plans
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
        add(str(r.get(FUNC_FIELD) or ""), values, "done")
    for c in st.running:
        claimed = c.get("fields")
        if isinstance(claimed, Mapping):
            add(str(c.get("func") or ""), _values(claimed), "running")
    for f in st.failures:  # failures of runs not completed since, one per setting
        add(str(f.get(FUNC_FIELD) or ""), _values(f), "failed")
    for p in plan or ():
        add(str(p.get(FUNC_FIELD) or ""), _values(p), "pending")

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
            seconds = float(r.get(DURATION_FIELD) or "nan")
        except ValueError:
            continue
        if math.isfinite(seconds):
            data.durations.append(seconds)

    failed = [f for f in st.failures
              if states.get(_key(str(f.get(FUNC_FIELD) or ""), _values(f))) == "failed"]
    data.failure_count = len(failed)
    for f in failed:
        kind = str(f.get(ERROR_TYPE_FIELD) or "(unknown error)")
        data.error_types[kind] = data.error_types.get(kind, 0) + 1
    failed.sort(key=lambda f: str(f.get(TIMESTAMP_FIELD) or ""), reverse=True)  # latest first
    for f in failed[:MAX_FAILURES]:
        tb = f.get(TRACEBACK_FIELD)
        tb = None if tb is None else _tail(str(tb))
        data.failures.append(Failure(
            func=str(f.get(FUNC_FIELD) or ""), values=_values(f),
            error_type=str(f.get(ERROR_TYPE_FIELD) or "(unknown error)"),
            message=_tail(str(f.get(ERROR_FIELD) or "")), traceback=tb,
            when=None if f.get(TIMESTAMP_FIELD) is None else str(f.get(TIMESTAMP_FIELD)),
            host=None if f.get(HOST_FIELD) is None else str(f.get(HOST_FIELD))))

    _collect_results(data, st.records, done)
    return data


def _collect_results(data: ReportData, records: list[dict[str, Any]],
                     keys: list[dict[str, str]]) -> None:
    """Each numeric saved result against each key field, an even sample of the runs
    that saved a result (only the sample's results are decoded)."""
    saved = [i for i, r in enumerate(records) if r.get(RESULT_FIELD) is not None]
    data.result_runs = len(saved)
    picked: list[tuple[dict[str, str], dict[str, float]]] = []
    for i in (saved[j] for j in _sample(len(saved), MAX_POINTS)):
        try:
            value = json.loads(records[i][RESULT_FIELD])
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
