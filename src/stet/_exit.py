"""Leave stores whole when a process ends normally.

Parquet sidecars are folded into the Parquet file and SQLite's WAL into the database file
when a process exits normally, so the store file alone holds every run. ``atexit`` covers
ordinary scripts; worker processes of ``multiprocessing`` and ``concurrent.futures`` end
with ``os._exit`` after running multiprocessing's own finalizers, so the hooks are
registered there too (once per process, from the first store such a process writes: a
forked child, whose multiprocessing finalizers start empty, registers them again).
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Callable

from . import _fork

__all__ = ["at_exit", "report"]

_hooks: list[Callable[[], None]] = []
_registered = False


def _after_fork() -> None:
    global _registered
    _registered = False


_fork.on_fork_child(_after_fork)


def at_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` when this process (or a forked child using stores) ends normally."""
    if hook not in _hooks:
        _hooks.append(hook)
    ensure_registered()


def ensure_registered() -> None:
    """Register the hooks in this process (call from code a forked child runs)."""
    global _registered
    if _registered:
        return
    _registered = True
    atexit.unregister(_run)  # (a forked child inherits its parent's registration)
    atexit.register(_run)
    if "multiprocessing" in sys.modules:
        from multiprocessing import util

        util.Finalize(None, _run, exitpriority=0)


def report(exc: BaseException, store: object = None) -> None:
    """Say on one line what could not be finished at exit and why; said once, however many
    hooks meet the same failure (stet's errors name the store and say what to do)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text in _reported:
        return
    _reported.add(text)
    what = f"could not finish {store}" if store is not None else "could not finish a store"
    print(f"[stet] at exit: {what}: {text}", file=sys.stderr)


_reported: set[str] = set()


def _run() -> None:
    for hook in list(_hooks):
        try:
            hook()
        except Exception as exc:  # never turn a clean exit into a traceback
            report(exc)
        except KeyboardInterrupt:  # Ctrl-C while folding: folds are atomic, so stop here
            print("[stet] at exit: interrupted; a store may be left with its sidecar "
                  "(nothing is lost: stet reads both, and the next run folds it)",
                  file=sys.stderr)
            return
