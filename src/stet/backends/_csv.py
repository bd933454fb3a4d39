"""CSV store: a header row of field names and one row per completed run."""

from __future__ import annotations

from .._codecs import CsvCodec
from ..errors import StoreError
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

    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        if super().contains_run(func, fields, texts):
            return True
        # Not done: the run is about to be made. Refuse now a name the file cannot hold
        # (values with a lone surrogate are kept, JSON-escaped; a header name cannot be).
        for name in fields:
            if not name.isascii():
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise StoreError(
                        f"cannot record in CSV store {self.path}: the parameter name "
                        f"{name!r:.80} holds a lone surrogate, which a CSV file (UTF-8 "
                        f"text) cannot hold. Nothing was run or recorded; give it another "
                        f"name, or use a JSON or SQLite store, which keep it."
                    ) from None
        return False
