"""A file that is not a stet store is refused and left untouched, in every format.

One rule (docs/reference/store-files.md, "How a store is recognised"):
a store is recognised by stet's own marker, a ``_stet_`` field (every
store has ``_stet_timestamp``, 0.0.2's included): in a CSV header, in the first object
of a JSON array, among a Parquet file's columns (or stet's schema metadata), among the
columns of SQLite's ``stet_records`` (or beside its ``stet_meta`` table). Any other file
is refused with :class:`stet.CorruptStoreError` naming it and saying why, before a
decorated function runs, and keeps its bytes and modification time. Empty files and
empty stores stet made still work.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stet
from stet.backends import get_backend

# ----------------------------------------------------------------- foreign files


def _pandas_parquet(path: Path) -> None:
    pd.DataFrame({"alpha": [0.1, 0.5], "seed": [0, 1], "note": ["a", "b"]}).to_parquet(path)


def _pandas_parquet_of_text(path: Path) -> None:
    pd.DataFrame({"alpha": ["0.1", "0.5"], "seed": ["0", "1"]}).to_parquet(path)


def _arrow_parquet_no_columns(path: Path) -> None:
    pq.write_table(pa.table({}), path)


def _parquet_duplicate_columns(path: Path) -> None:
    pq.write_table(pa.Table.from_arrays([pa.array(["1"]), pa.array(["2"]), pa.array(["t"])],
                                        names=["a", "a", "_stet_timestamp"]), path)


def _json_plain_objects(path: Path) -> None:
    path.write_text(json.dumps([{"alpha": "0.1", "seed": "0"}, {"alpha": "0.5", "seed": "1"}],
                               indent=2) + "\n")


def _json_one_line(path: Path) -> None:
    path.write_text('[{"alpha": 0.1, "seed": 0}, {"alpha": 0.5, "seed": 1}]')


def _json_marker_only_later(path: Path) -> None:
    path.write_text(json.dumps([{"alpha": "0.1", "seed": "0"},
                                {"alpha": "0.5", "seed": "1", "_stet_timestamp": "t"}]))


def _json_torn_plain(path: Path) -> None:
    path.write_text('[\n{"alpha": "0.1", "seed": "0"},\n{"alpha": "0.5"')


def _csv_plain(path: Path) -> None:
    path.write_text("alpha,seed\n0.1,0\n0.5,1\n")


def _sqlite(*statements: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        conn = sqlite3.connect(path)
        for sql in statements:
            conn.execute(sql)
        conn.commit()
        conn.close()

    make.__name__ = statements[0]
    return make


FOREIGN: list[tuple[str, str, Callable[[Path], None]]] = [
    ("parquet", "pandas", _pandas_parquet),
    ("parquet", "pandas-text", _pandas_parquet_of_text),
    ("parquet", "no-columns", _arrow_parquet_no_columns),
    ("parquet", "duplicate-columns", _parquet_duplicate_columns),
    ("json", "plain-objects", _json_plain_objects),
    ("json", "one-line", _json_one_line),
    ("json", "marker-only-later", _json_marker_only_later),
    ("json", "torn-plain", _json_torn_plain),
    ("csv", "plain", _csv_plain),
    ("sqlite", "view-only", _sqlite("CREATE VIEW v AS SELECT 1 AS x")),
    ("sqlite", "wal-mode-table", _sqlite("PRAGMA journal_mode=WAL", "CREATE TABLE t (x TEXT)",
                                         "INSERT INTO t VALUES ('a')")),
    ("sqlite", "stet-users", _sqlite("CREATE TABLE stet_users (name TEXT)",
                                     "INSERT INTO stet_users VALUES ('ada')")),
    ("sqlite", "meta-and-another-table", _sqlite(
        "CREATE TABLE stet_meta (key TEXT PRIMARY KEY, value TEXT)",
        "CREATE TABLE t (x TEXT)", "CREATE INDEX ix ON t (x)")),
    ("sqlite", "integer-column", _sqlite(
        'CREATE TABLE stet_records ("alpha" TEXT, "seed" INTEGER, "_stet_timestamp" TEXT)',
        "INSERT INTO stet_records VALUES ('0.1', 0, 't')")),
    ("sqlite", "no-marker", _sqlite(
        'CREATE TABLE stet_records ("alpha" TEXT, "seed" TEXT)',
        "INSERT INTO stet_records VALUES ('0.1', '0')")),
    ("sqlite", "primary-key", _sqlite(
        'CREATE TABLE stet_records ("id" INTEGER PRIMARY KEY, "alpha" TEXT, '
        '"_stet_timestamp" TEXT)')),
    ("sqlite", "not-null", _sqlite(
        'CREATE TABLE stet_records ("alpha" TEXT NOT NULL, "_stet_timestamp" TEXT)')),
    ("sqlite", "without-rowid", _sqlite(
        'CREATE TABLE stet_records ("alpha" TEXT PRIMARY KEY, "_stet_timestamp" TEXT) '
        "WITHOUT ROWID")),
    ("sqlite", "records-view", _sqlite(
        "CREATE VIEW stet_records AS SELECT '0.1' AS alpha, 't' AS _stet_timestamp")),
    ("sqlite", "other-meta", _sqlite(
        'CREATE TABLE stet_records ("alpha" TEXT, "_stet_timestamp" TEXT)',
        "CREATE TABLE stet_meta (name TEXT, size INTEGER)")),
    ("sqlite", "upper-case-names", _sqlite(
        'CREATE TABLE STET_RECORDS ("alpha" REAL, "_stet_timestamp" TEXT)')),
]


def _state(path: Path) -> tuple[str, int, list[str]]:
    """The file's hash and modification time, and the directory's listing."""
    return (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns,
            sorted(p.name for p in path.parent.iterdir()))


@pytest.mark.parametrize(
    ("fmt", "make"), [(fmt, make) for fmt, _, make in FOREIGN],
    ids=[f"{fmt}-{label}" for fmt, label, _ in FOREIGN],
)
def test_a_foreign_file_is_refused_and_untouched(
    tmp_path: Path, fmt: str, make: Callable[[Path], None]
) -> None:
    path = tmp_path / f"data.{fmt}"
    make(path)
    before = _state(path)
    calls: list[Any] = []

    @stet.once(store=path, verbose=False)
    def f(alpha: float, seed: int) -> None:
        calls.append((alpha, seed))

    def refused(action: Callable[[], object]) -> None:
        with pytest.raises(stet.CorruptStoreError) as info:
            action()
        message = str(info.value)
        assert str(path) in message
        assert "not a" in message and "store" in message, message
        assert "untouched" in message
        assert _state(path)[:2] == before[:2]

    refused(lambda: f(0.1, 0))  # a run the file's rows would have "done"
    refused(lambda: f(0.9, 9))  # a new run: never appended
    assert calls == []
    with get_backend(path) as b:
        refused(lambda: b.has({"alpha": 0.1, "seed": 0}))
        refused(lambda: b.record({"alpha": 0.7, "seed": 7}))
        refused(b.load)
        refused(lambda: b.remove({"alpha": 0.1, "seed": 0}))
        refused(b.clear)
    with get_backend(path) as b:
        refused(lambda: b.record({"alpha": 0.5, "seed": 1}))  # a record first, fresh
    refused(lambda: stet.status(path))
    refused(lambda: stet.reset(path, key_dict={"alpha": "0.1", "seed": "0"}))
    assert _state(path)[:2] == before[:2]
    # Nothing is left beside the file either (CSV is read under its lock file).
    beside = set(_state(path)[2]) - set(before[2])
    assert beside <= ({f"data.{fmt}.lock"} if fmt == "csv" else set())


_BY_LABEL = {f"{fmt}-{label}": make for fmt, label, make in FOREIGN}


@pytest.mark.parametrize("case", ["parquet-pandas", "json-plain-objects", "sqlite-view-only",
                                  "sqlite-stet-users", "sqlite-integer-column"])
def test_a_foreign_file_is_untouched_by_a_process_that_ends(tmp_path: Path, case: str) -> None:
    """The issue's reproduction: a script that calls a decorated function on a foreign
    file and ends normally (the exit folds Parquet sidecars) leaves the file as it was,
    and says why in one error."""
    fmt = case.split("-")[0]
    path = tmp_path / f"data.{fmt}"
    _BY_LABEL[case](path)
    before = _state(path)
    script = textwrap.dedent(
        f"""
        import stet
        @stet.once(store={str(path)!r})
        def f(alpha, seed):
            print("ran")
        try:
            f(0.1, 0)
        except stet.CorruptStoreError as exc:
            print("refused:", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ran" not in out.stdout.split()
    assert out.stdout.startswith("refused:") and str(path) in out.stdout
    assert _state(path)[:2] == before[:2]


def test_the_cli_refuses_a_foreign_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    _pandas_parquet(path)
    before = _state(path)
    for command in (["status"], ["ls"]):
        out = subprocess.run([sys.executable, "-m", "stet", *command, str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        assert "Traceback" not in out.stderr
        assert "not a stet store" in out.stderr + out.stdout
    assert _state(path)[:2] == before[:2]


# ----------------------------------------------------------------- what still works


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _empty_array(path: Path) -> None:
    path.write_text("[]")


def _empty_array_lines(path: Path) -> None:
    path.write_text("[\n]\n")


def _empty_sqlite_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")
    conn.execute("VACUUM")  # a valid database file with no schema
    conn.close()


def _cleared_store(path: Path) -> None:
    with get_backend(path) as b:
        b.record({"alpha": 0.3, "seed": 3})
        b.finish()
        b.clear()
        b.finish()


STILL_STORES: list[tuple[str, str, Callable[[Path], None]]] = [
    *[(fmt, "empty-file", _empty_file) for fmt in ("csv", "json", "sqlite", "parquet")],
    ("json", "empty-array", _empty_array),
    ("json", "empty-array-lines", _empty_array_lines),
    ("sqlite", "empty-database", _empty_sqlite_database),
    *[(fmt, "cleared", _cleared_store) for fmt in ("csv", "json", "sqlite", "parquet")],
]


@pytest.mark.parametrize(
    ("fmt", "make"), [(fmt, make) for fmt, _, make in STILL_STORES],
    ids=[f"{fmt}-{label}" for fmt, label, _ in STILL_STORES],
)
def test_empty_files_and_empty_stores_still_work(
    tmp_path: Path, fmt: str, make: Callable[[Path], None]
) -> None:
    path = tmp_path / f"runs.{fmt}"
    make(path)
    calls: list[Any] = []

    @stet.once(store=path, verbose=False)
    def f(alpha: float, seed: int) -> None:
        calls.append((alpha, seed))

    f(0.1, 0)
    f(0.1, 0)
    assert calls == [(0.1, 0)]
    get_backend(path).finish()
    with get_backend(path) as b:
        assert b.has({"alpha": 0.1, "seed": 0})
        assert len(b.load()) == 1


@pytest.mark.parametrize("fmt", ["csv", "json", "sqlite", "parquet"])
def test_stores_of_stet_0_0_2_are_still_recognised(tmp_path: Path, fmt: str) -> None:
    from conftest import LOCAL_FIXTURES

    source = LOCAL_FIXTURES / f"v002_store.{fmt}"
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes())
    with get_backend(path) as b:
        assert len(b.load()) == 12
        assert b.has({"alpha": "0.1", "seed": "0"})
        b.record({"alpha": "0.9", "seed": "9"})
    get_backend(path).finish()
    with get_backend(path) as b:
        assert len(b.load()) == 13


def test_a_sqlite_store_with_the_users_own_view_beside_it_still_works(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.sqlite"
    with get_backend(path) as b:
        b.record({"alpha": 0.1})
    conn = sqlite3.connect(path)
    conn.execute("CREATE VIEW mine AS SELECT alpha FROM stet_records")
    conn.close()
    with get_backend(path) as b:
        assert b.has({"alpha": 0.1})
        b.record({"alpha": 0.2})
        assert len(b.load()) == 2


def test_parquet_written_by_pandas_from_a_store_is_still_a_store(tmp_path: Path) -> None:
    """Reading a store with pandas and writing it back keeps its _stet_ columns."""
    path = tmp_path / "runs.parquet"
    with get_backend(path) as b:
        b.record({"alpha": 0.1, "seed": 0})
        b.finish()
    pd.read_parquet(path).to_parquet(path)
    with get_backend(path) as b:
        assert b.has({"alpha": 0.1, "seed": 0})
