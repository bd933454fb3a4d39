"""What other tools see in a store of each format: one reader per format (the csv and
json modules, pandas, sqlite3, pyarrow, plain SQL), each checking on the way that the
file is whole for that tool. Tests pick a reader by format instead of branching on it."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def _csv_rows(path: Path) -> list[Row]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows, f"{path}: no header"
    assert all(len(r) == len(rows[0]) for r in rows), f"{path}: ragged CSV"
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def _json_rows(path: Path) -> list[Row]:
    import pandas as pd

    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    assert isinstance(data, list) and all(isinstance(r, dict) for r in data)
    assert len(pd.read_json(path, dtype=False)) == len(data)
    return [dict(r) for r in data]


def _sqlite_rows(path: Path) -> list[Row]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        cur = conn.execute("SELECT * FROM stet_records ORDER BY rowid")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def _parquet_rows(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    rows: list[Row] = pq.read_table(path).to_pylist()
    return rows


def pg_rows(url: Any) -> list[Row]:
    """A PostgreSQL store's records as another tool (plain SQL) sees them; ``url`` is a
    ``conftest.PgStore`` (it knows its server and table)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url.server.url()) as conn:
        rows = conn.execute(
            sql.SQL("SELECT record FROM {} ORDER BY id").format(sql.Identifier(url.table))
        ).fetchall()
    return [dict(r[0]) for r in rows]


#: Format -> the records of a store file as another tool reads them (``None``: absent).
READERS: dict[str, Callable[[Path], list[Row]]] = {
    "csv": _csv_rows,
    "json": _json_rows,
    "sqlite": _sqlite_rows,
    "parquet": _parquet_rows,
    "postgres": pg_rows,
}

#: Formats whose file holds some runs beside it until it is folded (at exit, or when the
#: log grows): other tools see every run in the file alone only after that.
FOLDED_LATER = frozenset({"parquet"})

#: Formats that can show a field a record lacks as absent (CSV shows it empty).
SHOW_ABSENT = frozenset({"json", "sqlite", "parquet", "postgres"})


def other_tools_rows(path: Path, fmt: str) -> list[Row]:
    """The store's records as another tool reads them."""
    return READERS[fmt](path)
