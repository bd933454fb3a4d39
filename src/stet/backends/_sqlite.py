"""SQLite store: table ``stet_records`` with one TEXT column per field."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._exit import at_exit, ensure_registered
from .._fs import is_local_filesystem
from .._index import FUNC_FIELD, Index, bulk
from .._pid import pid
from .._sidecar import open_file, os_error, refuse_links
from .._sql import column_list, quote_ident
from ..errors import CorruptStoreError, StoreError
from ._base import IndexedBackend, Record

__all__ = ["SqliteBackend"]

TABLE = "stet_records"
META = "stet_meta"
_BULK = 10_000  # records per transaction of append_records


_open_backends: weakref.WeakSet[SqliteBackend] = weakref.WeakSet()


class _RawFiles:
    """Read-only descriptors of a store's files (the database, its ``-shm``), for reading
    its change counter without SQL; shared by the backends of this process.

    Closing any descriptor of a file drops every POSIX lock this process holds on it,
    SQLite's included: another connection of this process to the store would lose its
    locks, and another process could then rebuild the ``-shm`` that connection has mapped
    (a crash, or worse). So a descriptor is closed only once no backend of this process
    has the store open; a forked child forgets its parent's without closing them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._users: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) -> open backends
        self._fds: dict[tuple[int, int], dict[str, int]] = {}
        self._pending: list[tuple[int, tuple[int, int]]] = []  # leaves from __del__

    def _settle(self) -> None:
        if self._pid != pid():
            self._pid, self._users, self._fds, self._pending = pid(), {}, {}, []
        while self._pending:
            owner, key = self._pending.pop()
            if owner == self._pid:
                self._leave(key)

    def enter(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._settle()
            self._users[key] = self._users.get(key, 0) + 1

    def fd(self, key: tuple[int, int], path: str) -> int:
        """A descriptor of ``path`` (a file of the store ``key``); raises ``OSError``."""
        with self._lock:
            self._settle()
            fds = self._fds.setdefault(key, {})
            fd = fds.get(path)
            if fd is None:
                fd = fds[path] = open_file(Path(path), os.O_RDONLY)  # -shm: not via a link
            return fd

    def leave(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._settle()
            self._leave(key)

    def leave_later(self, key: tuple[int, int]) -> None:
        """:meth:`leave` for ``__del__``, which must not take the lock."""
        self._pending.append((pid(), key))

    def _leave(self, key: tuple[int, int]) -> None:
        users = self._users.get(key, 0) - 1
        if users > 0:
            self._users[key] = users
            return
        self._users.pop(key, None)
        for fd in self._fds.pop(key, {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)


_raw_files = _RawFiles()


def _close_all_at_exit() -> None:
    """Close connections so SQLite folds the WAL into the database file itself."""
    for backend in list(_open_backends):
        backend.close()


at_exit(_close_all_at_exit)


class SqliteBackend(IndexedBackend):
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

    def __init__(self, path: Path | str, *, fsync: bool | None = None) -> None:
        super().__init__(path, fsync=fsync)
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._last_rowid = 0
        self._data_version = -1
        self._generation: str | None = None
        self._columns: list[str] | None = None  # field names, in table column order
        self._schema_version = -1
        # SQLite column names ignore case: a field whose name differs from an existing
        # column's only in case gets a column of its own, named in stet_meta.
        self._field_of: dict[str, str] = {}  # column -> field, where they differ
        self._column_of: dict[str, str] = {}  # field -> column, where they differ
        self._insert_sql: dict[tuple[str, ...], str] = {}
        # Raw read-only descriptor for the header's file change counter (offset 24), which
        # every commit in rollback-journal mode changes (in WAL mode, of the -shm): reading
        # it costs one pread. Owned by _raw_files, never closed here.
        self._raw_fd = -1
        self._raw_wal = False  # the descriptor is of the -shm
        self._file_key: tuple[int, int] | None = None  # entered in _raw_files
        self._counter: bytes | None = None
        self._journal_wal = False
        self._read_only = False  # the connection only reads (see _connect_read_only)

    # ------------------------------------------------------------ connection
    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None and self._pid == pid():
            if not (create and self._read_only):
                return self._conn
            self.close()  # opened read-only, and now to be written: open it again
        if self._pid != pid():
            self._conn = None  # never reuse a connection across fork
            self._raw_fd = -1
            self._file_key = None
            self._counter = None
        if not create and not self.path.exists():
            return None
        refuse_links(self.path, ("-wal", "-shm", "-journal"))  # SQLite would follow them
        if not create and not _writable(self.path):
            return self._connect_read_only()
        self._read_only = False
        try:
            conn = sqlite3.connect(
                self.path, timeout=600, isolation_level=None, check_same_thread=False
            )
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
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        try:
            st = os.stat(self.path)
        except OSError:
            key = None
        else:
            key = (st.st_dev, st.st_ino)
            _raw_files.enter(key)
        self._conn, self._pid, self._file_key = conn, pid(), key
        self._data_version = -1
        _open_backends.add(self)
        ensure_registered()
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that only reads, for a store this process cannot write (a shared
        directory, a read-only mount): ``stet status``, ``stet.load`` and skipping done
        runs work there. A WAL database needs its ``-shm`` to be read in place; where
        there is none and none can be made, and no ``-wal`` holds commits the file does
        not, the file alone is the whole store and is read as it is (``immutable``)."""
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path))
        if not os.access(self.path, os.R_OK, effective_ids=True):
            raise os_error(self.path, "reading", PermissionError(13, "Permission denied"))
        conn = None
        try:
            for options in ("?mode=ro", "?mode=ro&immutable=1"):
                if options.endswith("immutable=1") and os.path.exists(f"{self.path}-wal"):
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
                    f"in {self.path}-wal, which this process cannot open. Read it as a user "
                    f"who can write its directory, or ask its owner to finish the sweep.")
            self._table_columns(conn)  # a foreign database raises here, untouched
            self._journal_wal = False
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        self._conn, self._pid, self._file_key = conn, pid(), None
        self._read_only = True
        self._data_version = -1
        _open_backends.add(self)
        return conn

    def _load_field_map(self, conn: sqlite3.Connection) -> None:
        try:
            rows = conn.execute(
                f"SELECT key, value FROM {META} WHERE key LIKE 'column:%'"
            ).fetchall()
        except sqlite3.OperationalError:
            rows = []
        self._field_of = {str(k)[len("column:"):]: str(v) for k, v in rows}
        self._column_of = {f: c for c, f in self._field_of.items()}

    def _fields(self, columns: list[str]) -> list[str]:
        return [self._field_of.get(c, c) for c in columns]

    def _column(self, field: str) -> str:
        return self._column_of.get(field, field)

    def _table_columns(self, conn: sqlite3.Connection) -> list[str] | None:
        """Field names of the table's columns (``None``: no table)."""
        self._load_field_map(conn)
        rows = conn.execute(f"PRAGMA table_info({TABLE})").fetchall()
        if not rows:
            tables = conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'"
            ).fetchall()
            foreign = [t[0] for t in tables if not str(t[0]).startswith(("stet_", "sqlite_"))]
            if foreign:
                raise CorruptStoreError(
                    f"{self.path} is a SQLite database but not a stet store (it has tables "
                    f"{', '.join(sorted(foreign))[:200]} and no {TABLE}). The file was left "
                    f"untouched; point the store at another path."
                )
            return None
        return self._fields([r[1] for r in rows])

    # ---------------------------------------------------------------- reading
    def _poll(self, index: Index) -> None:
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
        if self._raw_fd < 0 or self._raw_wal != self._journal_wal or self._pid != pid():
            key = self._file_key
            if key is None or self._pid != pid():
                return None
            target = str(self.path) + "-shm" if self._journal_wal else str(self.path)
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
        self._generation = None
        self._columns = None

    def _catch_up(self, conn: sqlite3.Connection, index: Index) -> None:
        """Fold rows added since the last look into ``index`` (inside a transaction)."""
        gen = self._read_generation(conn)
        if gen != self._generation:
            self._reset(index)
            self._generation = gen
        schema = conn.execute("PRAGMA schema_version").fetchone()[0]
        if self._columns is None or schema != self._schema_version:
            self._columns = self._table_columns(conn)  # another process may have added some
            self._schema_version = schema
            if self._columns is None:
                return
        # Only what the index needs: key fields and the function (not timestamps, results)
        wanted = [c for c in self._columns if c == FUNC_FIELD or not c.startswith("_stet_")]
        if not wanted:
            wanted = self._columns[:1]
        select = column_list(self._column(c) for c in wanted)
        cur = conn.execute(
            f"SELECT rowid, {select} FROM {TABLE} WHERE rowid > ? ORDER BY rowid",
            (self._last_rowid,),
        )
        header = wanted
        with bulk():
            rows = cur.fetchall()
            if not rows:
                return
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

    def _records(self) -> list[Record]:
        conn = self._connect(create=False)
        if conn is None:
            return []
        try:
            if self._table_columns(conn) is None:
                return []
            cur = conn.execute(f"SELECT * FROM {TABLE} ORDER BY rowid")
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
    def _append(self, record: Record, index: Index) -> None:
        self._append_many((record,), index)

    def append_records(self, records: Sequence[Record]) -> None:
        """Record many runs, thousands per transaction (one commit each)."""
        with self._mutex:
            for start in range(0, len(records), _BULK):
                self._append_many(records[start:start + _BULK], self._index)

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
                cur = conn.execute(sql, tuple(record.values()))
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
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} "
                f"({', '.join(quote_ident(k) + ' TEXT' for k in _case_distinct(record))})"
            )
            cols = self._table_columns(conn) or []
        self._insert_sql.clear()
        for k in record:
            if k in cols:
                continue
            taken = {self._column(c).lower() for c in cols}
            column, n = k, 1
            while column.lower() in taken:
                n += 1
                column = f"{k}__{n}"
            if column != k:
                conn.execute(f"INSERT INTO {META} (key, value) VALUES (?, ?)",
                             ("column:" + column, k))
                self._field_of[column], self._column_of[k] = k, column
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {quote_ident(column)} TEXT")
            cols.append(k)
        self._columns = cols

    def _remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        conn = self._connect(create=False)
        if conn is None:
            return 0
        n = 0
        with self._write_transaction(conn):
            cols = self._table_columns(conn)
            if cols is None or any(k not in cols for k in fields):
                return 0
            where = [f"{quote_ident(self._column(k))} = ?" for k in fields]
            params: list[Any] = list(fields.values())
            if func is not None and "_stet_func" in cols:
                where.append("(_stet_func IS NULL OR _stet_func = '' OR _stet_func = ?)")
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

    def _error(self, exc: sqlite3.Error) -> StoreError:
        if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return StoreError(f"SQLite store {self.path} refused a write ({exc}); the store "
                              f"was left as it was.")
        if isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc)
        ):
            return StoreError(f"SQLite store {self.path} stayed locked by another process "
                              f"for too long ({exc}); try again.")
        advice = _NOT_CORRUPT.get(getattr(exc, "sqlite_errorcode", 0) & 0xFF)
        if advice is not None:  # the file is fine; the disk or the permissions are not
            return StoreError(f"SQLite store {self.path}: {exc}; {advice}. The store was "
                              f"left as it was.")
        return CorruptStoreError(
            f"{self.path} is not a readable SQLite store ({exc}). The file was left "
            f"untouched; move it aside or point the store at another path."
        )

    def finish(self) -> None:
        """Fold the WAL into the database file (if no other process is using it)."""
        if Path(str(self.path) + "-wal").exists():
            conn = self._connect(create=False)
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for others
            self.close()

    def __del__(self) -> None:
        key = getattr(self, "_file_key", None)
        if key is not None and self._pid == pid():
            _raw_files.leave_later(key)

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None and self._pid == pid():
                self._conn.close()
                if self._file_key is not None:
                    _raw_files.leave(self._file_key)
            self._conn = None
            self._file_key = None
            self._raw_fd = -1
            self._reset(self._index)
            self._data_version = -1


#: SQLite's primary result codes for failures of the disk or of permissions, not of the
#: file's contents (https://sqlite.org/rescode.html), and what to do about each.
_NOT_CORRUPT = {
    3: "check the permissions of the store and of its directory",  # SQLITE_PERM
    8: "the store or its directory cannot be written: check their permissions, or "
       "remount the filesystem read-write",  # SQLITE_READONLY
    10: "the disk reported an error: check it, then try again",  # SQLITE_IOERR
    13: "the disk is full: free some space and try again",  # SQLITE_FULL
    14: "check the store's directory exists and can be written",  # SQLITE_CANTOPEN
}


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


def _case_distinct(record: Record) -> list[str]:
    """The record's fields whose names differ case-insensitively (first of each)."""
    seen: set[str] = set()
    out = []
    for k in record:
        if k.lower() not in seen:
            seen.add(k.lower())
            out.append(k)
    return out


def _text(value: Any) -> str:
    from .._identity import canonical

    return canonical(value)
