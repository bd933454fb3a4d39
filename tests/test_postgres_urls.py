"""PostgreSQL store URLs: a password never shows, however it is written.

libpq ends a URL's user part at the first ``@`` or ``/``, so a password holding an
unencoded ``/``, ``?``, ``#`` or ``@`` is read as host, port or database, and would be
echoed by every message naming them. Such URLs are refused before any connection, with
the password masked; every URL is shown with whatever libpq (or a person) would take as
its password masked.
"""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stet
from stet.backends import display_store, get_backend
from stet.backends.postgres import PostgresBackend, mask_url

psycopg = pytest.importorskip("psycopg")

NASTY = string.printable.strip() + " \u00e9\u2603"
passwords = st.text(alphabet=NASTY, min_size=1, max_size=24)


def _texts(exc: BaseException) -> str:
    out = []
    e: BaseException | None = exc
    while e is not None:
        out += [str(e), repr(e)]
        e = e.__cause__ or e.__context__
    return "\n".join(out)


@pytest.mark.parametrize("pw", ["simple/pw", "se?cret", "se#cret", "p@ss", "a/b?c#d@e",
                                "x@y/z", "p:q", "50%", "&amp", "end@"])
def test_a_password_with_url_characters_is_masked_or_refused(pw: str) -> None:
    url = f"postgresql://bob:{pw}@db.example:5432/db?table=t"
    assert mask_url(url) == "postgresql://bob:***@db.example:5432/db?table=t"
    assert display_store(url) == mask_url(url)
    try:
        b = PostgresBackend(url, connect_timeout=2)
    except ValueError as exc:
        assert pw not in _texts(exc)
        assert "percent-encode" in str(exc) and "bob:***@db.example" in str(exc)
        return
    assert pw not in repr(b)
    # what libpq reads: the whole password, nothing of it elsewhere
    read = psycopg.conninfo.conninfo_to_dict(b._source._target.url)
    assert (read["user"], read["host"], read["port"], read["dbname"]) == \
        ("bob", "db.example", "5432", "db")


@settings(max_examples=150, deadline=None)
@given(middle=passwords)
def test_any_password_written_into_a_url_never_shows(middle: str) -> None:
    pw = f"Kq{middle}qK"  # (so that it cannot be part of the rest of the URL)
    for url, shown in (
        (f"postgresql://bob:{pw}@127.0.0.1:1/db?table=t",
         "postgresql://bob:***@127.0.0.1:1/db?table=t"),
        (f"postgresql://bob@127.0.0.1:1/db?password={pw}&table=t",
         "postgresql://bob@127.0.0.1:1/db?password=***&table=t"),
    ):
        try:
            b = PostgresBackend(url, connect_timeout=2, reconnect_timeout=0)
        except ValueError as exc:
            assert pw not in _texts(exc) and "percent-encode" in str(exc)
            continue
        assert mask_url(url) == shown == b.describe()
        assert pw not in repr(b)
        read = psycopg.conninfo.conninfo_to_dict(b._source._target.url)
        assert (read.get("user"), read.get("host"), read.get("dbname")) == \
            ("bob", "127.0.0.1", "db")
        assert b._source._target.scrub(f"<{read['password']}>") == "<***>"
        with pytest.raises(stet.StoreError) as info:  # nothing listens on port 1
            b.has({"x": 1})
        assert pw not in _texts(info.value) and shown in str(info.value)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(middle=passwords)
def test_a_server_password_written_encoded_works_and_never_shows(
    pg_server: Any, middle: str
) -> None:
    """The same family against a real server: the user whose password it is logs in
    (percent-encoded URL), and a wrong one is told so without the password."""
    pw = f"Kq{middle}qK"
    with psycopg.connect(pg_server.url(), autocommit=True) as raw:
        raw.execute(psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            psycopg.sql.Identifier(pg_server.user), psycopg.sql.Literal(pw)))
    try:
        url = pg_server.url(table="pw_family", password=pw)
        assert unquote(url.split(":")[2].split("@")[0]) == pw
        with get_backend(url) as b:
            b.record({"x": 1})
            assert b.has({"x": 1})
            assert quote(pw, safe="") not in repr(b) and pw not in repr(b)
        wrong = pg_server.url(table="pw_family", password=pw + "-wrong")
        with pytest.raises(stet.StoreError) as info:
            get_backend(wrong).has({"x": 1})
        assert "password authentication failed" in str(info.value)
        assert pw not in _texts(info.value)
    finally:
        with psycopg.connect(pg_server.url(password=pw), autocommit=True) as raw:
            raw.execute(psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                psycopg.sql.Identifier(pg_server.user),
                psycopg.sql.Literal(pg_server.password)))
