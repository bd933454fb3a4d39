"""Opt-in result capture (``once(..., save_result=True)``).

A run's return value is stored with its record as JSON text in the bookkeeping field
``_stet_result``; a later call that is skipped as done returns the stored value (decoded
afresh each time, so callers never share a mutable object). Results of done runs are kept
in memory per function: a skip is a dictionary lookup, and the store is read again only
when a run is done but its result is not known yet and the store grew since it was last
read (another worker recorded runs meanwhile).

A value that JSON cannot hold (an object, a tuple as a dict key, containers nested more
than :data:`MAX_RESULT_DEPTH` deep, which not every reader could decode) is not stored: the
run did complete, so it is still recorded as done (re-running it would waste the work),
a :class:`ResultNotSavedWarning` says why, and a skipped call returns ``None`` for it.
NumPy scalars and arrays are stored as the equal Python numbers and lists; tuples come
back as lists.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Mapping
from typing import Any

from ._schema import FUNC_FIELD, RESULT_FIELD
from ._warn import warn

__all__ = ["RESULT_FIELD", "ResultCache", "ResultNotSavedWarning", "encode_result"]

#: Deepest nesting of a saved result: any reader (a skip, ``load``, ``stet ls``) decodes
#: it well within Python's recursion limit, whoever wrote it with whatever limit.
MAX_RESULT_DEPTH = 200

_STRINGS = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class ResultNotSavedWarning(UserWarning):
    """A run completed and was recorded, but its return value could not be stored."""


def _default(value: Any) -> Any:
    """JSON for NumPy scalars and arrays (their Python equivalents)."""
    module = type(value).__module__
    if (module == "numpy" or module.startswith("numpy.")) and hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a {type(value).__qualname__} is not JSON-serialisable")


def _too_deep(text: str) -> bool:
    """Whether the JSON ``text`` nests containers more than :data:`MAX_RESULT_DEPTH` deep."""
    if text.count("[") + text.count("{") <= MAX_RESULT_DEPTH:
        return False  # (the usual case, found without a scan)
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > MAX_RESULT_DEPTH


def encode_result(value: Any, call: str) -> str | None:
    """``value`` as JSON text, or ``None`` (with a warning) if JSON cannot hold it."""
    try:
        try:
            text = json.dumps(value, default=_default, ensure_ascii=False,
                              separators=(",", ":"))
        except RecursionError:
            raise ValueError(f"it is nested too deeply (more than {MAX_RESULT_DEPTH} levels "
                             f"of containers)") from None
        if _too_deep(text):
            raise ValueError(f"it is nested more than {MAX_RESULT_DEPTH} levels deep")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escaped, as UTF-8 cannot hold it
            text = json.dumps(value, default=_default, separators=(",", ":"))
        return text
    except (TypeError, ValueError) as exc:
        warn(
            f"stet: {call} completed and was recorded as done, but its return value (a "
            f"{type(value).__qualname__}) was not saved: {exc}. A skipped call of this run "
            f"will return None. With save_result=True, return JSON data: a dict of "
            f"numbers and strings, lists (arrays: .tolist()).",
            ResultNotSavedWarning,
        )
        return None


def decode_result(text: str) -> Any:
    """The value stored as ``text`` (plain JSON; nothing is evaluated). ``None``, with a
    warning, for a result too deeply nested to decode (saved by an older stet)."""
    try:
        return json.loads(text)
    except RecursionError:
        warn(
            f"stet: a saved result is nested too deeply to be decoded ({len(text)} "
            f"characters of JSON); the skipped call returns None.",
            ResultNotSavedWarning,
        )
        return None


class ResultCache:
    """Stored results of one function's done runs, by key fields."""

    def __init__(self, func: str) -> None:
        self.func = func
        # sorted key-field names -> {canonical texts in that order: JSON text}
        self._tables: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}
        self._seen = -1  # the store's record count when it was last read
        self._lock = threading.Lock()

    def put(self, record: Mapping[str, str]) -> None:
        """Remember the result of a run this process just recorded."""
        text = record.get(RESULT_FIELD)
        if text is None:
            return
        with self._lock:
            for names, table in self._tables.items():
                if all(n in record for n in names):
                    table[tuple(record[n] for n in names)] = text

    def forget(self, fields: Mapping[str, str]) -> None:
        """Drop remembered results of runs holding these field texts."""
        with self._lock:
            for names, table in self._tables.items():
                if all(n in fields for n in names):
                    table.pop(tuple(fields[n] for n in names), None)
                elif any(n in fields for n in names):
                    table.clear()

    def get(self, backend: Any, names: tuple[str, ...], texts: tuple[str, ...]) -> Any:
        """The stored result of a done run (``None`` if not done or none was stored)."""
        table = self._tables.get(names)
        if table is not None:
            text = table.get(texts)
            if text is not None:
                return decode_result(text)
        if not backend.contains_run(self.func, names, texts):
            return None
        count = _count(backend)
        with self._lock:
            table = self._tables.get(names)
            if table is None or count is None or count != self._seen:
                self._reload(backend, names)
                table = self._tables[names]
            text = table.get(texts)
        return None if text is None else decode_result(text)

    def _reload(self, backend: Any, names: tuple[str, ...]) -> None:
        count = _count(backend)
        tables: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {
            n: {} for n in (*self._tables, names)
        }
        for record in backend.load():
            text = record.get(RESULT_FIELD)
            if text is None:
                continue
            func = record.get(FUNC_FIELD) or ""
            if func and func != self.func:
                continue
            for probe, table in tables.items():
                if all(n in record for n in probe):
                    table[tuple(record[n] for n in probe)] = text
        self._tables = tables
        self._seen = -1 if count is None else count


def _count(backend: Any) -> int | None:
    try:
        return len(backend)
    except TypeError:  # a custom backend without __len__: always read afresh
        return None

