"""A backend over one append-only file in some format (CSV, JSON)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from .._codec import Codec, refuse_surrogate_pairs
from .._index import Index
from .._locking import StoreLock
from .._logfile import LogFile, store_file
from .._schema import RESERVED_PREFIX
from .._sidecar import lock_file
from ..errors import StoreError
from ._base import CachedBackend, Record, record_matches
from ._cache import IndexCache, RecordSource

__all__ = ["FileBackend", "LogSource", "lock_path"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def lock_path(path: Path) -> Path:
    """The lock file kept beside a store (never deleted: see :mod:`stet._locking`)."""
    return lock_file(path)


class LogSource(RecordSource):
    """The records of one append-only :class:`~stet._log.LogFile`.

    ``utf8_names``: field names must be UTF-8 text (a CSV header), so a name with a lone
    surrogate is refused before the run, not after it.
    """

    def __init__(self, log: LogFile, utf8_names: bool) -> None:
        self.log = log
        self.utf8_names = utf8_names

    def poll(self, index: Index) -> None:
        self.log.poll(index)

    def check_new_run(self, fields: tuple[str, ...], texts: tuple[str, ...]) -> None:
        label = self.log.codec.label
        refuse_surrogate_pairs(self.log.path, label, zip(fields, texts, strict=True))
        if self.utf8_names:
            for name in fields:
                if not name.isascii() and _SURROGATE.search(name):
                    raise StoreError(
                        f"cannot record in {label} store {self.log.path}: the name of "
                        f"parameter {name!r:.80} holds a lone surrogate, which a {label} "
                        f"header (UTF-8 text) cannot hold. Nothing was run or recorded; "
                        f"rename the parameter, or use a .json store."
                    )

    def append(self, record: Record, index: Index) -> None:
        refuse_surrogate_pairs(self.log.path, self.log.codec.label, (
            (k, v) for k, v in record.items() if not k.startswith(RESERVED_PREFIX)))
        self.log.append(record, index)

    def append_many(self, records: Sequence[Record], index: Index) -> None:
        for record in records:
            self.append(record, index)

    def remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        return self.log.rewrite(lambda r: not record_matches(r, func, fields), index)

    def records(self) -> list[Record]:
        return self.log.records()

    def close(self, index: Index) -> None:
        self.log.close()
        index.clear()

    def save_snapshot(self, index: Index) -> None:
        self.log.save_snapshot(index)


class FileBackend(CachedBackend):
    """A store that is one append-only file framed by :attr:`codec_type`, its lookups
    answered by an :class:`~stet.backends._cache.IndexCache` over a :attr:`source_type`."""

    codec_type: ClassVar[type[Codec]]
    source_type: ClassVar[type[LogSource]] = LogSource
    #: Whether field names must be UTF-8 text (a CSV header): a name with a lone
    #: surrogate is then refused before the run, not after it.
    utf8_names: ClassVar[bool] = False

    def __init__(self, path: Path | str, *, fsync: bool | None = None) -> None:
        super().__init__(store_file(path), fsync=fsync)  # (a symlink: its target's sidecars)
        self._log = LogFile(
            self.path, self.codec_type(), StoreLock.for_path(lock_path(self.path)),
            fsync=self.fsync, snapshots=True,
        )
        self._cache = IndexCache(self.source_type(self._log, self.utf8_names), self.path)
