"""Store backends, chosen by the store path's extension (or URL scheme)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ._base import BaseBackend
from ._csv import CsvBackend
from ._json import JsonBackend
from ._parquet import ParquetBackend
from ._sqlite import SqliteBackend

__all__ = [
    "BACKENDS",
    "BaseBackend",
    "CsvBackend",
    "JsonBackend",
    "ParquetBackend",
    "SqliteBackend",
    "get_backend",
    "shared_backend",
]

#: Extension -> backend class.
BACKENDS: dict[str, type[BaseBackend]] = {
    ".csv": CsvBackend,
    ".json": JsonBackend,
    ".sqlite": SqliteBackend,
    ".sqlite3": SqliteBackend,
    ".db": SqliteBackend,
    ".parquet": ParquetBackend,
}


def backend_class(path: str | os.PathLike[str]) -> type[BaseBackend]:
    """The backend class for a store path; ``ValueError`` for an unknown extension."""
    ext = Path(path).suffix.lower()
    cls = BACKENDS.get(ext)
    if cls is None:
        supported = ", ".join(sorted(BACKENDS))
        shown = f"extension {ext!r}" if ext else "no extension"
        raise ValueError(
            f"store {os.fspath(path)!r} has {shown}; stet chooses the store format by "
            f"extension and supports {supported}"
        )
    return cls


def get_backend(path: str | os.PathLike[str], **options: Any) -> BaseBackend:
    """Return a new backend for ``path``, chosen by its extension.

    Args:
        path: Store file path (``.csv``, ``.json``, ``.sqlite``/``.db``, ``.parquet``).
        **options: Passed to the backend (e.g. ``fsync=True``).

    Raises:
        ValueError: If the extension is not supported.
    """
    return backend_class(path)(Path(path), **options)


_shared: dict[tuple[str, int, tuple[tuple[str, Any], ...]], BaseBackend] = {}
_shared_lock = threading.Lock()


def shared_backend(path: str | os.PathLike[str], **options: Any) -> BaseBackend:
    """The process-wide backend for ``path`` used by decorated functions (one index each)."""
    cls = backend_class(path)
    key = (os.path.abspath(path), os.getpid(), tuple(sorted(options.items())))
    with _shared_lock:
        backend = _shared.get(key)
        if backend is None:
            backend = _shared[key] = cls(Path(key[0]), **options)
        return backend
