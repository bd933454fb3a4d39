"""The ``@once`` decorator: run each parameter combination once, skip it afterwards."""

from __future__ import annotations

import functools
import inspect
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from ._config import settings
from ._identity import Binder, format_call
from ._index import FUNC_FIELD
from .backends import shared_backend
from .backends._base import TIMESTAMP_FIELD, BaseBackend, Record, utc_now

__all__ = ["once"]

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULT_STORE = "_stet_store.csv"
_HOST = socket.gethostname()


class _Run:
    """What one decorated function needs per call; built once at decoration."""

    __slots__ = ("backend", "binder", "func", "name", "options", "store", "verbose")

    def __init__(
        self,
        func: Callable[..., Any],
        store: str | os.PathLike[str],
        key: Sequence[str] | None,
        name: str | None,
        verbose: bool | None,
        fsync: bool | None,
    ) -> None:
        self.func = func
        self.binder = Binder(func, key)
        self.name = name or func.__qualname__
        self.store = store
        self.verbose = verbose
        self.options: dict[str, Any] = {} if fsync is None else {"fsync": fsync}
        from .backends import backend_class

        backend_class(store)  # an unknown extension fails at decoration, not mid-sweep
        self.backend: BaseBackend | None = None

    def get_backend(self) -> BaseBackend:
        backend = self.backend
        if backend is None:
            backend = self.backend = shared_backend(self.store, **self.options)
        return backend

    def check(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
        fields, texts = self.binder.bind(args, kwargs)
        names, sorted_texts = self.binder.sorted_view(fields, texts)
        done = self.get_backend().contains_run(self.name, names, sorted_texts)
        if done and (settings.verbose if self.verbose is None else self.verbose):
            print(f"[stet] Skipping {format_call(self.func.__name__, fields, texts)}",
                  flush=True)
        return done, fields, texts

    def record(self, fields: tuple[str, ...], texts: tuple[str, ...], started: float,
               t0: float) -> None:
        rec: Record = dict(zip(fields, texts, strict=True))
        rec[FUNC_FIELD] = self.name
        rec[TIMESTAMP_FIELD] = utc_now()
        rec["_stet_started"] = _iso(started)
        rec["_stet_duration"] = f"{time.perf_counter() - t0:.6f}"
        rec["_stet_host"] = _HOST
        self.get_backend().append_record(rec)


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


@overload
def once(func: F, /) -> F: ...


@overload
def once(
    func: None = None,
    *,
    store: str | Path = ...,
    key: list[str] | None = ...,
    name: str | None = ...,
    verbose: bool | None = ...,
    fsync: bool | None = ...,
) -> Callable[[F], F]: ...


def once(
    func: Callable[..., Any] | None = None,
    *,
    store: str | Path = _DEFAULT_STORE,
    key: list[str] | None = None,
    name: str | None = None,
    verbose: bool | None = None,
    fsync: bool | None = None,
) -> Any:
    """Decorator that skips already-completed experiment runs.

    A run is identified by the function's name and the canonical text of its key
    arguments (defaults applied). A call whose run is recorded as done prints
    ``[stet] Skipping f(alpha=0.1, seed=1)`` and returns ``None`` without running;
    otherwise the function runs and, if it returns, the run is recorded before its value
    is returned. If it raises, nothing is recorded. The return value is not saved.

    Can be used in three styles::

        @once
        def run_experiment(alpha, beta): ...

        @once(store='_stet_store.csv')
        def run_experiment(alpha, beta): ...

        @once(store='_stet_store.csv', key=['alpha', 'beta'])
        def run_experiment(alpha, beta, n_steps): ...

    Args:
        func: The function to decorate (when used without parentheses).
        store: Path to the store file. Backend is inferred from extension:
            ``.csv``, ``.json``, ``.sqlite``/``.db``, ``.parquet``.
        key: Parameter names that uniquely identify a run. If omitted, all parameters
            are used (a first ``self``/``cls`` is left out).
        name: The function name stored with each run (default ``func.__qualname__``).
        verbose: Print skip messages (default: :func:`stet.configure`, env STET_QUIET).
        fsync: fsync every record for power loss (default: :func:`stet.configure`).

    Returns:
        The decorated function (or a decorator if called with arguments).

    Raises:
        TypeError: If ``key`` names something that is not a parameter.
        ValueError: If the store's extension is not supported.
    """

    def decorate(f: Callable[..., Any]) -> Any:
        run = _Run(f, store, key, name, verbose, fsync)
        if inspect.iscoroutinefunction(f):

            @functools.wraps(f)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                done, fields, texts = run.check(args, kwargs)
                if done:
                    return None
                started, t0 = time.time(), time.perf_counter()
                result = await f(*args, **kwargs)
                run.record(fields, texts, started, t0)
                return result

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(f)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                done, fields, texts = run.check(args, kwargs)
                if done:
                    return None
                started, t0 = time.time(), time.perf_counter()
                result = f(*args, **kwargs)
                run.record(fields, texts, started, t0)
                return result

            wrapper = sync_wrapper
        _attach(wrapper, run)
        return wrapper

    if func is not None:
        if not callable(func):
            raise TypeError(
                f"once() takes the function to decorate, or keyword options "
                f"(store=..., key=[...]); got {func!r}"
            )
        return decorate(func)
    return decorate


def _attach(wrapper: Any, run: _Run) -> None:
    """Helpers on the decorated function."""

    def is_done(*args: Any, **kwargs: Any) -> bool:
        """Whether the run these arguments identify is recorded as done."""
        fields, texts = run.binder.bind(args, kwargs)
        names, sorted_texts = run.binder.sorted_view(fields, texts)
        return run.get_backend().contains_run(run.name, names, sorted_texts)

    def forget(*args: Any, **kwargs: Any) -> int:
        """Remove the record of the run these arguments identify; return how many."""
        fields, texts = run.binder.bind(args, kwargs)
        backend = run.get_backend()
        remove = getattr(backend, "remove_where", None)
        if remove is None:
            backend.remove(dict(zip(fields, texts, strict=True)))
            return -1
        return int(remove(run.name, dict(zip(fields, texts, strict=True))))

    wrapper.is_done = is_done
    wrapper.forget = forget
    wrapper.store = run.store
    wrapper.backend = run.get_backend
    wrapper.__stet_run__ = run
