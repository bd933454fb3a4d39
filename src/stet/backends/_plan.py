"""A sweep's plan kept with its store: which runs were asked for (``stet.sweep``,
``stet.submit``, the Hydra sweeper), so that ``stet status`` can say how many are left
from any shell, without the Python that holds the settings.

A plan entry is a run's identity as a record: ``_stet_func`` and the key fields' texts.
Plans combine as a union: an entry already kept is not kept twice.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .._fork import RLock
from .._schema import Record, RunKey, run_key
from .._sidecar import open_file, reraise_as_store_error

__all__ = ["MemoryPlan", "PlanFile", "PlanLog", "new_entries"]


class PlanLog(Protocol):
    """Where a store keeps its plans."""

    def add(self, entries: Sequence[Record]) -> None: ...
    def entries(self) -> list[Record]: ...
    def clear(self) -> None: ...


def new_entries(kept: set[RunKey], entries: Sequence[Record]) -> list[Record]:
    """The entries not among ``kept`` (nor twice among themselves), in order."""
    out: list[Record] = []
    seen = set(kept)
    for e in entries:
        k = run_key(e)
        if k not in seen:
            seen.add(k)
            out.append(dict(e))
    return out


class MemoryPlan:
    """Plans kept by the store object (a store without ``durable_plans``)."""

    def __init__(self) -> None:
        self._entries: list[Record] = []
        self._mutex = RLock()

    def add(self, entries: Sequence[Record]) -> None:
        with self._mutex:
            self._entries += new_entries({run_key(e) for e in self._entries}, entries)

    def entries(self) -> list[Record]:
        with self._mutex:
            return [dict(e) for e in self._entries]

    def clear(self) -> None:
        with self._mutex:
            self._entries = []


def _line(entry: Record) -> bytes:
    # (ASCII: a lone surrogate in a key text is kept as JSON's escape, and reads back)
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


class PlanFile:
    """Plans in a JSON Lines file beside the store: one object per planned run, appended
    in one write per sweep (a torn last line, from a crash mid-write, is ignored)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = RLock()

    def add(self, entries: Sequence[Record]) -> None:
        # Compared as lines, not parsed: a rerun of a sweep of 100,000 settings adds
        # nothing, and must not pay for reading its plan back (entries are written with
        # sorted keys, so the same entry is the same line).
        with self._mutex, reraise_as_store_error(self.path, "recording the sweep's plan in"):
            kept = set(self._read().split(b"\n"))
            fresh: dict[bytes, None] = {}
            for e in entries:
                line = _line(e)
                if line not in kept:
                    fresh[line] = None
            if not fresh:
                return
            data = b"".join(line + b"\n" for line in fresh)
            fd = open_file(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                self._end_line(fd)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)

    def _read(self) -> bytes:
        try:
            fd = open_file(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return b""
        with os.fdopen(fd, "rb") as f:
            return f.read()

    @staticmethod
    def _end_line(fd: int) -> None:
        """After a torn write, start on a line of its own."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")

    def entries(self) -> list[Record]:
        with reraise_as_store_error(self.path, "reading the sweep's plan in"):
            data = self._read()
        out: list[Record] = []
        for line in data.split(b"\n"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a torn line
            if isinstance(obj, dict):
                out.append({str(k): str(v) for k, v in obj.items()})
        return new_entries(set(), out)

    def clear(self) -> None:
        with (self._mutex, reraise_as_store_error(self.path, "removing the sweep's plan"),
              contextlib.suppress(FileNotFoundError)):
            os.unlink(self.path)
