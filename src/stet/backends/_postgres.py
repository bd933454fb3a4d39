"""PostgreSQL store: many workers on many machines share one table, exactly once.

Layout (``T`` is the table named by ``?table=``, default ``stet_records``):

* ``T (id bigserial, record json, run json)``: one row per completed run; the record is
  a JSON object of field name to canonical text (kept verbatim: ``json``, not ``jsonb``),
  so any field name is data and a widened key needs no schema change. ``run`` repeats
  the part that identifies the run (function and key fields): readers follow that, not
  timestamps or saved results.
* ``T_failures``: the same, for failed runs.
* ``T_meta (name, value)``: generation numbers, bumped by removals so readers reload.
* ``T_claims`` (unlogged): who runs what, for ``status`` (written for runs that last more
  than a moment); the claims themselves are session-level advisory locks, released by the
  server when the worker's session ends.

Readers follow new rows by ``id``. Ids are taken in one order and committed in another,
so a reader remembers the ids it has not seen below the highest it has (holes) and asks
for them again. Every insert holds a shared advisory lock from before it takes its id
until it commits; a reader that gets the same lock exclusively (without waiting) knows
no insert is in flight, so any hole still empty then is gone for good (a rollback, or a
sequence jump after a crash).

A lookup of a run the local index already holds costs no round trip: removals notify
every listening session (``LISTEN``/``NOTIFY``), and a lookup only reads what the socket
already holds. A miss costs one round trip. The decorator needs two per executed run:
claiming it also catches up (so the decorator asks the index alone first), and recording
inserts, catches up and releases the claim after the commit. Workers walking a sweep in
the same order reach each run together; while runs are shorter than a round trip, a
worker that found its run taken waits a random moment before its next claim, so that
they drift apart instead of colliding on every run (``_PgClaims._pause_for``).

The connection is made with libpq (through psycopg's ``pq`` module, imported lazily) in
pipeline mode. A lost connection (server restart, network) is re-established and the
operation retried: a retried insert first looks for its own row (the JSON text is kept
verbatim), and a run whose claim was lost with the connection is recorded only after
re-taking the claim and checking that nobody recorded it meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import operator
import os
import random
import re
import select
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from .._claims import claim_offset
from .._identity import RESERVED_PREFIX
from .._index import FUNC_FIELD, Index, bulk
from .._sql import quote_ident
from ..errors import CorruptStoreError, StoreError
from ._base import IndexedBackend, Record, record_matches

__all__ = ["DEFAULT_TABLE", "PostgresBackend", "is_postgres_url", "mask_url"]

DEFAULT_TABLE = "stet_records"
SCHEMES = ("postgresql", "postgres")
_SUFFIXES = ("_failures", "_meta", "_claims")
_MAX_TABLE_BYTES = 63 - max(len(s) for s in _SUFFIXES)  # PostgreSQL truncates at 63
_CHUNK = 20_000  # rows per catch-up statement
_BULK = 5_000  # rows per statement of append_records
_BULK_BYTES = 32 << 20  # and about this much JSON text at most
_HOLE_WAIT = 0.2  # seconds before a hole is checked for being gone for good
_HOST = os.uname().nodename
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

T = TypeVar("T")

#: Sessions inherited across fork: never used, never closed (closing would end the
#: parent's session), kept referenced so that garbage collection does not close them.
_ORPHANS: list[Any] = []
#: Removals made in this process, by store: other backends of the same store in this
#: process see them at once, without waiting for the server's notification.
_local_removals: dict[str, int] = {}
_local_lock = threading.Lock()
#: Every backend, so that a fork never happens while one is mid-exchange (the child would
#: inherit a mutex held by a thread that does not exist there).
_BACKENDS: weakref.WeakSet[PostgresBackend] = weakref.WeakSet()


def _before_fork() -> None:
    for b in list(_BACKENDS):
        b._mutex.acquire()


def _after_fork() -> None:
    for b in list(_BACKENDS):
        with contextlib.suppress(RuntimeError):
            b._mutex.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork,
                    after_in_child=_after_fork)


# --------------------------------------------------------------------------- URLs
def is_postgres_url(path: object) -> bool:
    """Whether ``path`` is a ``postgresql://`` or ``postgres://`` URL."""
    if not isinstance(path, str):
        return False
    m = _URL_RE.match(path)
    return m is not None and m.group(1).lower() in SCHEMES


def url_scheme(path: object) -> str | None:
    """The scheme of a URL-shaped store string (``None`` for a file path)."""
    if not isinstance(path, str):
        return None
    m = _URL_RE.match(path)
    return m.group(1) if m else None


def _split(url: str) -> tuple[str, str, str, str, list[str]]:
    """``scheme://userinfo@hosts/path?query`` into (scheme, userinfo, hosts and path,
    password or "", query items), by hand: libpq URLs may hold several ``host:port``s
    and may leave the host out, which ``urllib`` does not keep as they are."""
    scheme, _, rest = url.partition("://")
    rest = rest.split("#", 1)[0]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    password = ""
    if at and ":" in userinfo:
        userinfo, _, password = userinfo.partition(":")
    return (scheme, userinfo + at, hosts + slash + path, password,
            query.split("&") if query else [])


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and ``repr``)."""
    scheme, userinfo, location, password, items = _split(url)
    if password:
        userinfo = userinfo[:-1] + ":***@"
    items = [item.split("=", 1)[0] + "=***"
             if unquote(item.split("=", 1)[0]).lower() == "password" else item
             for item in items]
    return f"{scheme}://{userinfo}{location}" + ("?" + "&".join(items) if items else "")


class _Target:
    """What a store URL says: the libpq URL (no ``table``), the table, and secrets."""

    def __init__(self, url: str) -> None:
        if not is_postgres_url(url):
            raise ValueError(f"not a PostgreSQL URL: {mask_url(url)!r}")
        self.display = mask_url(url)
        scheme, userinfo, location, password, items = _split(url)
        table: str | None = None
        kept: list[str] = []
        self.secrets: list[str] = []
        for item in items:
            name, _, value = item.partition("=")
            if unquote(name) == "table":
                table = unquote(value)
                continue
            if unquote(name).lower() == "password" and value:
                self.secrets += [value, unquote(value)]
            kept.append(item)
        if password:
            self.secrets += [password, unquote(password), quote(unquote(password), safe="")]
        env_pw = os.environ.get("PGPASSWORD")
        if env_pw:
            self.secrets.append(env_pw)
        self.secrets = sorted({s for s in self.secrets if s}, key=len, reverse=True)
        self.table = _check_table(DEFAULT_TABLE if table is None else table, self.display)
        if password:
            userinfo = userinfo[:-1] + ":" + password + "@"
        self.url = f"{scheme}://{userinfo}{location}" + ("?" + "&".join(kept) if kept else "")
        # Identifies the store in this process (password left out).
        self.key = f"{mask_url(self.url)}\x00{self.table}"

    def scrub(self, text: str) -> str:
        """``text`` with every form of the password replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _check_table(name: str, display: str) -> str:
    problem = ""
    if not name:
        problem = "is empty"
    elif len(name.encode("utf-8")) > _MAX_TABLE_BYTES:
        problem = f"is longer than {_MAX_TABLE_BYTES} bytes"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "holds a control character"
    if problem:
        raise ValueError(
            f"the table name {name!r} in store {display!r} {problem}; name a table with "
            f"?table=NAME (any other text is allowed: it is always quoted)"
        )
    return name


