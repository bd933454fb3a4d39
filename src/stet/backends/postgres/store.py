"""PostgreSQL store: many workers on many machines share one table, exactly once.

Layout (``T`` is the table named by ``?table=``, default ``stet_records``):

* ``T (id bigserial, record json, run json)``: one row per completed run; the record is
  a JSON object of field name to canonical text (kept verbatim: ``json``, not ``jsonb``),
  so any field name is data and a widened key needs no schema change. ``run`` repeats
  the part that identifies the run (function and key fields): readers follow that, not
  timestamps or saved results.
* ``T_failures``: the same, for failed runs.
* ``T_meta (name, value)``: generation numbers, bumped by removals so readers reload.
* ``T_claims`` (unlogged) and ``T_workers``: the leases of claims. A claim is an
  advisory lock on the worker's session plus a lease row, written by the statement that
  takes the lock, so that a session lost while its worker lives (server restart,
  terminated session) does not free the run; see ``claims``.

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

The store is a :class:`~stet.backends._base.CachedStore`: the tables are a record
source (``source.PgSource``, which also owns the session and the claims' share of it),
and the store's :class:`~stet.backends._cache.IndexCache` holds its index and mutex.
The connection is psycopg 3's (imported lazily), its statements pipelined and prepared
automatically (``session``). A lost connection (server restart, network) is
re-established and the operation retried: a retried insert first waits until the server
process that received it has finished it, then looks for its own row (the JSON text is
kept verbatim), and a run whose lock was lost with the connection is recorded only
after taking it again and checking that nobody recorded it meanwhile. URLs are read as
libpq reads them, and shown with the password masked (``url``).

Why not an idempotency key (a unique column filled by the writer, ``INSERT ... ON
CONFLICT DO NOTHING`` on retry, which would also wait for the lost statement by itself
instead of watching ``pg_stat_activity``): weighed and left out, because

* existing tables would need ``ALTER TABLE ... ADD COLUMN`` and a ``CREATE UNIQUE
  INDEX``, which only their owner may run (workers are often granted only SELECT,
  INSERT, UPDATE, DELETE: see ``session.advice``); the verbatim search would have to stay
  for those tables, so the change adds a path rather than replacing one;
* every insert would maintain one more unique index, on the hot path of every worker,
  to speed up a retry that happens only after a lost answer; the search it replaces is
  a range scan by primary key (``id > before``), bounded by the rows written meanwhile;
* old stores' readers would cope with the extra column, but the table format would
  change for a gain seen only on that rare path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..._claims import Claims
from ..._schema import Record
from .._base import CachedStore, Capabilities
from .._cache import IndexCache
from .._plan import PlanLog
from .plans import PgPlan
from .source import PgSource, _int4
from .url import DEFAULT_TABLE, SCHEMES, is_postgres_url, mask_url, url_scheme

__all__ = ["DEFAULT_TABLE", "SCHEMES", "PostgresBackend", "is_postgres_url", "mask_url",
           "url_scheme"]


class PostgresBackend(CachedStore):
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

    # Claims are advisory locks every worker sees; failures are a table; a removal
    # matches by function; a claim catches up with the table; copies insert thousands
    # of records per statement.
    capabilities = Capabilities(shared_claims=True, durable_failures=True,
                                remove_by_match=True, claim_catches_up=True,
                                bulk_append=True, durable_plans=True)

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool | None = None,
                 reconnect_timeout: float = 120.0, connect_timeout: float = 30.0) -> None:
        from ..._config import settings

        self._source = PgSource(os.fspath(path),
                                fsync=settings.fsync if fsync is None else fsync,
                                reconnect_timeout=reconnect_timeout,
                                connect_timeout=connect_timeout)
        self._cache = IndexCache(self._source, self._source.name, self._source.index)
        # One mutex for the index and the session: the claims' helper thread takes it too.
        self._cache.mutex = self._source.mutex
        self.table = self._source.table

    @property
    def fsync(self) -> bool:
        """Whether sessions force ``synchronous_commit=on``."""
        return self._source.fsync

    @property
    def reconnect_timeout(self) -> float:
        return self._source.reconnect_timeout

    @property
    def connect_timeout(self) -> float:
        return self._source.connect_timeout

    def describe(self) -> str:
        """The store's URL, its password masked."""
        return self._source.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    def exists(self) -> bool:
        """Whether the store's table exists."""
        return self._source.exists()

    # -- lookups: a hit the index holds costs no round trip (see the module's docstring)
    def contains_run(self, func: str, fields: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        return self._source.contains_run(func, fields, texts)

    def contains_run_cached(self, func: str, fields: tuple[str, ...],
                            texts: tuple[str, ...]) -> bool:
        """Whether the local index knows the run is done (no round trip; ``False`` may
        be stale). The decorator asks this before claiming, since a claim catches up
        with the store and the decorator looks again after it."""
        return self._source.contains_run_cached(func, fields, texts)

    def contains_any(self, fields: Record) -> bool:
        return self._source.contains_any(fields)

    # -- writing: the source takes the mutex itself (never across a wait for a claim)
    def append_record(self, record: Record) -> None:
        """Record a run, exactly once even across lost connections and lost claims."""
        self._source.append_record(record)

    def append_records(self, records: Sequence[Record]) -> None:
        """Record many runs, thousands per statement (each statement all or nothing, and
        never applied twice across lost connections). Claims are not looked at: this is
        for copies, not for runs being executed."""
        self._source.append_records(records)

    # -- failures: in the table ``T_failures`` ---------------------------------------
    def append_failure(self, record: Record) -> None:
        """Record a failed run (in ``T_failures``)."""
        self._source.append_failure(record)

    def contains_failure(self, func: str, fields: tuple[str, ...],
                         texts: tuple[str, ...]) -> bool:
        """Whether a failure of this run is recorded."""
        return self._source.contains_failure(func, fields, texts)

    def failures(self) -> list[Record]:
        """Every recorded failure, oldest first."""
        return self._source.failures()

    def remove_failures(self, func: str | None, fields: Record) -> int:
        """Forget recorded failures of matching runs."""
        return self._source.remove_failures(func, fields)

    # -- plans -----------------------------------------------------------------------
    def _new_plan(self) -> PlanLog:
        return PgPlan(self._source, _int4(self._source._salt))  # (in T_plan: see .plans)

    # -- claims ----------------------------------------------------------------------
    def claims(self) -> Claims:
        """The claims of this store: advisory locks held by this worker's session."""
        return self._source.claims

    def close(self) -> None:
        """Close the connection (which releases this process's claims on the server)."""
        self._cache.close()

