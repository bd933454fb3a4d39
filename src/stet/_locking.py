"""Inter-process and inter-thread locks on a lock file beside a store.

One :class:`StoreLock` per lock path per process (threads share it; in a forked child it
forgets the parent's descriptor and hold, see :mod:`stet._fork`). Exclusion between
processes uses ``flock`` on a lock file that is never unlinked, so every process locks
the same inode; exclusion between threads uses a ``threading.RLock`` held for as long
as the file lock.

Readers never create the lock file, and need not be able to write it: ``flock`` works on
a read-only descriptor, and where there is no lock file and none can be made (a shared
directory the user cannot write, a read-only mount), reading goes on without it. That is
safe because readers never depend on the lock for whole records: appends are single
writes whose torn tail readers ignore, and rewrites replace the file atomically.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import _fork
from ._fork import close_if_ours, pid
from ._platform import flock
from ._sidecar import open_file
from .errors import StoreError

__all__ = ["StoreLock"]

_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)

_registry: weakref.WeakValueDictionary[str, StoreLock] = weakref.WeakValueDictionary()
_registry_lock = _fork.RLock()


class StoreLock:
    """Shared/exclusive lock backed by ``flock`` on ``path`` (created by writers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._fd = -1
        self._pid = pid()
        self._depth = 0
        self._exclusive = False
        self._locked = False  # a file lock is held (readers may go on without one)
        _fork.on_fork_child(self._after_fork)

    def __del__(self) -> None:
        # The last user is gone (the registry holds locks weakly): release the descriptor.
        close_if_ours(self._fd, self._pid)

    @classmethod
    def for_path(cls, path: Path) -> StoreLock:
        """The process-wide lock object for ``path``."""
        key = os.path.abspath(path)
        with _registry_lock:
            lock = _registry.get(key)
            if lock is None:
                lock = _registry[key] = cls(Path(key))
            return lock

    def _open(self, create: bool) -> int:
        """The lock file's descriptor; ``-1`` if it does not exist and ``create`` is
        false, or if it cannot be made but need not be (see the module docstring)."""
        if self._fd >= 0:
            return self._fd
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            self._fd = open_file(self.path, flags)
            return self._fd
        except FileNotFoundError:
            if not create:
                return -1  # no writer has made it yet: nothing to lock against
            raise self._open_error("no such directory") from None
        except OSError as exc:
            if exc.errno not in _READ_ONLY:
                raise self._open_error(exc.strerror or str(exc)) from None
            refused = exc
        try:  # flock needs no write access: a read-only lock file locks as well
            self._fd = open_file(self.path, os.O_RDONLY)
        except OSError:
            if create:  # a writer must lock
                raise self._open_error(refused.strerror or str(refused)) from None
            return -1  # none, and none can be made here: readers go on without it
        return self._fd

    def _open_error(self, why: str) -> StoreError:
        return StoreError(
            f"cannot open lock file {self.path}: {why}. stet needs to create this file "
            f"beside the store to change it; check the directory exists and is writable."
        )

    def _after_fork(self) -> None:
        """In a forked child: the inherited descriptor shares the parent's lock (flock
        locks belong to the open file), so drop it unclosed and open our own when needed;
        the parent keeps its descriptor and its lock. A thread of the parent that held
        the lock is not here: nothing is held."""
        self._pid = pid()
        self._fd = -1
        self._depth = 0
        self._exclusive = False
        self._locked = False
        self._thread_lock = threading.RLock()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock exclusively (one thread of one process)."""
        with self._thread_lock:
            self._acquire(exclusive=True)
            try:
                yield
            finally:
                self._release()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock against writers (other readers may hold it too)."""
        with self._thread_lock:
            self._acquire(exclusive=False)
            try:
                yield
            finally:
                self._release()

    def _acquire(self, exclusive: bool) -> None:
        if self._depth:
            if exclusive and not self._exclusive:
                raise RuntimeError("stet internal error: lock upgrade while held shared")
            self._depth += 1
            return
        fd = self._open(create=exclusive)
        if fd >= 0:
            try:
                flock(fd, exclusive)
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise StoreError(
                        f"the filesystem holding {self.path} refuses file locks "
                        f"({exc.strerror}); stet will not share a store without locking. "
                        f"Put the store on a filesystem with locking (a local disk, or NFS "
                        f"with lockd), or use a SQLite or PostgreSQL store."
                    ) from None
                raise
        self._locked = fd >= 0
        self._depth, self._exclusive = 1, exclusive

    def _release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            if self._locked:
                flock(self._fd, None)
            self._locked = False
            self._exclusive = False
