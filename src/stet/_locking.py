"""Inter-process and inter-thread locks on a lock file beside a store.

One :class:`StoreLock` per lock path per process (threads share it; a forked child gets a
fresh one). Exclusion between processes uses ``flock`` on a lock file that is never
unlinked, so every process locks the same inode; exclusion between threads uses a
``threading.RLock`` held for as long as the file lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._pid import close_if_ours, pid
from .errors import StoreError

__all__ = ["StoreLock"]

_registry: weakref.WeakValueDictionary[str, StoreLock] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()
_registry_pid = pid()


class StoreLock:
    """Shared/exclusive lock backed by ``flock`` on ``path`` (created if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._fd = -1
        self._pid = pid()
        self._depth = 0
        self._mode = 0

    def __del__(self) -> None:
        # The last user is gone (the registry holds locks weakly): release the descriptor.
        close_if_ours(self._fd, self._pid)

    @classmethod
    def for_path(cls, path: Path) -> StoreLock:
        """The process-wide lock object for ``path``."""
        global _registry_pid
        key = os.path.abspath(path)
        with _registry_lock:
            if _registry_pid != pid():  # forked: the parent's locks are not ours
                _registry.clear()
                _registry_pid = pid()
            lock = _registry.get(key)
            if lock is None:
                lock = _registry[key] = cls(Path(key))
            return lock

    def _open(self) -> int:
        if self._fd < 0:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise StoreError(
                    f"cannot open lock file {self.path}: {exc.strerror}. stet needs to create "
                    f"this file beside the store; check the directory exists and is writable."
                ) from None
        return self._fd

    def _after_fork(self) -> None:
        """In a forked child: the inherited descriptor shares the parent's lock, so open
        our own (the parent keeps its descriptor and its lock)."""
        if self._pid != pid():
            self._pid = pid()
            self._fd = -1
            self._depth = 0
            self._mode = 0
            self._thread_lock = threading.RLock()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock exclusively (one thread of one process)."""
        self._after_fork()
        with self._thread_lock:
            self._acquire(fcntl.LOCK_EX)
            try:
                yield
            finally:
                self._release()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock against writers (other readers may hold it too)."""
        self._after_fork()
        with self._thread_lock:
            self._acquire(fcntl.LOCK_SH)
            try:
                yield
            finally:
                self._release()

    def _acquire(self, mode: int) -> None:
        if self._depth:
            if mode == fcntl.LOCK_EX and self._mode != fcntl.LOCK_EX:
                raise RuntimeError("stet internal error: lock upgrade while held shared")
            self._depth += 1
            return
        fd = self._open()
        try:
            fcntl.flock(fd, mode)
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise StoreError(
                    f"the filesystem holding {self.path} refuses file locks "
                    f"({exc.strerror}); stet will not share a store without locking. Put the "
                    f"store on a filesystem with locking (a local disk, or NFS with lockd), "
                    f"or use a SQLite or PostgreSQL store."
                ) from None
            raise
        self._depth, self._mode = 1, mode

    def _release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._mode = 0
