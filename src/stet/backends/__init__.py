"""Store backends, chosen by the store path's extension (or URL scheme); a
:class:`~stet.backends.Store` object given in place of a path is that store."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _fork
from .._platform import require_file_locks
from ._base import BaseBackend, Capabilities, Store
from ._csv import CsvBackend
from ._finish import use_opener
from ._json import JsonBackend
from ._parquet import ParquetBackend
from ._sqlite import SqliteBackend

if TYPE_CHECKING:
    from .postgres.store import PostgresBackend

__all__ = [
    "BACKENDS",
    "BaseBackend",
    "Capabilities",
    "CsvBackend",
    "JsonBackend",
    "ParquetBackend",
    "PostgresBackend",
    "SqliteBackend",
    "Store",
    "display_store",
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


def __getattr__(name: str) -> Any:
    if name == "PostgresBackend":  # imported on demand: ``import stet`` stays fast
        from .postgres.store import PostgresBackend

        return PostgresBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _url_scheme(path: object) -> str | None:
    """The scheme of a URL-shaped store (``postgresql://...``), ``None`` for a path."""
    if isinstance(path, str) and "://" in path:
        from .postgres.url import url_scheme

        return url_scheme(path)
    return None


def display_store(path: str | os.PathLike[str] | Store) -> str:
    """The store as text for messages: a URL's password is masked."""
    if isinstance(path, Store):
        return path.describe()
    if _url_scheme(path) is not None:
        from .postgres.url import mask_url

        return mask_url(os.fspath(path))
    return os.fspath(path)


def backend_class(path: str | os.PathLike[str] | Store) -> type[Store]:
    """The backend class for a store path (or a store object's own class); ``ValueError``
    for an unknown extension."""
    if isinstance(path, Store):
        return type(path)
    return _path_class(path)


def _path_class(path: str | os.PathLike[str]) -> type[BaseBackend | PostgresBackend]:
    scheme = _url_scheme(path)
    if scheme is not None:
        from .postgres.store import PostgresBackend
        from .postgres.url import SCHEMES

        if scheme.lower() in SCHEMES:
            return PostgresBackend
        raise ValueError(
            f"store {display_store(path)!r} is a URL with scheme {scheme!r}; stet supports "
            f"postgresql:// (or postgres://) URLs, and files chosen by extension: "
            f"{', '.join(sorted(BACKENDS))}"
        )
    ext = Path(path).suffix.lower()
    cls = BACKENDS.get(ext)
    if cls is None:
        supported = ", ".join(sorted(BACKENDS))
        shown = f"extension {ext!r}" if ext else "no extension"
        raise ValueError(  # ("Unsupported store extension": 0.0.2's words, kept)
            f"Unsupported store extension: store {os.fspath(path)!r} has {shown}; stet "
            f"chooses the store format by extension and supports {supported}"
        )
    require_file_locks(os.fspath(path))  # (Windows: a clear StoreError, before any run)
    return cls


def get_backend(path: str | os.PathLike[str] | Store, **options: Any) -> Store:
    """Return a new backend for ``path``, chosen by its extension.

    Args:
        path: Store file path (``.csv``, ``.json``, ``.sqlite``/``.db``, ``.parquet``),
            or a PostgreSQL URL (``postgresql://user@host/db?table=name``), or a
            :class:`Store` object (returned as it is).
        **options: Passed to the backend (e.g. ``fsync=True``).

    Raises:
        ValueError: If the extension is not supported.
    """
    if isinstance(path, Store):
        return path
    cls = _path_class(path)
    if _url_scheme(path) is not None:
        return cls(os.fspath(path), **options)
    return cls(Path(path), **options)


# Weak: a backend lives as long as a decorated function (or other user) holds it. A
# forked child keeps them: each resets what was its parent's (see stet._fork).
_SharedKey = tuple[str, tuple[tuple[str, Any], ...]]
_shared: weakref.WeakValueDictionary[_SharedKey, Store] = weakref.WeakValueDictionary()
_shared_lock = _fork.RLock()


def shared_backend(
    path: str | os.PathLike[str] | Store, *, create: bool = True, **options: Any
) -> Store | Any:
    """The process-wide backend for ``path`` used by decorated functions (one index each);
    with ``create=False``, ``None`` unless this process already has it. A :class:`Store`
    object is its own."""
    if isinstance(path, Store):
        return path
    cls = _path_class(path)
    url = _url_scheme(path) is not None
    where = os.fspath(path) if url else os.path.abspath(path)
    key = (where, tuple(sorted(options.items())))
    with _shared_lock:
        backend = _shared.get(key)
        if backend is None and create:
            backend = _shared[key] = cls(where if url else Path(where), **options)
        return backend


use_opener(shared_backend)
