"""Finishing file stores when a process ends normally, registered in one place.

A store file alone should hold every run once a script has ended normally (see
docs/explanation/promises.md): Parquet's log beside the file is folded into it, and
SQLite's WAL into the database (SQLite does so when its last connection closes). One
hook, run by :mod:`stet._exit`, finishes, in this order:

0. the indexes of the stores this process read: saved beside them where worth it
   (:mod:`stet._snapshot`), so that the next process opens them fast;
1. the SQLite connections this process has open (:func:`close_at_exit`): closed;
2. the Parquet stores this process appended to and has not folded (:func:`fold_at_exit`);
3. the file stores decorated functions declared (:func:`declare`), which workers of a
   process pool may have written though this process never opened them.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._exit import at_exit, ensure_registered, report
from .._fork import on_fork_child
from .._sidecar import PARQUET_LOG, SQLITE_WAL, sidecar
from ..errors import StoreError
from ._base import Store
from ._cache import save_snapshots

__all__ = ["close_at_exit", "declare", "fold_at_exit", "folded"]

_open: weakref.WeakSet[Store] = weakref.WeakSet()
# Stores appended to and not folded yet (paths, not backends, so that backends and their
# descriptors can go when unused), with the function that folds one.
# A forked child folds those it appends to; the parent folds its own.
_unfolded: dict[Path, Callable[[Path], None]] = {}
on_fork_child(_unfolded.clear)
_declared: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()
#: The process's own backend of a store path, if it has one (``stet.backends`` sets it:
#: importing the package from here would make a cycle).
_opener: Callable[..., Store | None] | None = None
#: Extensions of the file stores that may need finishing (Parquet, SQLite).
_FINISHED = (".parquet", ".sqlite", ".sqlite3", ".db")


def close_at_exit(store: Store) -> None:
    """Close ``store`` at exit (held weakly: a store no one uses is closed already)."""
    _open.add(store)
    ensure_registered()


def fold_at_exit(path: Path, fold: Callable[[Path], None]) -> None:
    """Call ``fold(path)`` at exit if ``path``'s Parquet log is still there then."""
    _unfolded[path] = fold
    ensure_registered()


def folded(path: Path) -> None:
    """``path`` needs no folding at exit any more."""
    _unfolded.pop(path, None)


def use_opener(opener: Callable[..., Store | None]) -> None:
    """Set how a declared store's backend in this process is found (``shared_backend``
    with ``create=False``)."""
    global _opener
    _opener = opener


def declare(store: object, options: dict[str, Any]) -> None:
    """Remember a file store that may need finishing at exit (Parquet, SQLite): workers of
    a process pool may have written it even if this process never opened it."""
    if not isinstance(store, (str, os.PathLike)) or "://" in os.fspath(store):
        return  # a store object, or a database URL: nothing beside a file to finish
    if Path(store).suffix.lower() in _FINISHED:
        _declared.add((os.path.abspath(store), tuple(sorted(options.items()))))
        ensure_registered()


def _finish_all() -> None:
    save_snapshots()  # (first: closing a store empties its index)
    for store in list(_open):
        store.close()
    for path, fold in list(_unfolded.items()):
        if sidecar(path, PARQUET_LOG).exists():
            fold(path)
        _unfolded.pop(path, None)
    _finish_declared()


def _finish_declared() -> None:
    """At exit: fold what pool workers left beside the declared Parquet and SQLite
    stores. What cannot be finished (a sidecar that is a link, a store deleted or replaced
    by a foreign file meanwhile) is one line on stderr, never a traceback; the store is
    then read as it is, and the next process to write it folds it."""
    for store, options in list(_declared):
        try:
            _finish_one(store, options)
        except Exception as exc:  # an exit must stay clean
            report(exc, store)


at_exit(_finish_all)

# Run in a fresh interpreter: one line on stderr and status 1 for any failure.
_FINISH_CODE = """\
import sys
sys.path.insert(0, sys.argv[2])
try:
    from stet.backends import get_backend
    get_backend(sys.argv[1]).finish()
except Exception as exc:
    print(f"[stet] at exit: could not finish {sys.argv[1]}: {' '.join(str(exc).split())}",
          file=sys.stderr)
    sys.exit(1)
except KeyboardInterrupt:  # the parent, interrupted too, says so
    sys.exit(130)
"""


def _finish_one(store: str, options: tuple[tuple[str, Any], ...]) -> None:
    if not (os.path.lexists(sidecar(Path(store), PARQUET_LOG))
            or os.path.lexists(sidecar(Path(store), SQLITE_WAL))):
        return
    if Path(store).suffix.lower() != ".parquet":
        _refuse_foreign_sqlite(store)
    backend = None if _opener is None else _opener(store, create=False, **dict(options))
    if backend is not None:
        backend.finish()
        return
    # Never opened here (pool workers wrote it): finish it in a fresh interpreter, as
    # this one is shutting down and can no longer import what Parquet needs.
    package_root = str(Path(__file__).resolve().parent.parent.parent)  # this very stet
    import subprocess  # (here: 3-6 ms with what it imports, for a rare case)

    subprocess.run([sys.executable, "-c", _FINISH_CODE, store, package_root],
                   check=False, timeout=600)


def _refuse_foreign_sqlite(store: str) -> None:
    """Opening a database with a ``-wal`` beside it makes SQLite write the WAL's pages into
    the file: if the store was replaced by a file that is no SQLite database, that would
    overwrite someone else's file. Refuse instead (the WAL stays for whoever sorts it)."""
    try:
        with open(store, "rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        return  # deleted: SQLite is not asked to create it
    if head and head != b"SQLite format 3\x00":
        raise StoreError(
            f"{store} is no longer a SQLite database, and {sidecar(Path(store), SQLITE_WAL)} "
            f"beside it holds runs of the store it replaced; both were left untouched. "
            f"Move them aside, or put the database back."
        )
