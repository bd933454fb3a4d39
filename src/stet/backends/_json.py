"""JSON store: one JSON array of objects, valid JSON after every completed record."""

from __future__ import annotations

from .._codecs import JsonCodec
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
