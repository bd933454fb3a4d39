"""The backend interface, and the indexed backend every built-in store is built on."""

from __future__ import annotations

import datetime as _dt
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._claims import ClaimFile, Claims
from .._config import settings
from .._fork import RLock
from .._identity import canonical
from .._index import Index
from .._schema import FUNC_FIELD, TIMESTAMP_FIELD, Record
from .._sidecar import check_writable, os_error, reraise_as_store_error, sidecar

__all__ = ["BaseBackend", "FailureLog", "IndexedBackend", "Record", "record_matches", "utc_now"]


def utc_now() -> str:
    """The current UTC time in ISO 8601, as in ``_stet_timestamp``."""
    return _dt.datetime.now(_dt.UTC).isoformat()


def canonical_fields(key_dict: Mapping[str, Any]) -> Record:
    """``key_dict`` with every value as canonical text; names must be strings."""
    out: Record = {}
    for k, v in key_dict.items():
        if not isinstance(k, str) or not k:
            raise TypeError(f"field names must be non-empty strings, not {k!r}")
        if "\x00" in k:
            raise TypeError(f"field name {k!r} holds a NUL character")
        out[k] = canonical(v)
    return out


def record_matches(record: Mapping[str, str], func: str | None, fields: Mapping[str, str]) -> bool:
    """SPEC matching: function empty or equal (``func=None``: any), every field equal."""
    if func is not None:
        rf = record.get(FUNC_FIELD) or ""
        if rf and rf != func:
            return False
    return all(record.get(k) == v for k, v in fields.items())


