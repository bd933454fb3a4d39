"""PostgreSQL store failures are ``StoreError``s naming the store and what to do."""

from __future__ import annotations

from typing import Any

import pytest

import stet
from conftest import PgStore, pg_store
from stet.backends import get_backend

pytestmark = pytest.mark.usefixtures("pg_server")


def _admin(server: Any) -> Any:
    import psycopg

    return psycopg.connect(host=str(server.root), port=server.port, user="stet_admin",
                           dbname=server.dbname, autocommit=True)


@pytest.fixture
def url(pg_server: Any) -> PgStore:
    return pg_store(pg_server)


def test_a_user_without_privileges_is_told_to_grant_them(url: PgStore) -> None:
    with get_backend(url) as b:
        b.record({"x": 1})
    server = url.server
    with _admin(server) as admin:
        admin.execute("DROP ROLE IF EXISTS stet_nopriv")
        admin.execute("CREATE ROLE stet_nopriv LOGIN PASSWORD 'np-Secret-1'")
    try:
        other = f"postgresql://stet_nopriv:np-Secret-1@127.0.0.1:{server.port}/" \
                f"{server.dbname}?table={url.table}"
        with pytest.raises(stet.StoreError) as info, get_backend(other) as b:
            b.has({"x": 1})
        text = str(info.value)
        assert "postgresql://stet_nopriv:***@127.0.0.1" in text
        assert "GRANT" in text and "42501" in text
        assert "np-Secret-1" not in text
    finally:
        with _admin(server) as admin:
            admin.execute("DROP ROLE IF EXISTS stet_nopriv")


def test_a_row_stet_did_not_write_is_a_corrupt_store_error_naming_the_table(
    url: PgStore
) -> None:
    with get_backend(url) as b:
        b.record({"x": 1})
    import psycopg

    with psycopg.connect(url.server.url(), autocommit=True) as raw:
        raw.execute(f'INSERT INTO "{url.table}" (record) VALUES (\'[1, 2]\')')
    with get_backend(url) as b:
        with pytest.raises(stet.CorruptStoreError) as info:
            b.has({"x": 2})
        text = str(info.value)
        assert url.table in text and "***" in text and url.server.password not in text
        assert "remove that row" in text and "not a JSON object" in text
        with pytest.raises(stet.CorruptStoreError):
            b.load()


def test_a_read_only_server_is_named_as_such_before_a_run_executes(url: PgStore) -> None:
    with get_backend(url) as b:
        b.record({"x": 0})
    server = url.server
    calls: list[int] = []

    @stet.once(store=url, name="ro", verbose=False)
    def ro(x: int) -> int:
        calls.append(x)
        return x

    with _admin(server) as admin:
        admin.execute(f"ALTER ROLE {server.user} SET default_transaction_read_only = on")
    try:
        with pytest.raises(stet.StoreError) as info:
            ro(1)
        assert "read-only" in str(info.value) and "***" in str(info.value)
        assert calls == []  # refused when claiming, before the function ran
    finally:
        with _admin(server) as admin:
            admin.execute(f"ALTER ROLE {server.user} RESET default_transaction_read_only")
