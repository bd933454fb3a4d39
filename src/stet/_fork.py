"""Fork safety, in one place: the process id, and what each object resets in a child.

A forked child inherits its parent's objects: open descriptors, held locks, claims,
database connections, mutexes perhaps held by a thread that does not exist there. Every
stet object that keeps such state registers here, once, what to do about it:

- :func:`on_fork_child` -- a callback run in the child right after a fork (drop the
  parent's descriptors without closing them, forget the parent's claims and locks, start
  with a fresh connection). Objects are held weakly: registering never keeps one alive.
- :func:`around_fork` -- a callback pair run in the parent before and after a fork (take a
  mutex so that no fork happens mid-exchange, then release it in both processes).

Callbacks run in registration order; one that raises is skipped (a half-reset object
must not stop the others from resetting). Objects that only need to know whether they
were made in this process compare their creation :func:`pid` with the current one.

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

__all__ = ["around_fork", "close_if_ours", "on_fork_child", "pid"]

_pid = os.getpid()

# Weak references to bound methods (or plain functions, held strongly: module-level
# callbacks live as long as their module). Guarded by a lock: objects register from any
# thread; the hooks run with only the forking thread alive.
_Ref = Callable[[], Callable[[], object] | None]
_child: list[_Ref] = []
_before: list[tuple[_Ref, _Ref]] = []
_lock = threading.RLock()  # a callback may register another (in the child)


def pid() -> int:
    """This process's id, cached (``os.getpid`` is a system call) and kept right by fork."""
    return _pid


def _ref(callback: Callable[[], object]) -> _Ref:
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        return weakref.WeakMethod(callback)
    return lambda: callback


def on_fork_child(callback: Callable[[], object]) -> None:
    """Run ``callback`` in the child after every fork (a bound method is held weakly)."""
    with _lock:
        if len(_child) > 64:  # dead objects' entries go, amortized
            _child[:] = _live(_child)
        _child.append(_ref(callback))


def around_fork(before: Callable[[], object], after: Callable[[], object]) -> None:
    """Run ``before`` in the parent just before every fork and ``after`` right after it,
    in the parent and in the child (bound methods are held weakly)."""
    with _lock:
        _before.append((_ref(before), _ref(after)))


def _live(refs: list[Any]) -> list[Any]:
    return [r for r in refs if (r[0]() if isinstance(r, tuple) else r()) is not None]


def _call(ref: _Ref) -> None:
    callback = ref()
    if callback is not None:
        with contextlib.suppress(Exception):  # see the module docstring
            callback()


def _before_fork() -> None:
    _lock.acquire()  # released after the fork, in both processes
    _before[:] = _live(_before)
    for before, _after in _before:
        _call(before)


def _after_in_parent() -> None:
    for _b, after in reversed(_before):
        _call(after)
    _lock.release()


def _after_in_child() -> None:
    global _pid
    _pid = os.getpid()
    for _b, after in reversed(_before):
        _call(after)
    _child[:] = _live(_child)
    for ref in list(_child):
        _call(ref)
    _lock.release()


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
