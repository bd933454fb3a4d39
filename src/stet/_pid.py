"""The current process id, cached (``os.getpid`` is a system call) and kept right by fork."""

from __future__ import annotations

import os

__all__ = ["pid"]

_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def pid() -> int:
    """This process's id."""
    return _pid
