"""JSON store: one JSON array of objects, valid JSON after every completed record."""

from __future__ import annotations

from .._codecs import JsonCodec, refuse_surrogate_pairs
from .._identity import RESERVED_PREFIX
from .._index import Index
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

    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        with self._mutex:  # (IndexedBackend's, inlined: a skip costs no more)
            self._poll(self._index)
            if self._index.contains(func, fields, texts):
                return True
        # Not done: the run is about to be made. Refuse now what could never be found.
        refuse_surrogate_pairs(self.path, "JSON", zip(fields, texts, strict=True))
        return False

    def _append(self, record: Record, index: Index) -> None:
        refuse_surrogate_pairs(self.path, "JSON", (
            (k, v) for k, v in record.items() if not k.startswith(RESERVED_PREFIX)))
        super()._append(record, index)
