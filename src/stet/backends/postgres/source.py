"""The table as a record source (see ``store`` for the layout): the session and its
reconnection, following the tables, inserting exactly once, removing."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ... import _fork
from ..._claims import claim_offset
from ..._exit import at_exit
from ..._index import Index, bulk
from ..._schema import FUNC_FIELD, Record, key_names
from ..._sql import quote_ident
from ...errors import CorruptStoreError, StoreError
from .._base import record_matches
from .._cache import RecordSource
from .claims import _Claim, _PgClaims
from .feed import (
    _CHUNK,
    _AppendState,
    _chunks,
    _coerce,
    _decode,
    _Feed,
    _parse_ids,
    _run_part,
    _text_array,
)
from .session import (
    _ORPHANS,
    Stmt,
    _array,
    _import_psycopg,
    _Lost,
    _QueryError,
    _Session,
    _value,
    advice,
)
from .tables import check_tables
from .url import _Target

__all__ = ["PgSource"]

#: What a server says when it refuses connections for a moment (SQLSTATE 57P03).
_RESTARTING = ("the database system is starting up", "the database system is shutting down",
               "the database system is in recovery mode", "not yet accepting connections")

T = TypeVar("T")

#: Removals made in this process, by store: other backends of the same store in this
#: process see them at once, without waiting for the server's notification.
_local_removals: dict[str, int] = {}
_local_lock = threading.Lock()
#: Every source, for the releases still deferred at exit.
_SOURCES: weakref.WeakSet[PgSource] = weakref.WeakSet()


def _release_all_at_exit() -> None:
    """Send the releases still deferred: a lease row left behind would keep other
    workers off its run until this process's lease expires."""
    for source in list(_SOURCES):
        source.claims.release_deferred()


at_exit(_release_all_at_exit)


class _Contended(Exception):
    """A claim lost with a connection is now held by another worker: wait, retry."""


def _key63(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(),
                          "little") & ((1 << 63) - 1)


