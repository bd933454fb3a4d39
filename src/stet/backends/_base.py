"""The store interface (:class:`Store`, path-free, with its :class:`Capabilities`), the
file-store base :class:`BaseBackend`, and the cached stores (an index composed over a
record source) the built-in stores are."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Self

from .._claims import ClaimFile, Claims
from .._config import settings
from .._fork import RLock
from .._identity import canonical
from .._index import Index
from .._schema import FUNC_FIELD, TIMESTAMP_FIELD, Record
from .._sidecar import (
    check_writable,
    claims_file,
    failures_file,
    lock_file,
    os_error,
    plan_file,
    reraise_as_store_error,
)
from ._cache import IndexCache
from ._plan import MemoryPlan, PlanFile, PlanLog

__all__ = [
    "BaseBackend",
    "CachedBackend",
    "CachedStore",
    "Capabilities",
    "FailureLog",
    "Record",
    "Store",
    "record_matches",
    "utc_now",
]



def utc_now() -> str:
    """The current UTC time in ISO 8601, as in ``_stet_timestamp``."""
    import datetime as dt  # (at the first record, not at a store's opening: 1-2 ms)

    return dt.datetime.now(dt.UTC).isoformat()


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


class Capabilities(NamedTuple):
    """What a store can do beyond the interface's defaults; declared on the class
    (``capabilities = Capabilities(...)``), read by stet, never probed. Immutable.

    Every flag is ``False`` by default: a store declares only what it implements.
    """

    # (a NamedTuple, not a dataclass: dataclasses imports inspect, 5-10 ms of a store's
    # first use)

    #: :meth:`Store.claims` excludes other processes (and, for a shared store, other
    #: machines); otherwise a run is claimed against this process's calls only.
    shared_claims: bool = False
    #: Failures are kept with the store (other processes and later sessions see them);
    #: otherwise they are kept in memory by the store object.
    durable_failures: bool = False
    #: :meth:`Store.remove_where` removes only the given function's records; otherwise
    #: it removes matching records of every function, through :meth:`Store.remove`.
    remove_by_match: bool = False
    #: A claim also catches up with the store, so :meth:`Store.contains_run_cached` may
    #: answer from what this process already read, and the look after claiming decides.
    claim_catches_up: bool = False
    #: :meth:`Store.append_records` writes many records per write (not one by one).
    bulk_append: bool = False
    #: Plans (:meth:`Store.add_plan`) are kept with the store, so ``stet status`` sees
    #: them from another process or machine; otherwise the store object keeps them.
    durable_plans: bool = False


class _LocalClaims:
    """Claims that exclude nothing beyond this process's calls (which stet's call table
    already serialises): the default of a store without :attr:`~Capabilities.shared_claims`."""

    def try_claim(self, offset: int, info: dict[str, Any]) -> str | None:
        return None

    def wait_claim(self, offset: int, info: dict[str, Any]) -> None:
        return None

    def release(self, offset: int) -> None:
        return None

    def running(self) -> list[dict[str, Any]]:
        return []


class _MemoryFailures:
    """Failed runs kept by the store object (the default of a store without
    :attr:`~Capabilities.durable_failures`)."""

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._mutex = RLock()  # (stet._fork's: unheld in a forked child)

    def append(self, record: Record) -> None:
        with self._mutex:
            self._records.append(dict(record))

    def contains(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        wanted = dict(zip(fields, texts, strict=True))
        with self._mutex:
            return any(record_matches(r, func, wanted) for r in self._records)

    def records(self) -> list[Record]:
        with self._mutex:
            return [dict(r) for r in self._records]

    def remove(self, func: str | None, fields: Record) -> int:
        with self._mutex:
            kept = [r for r in self._records if not record_matches(r, func, fields)]
            n = len(self._records) - len(kept)
            self._records = kept
            return n


class Store(ABC):
    """The interface stet uses to keep runs; path-free (a file, a table, a service).

    A store implements five methods: :meth:`has`, :meth:`record`, :meth:`load`,
    :meth:`remove` and :meth:`clear`. Everything the decorator, :func:`stet.sweep`,
    :func:`stet.load`, :func:`stet.status` and the ``stet`` command call has a default
    built on those five; a store overrides a default to do better, and declares in
    :attr:`capabilities` what it does beyond them. ``stet.testing`` checks a store
    against this contract. Pass a store object as ``@stet.once(store=...)``.
    """

    #: What this store does beyond the defaults (see :class:`Capabilities`).
    capabilities: ClassVar[Capabilities] = Capabilities()

    # -- the five a store implements --------------------------------------------
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

    # -- naming -------------------------------------------------------------------
    def describe(self) -> str:
        """The store as text for messages (never a password)."""
        return type(self).__name__

    # -- runs: used by the decorator and sweep ------------------------------------
    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        """Whether a run of ``func`` with these field texts is recorded: a record of
        ``func`` or of no function, holding every one of these fields with its text
        (fields beyond them do not matter: a narrower key keeps runs done).

        ``fields`` are sorted; ``texts`` are canonical texts in the same order. The
        default asks :meth:`has` (fast when the run is not there) and then looks for a
        record of this function among :meth:`load`'s.
        """
        wanted = dict(zip(fields, texts, strict=True))
        if not self.has(dict(wanted)):
            return False
        return any(record_matches(r, func, wanted) for r in self.load())

    def contains_run_cached(self, func: str, fields: tuple[str, ...],
                            texts: tuple[str, ...]) -> bool:
        """:meth:`contains_run`, allowed to answer from what this process already read
        when the store declares :attr:`~Capabilities.claim_catches_up` (the look after
        claiming is the one that counts); otherwise the same as :meth:`contains_run`."""
        return self.contains_run(func, fields, texts)

    def append_record(self, record: Record) -> None:
        """Record a run given as canonical texts, bookkeeping fields included."""
        self.record(dict(record))

    def append_records(self, records: Sequence[Record]) -> None:
        """Record many runs (as :meth:`append_record` does), in order. Stores that can
        write many at once do (:attr:`~Capabilities.bulk_append`); for copies."""
        for record in records:
            self.append_record(record)

    def remove_where(self, func: str | None, fields: Record) -> int:
        """Remove records of ``func`` (``None``: any) holding these field texts; return
        how many, or -1 when the store does not say. Without
        :attr:`~Capabilities.remove_by_match`, :meth:`remove` removes matching records
        of every function."""
        removed = self.remove(dict(fields))
        return removed if isinstance(removed, int) and not isinstance(removed, bool) else -1

    def exists(self) -> bool:
        """Whether the store exists yet (a store is created by its first record)."""
        return bool(self.load())

    def has_companions(self) -> bool:
        """Whether the store keeps failures, a plan or claims though it has no record
        yet (a sweep whose every run so far failed, is still running, or was planned
        and has not started). By default, whether it holds any of them."""
        return bool(self.failures() or self.plans() or self.claims().running())

    def check_writable(self) -> None:  # noqa: B027 - optional for custom stores
        """Raise :class:`~stet.errors.StoreError` if a run's record could not be written;
        asked before a run starts, so that a function never runs only for its record to
        be lost. The default checks nothing."""

    # -- claims and failures ------------------------------------------------------
    def claims(self) -> Claims:
        """The claims of this store (see :mod:`stet._claims`); by default, they exclude
        this process's other calls only (:attr:`~Capabilities.shared_claims`)."""
        return _LOCAL_CLAIMS

    def _failure_log(self) -> FailureLog | _MemoryFailures:
        log: FailureLog | _MemoryFailures | None = self.__dict__.get("_failures_cached")
        if log is None:
            log = self.__dict__.setdefault("_failures_cached", self._new_failure_log())
        return log

    def _new_failure_log(self) -> FailureLog | _MemoryFailures:
        return _MemoryFailures()

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

    # -- plans: which runs sweeps asked for -----------------------------------------
    def _plan(self) -> PlanLog:
        plan: PlanLog | None = self.__dict__.get("_plan_cached")
        if plan is None:
            plan = self.__dict__.setdefault("_plan_cached", self._new_plan())
        return plan

    def _new_plan(self) -> PlanLog:
        return MemoryPlan()

    def add_plan(self, entries: Sequence[Record]) -> None:
        """Keep runs a sweep asks for, each as ``_stet_func`` and its key fields' texts;
        plans combine as a union (an entry kept already is not kept again). Kept with
        the store when it declares :attr:`~Capabilities.durable_plans`."""
        self._plan().add(entries)

    def plans(self) -> list[Record]:
        """Every planned run (see :meth:`add_plan`), each once, oldest first."""
        return self._plan().entries()

    def clear_plans(self) -> None:
        """Forget every plan (a full reset does)."""
        self._plan().clear()

    # -- lifetime -----------------------------------------------------------------
    def finish(self) -> None:  # noqa: B027 - optional for custom stores
        """Make the store whole on its own (fold what waits beside it); done at exit."""

    def close(self) -> None:  # noqa: B027 - optional for custom stores
        """Release files and connections; the store reopens them if used again."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LOCAL_CLAIMS = _LocalClaims()


class BaseBackend(Store):
    """Abstract base class defining the backend interface: a :class:`Store` kept in a
    file, with its claims and failures in files beside it.

    All backends must implement :meth:`has`, :meth:`record`, :meth:`load`,
    :meth:`remove`, and :meth:`clear`. The decorator uses :meth:`contains_run` and
    :meth:`append_record`, which a custom backend gets for free from those five.

    Args:
        path: Path to the store file.
    """

    capabilities = Capabilities(shared_claims=True, durable_failures=True,
                                durable_plans=True)

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def describe(self) -> str:
        """The store's path."""
        return str(self.path)

    def exists(self) -> bool:
        """Whether the store exists yet (a store is created by its first record)."""
        return self.path.exists()

    def has_companions(self) -> bool:
        return any(p.exists() for p in (failures_file(self.path), claims_file(self.path),
                                        plan_file(self.path)))

    # -- claims and failures: beside the store file unless a backend does better ----
    def claims(self) -> Claims:
        """The claims of this store (see :mod:`stet._claims`)."""
        cached: Claims | None = self.__dict__.get("_claims_cached")
        if cached is None:  # (a forked child keeps it: it forgets the parent's claims)
            cached = self._claims_cached = ClaimFile.for_path(claims_file(self.path))
        return cached

    def _new_failure_log(self) -> FailureLog | _MemoryFailures:
        return FailureLog(failures_file(self.path), lock_file(self.path))

    def _new_plan(self) -> PlanLog:
        return PlanFile(plan_file(self.path))


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


