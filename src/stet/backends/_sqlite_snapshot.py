"""The index snapshot of a SQLite store (see :mod:`stet._snapshot`): checked against the
database before it is used.

A snapshot of a SQLite store covers the rows up to a row id, under a generation (the
number in ``stet_meta`` that every removal by stet changes) and a count of changes: two
triggers, which stet's first write of a store adds, count in ``stet_meta`` every row
updated or deleted in ``stet_records``, by any program. A reader uses the snapshot when
the triggers are there, the generation and the count of changes are the same, the table
holds as many rows up to that id as the snapshot has records, and 17 rows spread over
that range (the last one among them) are runs the snapshot holds. Then only the rows
after it are read. (Inserting rows only adds runs, which a reader reads after the
snapshot; a row inserted under an id below the last covered one changes the row count.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import _snapshot as saved_index
from .._index import Index

__all__ = ["changes", "restore", "save", "watch_changes"]

_SAMPLES = 16  # rows checked, besides the last one covered
_CHANGES = "changes"  # the key of the count of changes in stet_meta
_TRIGGERS = ("stet_records_updated", "stet_records_deleted")


def watch_changes(conn: sqlite3.Connection, table: str, meta: str) -> None:
    """Add the triggers that count changed and deleted rows (inside a write transaction;
    nothing if they are there)."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute(f"INSERT OR IGNORE INTO {meta} (key, value) VALUES (?, '0')", (_CHANGES,))
    for name, event in zip(_TRIGGERS, ("UPDATE", "DELETE"), strict=True):
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} BEGIN "
            f"UPDATE {meta} SET value = CAST(value AS INTEGER) + 1 "
            f"WHERE key = '{_CHANGES}'; END")


def changes(conn: sqlite3.Connection, meta: str) -> int | None:
    """The count of changed and deleted rows, or ``None`` if they are not counted (no
    triggers: a store no stet of this version has written)."""
    try:
        triggers = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN (?, ?)",
            _TRIGGERS).fetchone()[0]
        row = conn.execute(f"SELECT value FROM {meta} WHERE key = ?", (_CHANGES,)).fetchone()
    except sqlite3.OperationalError:
        return None
    if triggers != len(_TRIGGERS) or row is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        return None


def restore(path: Path, conn: sqlite3.Connection, index: Index, *, generation: str | None,
            changed: int | None, rowid: str, table: str, select: str,
            header: Sequence[str], text: Callable[[Any], str],
            ) -> tuple[int, saved_index.Saved] | None:
    """Load the snapshot beside ``path`` into ``index`` if it holds for the database
    (``SELECT {select} FROM {table}`` gives the key columns named by ``header``; ``text``
    turns a value into its canonical text). Returns the last row id covered."""
    saved = saved_index.load(path, digests=False)
    if saved is None:
        return None
    d = saved.store
    last = d.get("last_rowid")
    if (changed is None or d.get("kind") != "sqlite" or d.get("generation") != generation
            or d.get("changes") != changed or type(last) is not int or last <= 0):
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
         generation: str | None, changed: int | None, last_rowid: int) -> None:
    """Save ``index`` (the rows up to ``last_rowid``, read when the count of changes was
    ``changed``) beside ``path`` if worth it; not when changes are not counted."""
    if changed is None or last_rowid <= 0 or not saved_index.stale_enough(index, previous):
        return
    saved_index.save(path, index, {"kind": "sqlite", "generation": generation,
                                   "changes": changed, "last_rowid": last_rowid}, previous)
