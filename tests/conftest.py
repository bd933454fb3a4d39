"""Shared fixtures: one fresh store of every kind, for the conformance suite."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stet
from formats import pg_rows
from stet.backends import BaseBackend, get_backend

__all__ = ["IN_CI", "LOCAL_FIXTURES", "PgStore", "pg_rows", "pg_store"]

LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stet-0.0.2"

#: Every store format; the conformance suite runs each behaviour against each. The
#: ``postgres`` store is a table on a throwaway server on loopback (see ``pg_server``).
FORMATS = ["csv", "json", "sqlite", "parquet", "postgres"]

#: Under CI a missing PostgreSQL server (or psycopg) fails the tests instead of skipping.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(autouse=True)
def _quiet_defaults() -> Iterator[None]:
    """Each test starts from stet's documented defaults."""
    saved = (stet.settings.verbose, stet.settings.fsync)
    stet.configure(verbose=True, fsync=False)
    yield
    stet.settings.verbose, stet.settings.fsync = saved


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("pg_server")  # started (or skipped) before the test
    return str(request.param)


class PgStore(str):
    """A PostgreSQL store URL with a fresh table, standing in for a store path: it is a
    ``str`` (what stet is given), and answers ``exists()`` like a path does."""

    table: str
    server: Any
    suffix = ".postgres"

    def exists(self) -> bool:
        with get_backend(str(self)) as b:
            return b.exists()


def _missing_postgres(why: str) -> None:
    if IN_CI:
        pytest.fail(f"{why}; CI runs every PostgreSQL test (.ci/run installs the server)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A real PostgreSQL server on loopback, for the whole session (started on demand)."""
    from pgserver import PgServer, find_bindir

    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing_postgres("psycopg is not installed (pip install 'stet[postgres]')")
    bindir = find_bindir()
    if bindir is None:
        _missing_postgres("no PostgreSQL server binaries (apt-get install postgresql)")
        raise AssertionError  # unreachable
    server = PgServer(bindir)
    yield server
    server.close()


def pg_store(server: Any, prefix: str = "t") -> PgStore:
    """A URL naming a new table on ``server``."""
    table = f"{prefix}_{secrets.token_hex(6)}"
    url = PgStore(server.url(table=table))
    url.table, url.server = table, server
    return url


@pytest.fixture
def store_path(tmp_path: Path, fmt: str, request: pytest.FixtureRequest) -> Path:
    """A path for a new (not yet existing) store of each format (for ``postgres``, a
    URL naming a new table, standing in for a path)."""
    if fmt == "postgres":
        return pg_store(request.getfixturevalue("pg_server"))  # type: ignore[return-value]
    return tmp_path / f"store.{fmt}"


@pytest.fixture
def backend(store_path: Path) -> Iterator[BaseBackend]:
    b = get_backend(store_path)
    yield b
    b.close()


@pytest.fixture
def v002_store(fmt: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A writable copy of the stet 0.0.2 fixture store of ``fmt`` (12 runs: alpha 0.1,
    0.5, 1.0 by seed 0 to 3). For ``postgres`` (which stet 0.0.2 did not have), a new
    table holding the same records."""
    if fmt == "postgres":
        import csv

        url = pg_store(request.getfixturevalue("pg_server"), "v002")
        with open(LOCAL_FIXTURES / "v002_store.csv", newline="") as fh, \
                get_backend(url) as b:
            for row in csv.DictReader(fh):
                b.append_record(dict(row))
        return url  # type: ignore[return-value]
    src = LOCAL_FIXTURES / f"v002_store.{fmt}"
    target = tmp_path / f"v002_store.{fmt}"
    shutil.copyfile(src, target)
    return target
