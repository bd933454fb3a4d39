"""PostgreSQL claims: advisory locks on the worker's session, and leases that outlive it."""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from ... import _fork
from ..._claims import claim_offset
from ..._schema import FUNC_FIELD, HOST, Record, key_names
from ...errors import StoreError
from .session import Stmt, _array, _in_event_loop, _Lost, _QueryError, _Session, _value

T = TypeVar("T")


class ClaimsHost(Protocol):
    """What claims need of their store: its connection, and round trips on it.

    The claims share the store's session (a claim and the catch-up with the store that
    follows it are one round trip), its mutex (one thread at a time on the session) and
    its reconnection (a lost session loses the locks: the claims take them again).
    """

    @property
    def mutex(self) -> threading.RLock: ...
    @property
    def session(self) -> _Session | None: ...
    @property
    def epoch(self) -> int: ...  # sessions made so far: a claim remembers its session's
    def open(self) -> _Session: ...  # a new connection, not yet the session
    def adopt(self, session: _Session) -> _Session: ...  # make it the session
    def drop_session(self) -> None: ...
    def with_retry(self, op: Callable[[_Session], T]) -> T: ...  # reconnecting if lost
    def run(self, s: _Session, segments: list[list[Stmt]]) -> list[list[Any]]: ...
    def ensure_tables(self, s: _Session, create: bool) -> bool: ...
    def catch_up(self, s: _Session, front: Sequence[Stmt]) -> list[Any]: ...
    def claimed_just_now(self, offset: int) -> None: ...  # (its catch-up is fresh)
    def mark_stale(self) -> None: ...  # the next lookup must ask the server
    def error(self, exc: _QueryError) -> StoreError: ...

_ANNOUNCE_AFTER = 0.1  # seconds a run lasts before it is announced, once runs are short
_SHORT_RUN = 0.05  # a function whose runs take less is announced lazily
_BACKOFF_MAX = 16.0  # a backoff waits at most this many times a run and its record
_PAUSE_MAX = 0.5  # and never more than this (seconds), however slow the round trips
#: A worker's lease on its claims lasts this long (server clock) after its last renewal:
#: a worker that dies (or cannot reach the server) holds its runs at most this long. It
#: matters only while the worker has lost its session (its locks): a live worker
#: reconnects within a second or so, so a short lease costs nothing, and it frees a dead
#: worker's runs soon.
LEASE = 8.0
RENEW = 2.0  # seconds between renewals, while the worker holds claims
#: After a crash of the server (which empties the unlogged claims table) or a restart
#: (while which the leases expire), the workers that held leases up to this long before
#: it get ``LEASE`` seconds to come back and take their claims again before anyone claims
#: anything: a server down this long (or less) never lets a live worker's run execute
#: twice.
OUTAGE = 90.0
_PROBE = 0.1  # seconds between checks that the session is still alive (claims held)
_RECONNECT = 0.25  # seconds between reconnection attempts of the helper thread
#: A round trip of the helper (a renewal: one short statement) unanswered this long
#: counts its session as lost (the helper holds the mutex meanwhile: nothing else of the
#: worker's, not even its Ctrl-C, waits longer on a server or network that froze).
_PATIENCE = 5.0
_NOW = "extract(epoch from clock_timestamp())::float8"
#: What ``_try_claim`` answers while the server waits for workers to come back after a
#: crash (compared by identity): nobody holds the run, nobody may take it yet.
_BARRIER = "until the workers of before the server's crash are back"


class _Claim:
    __slots__ = ("announced", "done_elsewhere", "epoch", "info", "interrupted", "ran",
                 "settled", "since", "t0")

    def __init__(self, epoch: int, info: dict[str, Any]) -> None:
        self.epoch = epoch  # the session holding the advisory lock (-1: none)
        self.info = info
        self.since = time.time()  # shown to people (status)
        self.t0 = time.monotonic()  # for durations
        self.announced = False  # its lease row shows what runs (for status)
        self.interrupted = False  # the lock was lost with a connection at some point
        self.done_elsewhere = False  # claimed, then found recorded: release lazily
        self.settled = False  # lock and lease given up on the server (with its record)
        self.ran: float | None = None  # seconds from the claim to its record (or failure)