class BaseBackend(ABC):
    """Abstract base class defining the backend interface.

    All backends must implement :meth:`has`, :meth:`record`, :meth:`load`,
    :meth:`remove`, and :meth:`clear`. The decorator uses :meth:`contains_run` and
    :meth:`append_record`, which a custom backend gets for free from those five.

    Args:
        path: Path to the store file.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @abstractmethod
    def has(self, key_dict: dict[str, Any]) -> bool:
        """Check if a key combination exists in the store.

        Args:
            key_dict: Parameter names and values to look up.

        Returns:
            True if this combination has been recorded, False otherwise.
        """

    @abstractmethod
    def record(self, key_dict: dict[str, Any]) -> None:
        """Write a key combination to the store.

        Adds ``_stet_timestamp`` with the current UTC time.

        Args:
            key_dict: Parameter names and values to record.
        """

    @abstractmethod
    def load(self) -> list[dict[str, Any]]:
        """Return all stored records.

        Returns:
            List of dicts, each representing one recorded experiment run.
        """

    @abstractmethod
    def remove(self, key_dict: dict[str, Any]) -> Any:
        """Remove a specific key combination from the store.

        Args:
            key_dict: The exact key combination to remove.
        """

    @abstractmethod
    def clear(self) -> None:
        """Remove all records from the store."""

    # -- used by the decorator; built-in backends answer from their index ----------
    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        """Whether a run of ``func`` with these field texts is recorded.

        ``fields`` are sorted; ``texts`` are canonical texts in the same order.
        """
        return self.has(dict(zip(fields, texts, strict=True)))

    def append_record(self, record: Record) -> None:
        """Record a run given as canonical texts, bookkeeping fields included."""
        self.record(dict(record))

    def append_records(self, records: Sequence[Record]) -> None:
        """Record many runs (as :meth:`append_record` does), in order. Stores that can
        write many at once do (PostgreSQL: thousands per statement); for copies."""
        for record in records:
            self.append_record(record)

    def exists(self) -> bool:
        """Whether the store exists yet (a store is created by its first record)."""
        return self.path.exists()

    def check_writable(self) -> None:  # noqa: B027 - optional for custom backends
        """Raise :class:`~stet.errors.StoreError` if a run's record could not be written;
        asked before a run starts, so that a function never runs only for its record to
        be lost. The default checks nothing."""

    # -- claims and failures: beside the store file unless a backend does better ----
    def claims(self) -> Claims:
        """The claims of this store (see :mod:`stet._claims`)."""
        cached: Claims | None = getattr(self, "_claims_cached", None)
        if cached is None:  # (a forked child keeps it: it forgets the parent's claims)
            cached = self._claims_cached = ClaimFile.for_path(sidecar(self.path, ".claims"))
        return cached

    def _failure_log(self) -> FailureLog:
        log: FailureLog | None = getattr(self, "_failures_cached", None)
        if log is None:
            log = FailureLog(sidecar(self.path, ".failures.jsonl"),
                             sidecar(self.path, ".lock"))
            self._failures_cached = log
        return log

    def append_failure(self, record: Record) -> None:
        """Record a failed run (kept apart from completed runs)."""
        self._failure_log().append(record)

    def contains_failure(
        self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]
    ) -> bool:
        """Whether a failure of this run is recorded."""
        return self._failure_log().contains(func, fields, texts)

    def failures(self) -> list[Record]:
        """Every recorded failure, oldest first."""
        return self._failure_log().records()

    def remove_failures(self, func: str | None, fields: Record) -> int:
        """Forget recorded failures of matching runs."""
        return self._failure_log().remove(func, fields)

    def finish(self) -> None:  # noqa: B027 - optional for custom backends
        """Make the store file alone hold every run (fold sidecars); done at exit."""

    def close(self) -> None:  # noqa: B027 - optional for custom backends
        """Release files and connections; the backend reopens them if used again."""

    def __enter__(self) -> BaseBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FailureLog:
    """Failed runs of a store, in an append-only JSON Lines file with its own index."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        from .._json_codec import JsonLinesCodec
        from .._locking import StoreLock
        from .._logfile import LogFile

        self.path = path
        self._index = Index()
        self._mutex = RLock()  # (stet._fork's: unheld in a forked child)
        self._log = LogFile(path, JsonLinesCodec(),
                            StoreLock.for_path(lock_path),
                            fsync=settings.fsync)

    def append(self, record: Record) -> None:
        with self._mutex, reraise_as_store_error(self.path, "recording a failure in"):
            self._log.append(record, self._index)

    def contains(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        with self._mutex:
            try:
                self._log.poll(self._index)
            except OSError as exc:
                raise os_error(self.path, "reading", exc) from exc
            return self._index.contains(func, fields, texts)

    def records(self) -> list[Record]:
        with reraise_as_store_error(self.path, "reading"):
            return self._log.records()

    def remove(self, func: str | None, fields: Record) -> int:
        with self._mutex, reraise_as_store_error(self.path, "removing failures from"):
            return self._log.rewrite(lambda r: not record_matches(r, func, fields),
                                     self._index)


class IndexedBackend(BaseBackend):
    """A backend that answers lookups from an in-memory :class:`~stet._index.Index`.

    Subclasses implement four primitives; this class does the rest, thread-safely.
    """

    def __init__(self, path: Path | str, *, fsync: bool | None = None) -> None:
        super().__init__(path)
        self.fsync = settings.fsync if fsync is None else fsync
        self._index = Index()
        self._mutex = RLock()  # (stet._fork's: unheld in a forked child)

    # -- primitives --------------------------------------------------------------
    @abstractmethod
    def _poll(self, index: Index) -> None:
        """Bring ``index`` up to date with the store (cheap when nothing changed)."""

    @abstractmethod
    def _append(self, record: Record, index: Index) -> None:
        """Durably add ``record`` to the store and to ``index`` (after catching up)."""

    @abstractmethod
    def _remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        """Remove matching records atomically; rebuild ``index``; return how many."""

    @abstractmethod
    def _records(self) -> list[Record]:
        """Every record, read afresh from the store."""

    # -- the interface -----------------------------------------------------------
    def check_writable(self) -> None:
        """Raise :class:`~stet.errors.StoreError` unless the store file (or its directory,
        if it does not exist yet), its directory and the sidecars a run writes can be
        written by this process (see :func:`stet._sidecar.check_writable`)."""
        if isinstance(self.path, Path):  # (a PostgreSQL store is a URL)
            check_writable(self.path)

    # An OSError (a full disk, a vanished mount) becomes a StoreError naming the store;
    # try/except costs nothing when nothing is raised (these are the hot paths).
    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        with self._mutex:
            try:
                self._poll(self._index)
            except OSError as exc:
                raise os_error(self.path, "reading", exc) from exc
            return self._index.contains(func, fields, texts)

    def contains_any(self, fields: Record) -> bool:
        """Whether any record (of any function) holds these field texts."""
        names = tuple(sorted(fields))
        with self._mutex:
            try:
                self._poll(self._index)
            except OSError as exc:
                raise os_error(self.path, "reading", exc) from exc
            return self._index.contains_any(names, tuple(fields[n] for n in names))

    def append_record(self, record: Record) -> None:
        with self._mutex:
            try:
                self._append(record, self._index)
            except OSError as exc:
                raise os_error(self.path, "recording a run in", exc) from exc

    def has(self, key_dict: dict[str, Any]) -> bool:
        """Check if key combination exists in the store (recorded by any function).

        Args:
            key_dict: Parameter names and values to look up.

        Returns:
            True if this combination has been recorded, False otherwise.
        """
        return self.contains_any(canonical_fields(key_dict))

    def record(self, key_dict: dict[str, Any]) -> None:
        """Append a key combination to the store, with ``_stet_timestamp`` (UTC now).

        Args:
            key_dict: Parameter names and values to record.
        """
        rec = canonical_fields(key_dict)
        rec.setdefault(TIMESTAMP_FIELD, utc_now())
        self.append_record(rec)

    def load(self) -> list[dict[str, Any]]:
        """Return all records in the store, as dicts of field name to text.

        Returns:
            List of dicts, each representing one recorded experiment run.
        """
        with self._mutex, reraise_as_store_error(self.path, "reading"):
            return list(self._records())

    def remove(self, key_dict: dict[str, Any]) -> int:
        """Remove every record holding this key combination (of any function).

        Args:
            key_dict: The exact key combination to remove.

        Returns:
            How many records were removed.
        """
        return self.remove_where(None, canonical_fields(key_dict))

    def remove_where(self, func: str | None, fields: Record) -> int:
        """Remove records of ``func`` (``None``: any) holding these field texts."""
        with self._mutex, reraise_as_store_error(self.path, "removing records from"):
            return self._remove_where(func, fields, self._index)

    def clear(self) -> None:
        """Remove all records from the store (the file is replaced atomically)."""
        self.remove_where(None, {})

    def __len__(self) -> int:
        with self._mutex, reraise_as_store_error(self.path, "reading"):
            self._poll(self._index)
            return self._index.count

