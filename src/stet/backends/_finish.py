"""Finishing at exit the Parquet and SQLite stores that pool workers wrote.

A worker of a process pool may write such a store (its log or WAL beside it) even if this
process never opened it; the decorator declares every such store it is given, and at exit
what the workers left is folded in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .._exit import at_exit, report
from .._sidecar import sidecar
from ..errors import StoreError
from . import shared_backend

__all__ = ["declare"]


_declared: set[tuple[str, tuple[tuple[str, Any], ...]]] = set()


def declare(store: str | os.PathLike[str], options: dict[str, Any]) -> None:
    """Remember file stores that may need finishing at exit (Parquet, SQLite): workers of
    a process pool may have written them even if this process never opened them."""
    if isinstance(store, str) and "://" in store:
        return
    if Path(store).suffix.lower() in (".parquet", ".sqlite", ".sqlite3", ".db"):
        if not _declared:
            at_exit(_finish_declared)
        _declared.add((os.path.abspath(store), tuple(sorted(options.items()))))


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
    if not (os.path.lexists(sidecar(Path(store), ".stet-log"))
            or os.path.lexists(sidecar(Path(store), "-wal"))):
        return
    if Path(store).suffix.lower() != ".parquet":
        _refuse_foreign_sqlite(store)
    backend = shared_backend(store, create=False, **dict(options))
    if backend is not None:
        backend.finish()
        return
    # Never opened here (pool workers wrote it): finish it in a fresh interpreter, as
    # this one is shutting down and can no longer import what Parquet needs.
    import subprocess

    package_root = str(Path(__file__).resolve().parents[2])  # this very stet
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
            f"{store} is no longer a SQLite database, and {sidecar(Path(store), '-wal')} "
            f"beside it holds runs of the store it replaced; both were left untouched. "
            f"Move them aside, or put the database back."
        )
