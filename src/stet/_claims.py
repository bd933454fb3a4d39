"""Exactly-once claims: a run being executed is locked, so other workers skip or wait.

A claim is a POSIX byte-range lock on one byte of ``<store>.claims``, at an offset
derived from the run's identity (a 62-bit hash, so distinct runs practically never
share a byte). The kernel releases the lock when the holder dies, however it dies
(SIGKILL, OOM killer), so a dead worker never blocks a run, and no file is left per claim.
On NFS the lock is held by the server, which releases it when the client's lease lapses.

POSIX locks belong to a process, not to a call: two calls of one run in one process
(threads, or async tasks sharing a thread) would both "hold" the byte. So every call
first takes the run in :data:`calls`, a table of the runs this process's calls are
executing, owned by the call (not the thread) and released by the same call; only then
does it take the file lock against other processes. This module never opens a second
descriptor of the claims file (closing one would release all of the process's locks on
it). Each claim also appends
a one-line announcement (who, where, since when) to the same file, which ``status``
reads to show what is running now; the locks, not the announcements, are what
guarantees exclusion.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from . import _fork
from ._digest import blake2b
from ._fork import close_if_ours, pid
from ._logfile import read_from
from ._platform import lock_byte, unlock_byte, who_locks
from ._schema import HOST
from ._sidecar import open_file
from .errors import StoreError

__all__ = ["CallClaims", "ClaimFile", "Claims", "calls", "claim_offset"]

_BASE = 1 << 40  # lock offsets live far beyond the announcements
_SPAN = (1 << 62) - _BASE
_COMPACT_AT = 1 << 20  # announcement bytes before stale lines are dropped

_registry: weakref.WeakValueDictionary[str, ClaimFile] = weakref.WeakValueDictionary()
_registry_lock = _fork.RLock()


def claim_offset(func: str, fields: Sequence[str], texts: Sequence[str]) -> int:
    """The byte a run's claim locks (fields sorted, texts in the same order)."""
    # repr of a tuple of strings is unambiguous (quoted, escaped), and fast
    digest = blake2b(repr((func, tuple(fields), tuple(texts))).encode(),
                     digest_size=8).digest()
    return _BASE + int.from_bytes(digest, "little") % _SPAN


class CallClaims:
    """The runs this process's calls are executing: a claim belongs to the call.

    A key is ``(claims object, offset)``: the store's claims and the run's byte. Each
    entry holds an owner token (an object made per call) and the thread that took it,
    which only serves to refuse a wait that could never end. Waiting is done by the
    caller: blocking on :meth:`wait` (threads) or polling :meth:`try_take` between
    ``await asyncio.sleep`` (async calls, which must never block their event loop).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: dict[tuple[int, int], tuple[object, int]] = {}
        _fork.on_fork_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: the parent's calls do not run here (nor its threads, one
        of which may have held the condition's lock)."""
        self._held = {}
        self._cond = threading.Condition()

    def try_take(self, key: tuple[int, int], owner: object) -> bool:
        """Take ``key`` for ``owner`` if no call of this process holds it."""
        with self._cond:
            held = self._held
            if key in held:
                return False
            held[key] = (owner, threading.get_ident())
            return True

    def wait(self, key: tuple[int, int], owner: object, what: str) -> None:
        """Take ``key`` for ``owner``, blocking this thread until its holder releases it.

        Raises :class:`RuntimeError` when the holder is this very thread (a call of the
        run inside itself, or an async task suspended on this thread): it could never
        release the run while this thread waits.
        """
        me = threading.get_ident()
        with self._cond:
            while True:
                held = self._held
                current = held.get(key)
                if current is None:
                    held[key] = (owner, me)
                    return
                if current[1] == me:
                    raise RuntimeError(
                        f"{what} is already running in this thread (a call of the same "
                        f"run inside itself, or an async task suspended in this thread), "
                        f"so waiting for it (wait=True) would never end; call it with "
                        f"other arguments, or await it from async code"
                    )
                self._cond.wait()

    def release(self, key: tuple[int, int], owner: object) -> None:
        """Give up ``key`` if ``owner`` holds it."""
        with self._cond:
            held = self._held
            current = held.get(key)
            if current is not None and current[0] is owner:
                del held[key]
                self._cond.notify_all()


