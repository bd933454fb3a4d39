"""The index snapshot of a SQLite store (see :mod:`stet._snapshot`): checked against the
database before it is used.

A snapshot of a SQLite store covers the rows up to a row id, under a generation (the
number in ``stet_meta`` that every removal by stet changes). A reader uses it when the
generation is the same, the table holds as many rows up to that id as the snapshot has
records (a row deleted by another tool changes it), and 17 rows spread over that range
(the last one among them) are runs the snapshot holds (a row replaced by another tool is
seen there, most likely). Then only the rows after it are read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import _snapshot as saved_index
from .._index import Index

__all__ = ["restore", "save"]

_SAMPLES = 16  # rows checked, besides the last one covered


def restore(path: Path, conn: sqlite3.Connection, index: Index, *, generation: str | None,
            rowid: str, table: str, select: str, header: Sequence[str],
            text: Callable[[Any], str]) -> tuple[int, saved_index.Saved] | None:
    """Load the snapshot beside ``path`` into ``index`` if it holds for the database
    (``SELECT {select} FROM {table}`` gives the key columns named by ``header``; ``text``
    turns a value into its canonical text). Returns the last row id covered."""
    saved = saved_index.load(path, digests=False)
    if saved is None:
        return None
    d = saved.store
    last = d.get("last_rowid")
    if (d.get("kind") != "sqlite" or d.get("generation") != generation
            or type(last) is not int or last <= 0):
        return None
    covered = conn.execute(f"SELECT count(*) FROM {table} WHERE {rowid} <= ?",
                           (last,)).fetchone()[0]
    if covered != saved.state.count:
        return None
    rows = []
    for at in [last * i // _SAMPLES for i in range(_SAMPLES)] + [last]:
        row = conn.execute(f"SELECT {select} FROM {table} WHERE {rowid} >= ? AND "
                           f"{rowid} <= ? ORDER BY {rowid} LIMIT 1", (at, last)).fetchone()
        if row is not None:
            rows.append([None if v is None else text(v) for v in row])
    full = saved_index.load(path)
    if full is None or full.store != d:
        return None
    sample = Index()
    sample.add_rows(header, rows)
    if not sample.state().digests <= full.state.digests:
        return None
    index.load_state(full.state)
    return last, full


def save(path: Path, index: Index, previous: saved_index.Saved | None, *,
         generation: str | None, last_rowid: int) -> None:
    """Save ``index`` (the rows up to ``last_rowid``) beside ``path`` if worth it."""
    if last_rowid <= 0 or not saved_index.stale_enough(index, previous):
        return
    saved_index.save(path, index, {"kind": "sqlite", "generation": generation,
                                   "last_rowid": last_rowid}, previous)
