"""CSV store: a header row of field names and one row per completed run."""

from __future__ import annotations

from .._csv_codec import CsvCodec
from ._file import FileBackend

__all__ = ["CsvBackend"]


class CsvBackend(FileBackend):
    """Store experiment records in a CSV file.

    Rows are appended one per record under a file lock; readers follow the file's tail,
    so a lookup costs one ``stat`` when nothing changed. Uses the standard library's
    :mod:`csv`; pandas is not needed.

    Args:
        path: Path to the ``.csv`` file.
        fsync: fsync each record (for power loss); default from :func:`stet.configure`.

    Example:
        >>> from stet.backends import CsvBackend
        >>> b = CsvBackend("runs.csv")  # doctest: +SKIP
        >>> b.record({"alpha": 0.1, "seed": 0})  # doctest: +SKIP
    """

    codec_type = CsvCodec
    utf8_names = True
