"""One decorated function's runs: binding a call, skipping it (:class:`Skip`), claiming
its run (:class:`Attempt`), recording it (:class:`Ticket`); and planning a sweep's settings.

:mod:`stet._decorator` wraps a function around a :class:`Run`; :mod:`stet._sweep` runs a
:class:`Plan` through it.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._claims import calls, claim_offset
from ._config import config
from ._identity import Binder, UnstableValueError, format_call, json_text
from ._schema import (
    DURATION_FIELD,
    ERROR_FIELD,
    ERROR_TYPE_FIELD,
    FUNC_FIELD,
    HOST,
    HOST_FIELD,
    JSON_FIELD,
    PID_FIELD,
    RESULT_FIELD,
    STARTED_FIELD,
    TIMESTAMP_FIELD,
    TRACEBACK_FIELD,
    Record,
)
from ._sidecar import os_error
from .backends import backend_class, shared_backend
from .backends._base import Store, utc_now
from .backends._finish import declare
from .errors import StoreError

if TYPE_CHECKING:
    from ._saved import ResultCache

__all__ = ["Attempt", "Plan", "Run", "Setting", "Skip", "Ticket", "pending_settings",
           "plan_sweep", "record_plan", "resolve_store", "run_of", "traceback_text"]

#: A setting of a sweep: the keyword arguments of one call.
Setting = dict[str, Any]


class Skip(enum.Enum):
    """Why a call did not run."""

    DONE = "done"  #: its run is recorded as done
    RUNNING = "running"  #: another call (here or elsewhere) is running it
    FAILED_BEFORE = "failed-before"  #: it failed before, and ``skip_failed=True``


class Run:
    """What one decorated function needs per call; built once at decoration."""

    __slots__ = ("backend", "binder", "func", "key", "location", "name", "options",
                 "results", "save_result", "skip_failed", "store", "verbose", "wait")

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
        location: str | None = None,
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
            from ._saved import ResultCache  # (only a function that saves results needs it)

            self.results = ResultCache(self.name)
        backend_class(store)  # an unknown extension fails at decoration, not mid-sweep
        #: Where the store is: a relative path is resolved now, at decoration, so that a
        #: later os.chdir (Hydra's job.chdir, a library) cannot move it. ``store`` stays
        #: as written, for messages.
        self.location = resolve_store(store) if location is None else location
        declare(self.location, self.options)
        self.backend: Store | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by value (e.g. a function of a script's __main__ sent to Dask workers):
        # rebuilt from its options; the backend and caches are per process.
        fsync = self.options.get("fsync")
        # The store travels resolved: a worker in another directory uses the same one.
        return (Run, (self.func, self.store, self.key, self.name, self.verbose, fsync,
                       self.wait, self.skip_failed, self.save_result, self.location))

    def get_backend(self) -> Store:
        backend = self.backend
        if backend is None:
            backend = self.backend = shared_backend(self.location, **self.options)
        return backend

    def _skip(self, fields: tuple[str, ...], texts: tuple[str, ...], reason: Skip,
              quiet: bool, why: str = "") -> Skip:
        """Skip a call for ``reason``: say so (unless ``quiet``: the caller reports skips
        itself, as :func:`stet.sweep` does) and return the reason."""
        if not quiet and (config.verbose if self.verbose is None else self.verbose):
            call = format_call(self.func.__name__, fields, texts)
            print(f"[stet] Skipping {call}{why}", flush=True)
        return reason

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                 quiet: bool) -> Attempt | Skip:
        """Bind a call and skip it if its run is done (or failed, with ``skip_failed``);
        else the attempt to claim it, not yet claimed."""
        mappings: dict[str, Any] = {}
        fields, texts = self.binder.bind(args, kwargs, mappings)
        names, sorted_texts = self.binder.sorted_view(fields, texts)
        backend = self.get_backend()
        # A store whose claim also catches up with it (PostgreSQL) is asked about its
        # local index alone here: the look after claiming, below, is the one that counts.
        try:
            done = backend.contains_run_cached(self.name, names, sorted_texts)
        except OSError as exc:  # any backend: the store's name, said in stet's words
            raise os_error(backend.describe(), "reading", exc) from exc
        if done:
            return self._skip(fields, texts, Skip.DONE, quiet)
        if self.skip_failed and backend.contains_failure(self.name, names, sorted_texts):
            return self._skip(fields, texts, Skip.FAILED_BEFORE, quiet,
                              ": it failed before (skip_failed=True; f.forget(...) clears "
                              "its failure)")
        backend.check_writable()  # before the claim, so before the function runs
        attempt = Attempt(self, backend, fields, texts, names, sorted_texts, quiet)
        if mappings:  # their JSON copy, taken before the function may change them
            attempt.json = json_text(mappings)
        return attempt

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any],
              quiet: bool = False) -> Ticket | Skip:
        """Decide whether this call runs: a ticket holding the run's claim, or the reason
        it does not (said on stdout, unless ``quiet``)."""
        attempt = self._prepare(args, kwargs, quiet)
        if isinstance(attempt, Skip):
            return attempt
        if not calls.try_take(attempt.key, attempt):
            if not self.wait:
                return attempt.skip_running("by another call in this process")
            calls.wait(attempt.key, attempt, attempt.call_text())
        try:
            holder = attempt.claims.try_claim(attempt.offset, attempt.info)
            if holder is not None:
                if not self.wait:
                    return attempt.skip_running(holder)
                attempt.claims.wait_claim(attempt.offset, attempt.info)
            return attempt.confirm()
        except BaseException:
            calls.release(attempt.key, attempt)
            raise

    async def abegin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ticket | Skip:
        """:meth:`begin` for an ``async def`` function: waiting (``wait=True``) awaits
        instead of blocking the event loop, which other calls of the run may need."""
        import asyncio

        attempt = self._prepare(args, kwargs, False)
        if isinstance(attempt, Skip):
            return attempt
        pause = _FIRST_PAUSE
        while not calls.try_take(attempt.key, attempt):
            if not self.wait:
                return attempt.skip_running("by another call in this process")
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE)
        try:
            pause = _FIRST_PAUSE
            while (holder := attempt.claims.try_claim(attempt.offset, attempt.info)):
                if not self.wait:
                    return attempt.skip_running(holder)
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


class Attempt:
    """One call's attempt to claim its run; the owner of its in-process claim."""

    __slots__ = ("backend", "claims", "fields", "info", "json", "key", "names", "offset",
                 "quiet", "run", "sorted_texts", "texts")

    def __init__(self, run: Run, backend: Store, fields: tuple[str, ...],
                 texts: tuple[str, ...], names: tuple[str, ...],
                 sorted_texts: tuple[str, ...], quiet: bool) -> None:
        self.run, self.backend, self.quiet = run, backend, quiet
        self.fields, self.texts = fields, texts
        self.names, self.sorted_texts = names, sorted_texts
        self.claims = backend.claims()
        self.offset = claim_offset(run.name, names, sorted_texts)
        # Keyed by the claims object: one per store file (or database table) here.
        self.key = (id(self.claims), self.offset)
        self.info = {"func": run.name, "fields": dict(zip(fields, texts, strict=True))}
        #: The JSON copy of the key fields that are mappings, if any (``_stet_json``).
        self.json: str | None = None

    def call_text(self) -> str:
        return format_call(self.run.func.__name__, self.fields, self.texts)

    def skip_running(self, holder: str) -> Skip:
        """Skip the call: its run is being executed by ``holder``."""
        calls.release(self.key, self)
        return self.run._skip(self.fields, self.texts, Skip.RUNNING, self.quiet,
                              f": running elsewhere ({holder})")

    def confirm(self) -> Ticket | Skip:
        """Claimed. Another worker may have finished the run just before: look again."""
        try:
            done = self.backend.contains_run(self.run.name, self.names, self.sorted_texts)
        except BaseException:
            self.claims.release(self.offset)
            raise
        if done:
            self.claims.release(self.offset)
            calls.release(self.key, self)
            return self.run._skip(self.fields, self.texts, Skip.DONE, self.quiet)
        return Ticket(self)


