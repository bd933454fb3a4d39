"""Raw descriptors of a SQLite store's files, shared by the SQLite backends of a process."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from .._fork import on_fork_child
from .._sidecar import open_file

__all__ = ["raw_files"]


class _RawFiles:
    """Read-only descriptors of a store's files (the database, its ``-shm``), for reading
    its change counter without SQL; shared by the backends of this process.

    Closing any descriptor of a file drops every POSIX lock this process holds on it,
    SQLite's included: another connection of this process to the store would lose its
    locks, and another process could then rebuild the ``-shm`` that connection has mapped
    (a crash, or worse). So a descriptor is closed only once no backend of this process
    has the store open; a forked child forgets its parent's without closing them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) -> open backends
        self._fds: dict[tuple[int, int], dict[str, int]] = {}
        self._pending: list[tuple[int, int]] = []  # leaves from __del__
        on_fork_child(self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._users, self._fds, self._pending = {}, {}, []

    def _settle(self) -> None:
        while self._pending:
            self._leave(self._pending.pop())

    def enter(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._settle()
            self._users[key] = self._users.get(key, 0) + 1

    def fd(self, key: tuple[int, int], path: str) -> int:
        """A descriptor of ``path`` (a file of the store ``key``); raises ``OSError``."""
        with self._lock:
            self._settle()
            fds = self._fds.setdefault(key, {})
            fd = fds.get(path)
            if fd is None:
                fd = fds[path] = open_file(Path(path), os.O_RDONLY)  # -shm: not via a link
            return fd

    def leave(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._settle()
            self._leave(key)

    def leave_later(self, key: tuple[int, int]) -> None:
        """:meth:`leave` for ``__del__``, which must not take the lock."""
        self._pending.append(key)

    def _leave(self, key: tuple[int, int]) -> None:
        users = self._users.get(key, 0) - 1
        if users > 0:
            self._users[key] = users
            return
        self._users.pop(key, None)
        for fd in self._fds.pop(key, {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)


raw_files = _RawFiles()
