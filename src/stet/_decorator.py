"""The ``@once`` decorator: run each parameter combination once, skip it afterwards."""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._claims import calls, claim_offset
from ._config import settings
from ._identity import Binder, format_call
from ._index import FUNC_FIELD
from ._sidecar import os_error
from .backends import shared_backend
from .backends._base import TIMESTAMP_FIELD, Record, Store, utc_now
from .backends._finish import declare as _declare

if TYPE_CHECKING:
    from ._capture import ResultCache

__all__ = ["once"]

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULT_STORE = "_stet_store.csv"
_HOST = os.uname().nodename


class _Run:
    """What one decorated function needs per call; built once at decoration."""

    __slots__ = ("backend", "binder", "func", "key", "name", "options", "results",
                 "save_result", "skip_failed", "store", "verbose", "wait")

    def __init__(
        self,
        func: Callable[..., Any],
        store: str | os.PathLike[str] | Store,
        key: Sequence[str] | None,
        name: str | None,
        verbose: bool | None,
        fsync: bool | None,
        wait: bool,
        skip_failed: bool,
        save_result: bool = False,
    ) -> None:
        self.func = func
        self.key = key
        self.binder = Binder(func, key)
        self.name = name or func.__qualname__
        self.store = store
        self.verbose = verbose
        self.wait = wait
        self.skip_failed = skip_failed
        self.options: dict[str, Any] = {} if fsync is None else {"fsync": fsync}
        self.save_result = save_result
        self.results: ResultCache | None = None
        if save_result:
            from ._capture import ResultCache

            self.results = ResultCache(self.name)
        from .backends import backend_class

        backend_class(store)  # an unknown extension fails at decoration, not mid-sweep
        _declare(store, self.options)
        self.backend: Store | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by value (e.g. a function of a script's __main__ sent to Dask workers):
        # rebuilt from its options; the backend and caches are per process.
        fsync = self.options.get("fsync")
        return (_Run, (self.func, self.store, self.key, self.name, self.verbose, fsync,
                       self.wait, self.skip_failed, self.save_result))

    def get_backend(self) -> Store:
        backend = self.backend
        if backend is None:
            backend = self.backend = shared_backend(self.store, **self.options)
        return backend

    def _say(self, fields: tuple[str, ...], texts: tuple[str, ...], why: str = "",
             code: str = "done", skipped: list[str] | None = None) -> None:
        if skipped is not None:  # the caller reports skips itself (stet.sweep)
            skipped.append(code)
            return
        if settings.verbose if self.verbose is None else self.verbose:
            call = format_call(self.func.__name__, fields, texts)
            print(f"[stet] Skipping {call}{why}", flush=True)

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                 skipped: list[str] | None) -> _Attempt | None:
        """Bind a call and skip it if its run is done (or failed, with ``skip_failed``);
        else the attempt to claim it, not yet claimed."""
        fields, texts = self.binder.bind(args, kwargs)
        names, sorted_texts = self.binder.sorted_view(fields, texts)
        backend = self.get_backend()
        # A store whose claim also catches up with it (PostgreSQL) is asked about its
        # local index alone here: the look after claiming, below, is the one that counts.
        try:
            done = backend.contains_run_cached(self.name, names, sorted_texts)
        except OSError as exc:  # any backend: the store's name, said in stet's words
            raise os_error(backend.describe(), "reading", exc) from exc
        if done:
            self._say(fields, texts, skipped=skipped)
            return None
        if self.skip_failed and backend.contains_failure(self.name, names, sorted_texts):
            self._say(fields, texts, ": it failed before (skip_failed=True; "
                      "f.forget(...) clears its failure)", "failed", skipped)
            return None
        backend.check_writable()  # before the claim, so before the function runs
        return _Attempt(self, backend, fields, texts, names, sorted_texts, skipped)

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any],
              skipped: list[str] | None = None) -> _Ticket | None:
        """Decide whether this call runs: ``None`` (skipped, message printed) or a
        ticket holding the run's claim.

        With a ``skipped`` list, a skip prints nothing and appends why instead:
        ``"done"``, ``"running"`` (elsewhere) or ``"failed"`` (before, ``skip_failed``).
        """
        attempt = self._prepare(args, kwargs, skipped)
        if attempt is None:
            return None
        if not calls.try_take(attempt.key, attempt):
            if not self.wait:
                attempt.skip_running("by another call in this process")
                return None
            calls.wait(attempt.key, attempt, attempt.call_text())
        try:
            holder = attempt.claims.try_claim(attempt.offset, attempt.info)
            if holder is not None:
                if not self.wait:
                    attempt.skip_running(holder)
                    return None
                attempt.claims.wait_claim(attempt.offset, attempt.info)
            return attempt.confirm()
        except BaseException:
            calls.release(attempt.key, attempt)
            raise

    async def abegin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Ticket | None:
        """:meth:`begin` for an ``async def`` function: waiting (``wait=True``) awaits
        instead of blocking the event loop, which other calls of the run may need."""
        import asyncio

        attempt = self._prepare(args, kwargs, None)
        if attempt is None:
            return None
        pause = _FIRST_PAUSE
        while not calls.try_take(attempt.key, attempt):
            if not self.wait:
                attempt.skip_running("by another call in this process")
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE)
        try:
            pause = _FIRST_PAUSE
            while (holder := attempt.claims.try_claim(attempt.offset, attempt.info)):
                if not self.wait:
                    attempt.skip_running(holder)
                    return None
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LAST_PAUSE)
            return attempt.confirm()
        except BaseException:
            calls.release(attempt.key, attempt)
            raise

    def stored_result(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The saved return value of a done run (``save_result=True``), else ``None``."""
        if self.results is None:
            return None
        fields, texts = self.binder.bind(args, kwargs)
        names, sorted_texts = self.binder.sorted_view(fields, texts)
        return self.results.get(self.get_backend(), names, sorted_texts)


# An async call waiting for a run held by another call polls: first after 1 ms, then
# twice as long each time, at most every 0.1 s (a run held elsewhere usually lasts long).
_FIRST_PAUSE = 0.001
_LAST_PAUSE = 0.1


class _Attempt:
    """One call's attempt to claim its run; the owner of its in-process claim."""

    __slots__ = ("backend", "claims", "fields", "info", "key", "names", "offset", "run",
                 "skipped", "sorted_texts", "texts")

    def __init__(self, run: _Run, backend: Store, fields: tuple[str, ...],
                 texts: tuple[str, ...], names: tuple[str, ...],
                 sorted_texts: tuple[str, ...], skipped: list[str] | None) -> None:
        self.run, self.backend, self.skipped = run, backend, skipped
        self.fields, self.texts = fields, texts
        self.names, self.sorted_texts = names, sorted_texts
        self.claims = backend.claims()
        self.offset = claim_offset(run.name, names, sorted_texts)
        # Keyed by the claims object: one per store file (or database table) here.
        self.key = (id(self.claims), self.offset)
        self.info = {"func": run.name, "fields": dict(zip(fields, texts, strict=True))}

    def call_text(self) -> str:
        return format_call(self.run.func.__name__, self.fields, self.texts)

    def skip_running(self, holder: str) -> None:
        """Skip the call: its run is being executed by ``holder``."""
        calls.release(self.key, self)
        self.run._say(self.fields, self.texts, f": running elsewhere ({holder})", "running",
                      self.skipped)

    def confirm(self) -> _Ticket | None:
        """Claimed. Another worker may have finished the run just before: look again."""
        try:
            done = self.backend.contains_run(self.run.name, self.names, self.sorted_texts)
        except BaseException:
            self.claims.release(self.offset)
            raise
        if done:
            self.claims.release(self.offset)
            calls.release(self.key, self)
            self.run._say(self.fields, self.texts, skipped=self.skipped)
            return None
        return _Ticket(self)


class _Ticket:
    """A claimed run: finish it with :meth:`done` or :meth:`failed`, exactly once."""

    __slots__ = ("attempt", "backend", "claims", "fields", "offset", "run", "started", "t0",
                 "texts")

    def __init__(self, attempt: _Attempt) -> None:
        self.attempt = attempt
        self.run, self.backend = attempt.run, attempt.backend
        self.claims, self.offset = attempt.claims, attempt.offset
        self.fields, self.texts = attempt.fields, attempt.texts
        self.started, self.t0 = time.time(), time.perf_counter()

    def _release(self) -> None:
        try:
            self.claims.release(self.offset)
        finally:
            calls.release(self.attempt.key, self.attempt)

    def _record(self) -> Record:
        rec: Record = dict(zip(self.fields, self.texts, strict=True))
        rec[FUNC_FIELD] = self.run.name
        rec[TIMESTAMP_FIELD] = utc_now()
        rec["_stet_started"] = _iso(self.started)
        rec["_stet_duration"] = f"{time.perf_counter() - self.t0:.6f}"
        rec["_stet_host"] = _HOST
        return rec

    def done(self, result: Any = None) -> None:
        """Record the run as completed (with ``result`` if the function saves results),
        then release its claim."""
        run = self.run
        try:
            rec = self._record()
            if run.results is not None:
                from ._capture import RESULT_FIELD, encode_result

                text = encode_result(result, format_call(run.func.__name__, self.fields,
                                                         self.texts))
                if text is not None:
                    rec[RESULT_FIELD] = text
            self.backend.append_record(rec)
        finally:
            self._release()
        if run.results is not None:
            run.results.put(rec)

    def failed(self, exc: BaseException) -> None:
        """Record the run as failed (for exceptions, not Ctrl-C), then release it."""
        try:
            if isinstance(exc, Exception):
                rec = self._record()
                rec["_stet_pid"] = str(os.getpid())
                rec["_stet_error_type"] = type(exc).__qualname__
                rec["_stet_error"] = _error_text(exc)
                self.backend.append_failure(rec)
        finally:
            self._release()


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 2000 else text[:1997] + "..."


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


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
    store: str | Path | Store = _DEFAULT_STORE,
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
        run = _Run(f, store, key, name, verbose, fsync, wait, skip_failed, save_result)
        if inspect.iscoroutinefunction(f):

            @functools.wraps(f)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                ticket = await run.abegin(args, kwargs)
                if ticket is None:
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
                if ticket is None:
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


def _attach(wrapper: Any, run: _Run) -> None:
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
        from ._sweep import pending_settings

        return pending_settings(run, settings)

    wrapper.is_done = is_done
    wrapper.pending = pending
    wrapper.forget = forget
    wrapper.store = run.store
    wrapper.backend = run.get_backend
    wrapper.__stet_run__ = run
