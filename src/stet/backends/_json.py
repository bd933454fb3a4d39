"""JSON store: one JSON array of objects, valid JSON after every completed record."""

from __future__ import annotations

from typing import cast

from .._index import Index
from .._json_codec import JsonCodec
from ._base import Record
from ._file import FileBackend, LogSource

__all__ = ["JsonBackend"]


class _JsonSource(LogSource):
    """A JSON file, refused from its first bytes if foreign."""

    def _check_start(self) -> None:
        """Refuse a foreign file from its first bytes, before taking the store's lock
        (which would create ``<store>.lock`` beside someone else's file); done until the
        file has been read once."""
        if self.log.head is not None:
            return
        try:
            with open(self.log.path, "rb") as f:
                data = f.read(1 << 16)
        except (FileNotFoundError, IsADirectoryError):
            return
        cast(JsonCodec, self.log.codec).check_start(data, self.log.path)

    def poll(self, index: Index) -> None:
        if self.log.head is None:
            self._check_start()
        self.log.poll(index)

    def records(self) -> list[Record]:
        self._check_start()
        return self.log.records()

    def remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        self._check_start()
        return super().remove_where(func, fields, index)

    def append(self, record: Record, index: Index) -> None:
        self._check_start()
        super().append(record, index)


class JsonBackend(FileBackend):
    """Store experiment records in a JSON file.

    Uses Python's built-in :mod:`json`. No extra dependencies required. Each record is
    one line of the array, written in place of the closing bracket, which follows it.

    Args:
        path: Path to the ``.json`` file.
        fsync: fsync each record (for power loss); default from :func:`stet.configure`.
    """

    codec_type = JsonCodec
    source_type = _JsonSource
