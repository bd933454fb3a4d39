"""A PostgreSQL store's plans (see :mod:`stet.backends._plan`): the table ``T_plan``
``(id bigserial, k text UNIQUE, entry json)``, one row per planned run, ``k`` its
identity; made by the first sweep that records a plan (not by ``check_tables``: a store
made before plans existed gains it then), read as empty while it does not exist."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar, cast

from ..._schema import Record, run_key
from ..._sql import quote_ident
from .._plan import new_entries
from .session import _Session, _value
from .tables import plan_table

__all__ = ["PgPlan"]

T = TypeVar("T")


class _Backend(Protocol):
    """What a plan asks of its PostgreSQL store (its table, its session)."""

    table: str

    @property
    def mutex(self) -> AbstractContextManager[Any]: ...

    def _with_retry(self, op: Callable[[_Session], T]) -> T: ...


class PgPlan:
    """Plans in ``T_plan``; inserting an entry kept already does nothing (a union)."""

    def __init__(self, backend: _Backend, lock_key: int) -> None:
        # (a proxy, not a cycle: the backend keeps this object)
        self._backend = cast("_Backend", weakref.proxy(backend))
        self._name = backend.table + "_plan"
        self._table = quote_ident(self._name)
        self._lock_key = lock_key

    def add(self, entries: Sequence[Record]) -> None:
        fresh = new_entries(set(), entries)
        if not fresh:
            return
        rows = json.dumps([[json.dumps(run_key(e)), e] for e in fresh])
        t = self._table

        def op(s: _Session) -> None:
            s.run([[("BEGIN", ()), *plan_table(t, self._lock_key),
                    (f"INSERT INTO {t} (k, entry) SELECT x->>0, x->1 FROM "
                     "json_array_elements($1::json) AS x ON CONFLICT (k) DO NOTHING",
                     (rows,)),
                    ("COMMIT", ())]])

        with self._backend.mutex:
            self._backend._with_retry(op)

    def entries(self) -> list[Record]:
        t = self._table

        def op(s: _Session) -> list[Record]:
            res = s.run([[("SELECT to_regclass($1)::text", (t,))]])[0][0]
            if _value(res, 0, 0) is None:
                return []
            res = s.run([[(f"SELECT coalesce(json_agg(entry ORDER BY id), '[]')::text "
                           f"FROM {t}", ())]])[0][0]
            got = json.loads(_value(res, 0, 0) or b"[]")
            return [{str(k): str(v) for k, v in e.items()} for e in got]

        with self._backend.mutex:
            return self._backend._with_retry(op)

    def clear(self) -> None:
        t = self._table

        def op(s: _Session) -> None:
            res = s.run([[("SELECT to_regclass($1)::text", (t,))]])[0][0]
            if _value(res, 0, 0) is not None:
                s.run([[(f"DELETE FROM {t}", ())]])

        with self._backend.mutex:
            self._backend._with_retry(op)
