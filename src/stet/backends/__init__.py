"""Store backends, chosen by the store path's extension (or URL scheme); a
:class:`~stet.backends.Store` object given in place of a path is that store."""

from __future__ import annotations

import importlib
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _fork
from .._platform import require_file_locks
from ._base import BaseBackend, Capabilities, Store
from ._finish import use_opener

if TYPE_CHECKING:
    from ._csv import CsvBackend
    from ._json import JsonBackend
    from ._parquet import ParquetBackend
    from ._sqlite import SqliteBackend
    from .postgres.store import PostgresBackend

    BACKENDS: dict[str, type[BaseBackend]]

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

#: Extension -> the module and name of its backend class. A store's first use imports
#: its own backend alone: a CSV sweep never loads sqlite3 (2 ms) or the JSON codec.
_BY_EXTENSION: dict[str, tuple[str, str]] = {
    ".csv": ("._csv", "CsvBackend"),
    ".json": ("._json", "JsonBackend"),
    ".sqlite": ("._sqlite", "SqliteBackend"),
    ".sqlite3": ("._sqlite", "SqliteBackend"),
    ".db": ("._sqlite", "SqliteBackend"),
    ".parquet": ("._parquet", "ParquetBackend"),
}
#: Class name -> its module, for ``stet.backends.CsvBackend`` and the like.
_MODULES = {name: module for module, name in _BY_EXTENSION.values()} | {
    "PostgresBackend": ".postgres.store"}


def _extension_class(ext: str) -> type[BaseBackend] | None:
    found = _BY_EXTENSION.get(ext)
    if found is None:
        return None
    cls: type[BaseBackend] = getattr(importlib.import_module(found[0], __name__), found[1])
    return cls


def __getattr__(name: str) -> Any:
    # Imported on demand: ``import stet`` and a store's first use stay fast.
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name], __name__), name)
    if name == "BACKENDS":  # extension -> backend class, every file backend
        return {ext: _extension_class(ext) for ext in _BY_EXTENSION}
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
            f"{', '.join(sorted(_BY_EXTENSION))}"
        )
    ext = Path(path).suffix.lower()
    cls = _extension_class(ext)
    if cls is None:
        supported = ", ".join(sorted(_BY_EXTENSION))
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
