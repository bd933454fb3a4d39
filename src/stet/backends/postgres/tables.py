"""A PostgreSQL store's tables: finding them, checking their layout, creating them.

``T`` (the table named by ``?table=``) and ``T_failures``: ``(id bigserial, record json,
run json)``; ``T_meta``: generations; ``T_claims`` (unlogged) and ``T_workers``: the
claims' leases (see ``store`` and ``claims``).
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import CorruptStoreError, StoreError
from .session import Stmt, _QueryError, _Session, _value

__all__ = ["check_tables", "plan_table"]


def check_tables(s: _Session, q: dict[str, str], lock_key: int, create: bool, table: str,
                 path: str, error: Callable[[_QueryError, str], StoreError]) -> bool:
    """Whether the store's tables exist (creating them if ``create``), checking the
    layout. ``q``: the quoted table names; ``table``, ``path``: as messages name them."""
    names = [q["records"], q["failures"], q["meta"], q["claims"], q["workers"]]
    for _ in range(3):
        res = s.run([[("SELECT to_regclass($1)::text, to_regclass($2)::text, "
                       "to_regclass($3)::text, to_regclass($4)::text, "
                       "to_regclass($5)::text, (SELECT string_agg("
                       "attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY "
                       "attnum) FROM pg_attribute WHERE attrelid = to_regclass($1) AND "
                       "attnum > 0 AND NOT attisdropped)", names)]])[0][0]
        exists = [_value(res, 0, i) is not None for i in range(5)]
        columns = (_value(res, 0, 5) or b"").decode("utf-8", "replace")
        # to_regclass sees the catalog as of now, pg_attribute as of the statement's
        # start: a table another worker created in between shows no columns. The next
        # statement sees them.
        if not exists[0] or columns:
            break
    if exists[0] and not {"id bigint", "record json", "run json"} <= set(
            columns.split(", ")):
        raise CorruptStoreError(
            f"table {table!r} of {path} is not a stet store (its columns: "
            f"{columns[:200]}). It was left untouched; choose another table with "
            f"?table=NAME."
        )
    if all(exists):
        return True
    if not create and not exists[0]:
        return False
    _create_tables(s, q, lock_key, path, error)
    return True

def _create_tables(s: _Session, q: dict[str, str], lock_key: int, path: str,
                   error: Callable[[_QueryError, str], StoreError]) -> None:
    data = "(id bigserial PRIMARY KEY, record json NOT NULL, run json)"
    stmts: list[Stmt] = [
        ("BEGIN", ()),
        # Workers starting together must not race on CREATE TABLE IF NOT EXISTS.
        ("SELECT pg_advisory_xact_lock($1::int4, 0)", (lock_key,)),
        (f"CREATE TABLE IF NOT EXISTS {q['records']} {data}", ()),
        (f"CREATE TABLE IF NOT EXISTS {q['failures']} {data}", ()),
        (f"CREATE TABLE IF NOT EXISTS {q['meta']} "
               "(name text PRIMARY KEY, value bigint NOT NULL)", ()),
        (f"INSERT INTO {q['meta']} (name, value) VALUES ('records', 0), "
               "('failures', 0), ('schema', 1) ON CONFLICT (name) DO NOTHING", ()),
        # Claims' leases (see ``claims``). Unlogged: no disk flush per claim. The
        # table of stores made before leases gains their owner column.
        (f"CREATE UNLOGGED TABLE IF NOT EXISTS {q['claims']} (k bigint PRIMARY "
               "KEY, session integer NOT NULL, host text, pid integer, "
               "since double precision, info json, owner text)", ()),
        (f"ALTER TABLE {q['claims']} ADD COLUMN IF NOT EXISTS owner text", ()),
        (f"INSERT INTO {q['claims']} (k, session, since) VALUES (-1, 0, "
               "extract(epoch from clock_timestamp())) ON CONFLICT (k) DO NOTHING", ()),
        (f"CREATE TABLE IF NOT EXISTS {q['workers']} (owner text PRIMARY KEY, "
               "renewed double precision NOT NULL, expires double precision NOT NULL, "
               "host text, pid integer)", ()),
        # Leases of workers gone for an hour are of no use to anyone.
        (f"DELETE FROM {q['workers']} WHERE expires < extract(epoch from "
               "clock_timestamp()) - 3600", ()),
        ("COMMIT", ()),
    ]
    try:
        s.run([stmts])
    except _QueryError as exc:
        if exc.sqlstate == "42501":
            raise StoreError(
                f"cannot create the tables of PostgreSQL store {path}: {exc}. The "
                f"user needs CREATE on the schema the first time (or have someone "
                f"who has it use the store once)") from None
        raise error(exc, "cannot create the tables of") from None


def plan_table(t: str, lock_key: int) -> list[Stmt]:
    """The statements that make ``T_plan`` (quoted as ``t``) if it is missing: made by
    the first sweep that records a plan, so stores made before plans gain it then."""
    return [
        # (as the other tables: workers starting together must not race on CREATE)
        ("SELECT pg_advisory_xact_lock($1::int4, 0)", (lock_key,)),
        (f"CREATE TABLE IF NOT EXISTS {t} (id bigserial PRIMARY KEY, "
         "k text UNIQUE NOT NULL, entry json NOT NULL)", ()),
    ]
