"""The current process id, cached (``os.getpid`` is a system call) and kept right by fork."""

from __future__ import annotations

import os

__all__ = ["close_if_ours", "pid"]

_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def pid() -> int:
    """This process's id."""
    return _pid


def close_if_ours(fd: int, owner: int) -> None:
    """Close descriptor ``fd`` if this process (``owner``) opened it; for ``__del__``.

    A forked child never closes its parent's descriptors, and errors (e.g. at interpreter
    shutdown) are ignored.
    """
    try:
        if fd >= 0 and owner == _pid:
            os.close(fd)
    except Exception:
        pass
