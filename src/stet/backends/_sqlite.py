"""SQLite store: table ``stet_records`` with one TEXT column per field."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._codec import is_utf8
from .._exit import ensure_registered
from .._fork import on_fork_child
from .._fs import is_local_filesystem
from .._index import Index, bulk
from .._logfile import store_file
from .._schema import FUNC_FIELD, RESERVED_PREFIX
from .._sidecar import (
    SQLITE_JOURNALS,
    SQLITE_SHM,
    SQLITE_WAL,
    os_error,
    refuse_links,
    sidecar,
)
from .._snapshot import Saved
from .._sql import column_list, quote_ident
from ..errors import CorruptStoreError, StoreError
from . import _sqlite_snapshot
from ._base import CachedBackend, Capabilities, Record
from ._cache import IndexCache, RecordSource
from ._finish import close_at_exit
from ._sqlite_files import raw_files as _raw_files

__all__ = ["SqliteBackend"]

TABLE = "stet_records"
META = "stet_meta"
_BULK = 10_000  # records per transaction of append_records
_BATCH = 50_000  # rows fetched at a time when reading the table




class SqliteSource(RecordSource):
    """The records of a SQLite database, kept in step with ``index`` (see
    :class:`SqliteBackend`)."""

    def __init__(self, path: Path, fsync: bool, index: Index) -> None:
        self.path = path
        self.fsync = fsync
        self._index = index  # (the cache's: reset when the connection is dropped)
        self._conn: sqlite3.Connection | None = None
        self._last_rowid = 0
        self._saved: Saved | None = None  # the snapshot the index came from
        # Rows changed or deleted so far (see _sqlite_snapshot), as of the last catch-up;
        # None: not counted. _watching: this connection made sure they are counted.
        self._changed: int | None = None
        self._watching = False
        self._data_version = -1
        self._generation: str | None = None
        self._columns: list[str] | None = None  # field names, in table column order
        self._schema_version = -1
        # SQLite column names ignore case: a field whose name differs from an existing
        # column's only in case gets a column of its own, named in stet_meta.
        self._field_of: dict[str, str] = {}  # column -> field, where they differ
        self._column_of: dict[str, str] = {}  # field -> column, where they differ
        self._insert_sql: dict[tuple[str, ...], str] = {}
        # How the row id is named in SQL: "rowid" unless a column of that name (from a
        # store written before such fields got columns of their own) hides it; None when
        # every alias is hidden (then each change reloads the whole table).
        self._rowid: str | None = "rowid"
        # Raw read-only descriptor for the header's file change counter (offset 24), which
        # every commit in rollback-journal mode changes (in WAL mode, of the -shm): reading
        # it costs one pread. Owned by _raw_files, never closed here.
        self._raw_fd = -1
        self._raw_wal = False  # the descriptor is of the -shm
        self._file_key: tuple[int, int] | None = None  # entered in _raw_files
        self._counter: bytes | None = None
        self._journal_wal = False
        self._read_only = False  # the connection only reads (see _connect_read_only)
        on_fork_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: never use the parent's connection (SQLite forbids it) nor
        its descriptors; a thread of the parent may have left the index half-fed."""
        self._conn = None
        self._watching = False
        self._raw_fd = -1
        self._file_key = None
        self._data_version = -1
        self._reset(self._index)

    # ------------------------------------------------------------ connection
    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None:
            if not (create and self._read_only):
                return self._conn
            self.close()  # opened read-only, and now to be written: open it again
        if not create and not self.path.exists():
            return None
        refuse_links(self.path, SQLITE_JOURNALS)  # SQLite would follow them
        if not create and not _writable(self.path):
            return self._connect_read_only()
        self._read_only = False
        try:
            conn = sqlite3.connect(
                self.path, timeout=600, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        try:
            self._prepare(conn)
        except BaseException as exc:
            conn.close()  # (a foreign database: nothing of ours stays open on it)
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._error(exc) from None
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
            raise
        try:
            st = os.stat(self.path)
        except OSError:
            key = None
        else:
            key = (st.st_dev, st.st_ino)
            _raw_files.enter(key)
        self._conn, self._file_key = conn, key
        self._data_version = -1
        ensure_registered()  # (the exit hook closes it: SQLite folds the WAL into the file)
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check that the database is a stet store (or empty), then choose its journal."""
        conn.execute("PRAGMA synchronous=" + ("FULL" if self.fsync else "OFF"))
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        self._table_columns(conn)  # a foreign database raises here, untouched
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode in ("delete", "truncate", "persist"):
            if is_local_filesystem(self.path):
                # WAL: a quarter of the cost per commit; needs memory shared between
                # processes, so only on a filesystem known to be local.
                mode = _switch_to_wal(conn, mode)
            else:
                # A rollback journal (safe on NFS, unlike WAL), kept between commits:
                # half the cost per commit of creating and deleting it each time.
                conn.execute("PRAGMA journal_mode=PERSIST")
        self._journal_wal = mode == "wal"

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that only reads, for a store this process cannot write (a shared
        directory, a read-only mount): ``stet status``, ``stet.load`` and skipping done
        runs work there. A WAL database needs its ``-shm`` to be read in place; where
        there is none and none can be made, and no ``-wal`` holds commits the file does
        not, the file alone is the whole store and is read as it is (``immutable``)."""
        import urllib.parse  # (here: it imports ipaddress, 5 ms, for a read-only open)

        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path))
        if not os.access(self.path, os.R_OK, effective_ids=True):
            raise os_error(self.path, "reading", PermissionError(13, "Permission denied"))
        conn = None
        try:
            for options in ("?mode=ro", "?mode=ro&immutable=1"):
                wal = sidecar(self.path, SQLITE_WAL)
                if options.endswith("immutable=1") and os.path.exists(wal):
                    break
                try:
                    conn = sqlite3.connect(uri + options, uri=True, timeout=600,
                                           isolation_level=None, check_same_thread=False)
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    break
                except sqlite3.OperationalError as exc:
                    if conn is not None:
                        conn.close()
                        conn = None
                    if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in (8, 14):
                        raise  # not about the -shm that cannot be made here
            if conn is None:
                raise StoreError(
                    f"cannot read SQLite store {self.path}: it is in WAL mode with commits "
                    f"in {sidecar(self.path, SQLITE_WAL)}, which this process cannot open. "
                    f"Read it as a user who can write its directory, or ask its owner to "
                    f"finish the sweep.")
            self._table_columns(conn)  # a foreign database raises here, untouched
            self._journal_wal = False
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        self._conn, self._file_key = conn, None
        self._read_only = True
        self._data_version = -1
        return conn

    def _load_field_map(self, conn: sqlite3.Connection) -> None:
        try:
            rows = conn.execute(
                f"SELECT key, value FROM {META} WHERE key LIKE 'column:%'"
            ).fetchall()
        except sqlite3.OperationalError:
            rows = []
        self._field_of = {str(k)[len("column:"):]: _from_sql(v) for k, v in rows}
        self._column_of = {f: c for c, f in self._field_of.items()}

    def _fields(self, columns: list[str]) -> list[str]:
        return [self._field_of.get(c, c) for c in columns]

    def _column(self, field: str) -> str:
        return self._column_of.get(field, field)

    def _table_columns(self, conn: sqlite3.Connection) -> list[str] | None:
        """Field names of the table's columns (``None``: no table yet).

        Raises :class:`CorruptStoreError` for a database that is not a stet store, before
        anything is written to it: one whose ``stet_records`` is not a table of text
        columns, lacks stet's marker (a ``_stet_`` column, or the ``stet_meta`` table
        stet creates along with it), or, with no ``stet_records``, holds anything else.
        """
        objects = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
        kinds = {str(name).lower(): (str(kind), str(sql or "")) for kind, name, sql in objects}
        meta = kinds.get(META)
        if meta is not None:
            self._check_meta(conn, meta[0])
        table = kinds.get(TABLE)
        if table is None:
            others = sorted(f"{kind} {name}" for kind, name, _ in objects
                            if not str(name).lower().startswith("sqlite_")
                            and str(name).lower() != META)
            if others:
                raise self._foreign(f"it holds {', '.join(others)[:200]} and no "
                                    f"{TABLE} table")
            self._load_field_map(conn)
            self._rowid = "rowid"
            return None
        kind, sql = table
        if kind != "table" or not sql.upper().startswith("CREATE TABLE"):
            raise self._foreign(f"its {TABLE} is a {'virtual table' if kind == 'table' else kind}"
                                f", not a table")
        self._load_field_map(conn)
        rows = conn.execute(f"PRAGMA table_xinfo({TABLE})").fetchall()
        for _cid, name, decl, notnull, default, pk, hidden in rows:
            if _affinity(str(decl or "")) not in ("TEXT", "BLOB") or notnull or pk or hidden \
                    or default is not None:
                raise self._foreign(f"its {TABLE} column {name!r:.80} is {decl or 'untyped'}"
                                    f"{' NOT NULL' if notnull else ''}"
                                    f"{' PRIMARY KEY' if pk else ''}"
                                    f"{' with a default' if default is not None else ''}"
                                    f"{' hidden' if hidden else ''}, not plain TEXT as "
                                    f"stet's columns are")
        columns = [str(r[1]) for r in rows]
        fields = self._fields(columns)
        if meta is None and not any(f.startswith(RESERVED_PREFIX) for f in fields):
            raise self._foreign(f"its {TABLE} table has no {RESERVED_PREFIX}* column (every "
                                f"stet store, 0.0.2's included, has {RESERVED_PREFIX}timestamp)"
                                f" and there is no {META} table")
        # The row id, under a name no column shadows (a store written before field names
        # such as "rowid" were given columns of their own may hold one named so).
        taken = {c.lower() for c in columns}
        self._rowid = next((a for a in _ROWID_ALIASES if a not in taken), None)
        return fields

    def _check_meta(self, conn: sqlite3.Connection, kind: str) -> None:
        names = [str(r[1]).lower() for r in conn.execute(f"PRAGMA table_info({META})")]
        if kind != "table" or names != ["key", "value"]:
            raise self._foreign(f"its {META} is not stet's (a table of key and value)")

    def _foreign(self, why: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"{self.path} is a SQLite database but not a stet store: {why}. The file was "
            f"left untouched; point the store at another path (or move the file aside)."
        )

    # ---------------------------------------------------------------- reading
    def poll(self, index: Index) -> None:
        conn = self._connect(create=False)
        if conn is None:
            if self._columns is not None or index.count:
                self._reset(index)
            return
        counter = self._change_counter()
        if counter is not None and counter == self._counter:
            return
        dv = conn.execute("PRAGMA data_version").fetchone()[0]
        if dv == self._data_version:
            self._counter = counter
            return
        try:
            conn.execute("BEGIN")
            self._catch_up(conn, index)
            self._data_version = dv
            self._counter = counter
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _change_counter(self) -> bytes | None:
        """Bytes that change with every commit, read without SQL (``None``: unknown).

        Rollback-journal mode: the database header's file change counter (offset 24).
        WAL mode: the WAL-index header at the start of ``<db>-shm`` (which exists while
        our connection is open). Both are documented parts of SQLite's file formats.
        """
        if self._raw_fd < 0 or self._raw_wal != self._journal_wal:
            key = self._file_key
            if key is None:
                return None
            target = str(sidecar(self.path, SQLITE_SHM)) if self._journal_wal else str(self.path)
            try:
                self._raw_fd = _raw_files.fd(key, target)
            except OSError:
                return None
            self._raw_wal = self._journal_wal
        try:
            return os.pread(self._raw_fd, 48 if self._journal_wal else 4, 0 if
                            self._journal_wal else 24)
        except OSError:
            return None

    def _reset(self, index: Index) -> None:
        self._counter = None
        index.clear()
        self._last_rowid = 0
        self._saved = None
        self._changed = None
        self._generation = None
        self._columns = None

    def _catch_up(self, conn: sqlite3.Connection, index: Index) -> None:
        """Fold rows added since the last look into ``index`` (inside a transaction)."""
        gen = self._read_generation(conn)
        if gen != self._generation:
            self._reset(index)
            self._generation = gen
        self._changed = _sqlite_snapshot.changes(conn, META)
        schema = conn.execute("PRAGMA schema_version").fetchone()[0]
        if self._columns is None or schema != self._schema_version:
            self._columns = self._table_columns(conn)  # another process may have added some
            self._schema_version = schema
            if self._columns is None:
                return
        # Only what the index needs: key fields and the function (not timestamps, results)
        wanted = [c for c in self._columns if c == FUNC_FIELD or not c.startswith(RESERVED_PREFIX)]
        if not wanted:
            wanted = self._columns[:1]
        select = column_list(self._column(c) for c in wanted)
        rowid = self._rowid
        if rowid is not None and not self._last_rowid and not index.count:
            restored = _sqlite_snapshot.restore(
                self.path, conn, index, generation=gen, changed=self._changed, rowid=rowid,
                table=TABLE, select=select, header=wanted, text=_text)
            if restored is not None:
                self._last_rowid, self._saved = restored
        if rowid is None:
            index.clear()  # no way to ask for new rows only: read them all again
            cur = conn.execute(f"SELECT 0, {select} FROM {TABLE}")
        else:
            cur = conn.execute(
                f"SELECT {rowid}, {select} FROM {TABLE} WHERE {rowid} > ? ORDER BY {rowid}",
                (self._last_rowid,),
            )
        header = wanted
        # (in batches: 1,000,000 rows fetched at once peaked at 416 MB above import stet)
        with bulk():
            while rows := cur.fetchmany(_BATCH):
                columns = list(zip(*rows, strict=True))
                self._last_rowid = columns[0][-1]
                data = columns[1:]
                if any(set(map(type, c)) != {str} for c in data):
                    index.add_rows(header, [[None if v is None else _text(v) for v in r[1:]]
                                            for r in rows])
                else:
                    index.add_columns(header, data)

    def _read_generation(self, conn: sqlite3.Connection) -> str | None:
        try:
            row = conn.execute(f"SELECT value FROM {META} WHERE key = 'generation'").fetchone()
        except sqlite3.OperationalError:
            return None  # no meta table (e.g. a store written by stet 0.0.2)
        return None if row is None else str(row[0])

    def records(self) -> list[Record]:
        conn = self._connect(create=False)
        if conn is None:
            return []
        try:
            if self._table_columns(conn) is None:
                return []
            order = f" ORDER BY {self._rowid}" if self._rowid is not None else ""
            cur = conn.execute(f"SELECT * FROM {TABLE}{order}")
            header = self._fields([d[0] for d in cur.description])
            return [
                {k: v if isinstance(v, str) else _text(v) for k, v in zip(header, row,
                                                                          strict=True)
                 if v is not None}
                for row in cur
            ]
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    # ---------------------------------------------------------------- writing
    def append(self, record: Record, index: Index) -> None:
        self._append_many((record,), index)

    def append_many(self, records: Sequence[Record], index: Index) -> None:
        """Record many runs, thousands per transaction (one commit each)."""
        for start in range(0, len(records), _BULK):
            self._append_many(records[start:start + _BULK], index)

    def _append_many(self, records: Sequence[Record], index: Index) -> None:
        if not records:
            return
        conn = self._connect(create=True)
        assert conn is not None
        with self._write_transaction(conn):
            # Nobody can commit while we hold the write lock. If the change counter
            # is what we last saw, nobody did since our last look: no catch-up query.
            before = self._change_counter()
            fresh = before is not None and before == self._counter
            if not fresh:
                self._catch_up(conn, index)
                dv = conn.execute("PRAGMA data_version").fetchone()[0]
            for record in records:
                self._ensure_columns(conn, record)
                fields = tuple(record)
                sql = self._insert_sql.get(fields)
                if sql is None:
                    marks = ", ".join("?" * len(fields))
                    cols = column_list(self._column(f) for f in fields)
                    sql = f"INSERT INTO {TABLE} ({cols}) VALUES ({marks})"
                    self._insert_sql[fields] = sql
                try:
                    cur = conn.execute(sql, tuple(record.values()))
                except UnicodeEncodeError:  # a lone surrogate: kept as a BLOB, see _to_sql
                    cur = conn.execute(sql, tuple(map(_to_sql, record.values())))
            if not self._watching:  # (once per connection; then snapshots can be checked)
                _sqlite_snapshot.watch_changes(conn, TABLE, META)
                self._watching = True
        if not fresh:
            self._data_version = dv  # others' commits, all caught up (ours don't count)
        # Each write transaction adds one to the counter (rollback-journal mode).
        self._counter = _next_counter(before) if before is not None and not self._journal_wal \
            else None
        if cur.lastrowid is not None:
            self._last_rowid = cur.lastrowid
        for record in records:
            index.add(record)

    def _ensure_columns(self, conn: sqlite3.Connection, record: Record) -> None:
        cols = self._columns
        if cols is not None and all(k in cols for k in record):
            return
        if cols is None:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")
            cols = self._table_columns(conn)
        exists = cols is not None
        cols = cols or []
        self._insert_sql.clear()
        taken = {self._column(c).lower() for c in cols}
        new: list[str] = []
        for k in record:
            if k in cols:
                continue
            column = _column_name(k, taken)
            taken.add(column.lower())
            if column != k:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {META} "  # (0.0.2's stores)
                             "(key TEXT PRIMARY KEY, value TEXT)")
                conn.execute(f"INSERT OR REPLACE INTO {META} (key, value) VALUES (?, ?)",
                             ("column:" + column, _to_sql(k)))
                self._field_of[column], self._column_of[k] = k, column
            new.append(column)
            cols.append(k)
        if not exists:
            conn.execute(f"CREATE TABLE {TABLE} "
                         f"({', '.join(quote_ident(c) + ' TEXT' for c in new)})")
        else:
            for column in new:
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {quote_ident(column)} TEXT")
        self._columns = cols

    def remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        conn = self._connect(create=False)
        if conn is None:
            return 0
        n = 0
        with self._write_transaction(conn):
            cols = self._table_columns(conn)
            if cols is None or any(k not in cols for k in fields):
                return 0
            where = [f"{quote_ident(self._column(k))} = ?" for k in fields]
            params: list[Any] = [_to_sql(v) for v in fields.values()]
            if func is not None and FUNC_FIELD in cols:
                f = quote_ident(FUNC_FIELD)
                where.append(f"({f} IS NULL OR {f} = '' OR {f} = ?)")
                params.append(func)
            sql = f"DELETE FROM {TABLE}" + (" WHERE " + " AND ".join(where) if where else "")
            n = conn.execute(sql, params).rowcount
            if n:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {META} "
                             "(key TEXT PRIMARY KEY, value TEXT)")
                conn.execute(
                    f"INSERT INTO {META} (key, value) VALUES ('generation', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (os.urandom(8).hex(),),
                )
        self._reset(index)
        self._data_version = -1
        return max(n, 0)

    @contextlib.contextmanager
    def _write_transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._forget_schema()  # columns added in the transaction are gone
                raise
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    def _forget_schema(self) -> None:
        """Drop what is known of the table's columns (and, with them, the field map):
        the next use reads them again (``_table_columns``)."""
        self._columns = None
        self._insert_sql.clear()
        self._schema_version = -1
        self._watching = False

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """The error to raise for ``exc``: corruption only when SQLite says the file is
        damaged or not a database; a full disk, an I/O error, permissions and locks are
        said as what they are (a write that fails is rolled back: the store is as it was).
        """
        if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return StoreError(f"SQLite store {self.path} refused a write ({exc}); the store "
                              f"was left as it was.")
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or (
            not code and ("locked" in str(exc) or "busy" in str(exc))
        ):
            return StoreError(f"SQLite store {self.path} stayed locked by another process "
                              f"for too long ({exc}); try again.")
        if code == _SQLITE_FULL or (code == _SQLITE_IOERR and self._disk_full()):
            # (An I/O error on a full disk: e.g. no room for the WAL's -shm file.)
            return StoreError(f"cannot use SQLite store {self.path}: the disk is full "
                              f"({exc}). A write in progress was rolled back and the store "
                              f"left as it was; free some space and try again.")
        if code in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN, _SQLITE_AUTH):
            return StoreError(f"cannot write SQLite store {self.path} ({exc}); check the "
                              f"permissions of the file and of its directory (SQLite writes "
                              f"journal files beside it). The store was left as it was.")
        if code in (_SQLITE_IOERR, _SQLITE_NOMEM):
            return StoreError(f"SQLite store {self.path} failed: {exc} (an I/O error, or out "
                              f"of memory). A write in progress was rolled back; check the "
                              f"disk and try again.")
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_FORMAT) or not code:
            return CorruptStoreError(
                f"{self.path} is not a readable SQLite store ({exc}). The file was left "
                f"untouched; move it aside or point the store at another path."
            )
        if "too many columns" in str(exc):
            limit = _column_limit(self._conn)
            return StoreError(f"SQLite store {self.path} cannot take a new field: SQLite "
                              f"allows at most {limit} columns in a table, one per field "
                              f"name ({exc}). The store was left as it was; record runs "
                              f"with many distinct field names in another format.")
        return StoreError(f"SQLite store {self.path} failed: {exc}. A write in progress "
                          f"was rolled back; try again.")

    def _disk_full(self) -> bool:
        """Whether the store's filesystem has (next to) no room left."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < 65536

    def finish(self) -> None:
        """Fold the WAL into the database file (if no other process is using it)."""
        if sidecar(self.path, SQLITE_WAL).exists():
            conn = self._connect(create=False)
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for others
            self.close()

    def save_snapshot(self, index: Index) -> None:
        if self._conn is not None and self._rowid is not None:
            _sqlite_snapshot.save(self.path, index, self._saved, generation=self._generation,
                                  changed=self._changed, last_rowid=self._last_rowid)

    def __del__(self) -> None:
        key = getattr(self, "_file_key", None)
        if key is not None:  # (None in a forked child: its parent's to leave)
            _raw_files.leave_later(key)

    def close(self, index: Index | None = None) -> None:
        if self._conn is not None:  # (a forked child has none: see _after_fork)
            self._conn.close()
            if self._file_key is not None:
                _raw_files.leave(self._file_key)
        self._conn = None
        self._watching = False
        self._file_key = None
        self._raw_fd = -1
        self._reset(self._index)
        self._data_version = -1


class SqliteBackend(CachedBackend):
    """Store experiment records in a SQLite database.

    Uses Python's built-in :mod:`sqlite3`. No extra dependencies required. On a local
    filesystem the database uses WAL mode (folded back into the file when the process
    exits normally); on a network filesystem (NFS, SMB, Lustre, ... or anything not known
    to be local), where WAL does not work, a rollback journal in ``PERSIST`` mode. Each
    record is one committed transaction. Readers follow new
    rows by ``rowid`` and ask ``PRAGMA data_version`` whether anything changed, so a
    lookup reads no rows when nothing did. Removals bump a generation number in
    ``stet_meta`` so that every reader reloads.

    Args:
        path: Path to the ``.sqlite`` / ``.db`` file.
        fsync: fsync each commit (``synchronous=FULL``), for power loss.
    """

    capabilities = Capabilities(shared_claims=True, durable_failures=True,
                                remove_by_match=True, bulk_append=True, durable_plans=True)

    def __init__(self, path: Path | str, *, fsync: bool | None = None) -> None:
        super().__init__(store_file(path), fsync=fsync)  # (a symlink: its target's sidecars)
        index = Index()
        self._source = SqliteSource(self.path, self.fsync, index)
        self._cache = IndexCache(self._source, self.path, index)
        close_at_exit(self)  # (so that SQLite folds the WAL into the database file)

    def finish(self) -> None:
        """Fold the WAL into the database file (if no other process is using it)."""
        with self._cache.mutex:
            self._source.finish()

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        return self._source._connect(create)


def _writable(path: Path) -> bool:
    """Whether this process may write the database and create its journal beside it."""
    return (os.access(path, os.W_OK, effective_ids=True)
            and os.access(path.parent, os.W_OK | os.X_OK, effective_ids=True))


def _switch_to_wal(conn: sqlite3.Connection, mode: str) -> str:
    """Turn on WAL; another process opening the store at the same moment can make SQLite
    answer "database is locked" at once (the busy timeout does not cover it): retry, and
    keep the rollback journal if the store stays busy."""
    for attempt in range(50):
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.01 * (attempt + 1))
    return mode


def _next_counter(counter: bytes) -> bytes:
    return ((int.from_bytes(counter, "big") + 1) & 0xFFFFFFFF).to_bytes(4, "big")


# SQLite's primary result codes (https://sqlite.org/rescode.html)
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM, _SQLITE_READONLY = 3, 5, 6, 7, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_AUTH, _SQLITE_FORMAT, _SQLITE_NOTADB = 23, 24, 26

#: Names SQLite gives the row id; a column so named hides it.
_ROWID_ALIASES = ("rowid", "_rowid_", "oid")
#: Characters of a field name kept in its column's name (the name table keeps the rest).
_NAME_CHARS = 200


def _column_name(field: str, taken: set[str]) -> str:
    """A column name for ``field``: the name itself when SQLite can hold it as it is
    (column names ignore case, the row id's aliases are hidden by a column, and text
    must be UTF-8 without NUL), otherwise a safe name recorded in ``stet_meta``.

    ``taken``: the lowercased names of the table's columns."""
    base = field
    if "\x00" in base or not is_utf8(base) or len(base) > _NAME_CHARS:
        base = "".join("?" if c == "\x00" or "\ud800" <= c <= "\udfff" else c
                       for c in base[:_NAME_CHARS])
    column, n = base, 1
    while column.lower() in taken or column.lower() in _ROWID_ALIASES:
        n += 1
        column = f"{base}__{n}"
    return column


def _column_limit(conn: sqlite3.Connection | None) -> int:
    try:
        if conn is not None:
            return int(conn.getlimit(sqlite3.SQLITE_LIMIT_COLUMN))
        with contextlib.closing(sqlite3.connect(":memory:")) as mem:
            return int(mem.getlimit(sqlite3.SQLITE_LIMIT_COLUMN))
    except (sqlite3.Error, AttributeError):  # pragma: no cover - SQLite's default
        return 2000


def _to_sql(text: str) -> str | bytes:
    """``text`` as SQLite can hold it: text with a lone surrogate (which UTF-8 cannot
    encode) as a BLOB of its bytes in Python's ``surrogatepass`` encoding."""
    return text if is_utf8(text) else text.encode("utf-8", "surrogatepass")


def _from_sql(value: Any) -> str:
    """The text a value read from SQLite stands for (see :func:`_to_sql`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            return value.decode("utf-8", "surrogatepass")
    from .._identity import canonical

    return canonical(value)


def _affinity(decl: str) -> str:
    """The column affinity SQLite gives a declared type (its documented rules)."""
    t = decl.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


def _text(value: Any) -> str:
    return _from_sql(value)