class Ticket:
    """A claimed run: finish it with :meth:`done` or :meth:`failed`, exactly once."""

    __slots__ = ("attempt", "backend", "claims", "fields", "offset", "run", "started", "t0",
                 "texts")

    def __init__(self, attempt: Attempt) -> None:
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
        rec[STARTED_FIELD] = _iso(self.started)
        rec[DURATION_FIELD] = f"{time.perf_counter() - self.t0:.6f}"
        rec[HOST_FIELD] = HOST
        if self.attempt.json is not None:
            rec[JSON_FIELD] = self.attempt.json
        return rec

    def done(self, result: Any = None) -> None:
        """Record the run as completed (with ``result`` if the function saves results),
        then release its claim."""
        run = self.run
        try:
            rec = self._record()
            if run.results is not None:
                from ._saved import encode_result

                text = encode_result(result, format_call(run.func.__name__, self.fields,
                                                         self.texts))
                if text is not None:
                    rec[RESULT_FIELD] = text
            try:
                self.backend.append_record(rec)
            except OSError as exc:  # any store: its name, said in stet's words
                raise os_error(self.backend.describe(), "recording a run in", exc) from exc
        finally:
            self._release()
        if run.results is not None:
            run.results.put(rec)

    def failed(self, exc: BaseException) -> None:
        """Record the run as failed (for exceptions, not Ctrl-C), then release it."""
        try:
            if isinstance(exc, Exception):
                rec = self._record()
                rec[PID_FIELD] = str(os.getpid())
                rec[ERROR_TYPE_FIELD] = type(exc).__qualname__
                rec[ERROR_FIELD] = _error_text(exc)
                rec[TRACEBACK_FIELD] = traceback_text(exc)
                self.backend.append_failure(rec)
        finally:
            self._release()


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 2000 else text[:1997] + "..."


