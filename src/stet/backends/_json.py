"""JSON store: one JSON array of objects, valid JSON after every completed record."""

from __future__ import annotations

from typing import cast

from .._index import Index
from .._json_codec import JsonCodec
from ._base import Record
from ._file import FileBackend

__all__ = ["JsonBackend"]


class JsonBackend(FileBackend):
    """Store experiment records in a JSON file.

    Uses Python's built-in :mod:`json`. No extra dependencies required. Each record is
    one line of the array, written in place of the closing bracket, which follows it.

    Args:
        path: Path to the ``.json`` file.
        fsync: fsync each record (for power loss); default from :func:`stet.configure`.
    """

    codec_type = JsonCodec

    def _check_start(self) -> None:
        """Refuse a foreign file from its first bytes, before taking the store's lock
        (which would create ``<store>.lock`` beside someone else's file); done until the
        file has been read once."""
        if self._log.head is not None:
            return
        try:
            with open(self.path, "rb") as f:
                data = f.read(1 << 16)
        except (FileNotFoundError, IsADirectoryError):
            return
        cast(JsonCodec, self._log.codec).check_start(data, self.path)

    def _poll(self, index: Index) -> None:
        if self._log.head is None:
            self._check_start()
        self._log.poll(index)

    def _records(self) -> list[Record]:
        self._check_start()
        return self._log.records()

    def _remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        self._check_start()
        return super()._remove_where(func, fields, index)

    def _append(self, record: Record, index: Index) -> None:
        self._check_start()
        super()._append(record, index)
