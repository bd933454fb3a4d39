"""PostgreSQL rows: following a store's tables by id into an index, and the text of
the rows an insert writes (see ``store``)."""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..._index import Index
from ..._schema import FUNC_FIELD, Record, is_bookkeeping
from ...errors import CorruptStoreError
from .session import Stmt, _array, _value

_CHUNK = 20_000  # rows per catch-up statement
_BULK = 5_000  # rows per statement of append_records
_BULK_BYTES = 32 << 20  # and about this much JSON text at most
_HOLE_WAIT = 0.2  # seconds before a hole is checked for being gone for good


class _AppendState:
    """One insert across retries: was it sent, on which session, and which ids came
    before it (its rows, if it committed, have higher ids)."""

    __slots__ = ("before", "last", "sent", "session")

    def __init__(self, before: int = 0) -> None:
        self.sent = False
        self.before = before
        self.session = 0  # the server process that received it
        self.last = 0  # the highest id it wrote (statements of many records)


def _run_part(record: Record) -> Record:
    """What identifies the run of ``record``: its function and key fields (column ``run``)."""
    return {k: v for k, v in record.items()
            if k == FUNC_FIELD or not is_bookkeeping(k)}


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


# ------------------------------------------------------------------------- feeds
class _Feed:
    """Follows one append-only table by id, into an index."""

    def __init__(self, name: str, table: str, meta: str, index: Index,
                 lock_keys: tuple[int, int]) -> None:
        self.name = name  # the meta row holding its generation
        self.index = index
        self.lock_keys = lock_keys
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
            stmts.append((self.sql_trylock, self.lock_keys))
            self.last_try = now
            trying = True
        if self.holes:
            stmts.append((self.sql_holes,
                          (_array([h[0] for h in self.holes]),
                           _array([h[1] for h in self.holes]))))
        stmts.append((self.sql_new, (self.max_seen, _CHUNK)))
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
        raise CorruptStoreError(f"a row holds a record that is not JSON ({exc}): it was "
                                f"not written by stet; remove that row, or choose "
                                f"another table with ?table=NAME") from None
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
            used = [f for f in first if f == FUNC_FIELD or not is_bookkeeping(f)]
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
                if f == FUNC_FIELD or not is_bookkeeping(f)]
        if all(set(map(type, columns[i])) <= str_type for i in used):
            index.add_columns([header[i] for i in used], [columns[i] for i in used])
        else:  # numbers, nulls (other tools wrote these): one by one
            odd.extend(dict(zip(header, row, strict=True)) for row in rows)
    for obj in odd:
        index.add(_coerce(obj))


def _coerce(obj: Any) -> Record:
    """A record read back: a JSON object of texts (other JSON values made canonical)."""
    if type(obj) is not dict:
        raise CorruptStoreError(f"a row holds a record that is not a JSON object "
                                f"({str(obj)[:100]!r}): it was not written by stet; "
                                f"remove that row, or choose another table with "
                                f"?table=NAME")
    for v in obj.values():
        if type(v) is not str:
            break
    else:
        return obj
    from ..._identity import canonical

    return {str(k): v if isinstance(v, str) else canonical(v)
            for k, v in obj.items() if v is not None}