class CachedStore(Store):
    """A store (path-free) whose records live in a :class:`RecordSource` and whose
    lookups are answered from an :class:`IndexCache` over it, composed: the subclass sets
    ``self._cache``. The five methods and what stet calls are the cache's."""

    capabilities = Capabilities(remove_by_match=True)
    _cache: IndexCache

    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        return self._cache.contains_run(func, fields, texts)

    def contains_any(self, fields: Record) -> bool:
        """Whether any record (of any function) holds these field texts."""
        return self._cache.contains_any(fields)

    def append_record(self, record: Record) -> None:
        self._cache.append(record)

    def append_records(self, records: Sequence[Record]) -> None:
        self._cache.append_many(records)

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
        return list(self._cache.records())

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
        return self._cache.remove_where(func, fields)

    def clear(self) -> None:
        """Remove all records from the store (the file is replaced atomically)."""
        self.remove_where(None, {})

    def close(self) -> None:
        self._cache.close()

    def __len__(self) -> int:
        return self._cache.count()


class CachedBackend(CachedStore, BaseBackend):
    """A :class:`CachedStore` kept in a file (its claims and failures beside it)."""

    capabilities = Capabilities(shared_claims=True, durable_failures=True,
                                remove_by_match=True, durable_plans=True)

    def __init__(self, path: Path | str, *, fsync: bool | None = None) -> None:
        super().__init__(path)
        self.fsync = settings.fsync if fsync is None else fsync

    def check_writable(self) -> None:
        """Raise :class:`~stet.errors.StoreError` unless the store file (or its directory,
        if it does not exist yet), its directory and the sidecars a run writes can be
        written by this process (see :func:`stet._sidecar.check_writable`)."""
        check_writable(self.path)