class _PgClaims:
    """Claims as session-level advisory locks, backed by leases that outlive a session.

    The lock is what makes a claim exclusive and what is fast: the server releases it
    when the session ends, however the worker dies. But a session also ends when the
    server restarts or a session is terminated, while its worker lives on and executes
    the run. So every claim also writes a lease row (``T_claims``: key, owner) in the
    same statement that takes the lock, and the owner (one per process) keeps a row in
    ``T_workers`` whose expiry it renews every ``RENEW`` seconds while it holds claims.
    Whoever finds a lock free takes the run only if no live lease of another owner
    covers it (decided in the statement that takes the lock, on the latest row version,
    by ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``); a worker that lost its session
    reconnects at once (a helper thread watches the session) and takes its locks again.
    A dead worker renews nothing: its runs are free ``LEASE`` seconds after its last
    renewal at the latest.

    ``T_claims`` is unlogged (no WAL: a claim costs no disk flush), so a server crash
    empties it. Its row of key -1 marks when the table was last found empty or the
    server last started (a clean restart keeps the table, but leases expire while the
    server is down): after either, nobody claims until every worker that held a lease
    before it has renewed it since (each does as it reconnects, taking its locks again
    in the same transaction), or ``LEASE`` seconds have passed.

    Threads and tasks of one process share the session; a run held by one call is
    "held by another call in this process" for every other call. A claim's key is the
    run's 62-bit claim offset mixed with the table's name.
    """

    def __init__(self, host: ClaimsHost, claims_table: str, workers_table: str,
                 salt: int) -> None:
        self._h = host
        self._salt = salt
        self._held: dict[int, _Claim] = {}
        self._pending: list[int] = []  # keys to unlock at the next round trip
        self._pending_rows: set[int] = set()  # keys whose lease rows to delete then
        self._inflight_rows: list[int] = []  # deletes sent, not yet known done
        self._pending_since = 0.0
        self._short: dict[str, float] = {}  # function -> typical run time (seconds)
        self._rtt = 0.0  # typical round trip of a claim (seconds)
        self._level = 0.0  # backoff, in run durations (0: none)
        self._collided_at = 0.0
        self._thread: threading.Thread | None = None
        self._owner = ""
        self._renewed_epoch = 0  # the session that last renewed the lease
        self._renewed_at = 0.0  # when (monotonic)
        self._marked_epoch = 0  # the session that last looked at the crash marker
        self._retried_at = 0.0  # when the helper last tried to take lost locks again
        c, w = claims_table, workers_table  # (quoted)
        holder = (f"(SELECT coalesce(c.host, '?') || ' pid ' || coalesce(c.pid::text, '?') "
                  f"FROM {c} AS c WHERE c.k = $1::bigint)")
        # Every other worker that held a lease shortly before the server lost the claims
        # table, and has not renewed it since: their runs are unknown, so wait for them.
        # (The workers are looked at only in the moments after a crash: a subquery
        # evaluated for the marker row alone, once it passed the cheap test.)
        barrier = (f"EXISTS (SELECT 1 FROM {c} AS s WHERE s.k = -1 AND {_NOW} < s.since + "
                   f"{LEASE} AND EXISTS (SELECT 1 FROM {w} AS w WHERE w.renewed < s.since "
                   f"AND w.expires > s.since - {OUTAGE} AND w.owner <> $2::text))")

        def claim(wait: str) -> str:
            return (
                f"WITH l AS MATERIALIZED (SELECT pg_try_advisory_lock($1::bigint) AS ok), "
                f"g AS MATERIALIZED (SELECT {wait} AS wait), "
                f"ins AS (INSERT INTO {c} AS c (k, owner, session, host, pid, since, info) "
                f"SELECT $1::bigint, $2::text, pg_backend_pid(), $3::text, $4::int4, "
                f"$5::float8, $6::json FROM l, g WHERE l.ok AND NOT g.wait "
                f"ON CONFLICT (k) DO UPDATE SET owner = excluded.owner, "
                f"session = excluded.session, host = excluded.host, pid = excluded.pid, "
                f"since = excluded.since, info = excluded.info "
                f"WHERE c.owner IS NOT DISTINCT FROM excluded.owner OR NOT EXISTS "
                f"(SELECT 1 FROM {w} AS w WHERE w.owner = c.owner AND w.expires > {_NOW}) "
                f"RETURNING 1), "
                f"u AS (SELECT pg_advisory_unlock($1::bigint) FROM l "
                f"WHERE l.ok AND NOT EXISTS (SELECT 1 FROM ins)) "
                f"SELECT EXISTS (SELECT 1 FROM ins), CASE WHEN EXISTS (SELECT 1 FROM ins) "
                f"THEN NULL ELSE {holder} END, g.wait, (SELECT count(*) FROM u) FROM l, g"
            )

        self._sql_claim = claim(barrier)
        self._sql_retake = claim("false")
        # The marker's time is when the table was found empty (a crash) or, after a clean
        # restart (which keeps the table), when the server started again: its clock ran
        # on while it was down, so every lease may have expired when it comes back.
        self._sql_mark = (f"INSERT INTO {c} AS c (k, session, since) VALUES (-1, 0, {_NOW}) "
                          f"ON CONFLICT (k) DO UPDATE SET since = excluded.since WHERE "
                          f"c.since < extract(epoch from pg_postmaster_start_time())")
        # Leases of workers gone for an hour are of no use to anyone.
        self._sql_forget_workers = f"DELETE FROM {w} WHERE expires < {_NOW} - 3600"
        self._sql_retire = f"DELETE FROM {w} WHERE owner = $1::text"
        self._sql_renew = (
            f"INSERT INTO {w} (owner, renewed, expires, host, pid) "
            f"VALUES ($1::text, {_NOW}, {_NOW} + {LEASE}, $2::text, $3::int4) "
            f"ON CONFLICT (owner) DO UPDATE SET renewed = excluded.renewed, "
            f"expires = excluded.expires"
        )
        self._sql_announce = (f"UPDATE {c} SET info = $2::json WHERE k = $1::bigint "
                              f"AND owner = $3::text")
        self._sql_unlock = (
            f"WITH d AS (DELETE FROM {c} WHERE k = $1::bigint AND owner = $2::text) "
            f"SELECT pg_advisory_unlock($1::bigint)"
        )
        self._sql_drop_lease = f"DELETE FROM {c} WHERE k = $1::bigint AND owner = $2::text"
        self._sql_unlock_many = (
            f"WITH d AS (DELETE FROM {c} WHERE k = ANY($2::bigint[]) AND "
            f"owner = $3::text) SELECT count(*) FROM unnest($1::bigint[]) AS k "
            f"WHERE pg_advisory_unlock(k)"
        )
        # Status shows the runs whose lock is held: a run whose worker lost its session
        # is either coming back within a moment, or dead.
        locked = (
            "EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.locktype = 'advisory' AND "
            "l.granted AND l.objsubid = 1 AND l.pid = c.session AND l.database = (SELECT "
            "oid FROM pg_database WHERE datname = current_database()) AND "
            "((l.classid::bigint << 32) | l.objid::bigint) = c.k)"
        )
        leased = (f"EXISTS (SELECT 1 FROM {w} AS w WHERE w.owner = c.owner "
                  f"AND w.expires > {_NOW})")
        self._sql_running = (
            f"SELECT c.host, c.pid, c.since, c.info::text FROM {c} AS c "
            f"WHERE c.k >= 0 AND c.info IS NOT NULL AND {locked} ORDER BY c.since"
        )
        self._sql_forget = f"DELETE FROM {c} WHERE owner = $1::text"
        self._sql_is_claimed = (
            f"SELECT count(*) FROM {c} AS c WHERE c.k = $1::bigint AND "
            f"({leased} OR {locked})"
        )

    def owner(self) -> str:
        """This process's name on its leases (a new one after a fork)."""
        if not self._owner:
            self._owner = f"{HOST}:{_fork.pid()}:{secrets.token_hex(6)}"
        return self._owner

    def key(self, offset: int) -> int:
        """The advisory lock key of a claim offset (non-negative, as ``pg_locks`` shows)."""
        return (offset ^ self._salt) & ((1 << 63) - 1)

    # ------------------------------------------------------------------ claims
    def _claim_stmt(self, offset: int, claim_info: dict[str, Any], announce: bool,
                    retake: bool = False) -> Stmt:
        info = json.dumps(claim_info, ensure_ascii=True) if announce else None
        return (self._sql_retake if retake else self._sql_claim,
                (self.key(offset), self.owner(), HOST, _fork.pid(), f"{time.time():.6f}",
                 info))

    def _prelude(self) -> list[Stmt]:
        """What a round trip that claims must do first on this session: look at the
        crash marker (once per session), renew the lease (when due)."""
        h = self._h
        stmts: list[Stmt] = []
        if self._marked_epoch != h.epoch:
            stmts.append((self._sql_mark, ()))
            stmts.append((self._sql_forget_workers, ()))
        if self._renewed_epoch != h.epoch or time.monotonic() - self._renewed_at >= RENEW:
            stmts.append((self._sql_renew, (self.owner(), HOST, _fork.pid())))
        return stmts

    def _prelude_done(self, stmts: list[Stmt], t0: float) -> None:
        for sql, _ in stmts:
            if sql is self._sql_mark:
                self._marked_epoch = self._h.epoch
            elif sql is self._sql_renew:
                self._renewed_epoch, self._renewed_at = self._h.epoch, t0

    def _eager(self, info: dict[str, Any]) -> bool:
        """Announce with the claim itself (runs of this function are not known short)."""
        typical = self._short.get(str(info.get("func", "")))
        return typical is None or typical >= _SHORT_RUN

    def try_claim(self, offset: int, info: dict[str, Any]) -> str | None:
        """Claim ``offset`` without waiting: ``None`` on success, else who holds it.

        (After a server crash, until the workers that held claims have come back or
        ``LEASE`` seconds have passed, this waits: nobody holds the run, nobody may
        take it yet.)
        """
        pause = self._pause_for(info)
        # (Not for a run held here: answered without a round trip. Not on a thread that
        # runs an event loop, as the call of an ``async def`` function does: it would
        # stop every other task.)
        if pause > 0 and offset not in self._held and not _in_event_loop():
            time.sleep(pause)  # not holding the mutex: other threads go on
        while True:
            holder = self._try_claim(offset, info)
            if holder is not _BARRIER:
                return holder
            time.sleep(0.1)  # not holding the mutex

    def _try_claim(self, offset: int, info: dict[str, Any]) -> str | None:
        h = self._h
        with h.mutex:
            if offset in self._held:
                return "by another call in this process"
            eager = self._eager(info)

            def op(s: _Session) -> tuple[bool, str, bool]:
                trips, t0 = s.trips, time.monotonic()
                h.ensure_tables(s, create=True)
                front = self._prelude()
                res = h.catch_up(s,
                                  [*front, self._claim_stmt(offset, info, eager)])
                self._prelude_done(front, t0)
                if s.trips == trips + 1:
                    self.timed(time.monotonic() - t0)
                r = res[-1]
                return (_value(r, 0, 0) == b"t",
                        (_value(r, 0, 1) or b"").decode("utf-8", "replace"),
                        _value(r, 0, 2) == b"t")

            ok, holder, barrier = h.with_retry(op)
            if not ok:
                if barrier:
                    return _BARRIER
                self._collided()
                return f"by {holder}" if holder else "by another worker"
            claim = self._held[offset] = _Claim(h.epoch, info)
            claim.announced = eager
            h.claimed_just_now(offset)
            self._start_helper()
            return None

    def wait_claim(self, offset: int, info: dict[str, Any]) -> None:
        """Claim ``offset``, waiting until whoever holds it releases it (or dies)."""
        delay = 0.02
        while self._try_claim(offset, info) is not None:
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def release(self, offset: int) -> None:
        """Give up a claim this process holds."""
        h = self._h
        with h.mutex:
            claim = self._held.pop(offset, None)
            if claim is None or claim.settled:
                return
            session = h.session
            if claim.epoch != h.epoch or session is None:
                # The lock went with a session; the lease row stays until deleted.
                self._defer(offset, claim, unlock=False)
                return
            if claim.done_elsewhere:
                # Nothing ran: the run is recorded, so holding its lock a little longer
                # harms nobody. Release it with the next round trip (or within 50 ms).
                self._defer(offset, claim)
                return
            self._note_duration(claim)
            try:
                h.run(session, [[self._unlock_stmt(offset, claim)]])
            except _Lost:
                h.drop_session()  # the lock went with the session, not the lease row
                self._defer(offset, claim, unlock=False)
            except _QueryError as exc:
                raise h.error(exc) from None

    def is_claimed(self, offset: int) -> bool:
        """Whether anyone (this process included) holds a claim on ``offset``."""
        if offset in self._held:
            return True
        h = self._h
        with h.mutex:
            res = h.with_retry(lambda s: h.run(s, [[(self._sql_is_claimed,
                                                       (self.key(offset),))]]))
        return int(_value(res[0][0], 0, 0) or b"0") > 0

    def running(self) -> list[dict[str, Any]]:
        """Announcements (``func``, ``fields``, ``host``, ``pid``, ``since``) of live claims."""
        h = self._h

        def op(s: _Session) -> list[dict[str, Any]]:
            if not h.ensure_tables(s, create=False):
                return []
            res = h.run(s, [[(self._sql_running, ())]])[0][0]
            out = []
            for row in range(res.ntuples):
                try:
                    info = json.loads(_value(res, row, 3) or b"{}")
                except ValueError:
                    info = {}
                entry = info if isinstance(info, dict) else {}
                entry.update(host=(_value(res, row, 0) or b"").decode("utf-8", "replace"),
                             pid=int(_value(res, row, 1) or b"0"),
                             since=float(_value(res, row, 2) or b"0"))
                out.append(entry)
            return out

        with h.mutex:
            return h.with_retry(op)

    # ----------------------------------------------------- for the backend
    def _unlock_stmt(self, offset: int, claim: _Claim) -> Stmt:
        return (self._sql_unlock, (self.key(offset), self.owner()))

    def drop_lease_stmt(self, offset: int) -> Stmt:
        return (self._sql_drop_lease, (self.key(offset), self.owner()))

    def unlock_only_stmt(self, offset: int) -> Stmt:
        return ("SELECT pg_advisory_unlock($1::bigint)", (self.key(offset),))

    def unlocked(self, claim: _Claim) -> None:
        """The claim's lease was deleted with its record, its lock (if this session
        held it) released after that commit."""
        self._note_duration(claim)
        claim.epoch = -1
        claim.settled = True

    def _note_duration(self, claim: _Claim) -> None:
        func = str(claim.info.get("func", ""))
        took = claim.ran if claim.ran is not None else time.monotonic() - claim.t0
        old = self._short.get(func)
        self._short[func] = took if old is None else 0.8 * old + 0.2 * took
        self._level = self._level / 2 if self._level > 1 else 0.0  # it ran: ease off

    # ----------------------------------------------------------------- backoff
    def timed(self, trip: float) -> None:
        """Fold one round trip's duration into the typical one."""
        rtt = self._rtt
        self._rtt = trip if not rtt else 0.9 * rtt + 0.1 * min(trip, 4 * rtt)

    def _collided(self) -> None:
        """A claim met a run held elsewhere, or one just recorded elsewhere."""
        self._level = min(max(self._level * 2, 1.0), _BACKOFF_MAX)
        self._collided_at = time.monotonic()

    def _pause_for(self, info: dict[str, Any], now: float | None = None) -> float:
        """How long to wait before the next claim: after collisions, a random moment.

        Workers walking one sweep in the same order otherwise reach each run together:
        all but one find it taken (or, a moment later, recorded), one round trip each,
        run after run. When the function's runs are shorter than a round trip, those
        trips are most of the work: a worker that collided waits a random time up to
        ``level`` times as long as a run holds its claim (the run and one round trip to
        record it; ``level`` doubles with each collision up to sixteen and halves with
        each run the worker executes), and the workers drift apart. Functions whose runs last
        longer never wait: for them parallel workers pay off, and a collision costs
        little beside a run.
        """
        level = self._level
        if not level:
            return 0.0
        typical = self._short.get(str(info.get("func", "")))
        if typical is None or typical >= self._rtt:
            return 0.0
        # Time spent elsewhere since the collision counts towards the wait.
        elapsed = (time.monotonic() if now is None else now) - self._collided_at
        return min(random.uniform(0.0, level * (typical + self._rtt)), _PAUSE_MAX) - elapsed

    def found_done(self, offset: int) -> None:
        """The run just claimed at ``offset`` turned out recorded: release it lazily."""
        claim = self._held.get(offset)
        if claim is not None:
            claim.done_elsewhere = True
            self._collided()

    def _defer(self, offset: int, claim: _Claim, unlock: bool = True) -> None:
        if not self._pending and not self._pending_rows:
            self._pending_since = time.monotonic()
        key = self.key(offset)
        if unlock:
            self._pending.append(key)
        self._pending_rows.add(key)
        self._start_helper()

    def flush_segment(self) -> list[list[Stmt]]:
        """The statements releasing deferred claims (taken off the lists until
        :meth:`_flushed` says whether they were carried out)."""
        if not self._pending and not self._pending_rows:
            return []
        keys, rows = self._pending, sorted(self._pending_rows)
        self._pending, self._pending_rows = [], set()
        self._inflight_rows = rows
        return [[(self._sql_unlock_many, (_array(keys), _array(rows),
                                                self.owner()))]]

    def flushed(self, ok: bool) -> None:
        """A round trip carrying deferred releases ended (``ok``: it was carried out)."""
        if not ok:  # the locks went with the session; the rows must still go
            self._pending_rows.update(self._inflight_rows)
        self._inflight_rows = []

    def held_for_record(self, record: Record) -> tuple[int, _Claim] | None:
        """The claim this process holds on the run ``record`` records, if any."""
        if not self._held:
            return None
        func = record.get(FUNC_FIELD)
        if not func:
            return None
        names = key_names(record)
        offset = claim_offset(func, names, [record[n] for n in names])
        claim = self._held.get(offset)
        if claim is None or claim.settled:
            return None
        return offset, claim

    def retake(self, s: _Session, offset: int) -> bool:
        """Take a lost claim again on session ``s`` (no waiting)."""
        claim = self._held[offset]
        front = self._prelude()
        res = s.run([[*front, self._claim_stmt(offset, claim.info, True, retake=True)]])[0]
        self._prelude_done(front, time.monotonic())
        if _value(res[-1], 0, 0) == b"t":
            claim.epoch = self._h.epoch
            claim.announced = True
            return True
        return False

    def reconnected(self, s: _Session) -> None:
        """Every lock of this process was lost with the old session. Take them again at
        once where nobody else has (their leases kept others off meanwhile), renewing
        the lease in the same transaction."""
        self._pending = []  # the locks went with the session (the rows did not)
        self._inflight_rows = []
        live = [o for o, c in self._held.items() if not c.settled]
        for o in live:
            claim = self._held[o]
            claim.interrupted = True
            claim.epoch = -1
        if not live and not self._pending_rows:
            return
        h = self._h
        t0 = time.monotonic()
        try:
            if not h.ensure_tables(s, create=True):
                return
            front = self._prelude()
            stmts = [*front, *(self._claim_stmt(o, self._held[o].info, True, retake=True)
                               for o in live)]
            res = s.run([stmts])[0][len(front):]
        except _QueryError:
            return
        self._prelude_done(front, t0)
        for o, r in zip(live, res, strict=True):
            if _value(r, 0, 0) == b"t":
                self._held[o].epoch = h.epoch
                self._held[o].announced = True

    def release_deferred(self) -> None:
        """At exit (the helper thread is gone): send deferred releases, and end this
        process's lease if it holds no claim, so that nobody waits for it after a crash
        of the server. (Never waiting long for a helper stuck in a round trip.)"""
        h = self._h
        if not h.mutex.acquire(timeout=2.0):
            return
        try:
            session = h.session
            if session is None or not session.alive():
                return
            retire: list[list[Stmt]] = []
            if not self._held and self._renewed_epoch and self._owner:
                retire = [[(self._sql_retire, (self.owner(),))]]
            if retire or self._pending or self._pending_rows:
                with contextlib.suppress(_Lost, _QueryError):
                    h.run(session, retire)
        finally:
            h.mutex.release()

    def owes_rows(self) -> bool:
        return bool(self._held or self._pending_rows or self._inflight_rows)

    def give_up_leases(self, s: _Session) -> None:
        """Delete every lease row of this process (its backend is being closed)."""
        s.run([[(self._sql_forget, (self.owner(),))]])

    def in_child(self) -> None:
        """In a forked child: the parent's claims, name and helper thread are not ours."""
        self.forget()
        self._owner = ""
        self._thread = None

    def forget(self) -> None:
        """Forget claims that belong to another process (or to a closed session)."""
        self._held.clear()
        self._level = 0.0
        self._pending, self._pending_rows, self._inflight_rows = [], set(), []
        self._renewed_epoch = self._marked_epoch = 0

    # ------------------------------------------------------------ the helper
    def _start_helper(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        self._thread = threading.Thread(target=self._helper, name="stet-postgres-claims",
                                        daemon=True)
        self._thread.start()

    def _helper(self) -> None:
        """While claims are about: keep the session alive (reconnecting and taking the
        locks again at once when it is lost), renew the lease, announce runs that last,
        release deferred claims."""
        h = self._h
        idle_since = probed = tried = time.monotonic()
        while True:
            time.sleep(0.025)
            with h.mutex:
                if self._thread is not threading.current_thread():
                    return
                now = time.monotonic()
                if self._held or self._pending or self._pending_rows:
                    idle_since = now
                elif now - idle_since > 5.0:
                    self._thread = None
                    return
                else:
                    continue
                session = h.session
                if session is not None and now - probed >= _PROBE:
                    probed = now
                    got = session.notified()  # reads what the socket holds, no trip
                    if got:
                        h.mark_stale()
                    if got is None or not session.alive():
                        h.drop_session()
                        session = None
                if session is None:
                    if now - tried < _RECONNECT:
                        continue
                    tried = now
                    session = self._reconnect()  # takes the locks again (_reconnected)
                    if session is None:
                        continue
                session.deadline = time.monotonic() + _PATIENCE
                try:
                    self._helper_trip(session, now)
                except Exception:  # never let the helper die: the main thread will see it
                    h.drop_session()
                finally:
                    session.deadline = None

    def _reconnect(self) -> _Session | None:
        """A new session for the helper (which holds the mutex), or ``None``.

        The mutex is released while connecting, which can take ``connect_timeout`` when
        the server cannot be reached: the worker's threads (and its exit, and Ctrl-C)
        are never kept waiting on the helper.
        """
        h = self._h
        h.mutex.release()
        try:
            fresh: _Session | None = h.open()
        except Exception:  # (_Lost, StoreError or unforeseen: try again later)
            fresh = None
        finally:
            h.mutex.acquire()
        if fresh is None:
            return None
        if h.session is not None or self._thread is not threading.current_thread() or \
                not self.owes_rows():
            fresh.close()  # reconnected by another thread, or closed meanwhile
            return None
        fresh.deadline = time.monotonic() + _PATIENCE
        try:
            return h.adopt(fresh)
        except (_Lost, StoreError):
            return None
        except Exception:  # never let the helper die: try again later
            h.drop_session()
            return None
        finally:
            fresh.deadline = None

    def _helper_trip(self, session: _Session, now: float) -> None:
        h = self._h
        wall = time.time()
        due = [(o, c) for o, c in self._held.items()
               if not c.announced and c.epoch == h.epoch and not c.settled
               and wall - c.since >= _ANNOUNCE_AFTER]
        lost = [o for o, c in self._held.items() if c.epoch != h.epoch and not c.settled]
        if lost and now - self._retried_at < 0.5:
            lost = []
        elif lost:
            self._retried_at = now
        flush = (bool(self._pending) or bool(self._pending_rows)) and \
            now - self._pending_since >= 0.05
        renew = bool(self._held) and now - self._renewed_at >= RENEW
        if not due and not flush and not renew and not lost:
            return
        try:
            if lost:
                for o in lost:
                    self.retake(session, o)
            stmts: list[Stmt] = [
                (self._sql_announce,
                 (self.key(o), json.dumps(c.info, ensure_ascii=True), self.owner()))
                for o, c in due
            ]
            front = self._prelude() if renew else []
            h.run(session, [[*front, *stmts]] if front or stmts else [])
            self._prelude_done(front, now)
        except _Lost:
            h.drop_session()
            return
        except _QueryError:
            return
        for _, c in due:
            c.announced = True

