"""``stet.RayExecutor``: a :class:`concurrent.futures.Executor` over Ray tasks.

Ray ships no ``concurrent.futures`` executor (its ``ray.util.multiprocessing.Pool`` has no
``submit``), but each ``ObjectRef`` gives a future: that is all :func:`stet.sweep` needs.
Ray is imported when the executor is made, never by ``import stet``.

A Ray future says "pending" until its task ends, even while the task runs, so cancelling
it stops nothing: a sweep leaves queued tasks to its stop flag (as with Dask), and the
second Ctrl-C kills the running tasks with ``ray.cancel(force=True)``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

__all__ = ["RayExecutor"]


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class RayExecutor(Executor):
    """Run calls as Ray tasks: ``stet.sweep(f, settings, executor=stet.RayExecutor())``.

    Each ``submit`` is one Ray task (``ray.remote(**options)``), so a task killed with its
    worker is retried by Ray (``max_retries``, 3 by default), and its claim, held by the
    dead process, is free again: the retry runs it, and nothing is recorded twice. Ray is
    initialised as Ray does by itself (``ray.init()`` at the first task) unless it already
    is, e.g. by ``ray.init(address="auto")`` for a cluster.

    Args:
        max_workers: Tasks :func:`stet.sweep` keeps submitted at once is about twice this
            (default: the cluster's CPUs when Ray is initialised, else this machine's).
        **options: Options of ``ray.remote`` for each task: ``num_cpus``, ``num_gpus``,
            ``max_retries``, ``runtime_env``, ...
    """

    def __init__(self, max_workers: int | None = None, **options: Any) -> None:
        import ray

        self._ray = ray
        self._remote = ray.remote(**options)(_call) if options else ray.remote(_call)
        if max_workers is None and ray.is_initialized():
            resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
            max_workers = int(resources.get("CPU", 0)) or None
        self._max_workers = max_workers
        self._refs: weakref.WeakKeyDictionary[Future[Any], Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a RayExecutor after its shutdown")
            ref = self._remote.remote(fn, args, kwargs)
            fut: Future[Any] = ref.future()
            self._refs[fut] = ref
            return fut

    def _pending_refs(self) -> list[Any]:
        with self._lock:
            return [ref for fut, ref in list(self._refs.items()) if not fut.done()]

    def _kill_running(self) -> bool:
        """Kill the tasks not finished (their worker processes): the second Ctrl-C."""
        refs = self._pending_refs()
        for ref in refs:
            with contextlib.suppress(Exception):  # finished meanwhile, or unknown
                self._ray.cancel(ref, force=True)
        return bool(refs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No task is taken any more; ``wait`` waits for those submitted;
        ``cancel_futures`` cancels those not finished (Ray interrupts a running one with
        KeyboardInterrupt: its run is not recorded, and its claim is released)."""
        with self._lock:
            self._shutdown = True
        refs = self._pending_refs()
        if cancel_futures:
            for ref in refs:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=False, recursive=True)
        elif wait and refs:
            self._ray.wait(refs, num_returns=len(refs))