#: The runs being executed by calls of this process (see :class:`CallClaims`).
calls = CallClaims()


class Claims(Protocol):
    """What the decorator needs from a store's claims (files, or a database)."""

    def try_claim(self, offset: int, info: dict[str, Any]) -> str | None:
        """Claim ``offset`` without waiting: ``None`` on success, else who holds it."""

    def wait_claim(self, offset: int, info: dict[str, Any]) -> None:
        """Claim ``offset``, waiting until whoever holds it releases it (or dies)."""

    def release(self, offset: int) -> None:
        """Give up a claim this process holds."""

    def running(self) -> list[dict[str, Any]]:
        """Announcements (``func``, ``fields``, ``host``, ``pid``, ``since``) of live claims."""


class ClaimFile:
    """Claims of one store, shared by every thread of this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._pid = pid()
        self._mutex = threading.Condition()
        self._held: dict[int, int] = {}  # offset -> thread ident holding it here
        self._appended = 0
        self._writable = False  # _fd was opened for writing (claims can be locked)
        _fork.on_fork_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: POSIX locks are not inherited, so none of the parent's
        claims is ours; its descriptor is dropped unclosed (closing it would be harmless
        to the parent's locks, but it is the parent's), and ours is opened when needed."""
        self._fd, self._pid = -1, pid()
        self._mutex = threading.Condition()
        self._held = {}
        self._writable = False

    def __del__(self) -> None:
        # Nobody uses these claims any more (the registry holds them weakly); closing the
        # descriptor releases nothing that is still claimed.
        close_if_ours(self._fd, self._pid)

    @classmethod
    def for_path(cls, path: Path) -> ClaimFile:
        # One instance per file (not per spelling of its path): closing a descriptor of
        # the file would drop every lock this process holds on it, other instances' too.
        # The directory's device and inode, not its path: a bind mount (or a second mount
        # of a network share) shows one directory under two paths that no realpath joins.
        real = os.path.realpath(path)
        try:
            d = os.stat(os.path.dirname(real) or ".")
            key = f"{d.st_dev}:{d.st_ino}:{os.path.basename(real)}"
        except OSError:
            key = real
        with _registry_lock:
            claims = _registry.get(key)
            if claims is None:
                claims = _registry[key] = cls(Path(os.path.abspath(path)))
            return claims

    def _open(self, write: bool = True) -> int:
        """Our one descriptor of the file; opened read-only where it cannot be written
        if ``write`` is false (for ``running``, on a store in a read-only place)."""
        if self._fd >= 0 and (self._writable or not write):
            return self._fd
        if self._fd >= 0:
            # Read-only so far, so no claim is locked through it: closing it drops none.
            os.close(self._fd)
        self._fd = -1
        try:
            try:
                self._fd = open_file(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
                self._writable = True
            except OSError as exc:
                if write or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                # only to read announcements and ask who holds a lock
                self._fd = open_file(self.path, os.O_RDONLY)
                self._writable = False
        except OSError as exc:
            raise StoreError(
                f"cannot open claims file {self.path}: {exc.strerror}. stet keeps it "
                f"beside the store; check the directory is writable."
            ) from None
        return self._fd

    # ------------------------------------------------------------------ claims
    def try_claim(self, offset: int, info: dict[str, Any]) -> str | None:
        """Claim ``offset``; ``None`` on success, else who holds it."""
        me = threading.get_ident()
        with self._mutex:
            fd = self._open()
            if offset in self._held:  # (the decorator's CallClaims normally stops this)
                return "by another call in this process"
            try:
                lock_byte(fd, offset, wait=False)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return self._describe_holder(fd, offset)
                raise self._lock_error(exc) from None
            self._held[offset] = me
        self._announce(offset, info)
        return None

    def wait_claim(self, offset: int, info: dict[str, Any]) -> None:
        """Claim ``offset``, waiting for whoever holds it to finish."""
        me = threading.get_ident()
        with self._mutex:
            while offset in self._held:
                self._mutex.wait()
            self._held[offset] = me  # reserve against other threads while we wait
            fd = self._open()
        try:
            lock_byte(fd, offset, wait=True)
        except BaseException as exc:
            with self._mutex:
                self._held.pop(offset, None)
                self._mutex.notify_all()
            if isinstance(exc, OSError):
                raise self._lock_error(exc) from None
            raise
        self._announce(offset, info)

    def release(self, offset: int) -> None:
        """Give up a claim made by this process."""
        with self._mutex:
            if self._held.pop(offset, None) is not None:
                unlock_byte(self._fd, offset)
            self._mutex.notify_all()

    def is_claimed(self, offset: int) -> bool:
        """Whether anyone (this process included) holds a claim on ``offset``."""
        with self._mutex:
            if offset in self._held:
                return True
            return self._holder_pid(self._open(), offset) is not None

    # ----------------------------------------------------------- announcements
    def _announce(self, offset: int, info: dict[str, Any]) -> None:
        line = json.dumps(
            {"o": offset, "host": HOST, "pid": pid(), "since": time.time(), **info},
            ensure_ascii=True,
        )
        try:
            os.write(self._fd, line.encode("ascii") + b"\n")
        except OSError:
            return  # announcements are informational; the lock is what matters
        self._appended += 1
        if self._appended % 1000 == 0:
            self._maybe_compact()

    def running(self) -> list[dict[str, Any]]:
        """Announcements of claims held right now, by any process."""
        # Read through our own descriptor: closing any other descriptor of this file would
        # drop every POSIX lock this process holds on it, i.e. all of its claims.
        with self._mutex:
            if not self.path.exists() and self._fd < 0:
                return []
            fd = self._open(write=False)
            data = read_from(fd, 0)
        latest: dict[int, dict[str, Any]] = {}
        for line in data.splitlines():
            try:
                entry = json.loads(line)
                latest[int(entry["o"])] = entry
            except (ValueError, KeyError, TypeError):
                continue  # a torn or foreign line: announcements are best effort
        with self._mutex:
            fd = self._open(write=False)
            out = []
            for offset, entry in latest.items():
                if offset in self._held and entry.get("pid") == pid():
                    out.append(entry)
                    continue
                holder = self._holder_pid(fd, offset)
                if holder is not None:
                    out.append(entry)
        return out

    def _maybe_compact(self) -> None:
        """Drop announcements of finished claims once the file is large (inode kept)."""
        try:
            if os.fstat(self._fd).st_size < _COMPACT_AT:
                return
            live = self.running()
            data = b"".join(json.dumps(e).encode() + b"\n" for e in live)
            with self._mutex:  # same descriptor (see running); O_APPEND writes at the end
                os.ftruncate(self._fd, 0)
                os.write(self._fd, data)
        except OSError:
            pass

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _holder_pid(fd: int, offset: int) -> int | None:
        """PID of another process holding a lock on ``offset`` (``0``: unknown)."""
        return who_locks(fd, offset)

    def _describe_holder(self, fd: int, offset: int) -> str:
        holder = self._holder_pid(fd, offset)
        return f"by pid {holder}" if holder and holder > 0 else "by another worker"

    def _lock_error(self, exc: OSError) -> StoreError:
        return StoreError(
            f"cannot lock {self.path} ({exc.strerror}): the filesystem refuses byte-range "
            f"locks, so stet cannot keep workers from running the same run twice. Put the "
            f"store on a filesystem with locking, or use a PostgreSQL store."
        )
