"""A backend over one append-only file in some format (CSV, JSON)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from .._codec import Codec, refuse_surrogate_pairs
from .._identity import RESERVED_PREFIX
from .._index import Index
from .._locking import StoreLock
from .._log import LogFile, store_file
from .._sidecar import lock_file, os_error
from ..errors import StoreError
from ._base import IndexedBackend, Record, record_matches

__all__ = ["FileBackend", "lock_path"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def lock_path(path: Path) -> Path:
    """The lock file kept beside a store (never deleted: see :mod:`stet._locking`)."""
    return lock_file(path)


class FileBackend(IndexedBackend):
    """A store that is one append-only file framed by :attr:`codec_type`."""

    codec_type: ClassVar[type[Codec]]
    #: Whether field names must be UTF-8 text (a CSV header): a name with a lone
    #: surrogate is then refused before the run, not after it.
    utf8_names: ClassVar[bool] = False

    def __init__(self, path: Path | str, *, fsync: bool | None = None) -> None:
        super().__init__(store_file(path), fsync=fsync)  # (a symlink: its target's sidecars)
        self._log = LogFile(
            self.path, self.codec_type(), StoreLock.for_path(lock_path(self.path)),
            fsync=self.fsync,
        )

    def _poll(self, index: Index) -> None:
        self._log.poll(index)

    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        with self._mutex:  # (IndexedBackend's, inlined: a skip costs no more)
            try:
                self._poll(self._index)
            except OSError as exc:  # (free when nothing is raised)
                raise os_error(self.path, "reading", exc) from exc
            if self._index.contains(func, fields, texts):
                return True
        # Not done: the run is about to be made. Refuse now what could never be found.
        refuse_surrogate_pairs(self.path, self._log.codec.label,
                               zip(fields, texts, strict=True))
        if self.utf8_names:
            for name in fields:
                if not name.isascii() and _SURROGATE.search(name):
                    raise StoreError(
                        f"cannot record in {self._log.codec.label} store {self.path}: the "
                        f"name of parameter {name!r:.80} holds a lone surrogate, which a "
                        f"{self._log.codec.label} header (UTF-8 text) cannot hold. Nothing "
                        f"was run or recorded; rename the parameter, or use a .json store."
                    )
        return False

    def _append(self, record: Record, index: Index) -> None:
        refuse_surrogate_pairs(self.path, self._log.codec.label, (
            (k, v) for k, v in record.items() if not k.startswith(RESERVED_PREFIX)))
        self._log.append(record, index)

    def _remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        return self._log.rewrite(lambda r: not record_matches(r, func, fields), index)

    def _records(self) -> list[Record]:
        return self._log.records()

    def close(self) -> None:
        with self._mutex:
            self._log.close()
            self._index.clear()