def _key63(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(),
                          "little") & ((1 << 63) - 1)


def _int4(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


# ------------------------------------------------------------------------ errors
class _Lost(Exception):
    """The connection is gone (or could not be made): reconnect and retry."""


class _QueryError(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class _Contended(Exception):
    """A claim lost with a connection is now held by another worker: wait, retry."""


def _import_pq() -> Any:
    try:
        from psycopg import pq
    except ImportError as exc:
        raise ImportError(
            "PostgreSQL stores need psycopg 3: pip install 'stet[postgres]' "
            f"(importing psycopg failed: {exc})"
        ) from None
    return pq


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


def _run_part(record: Record) -> Record:
    """What identifies the run of ``record``: its function and key fields (column ``run``)."""
    return {k: v for k, v in record.items()
            if k == FUNC_FIELD or not k.startswith(RESERVED_PREFIX)}


def _chunks(records: Sequence[Record]) -> Iterator[Sequence[Record]]:
    """``records`` in runs of at most ``_BULK`` records and about ``_BULK_BYTES`` of text."""
    start = size = 0
    for i, r in enumerate(records):
        n = sum(len(k) + len(v) + 8 for k, v in r.items())
        if i - start >= _BULK or (size + n > _BULK_BYTES and i > start):
            yield records[start:i]
            start, size = i, 0
        size += n
    if start < len(records):
        yield records[start:]


def _text_array(items: Sequence[bytes]) -> bytes:
    """A ``text[]`` literal of these UTF-8 texts (each quoted, ``\\`` and ``"`` escaped)."""
    return b"{" + b",".join(
        b'"' + t.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"' for t in items
    ) + b"}"


def _parse_ids(raw: bytes | None) -> list[int]:
    if not raw or raw == b"{}":
        return []
    return [int(x) for x in raw[1:-1].split(b",")]


# ----------------------------------------------------------------------- session
Stmt = tuple[str | None, str, Sequence[object]]  # (prepared name or None, SQL, params)


class _Session:
    """One libpq connection, used in pipeline mode by one thread at a time."""

    def __init__(self, pq: Any, conninfo: str, connect_timeout: float,
                 scrub: Callable[[str], str]) -> None:
        self.pq = pq
        self.scrub = scrub
        pg = pq.PGconn.connect_start(conninfo.encode("utf-8"))
        deadline = time.monotonic() + connect_timeout
        try:
            while True:
                if pg.status == pq.ConnStatus.BAD:
                    raise _Lost(self._message(pg.error_message))
                state = pg.connect_poll()
                if state == pq.PollingStatus.OK:
                    break
                if state == pq.PollingStatus.FAILED:
                    raise _Lost(self._message(pg.error_message))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Lost(f"timed out after {connect_timeout:g} s")
                sock = pg.socket
                if state == pq.PollingStatus.READING:
                    _wait(sock, select.POLLIN, min(left, 1.0))
                else:
                    _wait(sock, select.POLLOUT, min(left, 1.0))
        except BaseException:
            pg.finish()
            raise
        pg.notice_handler = _ignore
        self.pg = pg
        self.pid = os.getpid()
        self.broken = False  # interrupted mid-exchange: never reuse
        self.trips = 0  # round trips made
        self.prepared: set[str] = set()
        enc = pg.parameter_status(b"server_encoding") or b""
        self.ascii_only = enc.upper() not in (b"UTF8", b"UTF-8")

    def _message(self, raw: bytes | str | None) -> str:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        text = " ".join((raw or "unknown error").split())
        return self.scrub(text)

    def alive(self) -> bool:
        return not self.broken and bool(self.pg.status == self.pq.ConnStatus.OK)

    def close(self) -> None:
        if self.pid == os.getpid():
            self.pg.finish()
        else:
            _ORPHANS.append(self.pg)

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
            _wait(pg.socket, select.POLLIN, 1.0)
            try:
                pg.consume_input()
            except Exception:
                raise _Lost(self._message(pg.error_message)) from None
        return pg.get_result()

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
                self._run([[(None, "ROLLBACK", ())]])
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
        expect: list[tuple[str, str | None]] = []  # ("prep"|"exec"|"sync", name)
        sending: set[str] = set()
        try:
            pg.enter_pipeline_mode()
            for segment in segments:
                for name, sql, values in segment:
                    params = _params(values)
                    if name is None:
                        pg.send_query_params(sql.encode("utf-8"), params)
                    else:
                        if name not in self.prepared and name not in sending:
                            pg.send_prepare(name.encode(), sql.encode("utf-8"))
                            expect.append(("prep", name))
                            sending.add(name)
                        pg.send_query_prepared(name.encode(), params)
                    expect.append(("exec", name))
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
        for kind, name in expect:
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
                if status == ES.COMMAND_OK and name is not None:
                    self.prepared.add(name)
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


# ------------------------------------------------------------------------- feeds
class _Feed:
    """Follows one append-only table by id, into an index."""

    def __init__(self, name: str, table: str, meta: str, index: Index,
                 lock_keys: tuple[int, int], prefix: str) -> None:
        self.name = name  # the meta row holding its generation
        self.index = index
        self.lock_keys = lock_keys
        self.prefix = prefix  # prepared statement names
        self.table = table  # quoted
        self.reset()
        gen = f"(SELECT value FROM {meta} WHERE name = '{name}')"
        self.sql_new = (
            f"SELECT {gen}, count(*), array_agg(id), string_agg(r::text, ',') "
            f"FROM (SELECT id, coalesce(run, record) AS r FROM "
            f"{table} WHERE id > $1 ORDER BY id LIMIT $2) AS s"
        )
        self.sql_holes = (
            f"SELECT count(*), array_agg(t.id), "
            f"string_agg(coalesce(t.run, t.record)::text, ',') "
            f"FROM {table} AS t "
            f"JOIN unnest($1::bigint[], $2::bigint[]) AS r(lo, hi) "
            f"ON t.id BETWEEN r.lo AND r.hi"
        )
        self.sql_insert = (
            f"WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared($1::int4, $2::int4)), "
            f"ins AS (INSERT INTO {table} (record, run) SELECT $3::json, $6::json FROM l "
            f"RETURNING id) "
            f"SELECT (SELECT id FROM ins), {gen}, count(*), array_agg(id), "
            f"string_agg(r::text, ',') FROM (SELECT id, coalesce(run, record) AS r FROM "
            f"{table} WHERE id > $4 ORDER BY id LIMIT $5) AS s"
        )
        self.sql_insert_many = (
            f"WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared($1::int4, $2::int4)), "
            f"ins AS (INSERT INTO {table} (record, run) SELECT x.rec::json, x.run::json FROM l, "
            f"unnest($3::text[], $4::text[]) WITH ORDINALITY AS x(rec, run, n) ORDER BY x.n "
            f"RETURNING id) SELECT max(id) FROM ins"
        )
        self.sql_find = (f"SELECT count(*) FROM {table} WHERE id > $1 AND "
                         f"record::text = $2::text")
        self.sql_trylock = "SELECT pg_try_advisory_xact_lock($1::int4, $2::int4)"

    def reset(self) -> None:
        self.index.clear()
        self.max_seen = 0  # every id up to here is in the index, or is a hole
        self.holes: list[list[int]] = []  # [lo, hi] ranges of ids not seen (yet)
        self.hole_since = 0.0
        self.last_try = 0.0
        self.generation: bytes | None = None

    # statements for one catch-up: [try-lock], [holes], new rows (last)
    def catch_up_statements(self, now: float) -> tuple[list[Stmt], bool]:
        stmts: list[Stmt] = []
        trying = False
        if self.holes and now - self.hole_since >= _HOLE_WAIT and \
                now - self.last_try >= _HOLE_WAIT:
            stmts.append((self.prefix + "l", self.sql_trylock, self.lock_keys))
            self.last_try = now
            trying = True
        if self.holes:
            stmts.append((self.prefix + "h", self.sql_holes,
                          (_array([h[0] for h in self.holes]),
                           _array([h[1] for h in self.holes]))))
        stmts.append((self.prefix + "n", self.sql_new, (self.max_seen, _CHUNK)))
        return stmts, trying

    def absorb_catch_up(self, results: list[Any], trying: bool, now: float) -> bool:
        """Fold a catch-up's results in; ``True`` when more rows are waiting."""
        i = 0
        locked = False
        if trying:
            locked = _value(results[0], 0, 0) == b"t"
            i = 1
        if self.holes:
            hres = results[i]
            i += 1
        else:
            hres = None
        nres = results[i]
        gen = _value(nres, 0, 0)
        if gen != self.generation:
            if self.generation is not None or self.max_seen or self.index.count:
                self.reset()
                self.generation = gen
                return True  # rows read under the old generation are not trusted
            self.generation = gen
        if hres is not None:
            self._fill_holes(_parse_ids(_value(hres, 0, 1)), _value(hres, 0, 2))
        count = int(_value(nres, 0, 1) or b"0")
        self._add_new(_parse_ids(_value(nres, 0, 2)), _value(nres, 0, 3), None)
        if locked:
            self.holes = []  # no insert was in flight: what is still missing is gone
        return count >= _CHUNK

    def _add_new(self, ids: list[int], text: bytes | None, own: tuple[int, Record] | None,
                 ) -> None:
        """Rows with ids above ``max_seen`` (in any order); gaps below become holes."""
        _index_records(self.index, _decode_objects(text, len(ids)))
        if own is not None:
            if own[0] <= self.max_seen:
                self._fill_holes([own[0]], None, [own[1]])
            else:
                ids.append(own[0])
                self.index.add(own[1])
        if not ids:
            return
        now = time.monotonic()
        ids.sort()
        expected = self.max_seen + 1
        for rid in ids:
            if rid > expected:
                self._new_hole(expected, rid - 1, now)
            expected = rid + 1
        self.max_seen = max(self.max_seen, expected - 1)

    def _new_hole(self, lo: int, hi: int, now: float) -> None:
        if not self.holes:
            self.hole_since = now
        self.holes.append([lo, hi])

    def _fill_holes(self, ids: list[int], text: bytes | None,
                    records: list[Record] | None = None) -> None:
        """Rows found in hole ranges: index them, and narrow the ranges."""
        if records is None:
            records = _decode_objects(text, len(ids))
        _index_records(self.index, records)
        for rid in ids:
            for j, (lo, hi) in enumerate(self.holes):
                if lo <= rid <= hi:
                    parts = [[lo, rid - 1]] if rid > lo else []
                    if rid < hi:
                        parts.append([rid + 1, hi])
                    self.holes[j:j + 1] = parts
                    break
        if not self.holes:
            self.hole_since = 0.0


def _decode_objects(text: bytes | None, n: int) -> list[Any]:
    """The JSON objects of ``n`` rows aggregated into one text (not yet checked)."""
    if n == 0:
        return []
    if text is None:
        raise CorruptStoreError("a PostgreSQL store returned rows without records")
    try:
        rows = json.loads(b"[" + text + b"]")
    except ValueError as exc:
        raise CorruptStoreError(f"a PostgreSQL store holds a record that is not JSON "
                                f"({exc})") from None
    if len(rows) != n:
        raise CorruptStoreError("a PostgreSQL store returned rows out of step")
    return list(rows)


def _decode(text: bytes | None, n: int) -> list[Record]:
    return [_coerce(r) for r in _decode_objects(text, n)]


def _index_records(index: Index, objects: list[Any]) -> None:
    """Add records read back to ``index``: column by column for each set of fields."""
    if len(objects) < 16:
        for obj in objects:
            index.add(_coerce(obj))
        return
    first = objects[0]
    if type(first) is dict and len(first) > 1:  # the usual case: every record alike
        k0 = first.keys()
        if all(type(o) is dict and o.keys() == k0 for o in objects):
            used = [f for f in first if f == FUNC_FIELD or not f.startswith(RESERVED_PREFIX)]
            if len(used) > 1:
                columns = list(zip(*map(operator.itemgetter(*used), objects), strict=True))
                if all(set(map(type, col)) <= {str} for col in columns):
                    index.add_columns(used, columns)
                    return
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    odd: list[Any] = []
    for obj in objects:
        if type(obj) is not dict:
            odd.append(obj)
            continue
        groups.setdefault(tuple(obj), []).append(tuple(obj.values()))
    str_type = {str}
    for header, rows in groups.items():
        columns = list(zip(*rows, strict=True))
        used = [i for i, f in enumerate(header)
                if f == FUNC_FIELD or not f.startswith(RESERVED_PREFIX)]
        if all(set(map(type, columns[i])) <= str_type for i in used):
            index.add_columns([header[i] for i in used], [columns[i] for i in used])
        else:  # numbers, nulls (other tools wrote these): one by one
            odd.extend(dict(zip(header, row, strict=True)) for row in rows)
    for obj in odd:
        index.add(_coerce(obj))


def _coerce(obj: Any) -> Record:
    """A record read back: a JSON object of texts (other JSON values made canonical)."""
    if type(obj) is not dict:
        raise CorruptStoreError(f"a PostgreSQL store holds a record that is not a JSON "
                                f"object: {str(obj)[:100]!r}")
    for v in obj.values():
        if type(v) is not str:
            break
    else:
        return obj
    from .._identity import canonical

    return {str(k): v if isinstance(v, str) else canonical(v)
            for k, v in obj.items() if v is not None}


# ----------------------------------------------------------------------- backend
class _AppendState:
    """One insert across retries: was it sent, on which session, and which ids came
    before it (its rows, if it committed, have higher ids)."""

    __slots__ = ("before", "last", "sent", "session")

    def __init__(self, before: int = 0) -> None:
        self.sent = False
        self.before = before
        self.session = 0  # the server process that received it
        self.last = 0  # the highest id it wrote (statements of many records)


class PostgresBackend(IndexedBackend):
    """Store experiment records in a PostgreSQL table, shared by workers on any machine.

    The store is a URL that libpq understands (``postgresql://user@host:5432/db``;
    ``PGPASSWORD``, ``~/.pgpass``, ``PGSERVICE``, ``sslmode=`` and the rest work as
    usual), plus ``?table=NAME`` (default ``stet_records``), which is not passed on.
    Tables are created on first use. Needs ``pip install 'stet[postgres]'`` (psycopg 3).

    Args:
        path: The store URL (``postgresql://`` or ``postgres://``).
        fsync: Force ``synchronous_commit=on`` for this session (otherwise the server's
            setting, ``on`` by default, applies).
        reconnect_timeout: How long to keep reconnecting after a connection is lost
            mid-sweep before giving up with :class:`stet.StoreError`.
        connect_timeout: Seconds allowed for one connection attempt.
    """

    path: Any  # the URL with its password masked (never a filesystem path)

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool | None = None,
                 reconnect_timeout: float = 120.0, connect_timeout: float = 30.0) -> None:
        url = os.fspath(path)
        self._target = _Target(url)
        super().__init__(self._target.display, fsync=fsync)
        self.path = self._target.display
        self.table = self._target.table
        self.reconnect_timeout = reconnect_timeout
        self.connect_timeout = connect_timeout
        self._pq = _import_pq()
        self._session: _Session | None = None
        self._epoch = 0  # sessions made so far (claims remember theirs)
        self._ever_connected = False
        self._ready = False  # the tables exist
        self._stale = True  # the next lookup must ask the server
        self._fresh_for: int | None = None  # thread whose claim just caught up
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
        }
        q = self._q
        self._feed = _Feed("records", q["records"], q["meta"], self._index,
                           (_int4(salt), 1), "r")
        self._ffeed = _Feed("failures", q["failures"], q["meta"], Index(),
                            (_int4(salt), 2), "f")
        self._claims = _PgClaims(self)
        _BACKENDS.add(self)

    # ------------------------------------------------------------ connection
    def _conninfo(self) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            params = conninfo_to_dict(self._target.url)
        except Exception as exc:
            raise ValueError(f"store {self.path!r} is not a valid PostgreSQL URL: "
                             f"{self._target.scrub(str(exc))}") from None
        defaults = {"fallback_application_name": "stet", "client_encoding": "UTF8",
                    "keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                    "keepalives_count": "6",
                    "connect_timeout": str(max(2, int(self.connect_timeout)))}
        for k, v in defaults.items():
            params.setdefault(k, v)
        return str(make_conninfo("", **params))

    def _connect(self) -> _Session:
        try:
            session = _Session(self._pq, self._conninfo(), self.connect_timeout,
                               self._target.scrub)
        except _Lost as exc:
            if not self._ever_connected:
                raise StoreError(f"cannot connect to PostgreSQL store {self.path}: "
                                 f"{exc}") from None
            raise
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
            (None, setup, ()),
            # A claim and the look that follows it share a transaction: each statement
            # must see what was committed before it ran, whatever the server's default.
            (None, "SELECT set_config('default_transaction_isolation', 'read committed', "
                   "false)", ()),
        ]
        if self.fsync:
            stmts.append((None, "SELECT set_config('synchronous_commit', 'on', false)", ()))
        stmts.append((None, f"LISTEN {quote_ident(self._channel)}", ()))
        try:
            t0 = time.monotonic()
            session.run([stmts])
            self._claims._timed(time.monotonic() - t0)
        except _QueryError as exc:
            self._drop_session()
            raise StoreError(f"cannot set up a session on PostgreSQL store {self.path}: "
                             f"{exc}") from None
        except BaseException:
            self._drop_session()
            raise
        self._ever_connected = True
        self._stale = True
        self._ready = False
        self._claims._reconnected(session)
        return session

    def _check_fork(self) -> None:
        session = self._session
        if session is not None and session.pid != os.getpid():
            _ORPHANS.append(session.pg)  # inherited across fork: never touch it
            self._session = None
            self._ready = False
            self._stale = True
            self._claims._forked()  # the parent's claims are not ours

    def _connected(self) -> _Session:
        self._check_fork()
        session = self._session
        if session is not None and not session.alive():
            self._drop_session()
            raise _Lost("the connection was closed")
        if session is None:
            session = self._connect()
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
                        f"lost the connection to PostgreSQL store {self.path} and could not "
                        f"reconnect within {self.reconnect_timeout:g} s: {exc}"
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
                raise StoreError(f"PostgreSQL store {self.path}: {exc}") from None

    def _run(self, s: _Session, segments: list[list[Stmt]]) -> list[list[Any]]:
        """``s.run``, releasing deferred claims first in the same round trip."""
        pending = self._claims._flush_segment()
        if not pending:
            return s.run(segments)
        return s.run(pending + segments)[len(pending):]

    # ---------------------------------------------------------------- tables
    def _check_ready(self, s: _Session, create: bool) -> bool:
        """Whether the tables exist (creating them if ``create``); checks the layout."""
        if self._ready:
            return True
        q = self._q
        names = [q["records"], q["failures"], q["meta"], q["claims"]]
        for _ in range(3):
            res = s.run([[(None, "SELECT to_regclass($1)::text, to_regclass($2)::text, "
                           "to_regclass($3)::text, to_regclass($4)::text, (SELECT string_agg("
                           "attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY "
                           "attnum) FROM pg_attribute WHERE attrelid = to_regclass($1) AND "
                           "attnum > 0 AND NOT attisdropped)", names)]])[0][0]
            exists = [_value(res, 0, i) is not None for i in range(4)]
            columns = (_value(res, 0, 4) or b"").decode("utf-8", "replace")
            # to_regclass sees the catalog as of now, pg_attribute as of the statement's
            # start: a table another worker created in between shows no columns. The next
            # statement sees them.
            if not exists[0] or columns:
                break
        if exists[0] and not {"id bigint", "record json", "run json"} <= set(
                columns.split(", ")):
            raise CorruptStoreError(
                f"table {self.table!r} of {self.path} is not a stet store (its columns: "
                f"{columns[:200]}). It was left untouched; choose another table with "
                f"?table=NAME."
            )
        if all(exists):
            self._ready = True
            return True
        if not create and not exists[0]:
            return False
        self._create_tables(s)
        self._ready = True
        return True

    def _create_tables(self, s: _Session) -> None:
        q = self._q
        data = "(id bigserial PRIMARY KEY, record json NOT NULL, run json)"
        stmts: list[Stmt] = [
            (None, "BEGIN", ()),
            # Workers starting together must not race on CREATE TABLE IF NOT EXISTS.
            (None, "SELECT pg_advisory_xact_lock($1::int4, 0)", (_int4(self._salt),)),
            (None, f"CREATE TABLE IF NOT EXISTS {q['records']} {data}", ()),
            (None, f"CREATE TABLE IF NOT EXISTS {q['failures']} {data}", ()),
            (None, f"CREATE TABLE IF NOT EXISTS {q['meta']} "
                   "(name text PRIMARY KEY, value bigint NOT NULL)", ()),
            (None, f"INSERT INTO {q['meta']} (name, value) VALUES ('records', 0), "
                   "('failures', 0), ('schema', 1) ON CONFLICT (name) DO NOTHING", ()),
            (None, f"CREATE UNLOGGED TABLE IF NOT EXISTS {q['claims']} (k bigint PRIMARY "
                   "KEY, session integer NOT NULL, host text, pid integer, "
                   "since double precision, info json)", ()),
            (None, "COMMIT", ()),
        ]
        try:
            s.run([stmts])
        except _QueryError as exc:
            raise StoreError(f"cannot create the tables of PostgreSQL store {self.path} "
                             f"(the user needs CREATE on the schema the first time): "
                             f"{exc}") from None

    def exists(self) -> bool:
        """Whether the store's table exists."""
        with self._mutex:
            return self._with_retry(lambda s: self._check_ready(s, create=False))

    # --------------------------------------------------------------- reading
    def _is_fresh(self) -> bool:
        """Whether the index may answer without asking the server (no round trip)."""
        session = self._session
        if self._stale or session is None or session.pid != os.getpid():
            return False
        if _local_removals.get(self._target.key, 0) != self._seen_local:
            return False
        got = session.notified()
        if got is None or got:
            self._stale = True
            return False
        return True

    def _poll(self, index: Index) -> None:
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
        with self._mutex:
            me = threading.get_ident()
            just_claimed = self._fresh_for == me
            self._fresh_for = None
            if self._is_fresh():
                hit = self._index.contains(func, fields, texts)
                if hit or just_claimed:  # a claim of this thread caught up just now
                    if hit and just_claimed:
                        self._claims._found_done(me)
                    return hit
            self._poll(self._index)
            hit = self._index.contains(func, fields, texts)
            if hit and just_claimed:
                self._claims._found_done(me)
            return hit

    def contains_run_cached(self, func: str, fields: tuple[str, ...],
                            texts: tuple[str, ...]) -> bool:
        """Whether the local index knows the run is done (no round trip; ``False`` may
        be stale). The decorator asks this before claiming, since a claim catches up
        with the store and the decorator looks again after it."""
        with self._mutex:
            return self._is_fresh() and self._index.contains(func, fields, texts)

    def contains_any(self, fields: Record) -> bool:
        names = tuple(sorted(fields))
        texts = tuple(fields[n] for n in names)
        with self._mutex:
            if self._is_fresh() and self._index.contains_any(names, texts):
                return True
            self._poll(self._index)
            return self._index.contains_any(names, texts)

    def _records(self) -> list[Record]:
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
                res = self._run(s, [[(None, sql, (last, _CHUNK))]])[0][0]
                n = int(_value(res, 0, 0) or b"0")
                out.extend(_decode(_value(res, 0, 2), n))
                if n < _CHUNK:
                    return out
                last = int(_value(res, 0, 1) or b"0")

        return self._with_retry(op)

    def __len__(self) -> int:
        with self._mutex:
            self._poll(self._index)
            return self._index.count

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

    def _append(self, record: Record, index: Index) -> None:
        self._append_to(self._feed, record)

    def append_records(self, records: Sequence[Record]) -> None:
        """Record many runs, thousands per statement (each statement all or nothing, and
        never applied twice across lost connections). Claims are not looked at: this is
        for copies, not for runs being executed."""
        before = 0
        for chunk in _chunks(records):
            state = _AppendState(before)
            with self._mutex:
                self._check_fork()
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
            res = s.run([[(feed.prefix + "x", feed.sql_find, (state.before, texts[0]))]])
            if int(_value(res[0][0], 0, 0) or b"0"):
                self._stale = True
                return
        else:
            state.before, state.sent = max(state.before, feed.max_seen), True
        runs = [self._dumps(_run_part(r), s) for r in records]
        state.session = s.pg.backend_pid
        res = self._run(s, [[(feed.prefix + "m", feed.sql_insert_many,
                              (*feed.lock_keys, _text_array(texts), _text_array(runs)))]])
        state.last = int(_value(res[0][0], 0, 0) or b"0")
        self._stale = True  # the next lookup reads the new rows back

    def _await_statement(self, s: _Session, session: int) -> None:
        """Wait while server process ``session`` still runs a statement: it finishes (and
        commits) one whose client went away, so a look for its rows must come after."""
        if session == s.pg.backend_pid:
            return  # this very session: its answer (or error) came back
        deadline = time.monotonic() + self.reconnect_timeout
        sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'"
        while session and time.monotonic() < deadline:
            res = s.run([[(None, sql, (session,))]])
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
                with self._mutex:
                    self._check_fork()
                    held = self._claims._held_for_record(record)
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
            res = s.run([[(feed.prefix + "x", feed.sql_find, (state.before, text))]])[0][0]
            if int(_value(res, 0, 0) or b"0"):
                self._stale = True
                return
        if held is not None and feed is self._feed and held[1].interrupted:
            # The run's claim was lost with a connection: another worker may have run
            # and recorded it meanwhile. Take the claim again (or wait), then look.
            offset, claim = held
            if claim.epoch != self._epoch and not self._claims._retake(s, offset):
                raise _Contended
            self._catch_up(s, feed)
            names = tuple(sorted(k for k in record if not k.startswith(RESERVED_PREFIX)))
            if feed.index.contains(record.get(FUNC_FIELD) or "", names,
                                   tuple(record[n] for n in names)):
                return
        if not state.sent:
            state.before, state.sent = feed.max_seen, True
        state.session = s.pg.backend_pid
        self._insert(s, feed, record, text, held)

    def _insert(self, s: _Session, feed: _Feed, record: Record, text: bytes,
                held: tuple[int, _Claim] | None) -> None:
        """Insert, catch up, and (after the commit) release the run's claim: one trip."""
        segments: list[list[Stmt]] = [[(
            feed.prefix + "i", feed.sql_insert,
            (*feed.lock_keys, text, feed.max_seen, 1000, self._dumps(_run_part(record), s)),
        )]]
        unlock = held is not None and held[1].epoch == self._epoch
        if unlock:
            assert held is not None
            segments.append([self._claims._unlock_stmt(held[0], held[1])])
        results = self._run(s, segments)
        res = results[0][0]
        if unlock:
            assert held is not None
            self._claims._unlocked(held[1])
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

    def _remove_where(self, func: str | None, fields: Record, index: Index) -> int:
        return self._remove(self._feed, func, fields)

    def _remove(self, feed: _Feed, func: str | None, fields: Record) -> int:
        table = feed.table

        def op(s: _Session) -> int:
            if not self._check_ready(s, create=False):
                return 0
            bump: list[Stmt] = [
                (None, f"UPDATE {self._q['meta']} SET value = value + 1 WHERE name = $1",
                 (feed.name,)),
                (None, "SELECT pg_notify($1, $2)", (self._channel, feed.name)),
                (None, "COMMIT", ()),
            ]
            if not fields and func is None:
                res = self._run(s, [[(None, "BEGIN", ()),
                                     (None, f"DELETE FROM {table}", ()), *bump]])[0]
                return int(res[1].command_tuples or 0)
            ids = self._matching_ids(s, table, func, fields)
            if not ids:
                return 0
            res = self._run(s, [[(None, "BEGIN", ()),
                                 (None, f"DELETE FROM {table} WHERE id = ANY($1::bigint[])",
                                  (_array(ids),)), *bump]])[0]
            return int(res[1].command_tuples or 0)

        with self._mutex:
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
            res = s.run([[(None, f"{sql} WHERE {' AND '.join(where)}", params)]])[0][0]
        except _QueryError:  # e.g. a \u0000 the json operators refuse: match here
            res = s.run([[(None, sql, ())]])[0][0]
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
        with self._mutex:
            self._with_retry(lambda s: self._catch_up(s, self._ffeed))
            return self._ffeed.index.contains(func, fields, texts)

    def failures(self) -> list[Record]:
        """Every recorded failure, oldest first."""
        with self._mutex:
            return self._load(self._q["failures"])

    def remove_failures(self, func: str | None, fields: Record) -> int:
        """Forget recorded failures of matching runs."""
        return self._remove(self._ffeed, func, fields)

    # ---------------------------------------------------------------- claims
    def claims(self) -> _PgClaims:
        """The claims of this store: advisory locks held by this worker's session."""
        return self._claims

    def close(self) -> None:
        """Close the connection (which releases this process's claims on the server)."""
        with self._mutex:
            self._check_fork()
            self._drop_session()
            self._ever_connected = False
            self._claims._forked()
            self._feed.reset()
            self._ffeed.reset()


