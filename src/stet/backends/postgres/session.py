"""One connection to a PostgreSQL server (psycopg 3, imported lazily): statements sent in
pipeline mode, prepared automatically, a lost connection told apart from a refusal."""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ... import _fork

__all__ = ["Stmt", "_Lost", "_QueryError", "_Session", "_value"]

#: Sessions inherited across fork: never used, never closed (closing would end the
#: parent's session), kept referenced so that garbage collection does not close them.
_ORPHANS: list[Any] = []


class _Lost(Exception):
    """The connection is gone (or could not be made): reconnect and retry."""


#: What to do about a server error, by SQLSTATE class or code (see ``advice``).
_ADVICE = {
    "42501": "the user lacks a privilege on the store's tables: have their owner run "
             "GRANT SELECT, INSERT, UPDATE, DELETE ON the tables (T, T_failures, T_meta, "
             "T_claims, T_workers) and USAGE on the sequence of T and T_failures",
    "25006": "the server is read-only (a standby, or default_transaction_read_only): "
             "connect to the primary",
    "53100": "the server's disk is full: free space there; the runs recorded so far are "
             "kept",
    "53200": "the server is out of memory: retry later, or ask its administrator",
    "53300": "the server has no connection left (max_connections): use fewer workers, "
             "or a connection pooler in session mode",
    "57014": "a statement was cancelled (statement_timeout, or an administrator): "
             "retry, or raise the timeout for this user",
    "55P03": "a lock was not granted in time (lock_timeout): retry",
    "40001": "the server aborted a transaction to keep it serialisable: retry",
    "40P01": "the server broke a deadlock by aborting this statement: retry",
    "54": "the server refused a statement as too large: a record or a store this big "
          "needs a larger server limit",
    "22": "the server refused a value: see the message",
}


def advice(sqlstate: str) -> str:
    """What to do about a server error with this SQLSTATE (``""``: nothing known)."""
    return _ADVICE.get(sqlstate) or _ADVICE.get(sqlstate[:2], "")


