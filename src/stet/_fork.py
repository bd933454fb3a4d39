"""Fork safety, in one place: the process id, and what each object resets in a child.

A forked child inherits its parent's objects: open descriptors, held locks, claims,
database connections, mutexes perhaps held by a thread that does not exist there. Every
stet object that keeps such state registers here, once, what to do about it:

- :func:`on_fork_child` -- a callback run in the child right after a fork (drop the
  parent's descriptors without closing them, forget the parent's claims and locks, start
  with a fresh connection). Objects are held weakly: registering never keeps one alive.
- :func:`around_fork` -- a callback pair run in the parent before and after a fork (take a
  mutex so that no fork happens mid-exchange, then release it in both processes).
- :func:`RLock` -- a mutex that a child gets unheld when a thread of the parent (which
  the child does not have) held it; what it guards is reset by its owner's callback.

Callbacks run in registration order; one that raises is skipped (a half-reset object
must not stop the others from resetting). A callback may register others (an object
made in a callback): they run from the next fork on. No lock of this module is held
while callbacks run, so a callback may take any lock that registering threads hold.

After its callbacks ran, an object needs no pid of its own: the only comparison left is
:func:`close_if_ours`, for ``__del__`` (an object that died unreset, or whose reset
raised, must still not close its parent's descriptor).

Only ``os.fork`` (and what is built on it: ``multiprocessing``'s fork start method,
``concurrent.futures.ProcessPoolExecutor`` on Linux) is covered; a process started by
spawn or exec imports stet afresh and has nothing to reset.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["RLock", "around_fork", "close_if_ours", "on_fork_child", "pid"]

_pid = os.getpid()

# Weak references to bound methods (plain functions are held strongly: module-level
# callbacks live as long as their module). The lists are only ever replaced whole or
# appended to (atomic under the GIL), under _lock; the hooks read snapshots of them.
_Ref = Callable[[], Callable[[], object] | None]
_child: list[_Ref] = []
_around: list[tuple[_Ref, _Ref]] = []
_mutexes: list[weakref.ref[Any]] = []
_lock = threading.Lock()
_prune_at = 64  # prune dead entries when the lists grow past this (amortized O(1))
_afters: list[_Ref] = []  # the after-callbacks of the befores run for this fork


def pid() -> int:
    """This process's id, cached (``os.getpid`` is a system call) and kept right by fork."""
    return _pid


def _ref(callback: Callable[[], object]) -> _Ref:
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        return weakref.WeakMethod(callback)
    return lambda: callback


def on_fork_child(callback: Callable[[], object]) -> None:
    """Run ``callback`` in the child after every fork (a bound method is held weakly;
    a closure over an object would keep it alive: register a bound method)."""
    ref = _ref(callback)
    with _lock:
        _child.append(ref)
        _maybe_prune()


def around_fork(before: Callable[[], object], after: Callable[[], object]) -> None:
    """Run ``before`` in the parent just before every fork and ``after`` right after it,
    in the parent and in the child (bound methods are held weakly)."""
    pair = (_ref(before), _ref(after))
    with _lock:
        _around.append(pair)
        _maybe_prune()


def _maybe_prune() -> None:
    """Drop dead objects' entries (lock held), each time the lists doubled since the last
    time, so registering stays O(1) on average however many objects are alive."""
    global _child, _around, _mutexes, _prune_at
    if len(_child) + len(_around) + len(_mutexes) > _prune_at:
        _child = [r for r in _child if r() is not None]
        _around = [p for p in _around if p[0]() is not None]
        _mutexes = [m for m in _mutexes if m() is not None]
        _prune_at = max(64, 2 * (len(_child) + len(_around) + len(_mutexes)))


def _call(ref: _Ref) -> None:
    callback = ref()
    if callback is not None:
        with contextlib.suppress(Exception):  # see the module docstring
            callback()


def _before_fork() -> None:
    global _afters
    with _lock:
        around = list(_around)
    _afters = [after for _before, after in around]
    for before, _after in around:
        _call(before)


def _after_in_parent() -> None:
    for after in reversed(_afters):
        _call(after)


def _after_in_child() -> None:
    global _pid, _lock
    _pid = os.getpid()
    # Another thread of the parent may have been registering: that thread is not here.
    _lock = threading.Lock()
    for mref in list(_mutexes):
        mutex = mref()
        if mutex is not None and not mutex._is_owned():  # (the forking thread's is kept)
            mutex._at_fork_reinit()
    for after in reversed(_afters):
        _call(after)
    for ref in list(_child):  # a callback that registers another appends past the copy
        _call(ref)


os.register_at_fork(before=_before_fork, after_in_parent=_after_in_parent,
                    after_in_child=_after_in_child)


def close_if_ours(fd: int, owner: int) -> None:
    """Close descriptor ``fd`` if this process (``owner``) opened it; for ``__del__``.

    A forked child never closes its parent's descriptors, and errors (e.g. at interpreter
    shutdown) are ignored.
    """
    try:
        if fd >= 0 and owner == _pid:
            os.close(fd)
    except Exception:  # at interpreter shutdown anything may be gone
        pass


def RLock() -> threading.RLock:
    """A :class:`threading.RLock` that a forked child gets unheld.

    A thread of the parent that held it mid-call does not exist in the child, so nothing
    would ever release it there. The forking thread's own hold is kept (it goes on, and
    releases it). Whatever the mutex guarded may be half-changed: its owner resets that
    in its own :func:`on_fork_child` callback. The lock is the standard one, held weakly
    here: taking it costs nothing more.
    """
    mutex = threading.RLock()
    ref = weakref.ref(mutex)
    with _lock:
        _mutexes.append(ref)
        _maybe_prune()
    return mutex
