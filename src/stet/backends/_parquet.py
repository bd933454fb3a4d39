"""Parquet store: a Parquet file plus an append-only sidecar folded into it regularly."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import _snapshot as saved_index
from .._codec import refuse_surrogate_pairs
from .._fork import close_if_ours, on_fork_child, pid
from .._identity import canonical
from .._index import Index, bulk
from .._json_codec import JsonLinesCodec
from .._locking import StoreLock
from .._logfile import (
    LogFile,
    Snapshot,
    _snapshot,
    atomic_write,
    store_file,
    unchanged_by_descriptor,
)
from .._schema import FUNC_FIELD, RESERVED_PREFIX, is_bookkeeping
from .._sidecar import index_file, os_error, parquet_log_file
from ..errors import CorruptStoreError, StoreError
from ._base import CachedBackend, Record, record_matches
from ._cache import IndexCache, RecordSource
from ._file import lock_path
from ._finish import fold_at_exit, folded

__all__ = ["ParquetBackend", "sidecar_path"]

FOLDED_KEY = b"stet.folded_generation"
#: Schema metadata key marking a Parquet file as a stet store (besides its _stet_ columns).
STORE_KEY = b"stet.store"
#: Fold the sidecar into the Parquet file once it holds this many records, or as many
#: as the file itself (whichever is more), so folding costs O(1) per record on average.
FOLD_MIN = 10_000
#: ... and at most this many: the log's records are kept in memory as they are (see
#: ParquetSource.__init__), so a writer of a ten-million-run store folds every million.
FOLD_MAX = 1_000_000
_BATCH = 65_536  # rows read from the Parquet file at a time
Columns = list[list[str | None]]


def sidecar_path(path: Path) -> Path:
    """Where appended records wait until they are folded into the Parquet file."""
    return parquet_log_file(path)


_warm = False


def _pyarrow() -> Any:
    global _warm
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            "Parquet stores need pyarrow: pip install 'stet[parquet]'"
        ) from None
    if not _warm:
        # pyarrow imports pandas (if installed) lazily on first use; do it now, since
        # folding at interpreter exit cannot import modules that start threads.
        pyarrow.array([], type=pyarrow.string())
        _warm = True
    return pyarrow


def _fold(path: Path) -> None:
    ParquetBackend(path).fold()


class ParquetSource(RecordSource):
    """The records of a Parquet store: its file, and the log beside it (``pending``)
    until folded (see :class:`ParquetBackend`)."""

    def __init__(self, path: Path, fsync: bool, index: Index) -> None:
        self.path = path
        self.fsync = fsync
        self._index = index  # (the cache's: the Parquet file's records)
        # pyarrow (0.1-0.2 s to import) is imported when the Parquet file must be read or
        # written, or a log waits to be folded (folding at interpreter exit must not need
        # new imports); a folded store with a snapshot beside it is read without it.
        self._lock = StoreLock.for_path(lock_path(self.path))
        self._log = LogFile(sidecar_path(self.path), JsonLinesCodec(), self._lock,
                            fsync=self.fsync)
        # Records in the log. This index keeps its rows, to build a probe set from: one
        # built by reading the log again could miss runs this reader took from a log
        # folded (and deleted) since, which its view of the Parquet file does not hold yet.
        self._side = self.pending = Index()
        self._saved: saved_index.Saved | None = None  # the snapshot the index came from
        self._base_snap: Snapshot | None = None
        # The Parquet file as read, open: asked for changes with one fstat a lookup
        self._base_fd, self._base_pid, self._base_looked = -1, pid(), 0.0
        self._checked_snap: Snapshot | None = None  # recognised as ours
        self._base_rows = 0
        self._forked = False  # in a forked child, not read since: read the file afresh
        on_fork_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: a thread of the parent may have left the index half-built."""
        self._forked = True
        self._base_fd, self._base_pid = -1, pid()  # (the parent's: dropped, not closed)

    def __del__(self) -> None:
        close_if_ours(self._base_fd, self._base_pid)

    @property
    def log_path(self) -> Path:
        """The log beside the Parquet file (records not folded yet)."""
        return self._log.path

    # ---------------------------------------------------------------- reading
    def _read_base(
        self, keys_only: bool = False
    ) -> tuple[list[str], Iterator[Columns], str | None]:
        """Field names, columns (batch by batch, read as they are asked for) and folded
        sidecar generation of the Parquet file; ``keys_only``: the key fields and the
        function name only (what the index needs)."""
        pa = _pyarrow()
        try:
            if os.stat(self.path).st_size == 0:
                return [], iter(()), None  # an empty file (made by touch, say): no runs yet
            pf = pa.parquet.ParquetFile(self.path)
            schema = pf.schema_arrow
        except FileNotFoundError:
            return [], iter(()), None
        except (PermissionError, IsADirectoryError) as exc:  # not the file's fault
            raise os_error(self.path, "reading", exc) from None
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(exc) from None
        self._refuse_foreign(schema)
        meta = schema.metadata or {}
        folded = meta.get(FOLDED_KEY)
        header = [str(n) for n in schema.names]
        if keys_only:
            header = [n for n in header if n == FUNC_FIELD or not is_bookkeeping(n)] \
                or header[:1]
        return header, self._batches(pf, header), None if folded is None else folded.decode()

    def _batches(self, pf: Any, header: list[str]) -> Iterator[Columns]:
        # (batch by batch: a million runs read at once peaked at 854 MB above import stet)
        pa = _pyarrow()
        try:
            for batch in pf.iter_batches(batch_size=_BATCH, columns=header):
                columns = []
                for col in batch.columns:
                    values = col.to_pylist()
                    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                        values = [None if v is None else _text(v) for v in values]
                    elif not (pa.types.is_string(col.type)
                              or pa.types.is_large_string(col.type)):
                        values = [None if v is None else canonical(v) for v in values]
                    columns.append(values)
                yield columns
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: BaseException) -> CorruptStoreError:
        return CorruptStoreError(
            f"{self.path} is not a readable Parquet store ({exc}). The file was left "
            f"untouched; move it aside or point the store at another path."
        )

    def _refuse_foreign(self, schema: Any) -> None:
        """Raise :class:`CorruptStoreError` unless the schema is a stet store's: one with a
        ``_stet_`` column (as every store has, 0.0.2's included) or stet's metadata."""
        names = [str(n) for n in schema.names]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise CorruptStoreError(
                f"{self.path} is not a readable stet Parquet store: it has more than one "
                f"column named {', '.join(map(repr, twice))[:200]} (a record holds each "
                f"field once). The file was left untouched; move it aside or point the "
                f"store at another path."
            )
        meta = schema.metadata or {}
        if STORE_KEY in meta or FOLDED_KEY in meta:
            return
        if any(str(n).startswith(RESERVED_PREFIX) for n in schema.names):
            return
        shown = ", ".join(map(str, schema.names))[:200] or "none"
        raise CorruptStoreError(
            f"{self.path} is a Parquet file but not a stet store: it has no "
            f"{RESERVED_PREFIX}* column (every stet store, 0.0.2's included, has "
            f"{RESERVED_PREFIX}timestamp; its columns: {shown}). The file was left "
            f"untouched; point the store at another path."
        )

    def _check_base(self) -> None:
        """Refuse a foreign Parquet file before taking any lock (a lock file would be
        created beside it): its footer alone is read, once per version of the file (none
        when the snapshot beside it, which stet wrote, describes this very file)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        snap = _snapshot(st)
        if snap == self._checked_snap or st.st_size == 0:
            return
        if self._restorable(st, digests=False) is not None:
            self._checked_snap = snap
            return
        pa = _pyarrow()
        try:
            schema = pa.parquet.read_schema(self.path)
        except FileNotFoundError:
            return
        except (PermissionError, IsADirectoryError) as exc:  # not the file's fault
            raise os_error(self.path, "reading", exc) from None
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(exc) from None
        self._refuse_foreign(schema)
        self._checked_snap = snap

    #: Runs are only ever removed from the store by writing a new Parquet file in its
    #: place (a fold, a rewrite; the log is deleted after), which its descriptor tells:
    #: while it is unchanged, every run read from it and from the log is still there.
    cheap_hits = True

    def holds_index(self) -> bool:
        return self._base_unchanged()

    def poll(self, index: Index) -> None:
        if self._base_unchanged() and self._log.unchanged():
            return
        self._check_base()
        if self._log.path.exists():
            _pyarrow()  # a log to fold, at exit maybe: import now (see __init__)
        # Both files under one shared lock: a fold (exclusive) cannot slip in between
        # reading the Parquet file and reading the sidecar.
        with self._lock.shared():
            self._poll_base(index)
            self._log.poll(self._side)

    def _base_unchanged(self) -> bool:
        if self._forked:
            return False
        if unchanged_by_descriptor(self._base_fd, self._base_snap, self._base_looked):
            return True
        try:
            snap: Snapshot | None = _snapshot(os.stat(self.path))
        except FileNotFoundError:
            snap = None
        if snap != self._base_snap:
            return False
        self._base_looked = time.monotonic()
        return True

    def _hold_base(self, st: os.stat_result | None) -> None:
        """Hold the Parquet file just read (``st``) open, to ask it for changes; none when
        it is gone or another file took its place meanwhile."""
        close_if_ours(self._base_fd, self._base_pid)
        self._base_fd, self._base_pid = -1, pid()
        if st is None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return
        if os.fstat(fd).st_ino == st.st_ino:
            self._base_fd, self._base_looked = fd, time.monotonic()
        else:
            os.close(fd)

    def _poll_base(self, index: Index) -> None:
        if self._base_unchanged():
            return
        with self._lock.shared():
            self._load_base(index)

    def _load_base(self, index: Index) -> None:
        """Reread the Parquet file (lock held)."""
        try:
            st: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            st = None
        snap = None if st is None else _snapshot(st)
        index.clear()
        self._saved = saved = None if st is None else self._restorable(st)
        if saved is not None:
            index.load_state(saved.state)
            self._base_rows = saved.state.count
            folded = saved.store["folded"]
        else:
            header, batches, folded = self._read_base(keys_only=True) if snap \
                else ([], iter(()), None)
            self._base_rows = 0
            with bulk():
                for columns in batches:
                    if columns and not any(None in c for c in columns):
                        index.add_columns(header, columns)  # type: ignore[arg-type]
                    elif columns:
                        index.add_rows(header, list(zip(*columns, strict=True)))
                    self._base_rows += len(columns[0]) if columns else 0
        self._base_snap = snap
        self._hold_base(st)
        self._forked = False
        if folded != self._log.ignored_head:
            self._log.ignored_head = folded
            self._log.close()
            self._side.clear()

    def _restorable(self, st: os.stat_result, digests: bool = True,
                    ) -> saved_index.Saved | None:
        """The snapshot beside the store if it describes this very file (the same file,
        size, modification time and bytes: a Parquet file is only ever replaced whole);
        ``digests=False``: only whether it does (its digests are not read)."""
        saved = saved_index.load(self.path, digests=False)
        if saved is None:
            return None
        d = saved.store
        folded = d.get("folded")
        if (d.get("kind") != "parquet" or d.get("dev") != st.st_dev
                or d.get("ino") != st.st_ino or d.get("size") != st.st_size
                or d.get("mtime_ns") != st.st_mtime_ns
                or not (folded is None or isinstance(folded, str))):
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if saved_index.checksum(fd, st.st_size) != d.get("crc32"):
                return None
        finally:
            os.close(fd)
        if not digests:
            return saved
        full = saved_index.load(self.path)
        return full if full is not None and full.store == d else None

    def save_snapshot(self, index: Index) -> None:
        """Save the Parquet file's index beside it (after a fold, or at exit when it was
        read in full); the log's records are not in it (they are folded in next)."""
        if self._forked or self._base_snap is None or index.count != self._base_rows:
            return
        if not saved_index.stale_enough(index, self._saved):
            return
        with self._lock.shared():
            st = os.stat(self.path)
            if _snapshot(st) != self._base_snap:
                return  # replaced since it was read: its reader saves it
            fd = os.open(self.path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_ino != st.st_ino:
                    return
                description = {"kind": "parquet", "dev": st.st_dev, "ino": st.st_ino,
                               "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                               "crc32": saved_index.checksum(fd, st.st_size),
                               "folded": self._log.ignored_head}
            finally:
                os.close(fd)
            saved_index.save(self.path, index, description, self._saved)
            self._saved = saved_index.load(self.path)

    def check_new_run(self, fields: tuple[str, ...], texts: tuple[str, ...]) -> None:
        # Not done: the run is about to be made. Refuse now what could never be stored,
        # and import pyarrow now (a store read from its snapshot has not needed it), so
        # that a missing pyarrow is said before the function runs, not after.
        _pyarrow()
        self._check_names(fields)
        # (the sidecar is JSON Lines: JSON cannot keep a surrogate pair as two characters)
        refuse_surrogate_pairs(self.path, "Parquet", zip(fields, texts, strict=True))

    def _check_names(self, names: Any) -> None:
        """Raise :class:`StoreError` for a field name Parquet cannot hold: one with a lone
        surrogate (a column's name is UTF-8 text, which cannot encode one). Values with
        one are kept (in a binary column, see :func:`_column`)."""
        for name in names:
            if name.isascii():
                continue
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise StoreError(
                    f"cannot record in Parquet store {self.path}: the name of parameter "
                    f"{name!r:.80} holds a lone surrogate, which cannot be a Parquet "
                    f"column's name (UTF-8 text). Nothing was recorded; rename the "
                    f"parameter (or use a JSON or SQLite store, which keep such names)."
                ) from None

    def records(self) -> list[Record]:
        """Every record, read afresh: the Parquet file's and the log's (unless the file
        has folded the log in already). Changes nothing this source knows: a probe of
        the index calls it at any time."""
        return self._read_all()[0]

    def _read_all(self) -> tuple[list[Record], str | None]:
        """Every record, read afresh, and the generation of the log the file folded."""
        self._check_base()
        with self._lock.shared():
            header, batches, folded = self._read_base()
            base = [{k: v for k, v in zip(header, r, strict=True) if v is not None}
                    for columns in batches for r in zip(*columns, strict=True)]
            return base + self._log.records(stale=folded), folded

    # ---------------------------------------------------------------- writing
    def append(self, record: Record, index: Index) -> None:
        _pyarrow()  # (the log will be folded, at exit maybe: see __init__)
        self._check_names(record)
        refuse_surrogate_pairs(self.path, "Parquet", (
            (k, v) for k, v in record.items() if not k.startswith(RESERVED_PREFIX)))
        self._check_base()
        with self._lock.exclusive():
            self._poll_base(index)
            self._log.append(record, self._side)
        fold_at_exit(self.path, _fold)
        if self._log.count > max(FOLD_MIN, min(self._base_rows, FOLD_MAX)):
            self.fold()

    def fold(self) -> None:
        """Fold the sidecar into the Parquet file and delete it (atomic, locked)."""
        self._check_base()
        with self._lock.exclusive():
            self._load_base(self._index)
            self._log.poll(self._side)
            if self._log.path.exists():
                self._rewrite(lambda r: True)
            folded(self.path)

    def remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        self._check_base()
        with self._lock.exclusive():
            if not self.path.exists() and not self._log.path.exists():
                return 0
            return self._rewrite(lambda r: not record_matches(r, func, fields))

    def _rewrite(self, keep: Any) -> int:
        """Write base + sidecar records that ``keep`` accepts as the new Parquet file."""
        self._log.poll(self._side)
        records, self._log.ignored_head = self._read_all()
        # Stamp the new file with the generation of the sidecar it replaces (stale or not),
        # so that a copy of that sidecar left by a kill below is ignored from now on.
        gen = self._log.head if self._log.head is not None else self._log.ignored_head
        kept = [r for r in records if keep(r)]
        pa = _pyarrow()
        names: dict[str, None] = {}
        for r in kept:
            names.update(dict.fromkeys(r))
        if not names:
            names = dict.fromkeys(_existing_columns(self.path, pa))
        columns = {n: _column(pa, [r.get(n) for r in kept]) for n in names}
        table = pa.table(columns) if columns else pa.table({})
        meta = {STORE_KEY: b"1"}
        if gen is not None:
            meta[FOLDED_KEY] = str(gen).encode()
        table = table.replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        try:
            pa.parquet.write_table(table, sink)
        except pa.ArrowException as exc:  # pragma: no cover - all columns are strings
            raise StoreError(f"cannot write Parquet store {self.path}: {exc}") from None
        with contextlib.suppress(FileNotFoundError):  # (it describes the old file)
            os.unlink(index_file(self.path))
        atomic_write(self.path, sink.getvalue().to_pybytes(), fsync=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._log.path)
        self._log.close()
        self._side.clear()
        self._load_base(self._index)
        with contextlib.suppress(OSError):  # (a cache: one that cannot be written is not)
            self.save_snapshot(self._index)
        return len(records) - len(kept)

    def close(self, index: Index) -> None:
        self._log.close()
        self._side.clear()
        index.clear()
        self._base_snap = None
        self._hold_base(None)


class ParquetBackend(CachedBackend):
    """Store experiment records in a Parquet file.

    Requires the parquet extra: ``pip install 'stet[parquet]'`` (pyarrow).

    Parquet files cannot be appended to, so records are first appended to a sidecar
    (``<store>.stet-log``, JSON Lines) and folded into the Parquet file when the process
    exits normally and whenever the sidecar grows as large as the file. stet's readers
    always see both; after a normal exit the Parquet file alone holds every run, readable
    by ``pandas.read_parquet``. All columns are strings (binary for text holding a lone
    surrogate, which UTF-8 cannot encode); an absent field is null.

    Args:
        path: Path to the ``.parquet`` file.
        fsync: fsync each record (for power loss); default from :func:`stet.configure`.
    """

    def __init__(self, path: Path | str, *, fsync: bool | None = None) -> None:
        super().__init__(store_file(path), fsync=fsync)  # (a symlink: its target's sidecars)
        index = Index()
        self._source = ParquetSource(self.path, self.fsync, index)
        self._cache = IndexCache(self._source, self.path, index)

    def finish(self) -> None:
        """Fold the sidecar, if there is one."""
        if self._source.log_path.exists():
            self.fold()

    def fold(self) -> None:
        """Fold the sidecar into the Parquet file and delete it (atomic, locked)."""
        with self._cache.mutex:
            self._source.fold()

    def exists(self) -> bool:
        return self.path.exists() or self._source.log_path.exists()


def _column(pa: Any, values: list[str | None]) -> Any:
    """A string column; a binary one (UTF-8 bytes, ``surrogatepass``) if some text holds a
    lone surrogate, which UTF-8 text cannot encode: such values round-trip too."""
    try:
        return pa.array(values, type=pa.string())
    except UnicodeEncodeError:
        return pa.array([None if v is None else v.encode("utf-8", "surrogatepass")
                         for v in values], type=pa.binary())


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return canonical(value)


def _existing_columns(path: Path, pa: Any) -> list[str]:
    try:
        return list(pa.parquet.read_schema(path).names)
    except (FileNotFoundError, OSError, pa.ArrowException):
        return []

