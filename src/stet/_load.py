"""Reading a store for analysis: records as typed columns, and ``stet.load`` (pandas).

A store holds canonical texts. For analysis they are typed back, one column at a time:
a column whose values are all canonical integers becomes integers, all numbers (``0.1``,
``1e-05``, ``nan``, ``inf``) floats, all ``True``/``False`` booleans; any other column stays
text (``"007"`` is not the integer 7: its canonical text shows it was a string). ``None``
is a missing value everywhere, as is a field a record does not hold. Nothing is
evaluated: containers and other values stay their canonical text.

A result saved with ``save_result=True`` (JSON in ``_stet_result``) becomes a ``result``
column, or one ``result.<key>`` column per key when results are dicts (nested dicts give
``result.<key>.<key>``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._schema import (
    BOOKKEEPING_ORDER,
    DEFAULT_STORE,
    DURATION_FIELD,
    EMPTY_FIELD,
    FUNC_FIELD,
    JSON_FIELD,
    PID_FIELD,
    RESERVED_PREFIX,
    RESULT_FIELD,
    STARTED_FIELD,
    TIMESTAMP_FIELD,
)
from .backends import display_store, get_backend
from .backends._base import Store
from .errors import StoreError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Table", "load", "open_store", "tabulate"]

# EMPTY_FIELD (CSV's record of which fields hold the empty string) is an encoding
# detail, never shown. Bookkeeping columns come in BOOKKEEPING_ORDER (others follow).
_FLOAT_BOOK = {DURATION_FIELD}
_INT_BOOK = {PID_FIELD}
_TIME_BOOK = {TIMESTAMP_FIELD, STARTED_FIELD}

_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?([0-9]+\.[0-9]+(e[+-][0-9]+)?|[0-9]+e[+-][0-9]+|inf)|nan")


def display(store: str | os.PathLike[str]) -> str:
    """The store as text for messages (a URL's password masked, where URLs are stores)."""
    return display_store(store)


def open_store(store: str | os.PathLike[str]) -> Store:
    """The backend of an existing store; ``FileNotFoundError`` if there is none."""
    backend = get_backend(store)
    if not isinstance(store, Store) and os.path.isdir(store):
        raise StoreError(f"{display(store)} is a directory, not a store file; give the "
                         f"path of a store (a file such as runs.csv), or a URL")
    # A sweep whose every run failed so far has failure records but no store file,
    # and one whose first runs are still running has only claims.
    if not backend.exists() and not backend.has_companions():
        raise FileNotFoundError(f"no stet store at {display(store)!r}")
    return backend


def _kind(values: Iterable[str | None]) -> str:
    """``int``, ``float``, ``bool`` or ``str``: what every present value is."""
    kind = ""
    for v in values:
        if v is None or v == "None":
            continue
        if v == "True" or v == "False":
            k = "bool"
        elif _INT.fullmatch(v):
            k = "int"
        elif _FLOAT.fullmatch(v):
            k = "float"
        else:
            return "str"
        if not kind or kind == k:
            kind = k
        elif {kind, k} == {"int", "float"}:
            kind = "float"
        else:
            return "str"
    return kind or "str"


def _convert(kind: str, v: str | None) -> Any:
    if v is None or v == "None":
        return None
    if kind == "int":
        return int(v)
    if kind == "float":
        return float(v)
    if kind == "bool":
        return v == "True"
    return v


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    # (iterative, in the order of the keys: a result may nest dicts deeply)
    stack = [(prefix, value)]
    while stack:
        name, v = stack.pop()
        if isinstance(v, dict) and v:
            stack.extend(reversed([(f"{name}.{k}", x) for k, x in v.items()]))
        else:
            out[name] = v


class Table:
    """Records as typed columns: ``columns`` (name -> values) and ``kinds`` (name ->
    ``int``/``float``/``bool``/``str``/``time``/``json``)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}
        self.kinds: dict[str, str] = {}
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def key_columns(self) -> list[str]:
        return [c for c in self.columns if not c.startswith(RESERVED_PREFIX)
                and self.kinds[c] != "json"]

    def result_columns(self) -> list[str]:
        return [c for c in self.columns if self.kinds[c] == "json"]

    def row(self, i: int) -> dict[str, Any]:
        return {c: v[i] for c, v in self.columns.items()}


def tabulate(records: Sequence[Mapping[str, Any]]) -> Table:
    """Typed columns of ``records`` (key fields, then results, then bookkeeping)."""
    keys: dict[str, None] = {}
    book: dict[str, None] = {}
    for r in records:
        for k in r:
            if k.startswith(RESERVED_PREFIX):
                if k != EMPTY_FIELD and k != RESULT_FIELD:
                    book[k] = None
            else:
                keys[k] = None
    table = Table()
    table.rows = len(records)
    for k in keys:
        texts = [r.get(k) for r in records]
        kind = _kind(texts)
        table.columns[k] = [_convert(kind, t) for t in texts]
        table.kinds[k] = kind
    # results: JSON, decoded (plain JSON; text that is not JSON is kept as it is)
    if any(RESULT_FIELD in r for r in records):
        for name, values in json_columns(records, RESULT_FIELD, _spread_result).items():
            column = name if name not in table.columns else RESERVED_PREFIX + name
            table.columns[column] = values
            table.kinds[column] = "json"
    ordered = [b for b in BOOKKEEPING_ORDER if b in book]
    ordered += [b for b in book if b not in BOOKKEEPING_ORDER]
    for k in ordered:
        texts = [r.get(k) for r in records]
        if k in _FLOAT_BOOK or k in _INT_BOOK:
            kind = _kind(texts)
            kind = kind if kind in ("int", "float") else "str"
            table.columns[k] = [_convert(kind, t) for t in texts]
            table.kinds[k] = kind
        else:
            table.columns[k] = texts
            table.kinds[k] = "time" if k in _TIME_BOOK else "str"
    return table


def select(records: list[dict[str, Any]], func: str | None) -> list[dict[str, Any]]:
    """Records of ``func`` (and records of no function, which match any)."""
    if func is None:
        return records
    return [r for r in records if (r.get(FUNC_FIELD) or "") in ("", func)]


def func_name(func: Any) -> str | None:
    """A function name from a name or a decorated function."""
    if func is None or isinstance(func, str):
        return func
    run = getattr(func, "__stet_run__", None)
    if run is None:
        raise TypeError(f"func= takes a function name or a @stet.once function, not {func!r}")
    return str(run.name)


def json_columns(records: Sequence[Mapping[str, Any]], field: str,
                 spread: Callable[[Any, dict[str, Any]], None]) -> dict[str, list[Any]]:
    """Columns from the JSON text in each record's ``field`` (text that is not JSON is
    passed on as it is): ``spread`` puts a record's values in a dict, column -> value;
    a column holds ``None`` for the records that do not give it."""
    flat: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    for r in records:
        out: dict[str, Any] = {}
        text = r.get(field)
        if text is not None:
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):  # (too deep: saved by an older stet)
                value = text
            spread(value, out)
        flat.append(out)
        names.update(dict.fromkeys(out))
    return {n: [f.get(n) for f in flat] for n in names}


def _spread_result(value: Any, out: dict[str, Any]) -> None:
    _flatten("result", value, out)


def _spread_mappings(value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):  # {"cfg": {...}, ...}
        for field, mapping in value.items():
            if isinstance(mapping, dict) and mapping:  # (an empty one: no column)
                _flatten(str(field), mapping, out)


def expand_mappings(records: Sequence[Mapping[str, Any]],
                    taken: Iterable[str]) -> dict[str, list[Any]]:
    """Columns ``cfg.lr``, ``cfg.opt.m``... from the JSON copy of the records' mapping
    arguments (``_stet_json``), one per key, in the order first seen; ``None`` where a
    record does not hold it. A name already ``taken`` gets the ``_stet_`` prefix."""
    taken = set(taken)
    return {(RESERVED_PREFIX + n if n in taken else n): values
            for n, values in json_columns(records, JSON_FIELD, _spread_mappings).items()}


def load(
    store: str | os.PathLike[str] | Any = DEFAULT_STORE,
    *,
    func: str | Any = None,
    failures: bool = False,
    expand: bool = True,
) -> pd.DataFrame:
    """The runs of a store as a pandas DataFrame, one row per run, values typed back.

    Key fields become integers, floats, booleans or text, as their stored canonical
    texts say (``None`` and absent fields are missing values); saved results
    (``save_result=True``) become a ``result`` column, or ``result.<key>`` columns for
    dict results; the bookkeeping columns follow: ``_stet_func``, ``_stet_timestamp``
    and ``_stet_started`` (UTC datetimes), ``_stet_duration`` (seconds), ``_stet_host``.

    Args:
        store: A store path, or a ``@stet.once`` function (its store and its runs).
        func: Only runs of this function (a name or a decorated function); records
            without a function name (stet 0.0.2) match any.
        failures: Load the recorded failures instead of the completed runs (with
            ``_stet_error_type`` and ``_stet_error`` columns).
        expand: Give a key field whose value is a mapping (a dict, a Hydra config)
            one column per value in it, ``cfg.lr``, ``cfg.opt.lr`` (typed as JSON says),
            after the key fields, from the JSON copy stet records beside its key text
            (``_stet_json``; runs recorded before stet kept it have none). With
            ``expand=False``, that JSON text is a ``_stet_json`` column instead.

    Raises:
        ImportError: pandas is not installed (``pip install 'stet[pandas]'``).
        FileNotFoundError: There is no store at ``store``.
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "stet.load returns a pandas DataFrame, and pandas is not installed: "
            "pip install 'stet[pandas]'"
        ) from None
    run = getattr(store, "__stet_run__", None)
    if run is not None:
        func = run.name if func is None else func
        store = run.location  # resolved when it was decorated
    backend = open_store(store)
    records = select(backend.failures() if failures else backend.load(), func_name(func))
    table = tabulate(records)
    columns = table.columns
    if expand and JSON_FIELD in columns:
        keys = table.key_columns()
        expanded = expand_mappings(records, columns)
        table.kinds.update(dict.fromkeys(expanded, "json"))
        columns = {**{k: columns[k] for k in keys}, **expanded,
                   **{k: v for k, v in columns.items() if k not in keys and k != JSON_FIELD}}
    data: dict[str, Any] = {}
    for name, values in columns.items():
        kind = table.kinds[name]
        missing = any(v is None for v in values)
        if kind == "int":
            data[name] = pd.array(values, dtype="Int64") if missing else pd.array(
                values, dtype="int64")
        elif kind == "float":
            data[name] = pd.array([math.nan if v is None else v for v in values],
                                  dtype="float64")
        elif kind == "bool":
            data[name] = pd.array(values, dtype="boolean" if missing else "bool")
        elif kind == "time":
            try:
                data[name] = pd.to_datetime(pd.Series(values, dtype=object), utc=True,
                                            format="ISO8601")
            except (ValueError, TypeError):
                data[name] = pd.Series(values, dtype=object)
        elif kind == "json":
            data[name] = pd.Series(values, dtype=object).infer_objects()
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data, index=pd.RangeIndex(len(table)))

