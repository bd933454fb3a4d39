"""The ``@once`` decorator: run each parameter combination once, skip it afterwards.

What a call does (skip, claim, record) is :class:`stet._run.Run`'s; this module wraps a
function around one and attaches its helpers (``is_done``, ``pending``, ``forget``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._schema import DEFAULT_STORE

if TYPE_CHECKING:
    from pathlib import Path

    from ._run import Run
    from .backends._base import Store

__all__ = ["once"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def once(func: F, /) -> F: ...


@overload
def once(
    func: None = None,
    *,
    store: str | Path | Store = ...,
    key: list[str] | None = ...,
    name: str | None = ...,
    verbose: bool | None = ...,
    fsync: bool | None = ...,
    wait: bool = ...,
    skip_failed: bool = ...,
    save_result: bool = ...,
) -> Callable[[F], F]: ...


def once(
    func: Callable[..., Any] | None = None,
    *,
    store: str | Path | Store = DEFAULT_STORE,
    key: list[str] | None = None,
    name: str | None = None,
    verbose: bool | None = None,
    fsync: bool | None = None,
    wait: bool = False,
    skip_failed: bool = False,
    save_result: bool = False,
) -> Any:
    """Decorator that skips already-completed experiment runs.

    A run is identified by the function's name and the canonical text of its key
    arguments (defaults applied). A call whose run is recorded as done prints
    ``[stet] Skipping f(alpha=0.1, seed=1)`` and returns ``None`` without running;
    otherwise the run is claimed (so other threads, processes and workers sharing the
    store skip it while it runs), the function runs and, if it returns, the run is
    recorded before its value is returned. If it raises, the run is recorded as failed
    (apart from completed runs) and the exception propagates; it will be tried again
    unless ``skip_failed=True``. The return value is not saved, unless
    ``save_result=True``.

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
            ``.csv``, ``.json``, ``.sqlite``/``.db``, ``.parquet``; or a PostgreSQL URL
            (``postgresql://user@host/db?table=NAME``) for workers on many machines;
            or a :class:`stet.backends.Store` object (a store of your own).
        key: Parameter names that uniquely identify a run. If omitted, all parameters
            are used (a first ``self``/``cls`` is left out).
        name: The function name stored with each run (default ``func.__qualname__``).
        verbose: Print skip messages (default: :func:`stet.configure`, env STET_QUIET).
        fsync: fsync every record for power loss (default: :func:`stet.configure`).
        wait: When another worker is running this very run, wait for it to finish
            (then skip it if it completed) instead of skipping it at once.
        skip_failed: Skip runs recorded as failed, instead of trying them again.
        save_result: Store the return value (JSON data, e.g. a dict of metrics) with the
            run, as JSON text in the field ``_stet_result``; a call skipped as done then
            returns the stored value instead of ``None``, and :func:`stet.load` shows it
            as columns. A value JSON cannot hold is not stored (the run is still
            recorded as done) and a :class:`stet.ResultNotSavedWarning` is issued.

    Returns:
        The decorated function (or a decorator if called with arguments).

    Raises:
        TypeError: If ``key`` names something that is not a parameter.
        ValueError: If the store's extension is not supported.
    """

    def decorate(f: Callable[..., Any]) -> Any:
        # Imported at the first decoration, not by ``import stet``: a run brings the
        # store backends, claims and locks (see stet/__init__.py). inspect (7-9 ms) is
        # not, for a plain function: its code object says what inspect would.
        from ._identity import is_coroutine_function
        from ._run import Run, Skip

        run = Run(f, store, key, name, verbose, fsync, wait, skip_failed, save_result)
        if is_coroutine_function(f):

            @functools.wraps(f)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                ticket = await run.abegin(args, kwargs)
                if isinstance(ticket, Skip):
                    return run.stored_result(args, kwargs) if run.save_result else None
                try:
                    result = await f(*args, **kwargs)
                except BaseException as exc:
                    ticket.failed(exc)
                    raise
                ticket.done(result)
                return result

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(f)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                ticket = run.begin(args, kwargs)
                if isinstance(ticket, Skip):
                    return run.stored_result(args, kwargs) if run.save_result else None
                try:
                    result = f(*args, **kwargs)
                except BaseException as exc:
                    ticket.failed(exc)
                    raise
                ticket.done(result)
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


def _attach(wrapper: Any, run: Run) -> None:
    """Helpers on the decorated function."""

    def is_done(*args: Any, **kwargs: Any) -> bool:
        """Whether the run these arguments identify is recorded as done."""
        fields, texts = run.binder.bind(args, kwargs)
        names, sorted_texts = run.binder.sorted_view(fields, texts)
        return run.get_backend().contains_run(run.name, names, sorted_texts)

    def forget(*args: Any, **kwargs: Any) -> int:
        """Remove the record (and failures) of the run these arguments identify."""
        fields, texts = run.binder.bind(args, kwargs)
        backend = run.get_backend()
        if run.results is not None:
            run.results.forget(dict(zip(fields, texts, strict=True)))
        backend.remove_failures(run.name, dict(zip(fields, texts, strict=True)))
        return backend.remove_where(run.name, dict(zip(fields, texts, strict=True)))

    def pending(settings: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The settings (dicts of keyword arguments) whose runs are not done yet.

        Asks the store's index once per setting, prints nothing and runs nothing. With
        ``skip_failed=True``, runs recorded as failed are not pending either.
        """
        from ._run import pending_settings

        return pending_settings(run, settings)

    wrapper.is_done = is_done
    wrapper.pending = pending
    wrapper.forget = forget
    wrapper.store = run.store
    wrapper.backend = run.get_backend
    wrapper.__stet_run__ = run
