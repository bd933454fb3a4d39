"""PostgreSQL stores: one table shared by workers on any machine, exactly once.

One job per module:

* :mod:`.url` -- recognising a store URL, splitting off ``?table=``, masking passwords.
* :mod:`.session` -- one connection to the server and the exchange of statements.
* :mod:`.tables` -- finding, checking and creating a store's tables.
* :mod:`.feed` -- following a store's append-only tables by id into an index.
* :mod:`.claims` -- claims: advisory locks on a session, with leases that outlive it;
  they see the store only through ``claims.ClaimsHost`` (its session, round trips).
* :mod:`.source` -- the tables as a record source: the session and its reconnection,
  catching up, inserting exactly once, removing.
* :mod:`.store` -- :class:`PostgresBackend`, the store: a ``CachedStore`` (path-free)
  composed of that source and an index cache, declaring its capabilities.

Importing this package is cheap (psycopg is imported when a store is made).
"""

from __future__ import annotations

from typing import Any

from .url import DEFAULT_TABLE, SCHEMES, is_postgres_url, mask_url, url_scheme

__all__ = ["DEFAULT_TABLE", "SCHEMES", "PostgresBackend", "is_postgres_url", "mask_url",
           "url_scheme"]


def __getattr__(name: str) -> Any:
    if name == "PostgresBackend":  # imported on demand: ``import stet`` stays fast
        from .store import PostgresBackend

        return PostgresBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
