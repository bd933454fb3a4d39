"""What stet needs from the operating system that not every platform has: file locks.

File stores (CSV, JSON, Parquet, and SQLite too: its claims and failures are files beside
it) keep processes apart with POSIX locks: ``flock`` on the lock file beside a store
(writers), and ``fcntl`` byte-range locks on its claims file (one byte per run being
executed, released by the kernel however its holder dies). Nothing else in stet touches
:mod:`fcntl`.

Where there is no :mod:`fcntl` (Windows), ``import stet`` and the command line still work,
and a PostgreSQL store (whose claims are database locks) is the way to record runs: a file
store is refused where it is declared (``@stet.once(store=...)``, ``get_backend``, the
CLI), before anything runs, by :func:`require_file_locks`.

``fcntl(F_GETLK)`` answers who holds a claim in a ``struct flock``, whose field order is
the platform's: Linux puts ``l_type, l_whence`` first, macOS and the BSDs put them last.
The layout is chosen by ``sys.platform``; on a platform stet does not know, file stores
are refused rather than misread.
"""

from __future__ import annotations

import os
import struct
import sys
from types import ModuleType

from .errors import StoreError

__all__ = ["HAS_FILE_LOCKS", "file_lock_problem", "flock", "lock_byte",
           "pack_flock", "require_file_locks", "unlock_byte", "unpack_flock", "who_locks"]

_fcntl: ModuleType | None
try:
    import fcntl as _fcntl
except ImportError:  # Windows
    _fcntl = None

#: Whether this platform has POSIX file locks (``fcntl``).
HAS_FILE_LOCKS = _fcntl is not None

#: ``struct flock`` per platform family: its ``struct`` format, and the field each item is.
#: (FreeBSD's has ``l_sysid`` after these: ``fcntl.fcntl`` hands the kernel a 1024-byte
#: buffer and returns as many bytes as it was given, so the prefix is what is read.)
_LINUX = ("hhqqi4x", ("l_type", "l_whence", "l_start", "l_len", "l_pid"))
_BSD = ("qqihh", ("l_start", "l_len", "l_pid", "l_type", "l_whence"))
_LAYOUTS = {"linux": _LINUX, "darwin": _BSD, "freebsd": _BSD, "openbsd": _BSD,
            "netbsd": _BSD, "dragonfly": _BSD}


def _layout(platform: str | None = None) -> tuple[str, tuple[str, ...]] | None:
    name = sys.platform if platform is None else platform
    for prefix, layout in _LAYOUTS.items():
        if name.startswith(prefix):  # (linux, freebsd14, ...)
            return layout
    return None


def file_lock_problem() -> str | None:
    """Why file stores cannot be used on this platform (``None``: they can)."""
    if _fcntl is None:
        return (f"this platform ({sys.platform}) has no POSIX file locks (the fcntl "
                f"module), with which stet keeps processes from running one run twice")
    if _layout() is None:
        return (f"stet does not know how this platform ({sys.platform}) lays out "
                f"struct flock, which it reads to tell who holds a run")
    return None


def require_file_locks(store: object) -> None:
    """Raise :class:`StoreError` if the file store ``store`` cannot be used here."""
    problem = file_lock_problem()
    if problem is not None:
        raise StoreError(
            f"cannot use the file store {store}: {problem}. File stores (CSV, JSON, "
            f"Parquet, SQLite) need such locks; on {sys.platform}, use a PostgreSQL store "
            f"(store=\"postgresql://user@host/db?table=runs\"), or run on Linux or macOS."
        )


def _locks() -> ModuleType:
    if _fcntl is None:
        require_file_locks("here")
    assert _fcntl is not None
    return _fcntl


# ----------------------------------------------------------------- whole-file locks
def flock(fd: int, exclusive: bool | None, *, wait: bool = True) -> None:
    """``flock`` the file of ``fd``: exclusively, shared, or (``None``) unlock it."""
    f = _locks()
    mode = f.LOCK_UN if exclusive is None else f.LOCK_EX if exclusive else f.LOCK_SH
    f.flock(fd, mode if wait else mode | f.LOCK_NB)


# ----------------------------------------------------------------- byte-range locks
def lock_byte(fd: int, offset: int, *, wait: bool) -> None:
    """Lock byte ``offset`` of the file of ``fd`` for this process (a POSIX lock);
    without ``wait``, :class:`BlockingIOError` (or ``EACCES``) if another holds it."""
    f = _locks()
    f.lockf(fd, f.LOCK_EX if wait else f.LOCK_EX | f.LOCK_NB, 1, offset, os.SEEK_SET)


def unlock_byte(fd: int, offset: int) -> None:
    """Release this process's lock on byte ``offset``."""
    f = _locks()
    f.lockf(fd, f.LOCK_UN, 1, offset, os.SEEK_SET)


def pack_flock(fields: dict[str, int], platform: str | None = None) -> bytes:
    """A ``struct flock`` holding ``fields`` (``l_type`` ... ``l_pid``), laid out as on
    ``platform`` (default: this one)."""
    fmt, names = _known_layout(platform)
    return struct.pack(fmt, *(fields[n] for n in names))


def unpack_flock(data: bytes, platform: str | None = None) -> dict[str, int]:
    """The fields of a ``struct flock`` laid out as on ``platform`` (default: this one)."""
    fmt, names = _known_layout(platform)
    return dict(zip(names, struct.unpack(fmt, data), strict=True))


def _known_layout(platform: str | None) -> tuple[str, tuple[str, ...]]:
    layout = _layout(platform)
    if layout is None:
        raise StoreError(
            f"stet does not know how {platform or sys.platform} lays out struct flock, so "
            f"it cannot tell who holds a run; file stores are not supported there (use a "
            f"PostgreSQL store)."
        )
    return layout


def who_locks(fd: int, offset: int) -> int | None:
    """The pid of another process holding a lock on byte ``offset`` (``0``: unknown),
    ``None`` if none does (or the question cannot be asked)."""
    f = _locks()
    try:
        arg = pack_flock({"l_type": f.F_WRLCK, "l_whence": os.SEEK_SET, "l_start": offset,
                          "l_len": 1, "l_pid": 0})
        got = unpack_flock(f.fcntl(fd, f.F_GETLK, arg))
    except (OSError, struct.error):
        return None
    return None if got["l_type"] == f.F_UNLCK else int(got["l_pid"])
