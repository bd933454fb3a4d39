"""The in-memory index of a store, composed into a backend as a cache of its records.

A :class:`RecordSource` is where records live (a file, a database) and keeps an
:class:`~stet._index.Index` in step with it: ``poll`` catches up (cheap when nothing
changed), ``append`` writes and indexes, ``remove_where`` rewrites and rebuilds.
:class:`IndexCache` wraps a source, as optuna's ``_CachedStorage`` wraps a storage: it
answers lookups from the index after a poll, serialises callers with one lock, and says
an ``OSError`` (a full disk, a vanished mount) as a :class:`~stet.errors.StoreError`
naming the store.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Sequence
from typing import ClassVar

from .._codec import Record
from .._exit import ensure_registered
from .._fork import RLock
from .._index import Index
from .._sidecar import os_error, reraise_as_store_error

__all__ = ["IndexCache", "RecordSource", "save_snapshots"]

# Every cache of this process, so that their indexes can be saved at exit (held weakly:
# a cache no one uses any more has nothing worth saving).
_caches: weakref.WeakSet[IndexCache] = weakref.WeakSet()


def _weakly(method: Callable[[], list[Record]]) -> Callable[[], list[Record]]:
    """``method``, held weakly: a source's index refers back to the source without
    making a cycle (which would keep a dropped backend's files open until a collection)."""
    ref = weakref.WeakMethod(method)

    def call() -> list[Record]:
        bound = ref()
        return [] if bound is None else bound()

    return call


def save_snapshots() -> None:
    """Save the index of every store this process read, where worth it (at exit)."""
    for cache in list(_caches):
        cache.save_snapshot()


class RecordSource:
    """Where a store's records live, kept in step with an index (not thread-safe by
    itself: :class:`IndexCache` serialises calls). Subclasses implement the four
    primitives; the rest have defaults."""

    #: Records waiting beside the store (Parquet's log), indexed apart from the store's
    #: own: lookups look there too. ``None``: the index holds every record.
    pending: Index | None = None

    #: :meth:`holds_index` tells, more cheaply than :meth:`poll`, that a run the index
    #: (or :attr:`pending`) holds is still in the store; a lookup that finds its run then
    #: asks it alone.
    cheap_hits: ClassVar[bool] = False

    def poll(self, index: Index) -> None:
        """Bring ``index`` up to date with the store (cheap when nothing changed)."""
        raise NotImplementedError

    def holds_index(self) -> bool:
        """Whether every run the index (and :attr:`pending`) held at the last
        :meth:`poll` is still in the store; ``False`` when that is not sure (then poll).
        Runs recorded since, which only add to what is done, need not be read for a
        lookup that found its run: the lookup that misses polls. Implemented by sources
        that declare :attr:`cheap_hits`."""
        return False

    def append(self, record: Record, index: Index) -> None:
        """Durably add ``record`` to the store and to ``index`` (after catching up)."""
        raise NotImplementedError

    def remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        """Remove matching records atomically; rebuild ``index``; return how many."""
        raise NotImplementedError

    def records(self) -> list[Record]:
        """Every record, read afresh from the store."""
        raise NotImplementedError

    def append_many(self, records: Sequence[Record], index: Index) -> None:
        """Add many records, in order (one by one unless the source does better)."""
        for record in records:
            self.append(record, index)

    def check_new_run(self, fields: tuple[str, ...], texts: tuple[str, ...]) -> None:
        """Raise :class:`~stet.errors.StoreError` if a run with these fields could never
        be recorded; asked after a lookup missed, before the run is made."""

    def close(self, index: Index) -> None:
        """Release files and connections (the next use reopens them)."""

    def save_snapshot(self, index: Index) -> None:
        """Save ``index`` beside the store if the source keeps snapshots and it is worth
        it (see :mod:`stet._snapshot`); raises ``OSError`` if it could not."""


class IndexCache:
    """A :class:`RecordSource` with lookups answered from its :class:`Index`, thread-safe.

    ``name`` is the store as messages name it; ``index``: the one the source was made
    with, if it keeps one (a new one otherwise).
    """

    __slots__ = ("__weakref__", "index", "mutex", "name", "source")

    def __init__(self, source: RecordSource, name: object, index: Index | None = None) -> None:
        self.source = source
        self.name = name
        self.index = Index() if index is None else index
        # (a probe for a partial match reads the store again rather than keep every row)
        self.index.reread = _weakly(source.records)
        _caches.add(self)
        ensure_registered()
        self.mutex = RLock()  # (stet._fork's: unheld in a forked child)

    # try/except costs nothing when nothing is raised (these are the hot paths)
    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        with self.mutex:
            source = self.source
            if source.cheap_hits and source.holds_index() and self._holds(func, fields, texts):
                return True
            try:
                source.poll(self.index)
            except OSError as exc:
                raise os_error(self.name, "reading", exc) from exc
            if self._holds(func, fields, texts):
                return True
        self.source.check_new_run(fields, texts)  # the run is about to be made
        return False

    def _holds(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        """Whether the index, or the pending records', holds the run (as last read)."""
        if self.index.contains(func, fields, texts):
            return True
        pending = self.source.pending
        return pending is not None and pending.contains(func, fields, texts)

    def contains_any(self, fields: Record) -> bool:
        names = tuple(sorted(fields))
        with self.mutex:
            try:
                self.source.poll(self.index)
            except OSError as exc:
                raise os_error(self.name, "reading", exc) from exc
            texts = tuple(fields[n] for n in names)
            pending = self.source.pending
            return self.index.contains_any(names, texts) or (
                pending is not None and pending.contains_any(names, texts))

    def append(self, record: Record) -> None:
        with self.mutex:
            try:
                self.source.append(record, self.index)
            except OSError as exc:
                raise os_error(self.name, "recording a run in", exc) from exc

    def append_many(self, records: Sequence[Record]) -> None:
        with self.mutex:
            try:
                self.source.append_many(records, self.index)
            except OSError as exc:
                raise os_error(self.name, "recording a run in", exc) from exc

    def remove_where(self, func: str | None, fields: Record) -> int:
        with self.mutex, reraise_as_store_error(self.name, "removing records from"):
            return self.source.remove_where(func, fields, self.index)

    def records(self) -> list[Record]:
        with self.mutex, reraise_as_store_error(self.name, "reading"):
            return list(self.source.records())

    def count(self) -> int:
        with self.mutex, reraise_as_store_error(self.name, "reading"):
            self.source.poll(self.index)
            pending = self.source.pending
            return self.index.count + (0 if pending is None else pending.count)

    def save_snapshot(self) -> None:
        """Save the index beside the store where worth it; a snapshot is a cache, so one
        that cannot be written (a read-only directory, a full disk) is silently not."""
        with self.mutex, contextlib.suppress(OSError):
            self.source.save_snapshot(self.index)

    def close(self) -> None:
        with self.mutex:
            self.save_snapshot()  # (what was read is about to be dropped)
            self.source.close(self.index)