def _int4(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value



class _Host:
    """The store as its claims see it (``claims.ClaimsHost``): nothing else of it."""

    __slots__ = ("_b",)

    def __init__(self, backend: PgSource) -> None:
        self._b = backend

    @property
    def mutex(self) -> threading.RLock:
        return self._b.mutex

    @property
    def session(self) -> _Session | None:
        return self._b._session

    @property
    def epoch(self) -> int:
        return self._b._epoch

    def open(self) -> _Session:
        return self._b._open()

    def adopt(self, session: _Session) -> _Session:
        return self._b._adopt(session)

    def drop_session(self) -> None:
        self._b._drop_session()

    def with_retry(self, op: Callable[[_Session], T]) -> T:
        return self._b._with_retry(op)

    def run(self, s: _Session, segments: list[list[Stmt]]) -> list[list[Any]]:
        return self._b._run(s, segments)

    def ensure_tables(self, s: _Session, create: bool) -> bool:
        return self._b._check_ready(s, create)

    def catch_up(self, s: _Session, front: Sequence[Stmt]) -> list[Any]:
        return self._b._catch_up(s, self._b._feed, front)

    def claimed_just_now(self, offset: int) -> None:
        self._b._fresh_for = offset

    def mark_stale(self) -> None:
        self._b._stale = True

    def error(self, exc: _QueryError) -> StoreError:
        return self._b._error(exc)


# ------------------------------------------------------------------------ source
#: Run once per session, so that the server process keeps its heap between statements.
#: A claim's statement needs about 130 KiB of memory for a moment, just above glibc's
#: default trim threshold (128 KiB): a server process whose heap happens to end there
#: gives it back to the kernel after every claim and takes it again at the next (brk
#: calls, and pages to fault in and zero, per claim). Whether it does depends on the
#: order of its earlier allocations: one that glibc served with mmap and then freed
#: raises the trim threshold to twice its size (glibc's dynamic threshold), which the
#: backend before psycopg's Connection (statements prepared at first use) got by chance
#: more often. A 1 MiB value built and dropped here is such an allocation, on purpose:
#: the threshold becomes 2 MiB for the session's life. Measured (benchmarks/
#: bench_postgres.py's "spread" sweep, 4 workers, 4,000 runs, loopback PostgreSQL 15.18,
#: 2-core VM under other load, 2026-12-03): brk calls of the server processes (strace -c)
#: 6,348 without it, 74 with it; page faults of a worker's server process 3,600 (2,009
#: to 5,416) without, 530 (454 to 625) with, its CPU 0.40 s and 0.36 s (means of 8
#: alternating runs). Harmless elsewhere (musl, Windows): one 1 MiB value per connection.
_ROOMY_HEAP = "SELECT length(repeat('x', 1048576))"


class PgSource(RecordSource):
    """A store's tables as a :class:`~stet.backends._cache.RecordSource`: the index of
    the records table (``index``), the session shared with the claims (``claims``), and
    the mutex serialising both (``mutex``, given to the store's cache). The arguments
    are :class:`~stet.backends.postgres.store.PostgresBackend`'s."""

    def __init__(self, url: str, *, fsync: bool, reconnect_timeout: float,
                 connect_timeout: float) -> None:
        self.index = Index()
        self.mutex = _fork.RLock()  # (stet._fork's: unheld in a forked child)
        self.fsync = fsync
        self._target = _Target(url)
        self.name = self._target.display  # the URL, its password masked
        self.table = self._target.table
        self.reconnect_timeout = reconnect_timeout
        self.connect_timeout = connect_timeout
        _import_psycopg()  # (now: a missing driver is told when the store is made)
        self._session: _Session | None = None
        self._epoch = 0  # sessions made so far (claims remember theirs)
        self._ever_connected = False
        self._ready = False  # the tables exist
        self._stale = True  # the next lookup must ask the server
        self._fresh_for: int | None = None  # the claim (offset) that just caught up
        self._seen_local = 0
        salt = _key63("stet\x00" + self.table)
        self._salt = salt
        self._channel = f"stet_{salt:016x}"
        t = self.table
        self._q = {
            "records": quote_ident(t),
            "failures": quote_ident(t + "_failures"),
            "meta": quote_ident(t + "_meta"),
            "claims": quote_ident(t + "_claims"),
            "workers": quote_ident(t + "_workers"),
        }
        q = self._q
        self._feed = _Feed("records", q["records"], q["meta"], self.index,
                           (_int4(salt), 1))
        self._ffeed = _Feed("failures", q["failures"], q["meta"], Index(),
                            (_int4(salt), 2))
        self.claims = _PgClaims(_Host(self), q["claims"], q["workers"], salt)
        _SOURCES.add(self)
        # A fork never happens while this backend is mid-exchange (the child would
        # inherit a mutex held by a thread that does not exist there), and the child
        # starts without the parent's session and claims.
        _fork.around_fork(self._hold_for_fork, self._release_after_fork)
        _fork.on_fork_child(self._forget_parent)

    # ------------------------------------------------------------ connection
    def _conninfo(self) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            params = conninfo_to_dict(self._target.url)
        except Exception as exc:
            raise ValueError(f"store {self.name!r} is not a valid PostgreSQL URL: "
                             f"{self._target.scrub(str(exc))}") from None
        defaults = {"fallback_application_name": "stet", "client_encoding": "UTF8",
                    "keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                    "keepalives_count": "6",
                    "connect_timeout": str(max(2, int(self.connect_timeout)))}
        for k, v in defaults.items():
            params.setdefault(k, v)
        return str(make_conninfo("", **params))

    def _open(self) -> _Session:
        """A new connection, not yet the session (no shared state: see _reconnect)."""
        try:
            return _Session(self._conninfo(), self._target.scrub)
        except _Lost as exc:
            # A first connection that fails is a mistake to report at once, unless the
            # server said it is restarting: then wait for it, as after a lost connection.
            if not self._ever_connected and not any(t in str(exc) for t in _RESTARTING):
                raise StoreError(
                    f"cannot connect to PostgreSQL store {self.name}: {exc}. Check the URL "
                    f"(host, port, user, database), that the server runs and accepts "
                    f"connections from here, and the password (in the URL, PGPASSWORD or "
                    f"~/.pgpass)") from None
            raise

    def _adopt(self, session: _Session) -> _Session:  # set up, claims taken again
        self._epoch += 1
        self._session = session
        # A worker whose machine vanishes must lose its claims within minutes, not the
        # two hours of the system's default TCP keepalive: ask the server to probe.
        keep = ("set_config('{0}', CASE WHEN current_setting('{0}') IN ('0', '0s') "
                "THEN '{1}' ELSE current_setting('{0}') END, false)")
        setup = "SELECT " + ", ".join(keep.format(k, v) for k, v in (
            ("tcp_keepalives_idle", "30"), ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "6")))
        stmts: list[Stmt] = [
            (setup, ()),
            # A claim and the look that follows it share a transaction: each statement
            # must see what was committed before it ran, whatever the server's default.
            ("SELECT set_config('default_transaction_isolation', 'read committed', "
                   "false)", ()),
        ]
        if self.fsync:
            stmts.append(("SELECT set_config('synchronous_commit', 'on', false)", ()))
        stmts.append((f"LISTEN {quote_ident(self._channel)}", ()))
        stmts.append((_ROOMY_HEAP, ()))
        try:
            t0 = time.monotonic()
            session.run([stmts])
            self.claims.timed(time.monotonic() - t0)
        except _QueryError as exc:
            self._drop_session()
            raise self._error(exc, "cannot set up a session on") from None
        except BaseException:
            self._drop_session()
            raise
        self._ever_connected = True
        self._stale = True
        self._ready = False
        self.claims.reconnected(session)
        return session

    def _hold_for_fork(self) -> None:  # (a bound method: held weakly by _fork)
        self.mutex.acquire()

    def _release_after_fork(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.mutex.release()

    def _forget_parent(self) -> None:
        """In a forked child: the parent's session and claims are not ours."""
        session, self._session = self._session, None
        if session is not None:
            _ORPHANS.append(session.conn)  # inherited across fork: never touch it
        self._ready = False
        self._stale = True
        self._fresh_for = None
        self.claims.in_child()

    def _connected(self) -> _Session:
        session = self._session
        if session is not None and not session.alive():
            self._drop_session()
            raise _Lost("the connection was closed")
        if session is None:
            session = self._adopt(self._open())
        return session

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        self._ready = False
        self._stale = True
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def _with_retry(self, op: Callable[[_Session], T]) -> T:
        """Run ``op`` on a live session, reconnecting (for a while) if it is lost."""
        deadline: float | None = None
        delay = 0.05
        table_retry = True
        while True:
            try:
                return op(self._connected())
            except _Lost as exc:
                self._drop_session()
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.reconnect_timeout
                if now >= deadline:
                    raise StoreError(
                        f"lost the connection to PostgreSQL store {self.name} and could not "
                        f"reconnect within {self.reconnect_timeout:g} s: {exc}. The runs "
                        f"recorded so far are kept: run again once the server is back "
                        f"(or raise reconnect_timeout)"
                    ) from None
                time.sleep(min(delay, max(deadline - now, 0.0)))
                delay = min(delay * 2, 2.0)
            except _QueryError as exc:
                if exc.sqlstate == "42P01" and table_retry:  # tables dropped meanwhile
                    table_retry = False
                    self._ready = False
                    self._feed.reset()
                    self._ffeed.reset()
                    continue
                raise self._error(exc) from None
            except CorruptStoreError as exc:
                if self.name in str(exc):
                    raise
                raise CorruptStoreError(f"PostgreSQL store {self.name} (table "
                                        f"{self.table!r}): {exc}") from None

    def _error(self, exc: _QueryError, doing: str = "") -> StoreError:
        """A server's refusal as a ``StoreError`` naming the store and what to do."""
        what = advice(exc.sqlstate)
        return StoreError(
            (f"{doing} PostgreSQL store {self.name}" if doing else
             f"PostgreSQL store {self.name}") + f": {exc}"
            + (f" [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else "")
            + (f". What to do: {what}" if what else
               ". The store was left as it was; the server's log may say more")
        )

    def _run(self, s: _Session, segments: list[list[Stmt]]) -> list[list[Any]]:
        """``s.run``, releasing deferred claims first in the same round trip."""
        claims = self.claims
        pending = claims.flush_segment()
        if not pending:
            return s.run(segments)
        try:
            out = s.run(pending + segments)[len(pending):]
        except BaseException:
            claims.flushed(False)
            raise
        claims.flushed(True)
        return out

    # ---------------------------------------------------------------- tables
    def _check_ready(self, s: _Session, create: bool) -> bool:
        """Whether the tables exist (creating them if ``create``); checks the layout."""
        if not self._ready:
            self._ready = check_tables(s, self._q, _int4(self._salt), create, self.table,
                                       self.name, self._error)
        return self._ready

    def exists(self) -> bool:
        """Whether the store's table exists."""
        with self.mutex:
            return self._with_retry(lambda s: self._check_ready(s, create=False))

    # --------------------------------------------------------------- reading
    def _is_fresh(self) -> bool:
        """Whether the index may answer without asking the server (no round trip)."""
        session = self._session
        if self._stale or session is None:
            return False
        if _local_removals.get(self._target.key, 0) != self._seen_local:
            return False
        got = session.notified()
        if got is None or got:
            self._stale = True
            return False
        return True

    def poll(self, index: Index) -> None:
        self._with_retry(lambda s: self._catch_up(s, self._feed))

    def _catch_up(self, s: _Session, feed: _Feed, front: Sequence[Stmt] = ()) -> list[Any]:
        """Bring ``feed`` up to date, after running ``front`` in the same round trip;
        returns the results of ``front``."""
        seen_local = _local_removals.get(self._target.key, 0)
        if not self._check_ready(s, create=False):
            if feed.index.count or feed.max_seen:
                feed.reset()
            front_res = self._run(s, [list(front)])[0] if front else []
            if feed is self._feed:
                self._stale = False
                self._seen_local = seen_local
            return front_res
        front_res = []
        first = True
        with bulk():
            while True:
                now = time.monotonic()
                stmts, trying = feed.catch_up_statements(now)
                if first and front:
                    res = self._run(s, [[*front, *stmts]])[0]
                    front_res, res = res[:len(front)], res[len(front):]
                else:
                    res = self._run(s, [stmts])[0]
                first = False
                if not feed.absorb_catch_up(res, trying, now):
                    break
        if feed is self._feed:
            self._stale = False
            self._seen_local = seen_local
        return front_res

    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        with self.mutex:
            fresh, self._fresh_for = self._fresh_for, None
            # (The run claimed just now, whose claim caught up with the store: a look
            # right after it needs no round trip of its own.)
            just_claimed = fresh is not None and claim_offset(func, fields, texts) == fresh
            if self._is_fresh():
                hit = self.index.contains(func, fields, texts)
                if hit or just_claimed:
                    if hit and just_claimed:
                        self.claims.found_done(fresh)  # type: ignore[arg-type]
                    return hit
            self.poll(self.index)
            hit = self.index.contains(func, fields, texts)
            if hit and just_claimed:
                self.claims.found_done(fresh)  # type: ignore[arg-type]
            return hit

    def contains_run_cached(self, func: str, fields: tuple[str, ...],
                            texts: tuple[str, ...]) -> bool:
        """Whether the local index knows the run is done (no round trip; ``False`` may
        be stale). The decorator asks this before claiming, since a claim catches up
        with the store and the decorator looks again after it."""
        with self.mutex:
            return self._is_fresh() and self.index.contains(func, fields, texts)

    def contains_any(self, fields: Record) -> bool:
        names = tuple(sorted(fields))
        texts = tuple(fields[n] for n in names)
        with self.mutex:
            if self._is_fresh() and self.index.contains_any(names, texts):
                return True
            self.poll(self.index)
            return self.index.contains_any(names, texts)

    def records(self) -> list[Record]:
        return self._load(self._q["records"])

    def _load(self, table: str) -> list[Record]:
        sql = (f"SELECT count(*), max(id), string_agg(record::text, ',' ORDER BY id) "
               f"FROM (SELECT id, record FROM {table} WHERE id > $1 ORDER BY id "
               f"LIMIT $2) AS s")

        def op(s: _Session) -> list[Record]:
            if not self._check_ready(s, create=False):
                return []
            out: list[Record] = []
            last = 0
            while True:
                res = self._run(s, [[(sql, (last, _CHUNK))]])[0][0]
                n = int(_value(res, 0, 0) or b"0")
                out.extend(_decode(_value(res, 0, 2), n))
                if n < _CHUNK:
                    return out
                last = int(_value(res, 0, 1) or b"0")

        return self._with_retry(op)

    # --------------------------------------------------------------- writing
    @staticmethod
    def _dumps(record: Record, s: _Session) -> bytes:
        if not s.ascii_only:
            try:
                return json.dumps(record, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: escape everything
                pass
        return json.dumps(record).encode("ascii")

    def append_record(self, record: Record) -> None:
        """Record a run, exactly once even across lost connections and lost claims."""
        self._append_to(self._feed, record)

    def append(self, record: Record, index: Index) -> None:
        self._append_to(self._feed, record)

    def append_many(self, records: Sequence[Record], index: Index) -> None:
        self.append_records(records)

    def append_records(self, records: Sequence[Record]) -> None:
        """Record many runs, thousands per statement (each statement all or nothing, and
        never applied twice across lost connections). Claims are not looked at: this is
        for copies, not for runs being executed."""
        before = 0
        for chunk in _chunks(records):
            state = _AppendState(before)
            with self.mutex:
                self._with_retry(functools.partial(self._append_many_op, feed=self._feed,
                                                   records=chunk, state=state))
            before = max(before, state.last)

    def _append_many_op(self, s: _Session, feed: _Feed, records: Sequence[Record],
                        state: _AppendState) -> None:
        self._check_ready(s, create=True)
        texts = [self._dumps(r, s) for r in records]
        if not texts:
            return
        if state.sent:
            # The statement may have committed before the connection went (all of it or
            # none): its first row is found by its verbatim JSON text.
            self._await_statement(s, state.session)
            res = s.run([[(feed.sql_find, (state.before, texts[0]))]])
            if int(_value(res[0][0], 0, 0) or b"0"):
                self._stale = True
                return
        else:
            state.before, state.sent = max(state.before, feed.max_seen), True
        runs = [self._dumps(_run_part(r), s) for r in records]
        state.session = s.backend_pid
        res = self._run(s, [[(feed.sql_insert_many,
                              (*feed.lock_keys, _text_array(texts), _text_array(runs)))]])
        state.last = int(_value(res[0][0], 0, 0) or b"0")
        self._stale = True  # the next lookup reads the new rows back

    def _await_statement(self, s: _Session, session: int) -> None:
        """Wait while server process ``session`` still runs a statement: it finishes (and
        commits) one whose client went away, so a look for its rows must come after."""
        if session == s.backend_pid:
            return  # this very session: its answer (or error) came back
        deadline = time.monotonic() + self.reconnect_timeout
        sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'"
        while session and time.monotonic() < deadline:
            res = s.run([[(sql, (session,))]])
            if not int(_value(res[0][0], 0, 0) or b"0"):
                return
            time.sleep(0.05)

    def append_failure(self, record: Record) -> None:
        """Record a failed run (in ``T_failures``)."""
        self._append_to(self._ffeed, record)

    def _append_to(self, feed: _Feed, record: Record) -> None:
        state = _AppendState()
        delay = 0.02
        while True:
            try:
                with self.mutex:
                    held = self.claims.held_for_record(record)
                    if held is not None and held[1].ran is None:
                        held[1].ran = time.monotonic() - held[1].t0
                    self._with_retry(functools.partial(self._append_op, feed=feed,
                                                       record=record, state=state, held=held))
                return
            except _Contended:
                time.sleep(delay)
                delay = min(delay * 1.5, 1.0)

    def _append_op(self, s: _Session, feed: _Feed, record: Record, state: _AppendState,
                   held: tuple[int, _Claim] | None) -> None:
        self._check_ready(s, create=True)
        text = self._dumps(record, s)
        if state.sent:
            # An earlier attempt may have committed before the connection went: the
            # JSON text is kept verbatim, so its row is found by that text.
            self._await_statement(s, state.session)
            res = s.run([[(feed.sql_find, (state.before, text))]])[0][0]
            if int(_value(res, 0, 0) or b"0"):
                self._stale = True
                return
        if held is not None and feed is self._feed and held[1].interrupted:
            # The run's claim was lost with a connection: another worker may have run
            # and recorded it meanwhile. Take the claim again (or wait), then look.
            offset, claim = held
            if claim.epoch != self._epoch and not self.claims.retake(s, offset):
                raise _Contended
            self._catch_up(s, feed)
            names = key_names(record)
            if feed.index.contains(record.get(FUNC_FIELD) or "", names,
                                   tuple(record[n] for n in names)):
                return
        if not state.sent:
            state.before, state.sent = feed.max_seen, True
        state.session = s.backend_pid
        self._insert(s, feed, record, text, held)

    def _insert(self, s: _Session, feed: _Feed, record: Record, text: bytes,
                held: tuple[int, _Claim] | None) -> None:
        """Insert, catch up, and (after the commit) release the run's claim: one trip.
        The claim's lease row is deleted in the insert's own transaction (no commit of
        its own), its lock released after that commit."""
        claims = self.claims
        first: list[Stmt] = [] if held is None else [claims.drop_lease_stmt(held[0])]
        first.append((
            feed.sql_insert,
            (*feed.lock_keys, text, feed.max_seen, 1000, self._dumps(_run_part(record), s)),
        ))
        segments: list[list[Stmt]] = [first]
        if held is not None and held[1].epoch == self._epoch:
            segments.append([claims.unlock_only_stmt(held[0])])
        results = self._run(s, segments)
        res = results[0][-1]
        if held is not None:
            claims.unlocked(held[1])
        new_id = _value(res, 0, 0)
        if _value(res, 0, 1) != feed.generation:
            feed.reset()  # a removal happened: reload at the next lookup
            if feed is self._feed:
                self._stale = True
            return
        count = int(_value(res, 0, 2) or b"0")
        own = None if new_id is None else (int(new_id), record)
        if count >= 1000:  # caught up only partly: the next lookup reads the rest
            own = None
            if feed is self._feed:
                self._stale = True
        feed._add_new(_parse_ids(_value(res, 0, 3)), _value(res, 0, 4), own)

    def remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        return self._remove(self._feed, func, fields)

    def _remove(self, feed: _Feed, func: str | None, fields: Record) -> int:
        table = feed.table

        def op(s: _Session) -> int:
            if not self._check_ready(s, create=False):
                return 0
            bump: list[Stmt] = [
                (f"UPDATE {self._q['meta']} SET value = value + 1 WHERE name = $1",
                 (feed.name,)),
                ("SELECT pg_notify($1, $2)", (self._channel, feed.name)),
                ("COMMIT", ()),
            ]
            if not fields and func is None:
                res = self._run(s, [[("BEGIN", ()),
                                     (f"DELETE FROM {table}", ()), *bump]])[0]
                return int(res[1].command_tuples or 0)
            ids = self._matching_ids(s, table, func, fields)
            if not ids:
                return 0
            res = self._run(s, [[("BEGIN", ()),
                                 (f"DELETE FROM {table} WHERE id = ANY($1::bigint[])",
                                  (_array(ids),)), *bump]])[0]
            return int(res[1].command_tuples or 0)

        with self.mutex:
            n = self._with_retry(op)
            with _local_lock:
                key = self._target.key
                _local_removals[key] = _local_removals.get(key, 0) + 1
            feed.reset()
            if feed is self._feed:
                self._stale = True
            return n

    def _matching_ids(self, s: _Session, table: str, func: str | None,
                      fields: Record) -> list[int]:
        """Ids of the records matching (the server narrows, stet decides exactly)."""
        where: list[str] = []
        params: list[object] = []
        for k, v in fields.items():
            params += [k, v]
            where.append(f"(record->>${len(params) - 1}) = ${len(params)}")
        if func is not None:
            params.append(func)
            where.append(f"coalesce(record->>'{FUNC_FIELD}', '') IN ('', ${len(params)})")
        sql = f"SELECT id, record::text FROM {table}"
        try:
            res = s.run([[(f"{sql} WHERE {' AND '.join(where)}", params)]])[0][0]
        except _QueryError:  # e.g. a \u0000 the json operators refuse: match here
            res = s.run([[(sql, ())]])[0][0]
        ids = []
        for row in range(res.ntuples):
            rec = _coerce(json.loads(_value(res, row, 1) or b"{}"))
            if record_matches(rec, func, fields):
                ids.append(int(_value(res, row, 0) or b"0"))
        return ids

    # -------------------------------------------------------------- failures
    def contains_failure(self, func: str, fields: tuple[str, ...],
                         texts: tuple[str, ...]) -> bool:
        """Whether a failure of this run is recorded."""
        with self.mutex:
            self._with_retry(lambda s: self._catch_up(s, self._ffeed))
            return self._ffeed.index.contains(func, fields, texts)

    def failures(self) -> list[Record]:
        """Every recorded failure, oldest first."""
        with self.mutex:
            return self._load(self._q["failures"])

    def remove_failures(self, func: str | None, fields: Record) -> int:
        """Forget recorded failures of matching runs."""
        return self._remove(self._ffeed, func, fields)

    # ------------------------------------------------------------------ close
    def close(self, index: Index) -> None:
        """Close the connection (which releases this process's claims on the server)."""
        with self.mutex:
            session = self._session
            if session is not None and session.alive() and self.claims.owes_rows():
                with contextlib.suppress(_Lost, _QueryError):
                    self.claims.give_up_leases(session)
            self._drop_session()
            self._ever_connected = False
            self.claims.forget()
            self._feed.reset()
            self._ffeed.reset()