_ANNOUNCE_AFTER = 0.1  # seconds a run lasts before it is announced, once runs are short
_SHORT_RUN = 0.05  # a function whose runs take less is announced lazily
_BACKOFF_MAX = 16.0  # a backoff waits at most this many times a run and its record
_PAUSE_MAX = 0.5  # and never more than this (seconds), however slow the round trips


class _Claim:
    __slots__ = ("announced", "done_elsewhere", "epoch", "info", "interrupted", "ran",
                 "since", "t0", "thread")

    def __init__(self, thread: int, epoch: int, info: dict[str, Any]) -> None:
        self.thread = thread
        self.epoch = epoch  # the session holding the advisory lock (-1: none)
        self.info = info
        self.since = time.time()  # shown to people (status)
        self.t0 = time.monotonic()  # for durations
        self.announced = False  # a row in T_claims says so
        self.interrupted = False  # the lock was lost with a connection at some point
        self.done_elsewhere = False  # claimed, then found recorded: release lazily
        self.ran: float | None = None  # seconds from the claim to its record (or failure)


class _PgClaims:
    """Claims as session-level advisory locks on the worker's connection.

    The server releases them when the session ends, however the worker dies (or when
    its machine disappears: TCP keepalives end the session within a couple of minutes).
    Threads of one process share the session, so they are told apart by an in-process
    table. A claim's key is the run's 62-bit claim offset mixed with the table's name.

    Announcements (who, where, since when) go to the unlogged ``T_claims`` table, which
    ``running`` joins with ``pg_locks``. For functions whose runs are short they are
    written by a helper thread only once a run has lasted a moment, so that a sweep of
    quick runs pays nothing for them.
    """

    def __init__(self, backend: PostgresBackend) -> None:
        self._b = backend
        self._held: dict[int, _Claim] = {}
        self._last: dict[int, _Claim] = {}  # thread -> the claim it took last
        self._pending: list[int] = []  # keys to unlock at the next round trip
        self._pending_announced: list[int] = []
        self._pending_since = 0.0
        self._short: dict[str, float] = {}  # function -> typical run time (seconds)
        self._rtt = 0.0  # typical round trip of a claim (seconds)
        self._level = 0.0  # backoff, in run durations (0: none)
        self._collided_at = 0.0
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        q = backend._q
        self._sql_claim = (
            f"WITH l AS MATERIALIZED (SELECT pg_try_advisory_lock($1::bigint) AS ok) "
            f"SELECT l.ok, CASE WHEN l.ok THEN NULL ELSE (SELECT coalesce(c.host, '?') || "
            f"' pid ' || coalesce(c.pid::text, '?') FROM {q['claims']} AS c "
            f"WHERE c.k = $1::bigint) END FROM l"
        )
        upsert = (f"INSERT INTO {q['claims']} (k, session, host, pid, since, info) "
                  f"SELECT $1::bigint, pg_backend_pid(), $2::text, $3::int4, $4::float8, "
                  f"$5::json")
        conflict = ("ON CONFLICT (k) DO UPDATE SET session = excluded.session, "
                    "host = excluded.host, pid = excluded.pid, since = excluded.since, "
                    "info = excluded.info")
        self._sql_claim_announce = (
            f"WITH l AS MATERIALIZED (SELECT pg_try_advisory_lock($1::bigint) AS ok), "
            f"ins AS ({upsert} FROM l WHERE l.ok {conflict} RETURNING 1) "
            f"SELECT l.ok, CASE WHEN l.ok THEN NULL ELSE (SELECT coalesce(c.host, '?') || "
            f"' pid ' || coalesce(c.pid::text, '?') FROM {q['claims']} AS c "
            f"WHERE c.k = $1::bigint) END FROM l"
        )
        self._sql_announce = f"{upsert} {conflict}"
        self._sql_unlock = "SELECT pg_advisory_unlock($1::bigint)"
        self._sql_unlock_announced = (
            f"WITH d AS (DELETE FROM {q['claims']} WHERE k = $1::bigint AND "
            f"session = pg_backend_pid()) SELECT pg_advisory_unlock($1::bigint)"
        )
        self._sql_unlock_many = (
            f"WITH d AS (DELETE FROM {q['claims']} WHERE k = ANY($2::bigint[]) AND "
            f"session = pg_backend_pid()) SELECT count(*) FROM unnest($1::bigint[]) AS k "
            f"WHERE pg_advisory_unlock(k)"
        )
        self._sql_running = (
            f"SELECT c.host, c.pid, c.since, c.info::text FROM {q['claims']} AS c "
            f"JOIN pg_locks AS l ON l.locktype = 'advisory' AND l.granted "
            f"AND l.objsubid = 1 AND l.pid = c.session "
            f"AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            f"AND ((l.classid::bigint << 32) | l.objid::bigint) = c.k ORDER BY c.since"
        )

    def key(self, offset: int) -> int:
        """The advisory lock key of a claim offset (non-negative, as ``pg_locks`` shows)."""
        return (offset ^ self._b._salt) & ((1 << 63) - 1)

    # ------------------------------------------------------------------ claims
    def _claim_stmt(self, offset: int, claim_info: dict[str, Any], announce: bool) -> Stmt:
        if not announce:
            return ("c", self._sql_claim, (self.key(offset),))
        return ("ca", self._sql_claim_announce,
                (self.key(offset), _HOST, os.getpid(), f"{time.time():.6f}",
                 json.dumps(claim_info, ensure_ascii=True)))

    def _eager(self, info: dict[str, Any]) -> bool:
        """Announce with the claim itself (runs of this function are not known short)."""
        typical = self._short.get(str(info.get("func", "")))
        return typical is None or typical >= _SHORT_RUN

    def try_claim(self, offset: int, info: dict[str, Any]) -> str | None:
        """Claim ``offset`` without waiting: ``None`` on success, else who holds it."""
        pause = self._pause_for(info)
        # (Not for a run held here: answered without a round trip. Not on a thread that
        # runs an event loop, as the call of an ``async def`` function does: it would
        # stop every other task.)
        if pause > 0 and offset not in self._held and not _in_event_loop():
            time.sleep(pause)  # not holding the mutex: other threads go on
        return self._try_claim(offset, info)

    def _try_claim(self, offset: int, info: dict[str, Any]) -> str | None:
        b = self._b
        me = threading.get_ident()
        with b._mutex:
            b._check_fork()
            held = self._held.get(offset)
            if held is not None:
                return None if held.thread == me else "in another thread of this process"
            eager = self._eager(info)

            def op(s: _Session) -> tuple[bool, str]:
                trips, t0 = s.trips, time.monotonic()
                b._check_ready(s, create=True)
                res = b._catch_up(s, b._feed, [self._claim_stmt(offset, info, eager)])[0]
                if s.trips == trips + 1:
                    self._timed(time.monotonic() - t0)
                return (_value(res, 0, 0) == b"t",
                        (_value(res, 0, 1) or b"").decode("utf-8", "replace"))

            ok, holder = b._with_retry(op)
            if not ok:
                self._collided()
                return f"by {holder}" if holder else "by another worker"
            claim = self._held[offset] = self._last[me] = _Claim(me, b._epoch, info)
            claim.announced = eager
            b._fresh_for = me
            if not eager:
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
        b = self._b
        with b._mutex:
            b._check_fork()
            claim = self._held.pop(offset, None)
            if claim is None:
                return
            if self._last.get(claim.thread) is claim:
                del self._last[claim.thread]
            session = b._session
            if claim.epoch != b._epoch or session is None:
                return  # released on the server already (or lost with a session)
            if claim.done_elsewhere:
                # Nothing ran: the run is recorded, so holding its lock a little longer
                # harms nobody. Release it with the next round trip (or within 50 ms).
                self._defer(offset, claim)
                return
            self._note_duration(claim)
            try:
                b._run(session, [[self._unlock_stmt(offset, claim)]])
            except _Lost:
                b._drop_session()  # the lock went with the session
            except _QueryError as exc:
                raise StoreError(f"PostgreSQL store {b.path}: {exc}") from None

    def is_claimed(self, offset: int) -> bool:
        """Whether anyone (this process included) holds a claim on ``offset``."""
        if offset in self._held:
            return True
        sql = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
               "objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = "
               "current_database()) AND ((classid::bigint << 32) | objid::bigint) = $1")
        b = self._b
        with b._mutex:
            res = b._with_retry(lambda s: b._run(s, [[(None, sql, (self.key(offset),))]]))
        return int(_value(res[0][0], 0, 0) or b"0") > 0

    def running(self) -> list[dict[str, Any]]:
        """Announcements (``func``, ``fields``, ``host``, ``pid``, ``since``) of live claims."""
        b = self._b

        def op(s: _Session) -> list[dict[str, Any]]:
            if not b._check_ready(s, create=False):
                return []
            res = b._run(s, [[(None, self._sql_running, ())]])[0][0]
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

        with b._mutex:
            return b._with_retry(op)

    # ----------------------------------------------------- for the backend
    def _unlock_stmt(self, offset: int, claim: _Claim) -> Stmt:
        if claim.announced:
            return ("ua", self._sql_unlock_announced, (self.key(offset),))
        return ("u", self._sql_unlock, (self.key(offset),))

    def _unlocked(self, claim: _Claim) -> None:
        """The claim's lock was released on the server (after its record's commit)."""
        self._note_duration(claim)
        claim.epoch = -1

    def _note_duration(self, claim: _Claim) -> None:
        func = str(claim.info.get("func", ""))
        took = claim.ran if claim.ran is not None else time.monotonic() - claim.t0
        old = self._short.get(func)
        self._short[func] = took if old is None else 0.8 * old + 0.2 * took
        self._level = self._level / 2 if self._level > 1 else 0.0  # it ran: ease off

    # ----------------------------------------------------------------- backoff
    def _timed(self, trip: float) -> None:
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

    def _found_done(self, thread: int) -> None:
        claim = self._last.pop(thread, None)
        if claim is not None:
            claim.done_elsewhere = True
            self._collided()

    def _defer(self, offset: int, claim: _Claim) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(self.key(offset))
        if claim.announced:
            self._pending_announced.append(self.key(offset))
        self._start_helper()

    def _flush_segment(self) -> list[list[Stmt]]:
        """The statements releasing deferred claims (taken off the list)."""
        if not self._pending:
            return []
        keys, announced = self._pending, self._pending_announced
        self._pending, self._pending_announced = [], []
        return [[("um", self._sql_unlock_many, (_array(keys), _array(announced)))]]

    def _held_for_record(self, record: Record) -> tuple[int, _Claim] | None:
        """The claim this thread holds on the run ``record`` records, if any."""
        if not self._held:
            return None
        func = record.get(FUNC_FIELD)
        if not func:
            return None
        names = tuple(sorted(k for k in record if not k.startswith(RESERVED_PREFIX)))
        offset = claim_offset(func, names, [record[n] for n in names])
        claim = self._held.get(offset)
        if claim is None or claim.thread != threading.get_ident():
            return None
        return offset, claim

    def _retake(self, s: _Session, offset: int) -> bool:
        """Take a lost claim again on session ``s`` (no waiting)."""
        claim = self._held[offset]
        res = s.run([[self._claim_stmt(offset, claim.info, True)]])[0][0]
        if _value(res, 0, 0) == b"t":
            claim.epoch = self._b._epoch
            claim.announced = True
            return True
        return False

    def _reconnected(self, s: _Session) -> None:
        """Every claim of this process was lost with the old session. Take them again at
        once where nobody else has, so that other workers keep skipping them."""
        self._pending, self._pending_announced = [], []  # gone with the session
        if not self._held:
            return
        b = self._b
        offsets = list(self._held)
        for claim in self._held.values():
            claim.interrupted = True
            claim.epoch = -1
        try:
            if not b._check_ready(s, create=True):
                return
            res = s.run([[self._claim_stmt(o, self._held[o].info, True) for o in offsets]])[0]
        except _QueryError:
            return
        for o, r in zip(offsets, res, strict=True):
            if _value(r, 0, 0) == b"t":
                self._held[o].epoch = b._epoch
                self._held[o].announced = True

    def _forked(self) -> None:
        """Forget claims that belong to another process (or to a closed session)."""
        self._held.clear()
        self._last.clear()
        self._level = 0.0
        self._pending, self._pending_announced = [], []

    # ------------------------------------------------------------ the helper
    def _start_helper(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and self._thread_pid == os.getpid():
            return
        self._thread_pid = os.getpid()
        self._thread = threading.Thread(target=self._helper, name="stet-postgres-claims",
                                        daemon=True)
        self._thread.start()

    def _helper(self) -> None:
        """Announce runs that last, release deferred claims: while claims are about."""
        b = self._b
        idle_since = time.monotonic()
        while True:
            time.sleep(0.025)
            with b._mutex:
                if self._thread is not threading.current_thread() or \
                        self._thread_pid != os.getpid():
                    return
                now = time.monotonic()
                if self._held or self._pending:
                    idle_since = now
                elif now - idle_since > 5.0:
                    self._thread = None
                    return
                session = b._session
                if session is None or session.pid != os.getpid() or not session.alive():
                    continue
                wall = time.time()
                due = [(o, c) for o, c in self._held.items()
                       if not c.announced and c.epoch == b._epoch
                       and wall - c.since >= _ANNOUNCE_AFTER]
                flush = bool(self._pending) and now - self._pending_since >= 0.05
                if not due and not flush:
                    continue
                stmts: list[Stmt] = [
                    ("an", self._sql_announce,
                     (self.key(o), _HOST, os.getpid(), f"{c.since:.6f}",
                      json.dumps(c.info, ensure_ascii=True)))
                    for o, c in due
                ]
                try:
                    b._run(session, [stmts] if stmts else [])
                except _Lost:
                    b._drop_session()
                    continue
                except _QueryError:
                    continue
                for _, c in due:
                    c.announced = True
