"""A backend over one append-only file in some format (CSV, JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from .._codecs import Codec
from .._index import Index
from .._locking import StoreLock
from .._log import LogFile, store_file
from ._base import IndexedBackend, Record, record_matches

__all__ = ["FileBackend", "lock_path"]


def lock_path(path: Path) -> Path:
    """The lock file kept beside a store (never deleted: see :mod:`stet._locking`)."""
    return path.with_name(path.name + ".lock")


class FileBackend(IndexedBackend):
    """A store that is one append-only file framed by :attr:`codec_type`."""

    codec_type: ClassVar[type[Codec]]

    def __init__(self, path: Path | str, *, fsync: bool | None = None) -> None:
        super().__init__(store_file(path), fsync=fsync)  # (a symlink: its target's sidecars)
        self._log = LogFile(
            self.path, self.codec_type(), StoreLock.for_path(lock_path(self.path)),
            fsync=self.fsync,
        )

    def _poll(self, index: Index) -> None:
        self._log.poll(index)

    def _append(self, record: Record, index: Index) -> None:
        self._log.append(record, index)

    def _remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        return self._log.rewrite(lambda r: not record_matches(r, func, fields), index)

    def _records(self) -> list[Record]:
        return self._log.records()

    def close(self) -> None:
        with self._mutex:
            self._log.close()
            self._index.clear()