class _QueryError(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ImportError(
            "PostgreSQL stores need psycopg 3: pip install 'stet[postgres]' "
            f"(importing psycopg failed: {exc})"
        ) from None
    return psycopg


def _params(values: Sequence[object]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for v in values:
        if v is None:
            out.append(None)
        elif isinstance(v, bytes):
            out.append(v)
        elif isinstance(v, bool):
            out.append(b"t" if v else b"f")
        else:
            out.append(str(v).encode("utf-8"))
    return out


def _array(ids: Sequence[int]) -> str:
    return "{" + ",".join(map(str, ids)) + "}"


def _in_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:  # never imported: no loop anywhere
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


Stmt = tuple[str, Sequence[object]]  # (SQL, parameters)


#: Statements the session prepares, at most (then the rest go unprepared), and how many
#: times one must be sent before it is prepared: as psycopg's ``prepare_threshold`` and
#: ``prepared_max``, so statements of a sweep's hot path are parsed and planned once,
#: and a statement sent once (DDL, a removal's ad hoc filter) never is.
PREPARE_THRESHOLD = 2
PREPARED_MAX = 100


class _Session:
    """One connection (a ``psycopg.Connection`` in autocommit mode), used by one thread at
    a time; its statements are exchanged in libpq's pipeline mode (see ``run``).

    Why ``run`` drives ``conn.pgconn`` (psycopg's documented libpq wrapper) rather than
    ``conn.pipeline()``: a round trip here carries several segments, each its own
    implicit transaction ending with a Sync (a record's insert commits, then its claim's
    lock is released after that commit; deferred releases of other claims go first), and
    psycopg's ``Pipeline.sync()`` waits for the results of each segment: one round trip
    each, so recording a run would take three instead of two. It also waits without a
    deadline, while the claims' helper must give up on a server that stopped answering
    (``deadline``). The connection itself (connecting, its parameters, closing, its
    state) is psycopg's public API.

    Measured (``benchmarks/bench_pg_pipeline.py``: a record's exchange, the store's own
    statements both ways, median of 4,000 records per way in alternating blocks; loopback
    PostgreSQL 15.18 with fsync off, psycopg 3.3.9, a 2-core AMD EPYC VM under other
    load, 2026-12-02): ``run`` 119 and 150 us per record, ``conn.pipeline()`` with
    ``Pipeline.sync()`` per segment 240 and 272 us (+102 %, +82 %), in two runs.
    """

    def __init__(self, conninfo: str, scrub: Callable[[str], str]) -> None:
        psycopg = _import_psycopg()
        self.scrub = scrub
        try:
            conn = psycopg.Connection.connect(conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise _Lost(self._message(str(exc))) from None
        conn.add_notice_handler(_ignore)
        self.conn = conn
        self.pq = psycopg.pq
        self.pg = conn.pgconn
        self.backend_pid: int = conn.info.backend_pid
        self.pid = _fork.pid()
        self.broken = False  # interrupted mid-exchange: never reuse
        self.trips = 0  # round trips made
        #: (monotonic) when a round trip still unanswered counts the connection as lost
        #: (``None``: never); the claims' helper sets it around its own short trips.
        self.deadline: float | None = None
        self.prepared: dict[str, bytes] = {}  # SQL -> name of its prepared statement
        self.sent: dict[str, int] = {}  # SQL -> times sent unprepared
        enc = conn.info.parameter_status("server_encoding") or ""
        self.ascii_only = enc.upper() not in ("UTF8", "UTF-8")

    def _message(self, raw: bytes | str | None) -> str:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        text = " ".join((raw or "unknown error").split())
        return self.scrub(text)

    def alive(self) -> bool:
        return not self.broken and not self.conn.broken and \
            bool(self.pg.status == self.pq.ConnStatus.OK)

    def close(self) -> None:
        if self.pid == _fork.pid():
            self.conn.close()
        else:
            _ORPHANS.append(self.conn)

    def notified(self) -> bool | None:
        """Whether a notification arrived (``None``: the connection is broken)."""
        pg = self.pg
        try:
            pg.consume_input()
        except Exception:
            return None
        got = False
        while pg.notifies() is not None:
            got = True
        return got

    def _next(self) -> Any:
        pg = self.pg
        while pg.is_busy():
            if pg.status != self.pq.ConnStatus.OK:
                raise _Lost(self._message(pg.error_message))
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise _Lost("the server did not answer in time")
            _wait(pg.socket, select.POLLIN, 1.0)
            try:
                pg.consume_input()
            except Exception:
                raise _Lost(self._message(pg.error_message)) from None
        return pg.get_result()

    def _worth_preparing(self, sql: str) -> bool:
        """Whether to prepare ``sql`` now (sent often enough, and room left)."""
        if len(self.prepared) >= PREPARED_MAX:
            return False
        n = self.sent.get(sql, 0) + 1
        if n >= PREPARE_THRESHOLD:
            self.sent.pop(sql, None)
            return True
        if len(self.sent) > 10 * PREPARED_MAX:  # ad hoc statements: forget them
            self.sent.clear()
        self.sent[sql] = n
        return False

    def run(self, segments: Sequence[Sequence[Stmt]]) -> list[list[Any]]:
        """Send every statement at once (a Sync after each segment: each segment is its
        own implicit transaction), then read the results: one list per segment."""
        if self.broken:
            raise _Lost("the connection was interrupted")
        self.trips += 1
        try:
            out = self._run(segments)
        except _QueryError:
            if self.pg.transaction_status != self.pq.TransactionStatus.IDLE:
                self._run([[("ROLLBACK", ())]])
            raise
        except BaseException:
            self.broken = True
            raise
        return out

    def _run(self, segments: Sequence[Sequence[Stmt]]) -> list[list[Any]]:
        pq = self.pq
        pg = self.pg
        ES = pq.ExecStatus
        if pg.status != pq.ConnStatus.OK:
            raise _Lost(self._message(pg.error_message))
        expect: list[tuple[str, str | None]] = []  # ("prep"|"exec"|"sync", SQL)
        sending: dict[str, bytes] = {}
        try:
            pg.enter_pipeline_mode()
            for segment in segments:
                for sql, values in segment:
                    params = _params(values)
                    name = self.prepared.get(sql) or sending.get(sql)
                    if name is None and self._worth_preparing(sql):
                        name = f"stet_{len(self.prepared) + len(sending)}".encode()
                        sending[sql] = name
                        pg.send_prepare(name, sql.encode("utf-8"))
                        expect.append(("prep", sql))
                    if name is None:
                        pg.send_query_params(sql.encode("utf-8"), params)
                    else:
                        pg.send_query_prepared(name, params)
                    expect.append(("exec", sql))
                pg.pipeline_sync()
                expect.append(("sync", None))
            while pg.flush() == 1:
                _wait(pg.socket, select.POLLOUT, 1.0)
        except _Lost:
            raise
        except Exception:
            raise _Lost(self._message(pg.error_message)) from None
        out: list[list[Any]] = [[]]
        error: tuple[str, str] | None = None
        for kind, text in expect:
            res = self._next()
            if res is None:
                raise _Lost(self._message(pg.error_message))
            if kind == "sync":
                if res.status != ES.PIPELINE_SYNC:
                    raise _Lost(self._message(pg.error_message))
                out.append([])
                continue
            status = res.status
            if status == ES.FATAL_ERROR and error is None:
                state = (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
                error = (state, self._message(res.error_message))
            if kind == "prep":
                if status == ES.COMMAND_OK and text is not None:
                    self.prepared[text] = sending[text]
            else:
                out[-1].append(res if status == ES.TUPLES_OK or status == ES.COMMAND_OK
                               else None)
            if self._next() is not None:
                raise _Lost("protocol out of step")
        try:
            pg.exit_pipeline_mode()
        except Exception:
            raise _Lost(self._message(pg.error_message)) from None
        if error is not None:
            state, message = error
            if state.startswith("08") or state in ("57P01", "57P02", "57P03") or \
                    pg.status != pq.ConnStatus.OK:
                raise _Lost(message)
            raise _QueryError(state, message)
        out.pop()  # the empty list opened by the last sync
        return out


def _wait(fd: int, events: int, timeout: float) -> None:
    """Wait (releasing the GIL) until ``fd`` is ready, or ``timeout`` seconds."""
    poller = select.poll()
    poller.register(fd, events)
    poller.poll(timeout * 1000)


def _ignore(_res: Any) -> None:
    return None


def _value(res: Any, row: int, col: int) -> bytes | None:
    v = res.get_value(row, col)
    return None if v is None else bytes(v)