#: A failure keeps the end of its traceback (where the error is) up to this many characters.
TRACEBACK_LIMIT = 20_000


def traceback_text(exc: BaseException, limit: int = TRACEBACK_LIMIT) -> str:
    """``exc``'s traceback as Python prints it, cut to its last ``limit`` characters
    (saying so on its first line) so that a deep recursion cannot bloat the store."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    if len(text) <= limit:
        return text
    return f"[traceback cut: its first {len(text) - limit} characters are not kept]\n" + \
        text[-limit:]


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def resolve_store(store: str | os.PathLike[str] | Store) -> str | Store:
    """A store path made absolute against the current directory; a URL, or a store
    object, as it is."""
    if isinstance(store, Store) or (isinstance(store, str) and "://" in store):
        return store
    return os.path.abspath(store)


def run_of(func: Any) -> Run:
    """The :class:`Run` of a ``@stet.once`` function (for :func:`stet.sweep`)."""
    run = getattr(func, "__stet_run__", None)
    if run is None:
        raise TypeError(
            f"sweep() runs a function decorated with @stet.once; {func!r} is not "
            f"(decorate it, e.g. @stet.once(store='runs.csv'))"
        )
    return run  # type: ignore[no-any-return]


class Plan:
    """A sweep's settings sorted: how many are done, failed before (``skip_failed``),
    given twice, and the pending ones to run."""

    __slots__ = ("done", "duplicates", "failed_before", "pending", "runs", "total")

    def __init__(self) -> None:
        self.pending: list[Setting] = []
        #: every distinct run of the sweep, as a plan entry (see :meth:`Store.add_plan`)
        self.runs: list[Record] = []
        self.done = self.failed_before = self.duplicates = self.total = 0


def plan_sweep(run: Run, settings: Iterable[Mapping[str, Any]], *,
               record: bool = False) -> Plan:
    """Sort settings into done, failed before (skip_failed) and pending, in bulk; with
    ``record``, keep the sweep's runs as a plan in the store (``stet status`` counts
    what is left of it from any shell)."""
    if isinstance(settings, Mapping) or not isinstance(settings, Iterable):
        raise TypeError(
            f"settings must be an iterable of dicts of keyword arguments (e.g. "
            f"stet.grid(...) or a list of dicts), not {type(settings).__name__}"
        )
    backend = run.get_backend()
    binder = run.binder
    out = Plan()
    seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for setting in settings:
        if not isinstance(setting, Mapping):
            raise TypeError(f"a setting must be a dict of keyword arguments, not {setting!r}")
        setting = dict(setting)
        try:
            fields, texts = binder.bind((), setting)
        except UnstableValueError:
            raise
        except TypeError as exc:
            raise TypeError(
                f"setting {setting!r} does not fit {run.func.__qualname__}"
                f"{binder.signature}: {exc}"
            ) from None
        ident = binder.sorted_view(fields, texts)
        if ident in seen:
            out.duplicates += 1
            continue
        seen.add(ident)
        out.total += 1
        out.runs.append(_plan_entry(run.name, *ident))
        if backend.contains_run(run.name, *ident):
            out.done += 1
        elif run.skip_failed and backend.contains_failure(run.name, *ident):
            out.failed_before += 1
        else:
            out.pending.append(setting)
    if record:
        try:
            backend.add_plan(out.runs)
        except StoreError:
            if out.pending:
                raise  # (the runs' records could not be written either)
            # Nothing left to run (a done sweep on a read-only store): nothing to watch.
    return out


def _plan_entry(name: str, fields: Sequence[str], texts: Sequence[str]) -> Record:
    entry = {FUNC_FIELD: name}
    entry.update(zip(fields, texts, strict=True))
    return entry


def record_plan(run: Run, settings: Iterable[Mapping[str, Any]]) -> None:
    """Keep these settings of ``run`` as a plan in its store (the Hydra sweeper's jobs)."""
    binder = run.binder
    entries = [_plan_entry(run.name, *binder.sorted_view(*binder.bind((), dict(s))))
               for s in settings]
    run.get_backend().add_plan(entries)


def pending_settings(run: Run, settings: Iterable[Mapping[str, Any]]) -> list[Setting]:
    """The settings whose runs are not done (nor failed, with ``skip_failed``)."""
    return plan_sweep(run, settings).pending
