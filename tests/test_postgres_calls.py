"""PostgreSQL store: claims belong to calls, field names are data.

* One thread may hold many claims (``async def`` calls of different runs on one event
  loop); a run held by one call is "held by another call in this process" for the next
  call, even on the same thread, so concurrent calls of one run execute once.
* Any field name (``id``, ``ID`` beside ``id``, quotes, dots, spaces, names longer than
  PostgreSQL's 63-byte identifiers, names of the store's own columns) round-trips and
  skips: records are JSON objects, so names never become SQL.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import stet
from conftest import PgStore, pg_rows, pg_store
from stet._claims import claim_offset
from stet.backends import get_backend

pytestmark = pytest.mark.usefixtures("pg_server")


@pytest.fixture
def url(pg_server: Any) -> PgStore:
    return pg_store(pg_server)


def test_concurrent_async_calls_of_one_run_execute_once(url: PgStore) -> None:
    calls: list[int] = []

    @stet.once(store=url, name="af", verbose=False)
    async def af(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0.2)
        return x

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(af(1) for _ in range(4)),
                                         *(af(i) for i in range(2, 6))))

    results = asyncio.run(main())
    assert sorted(calls) == [1, 2, 3, 4, 5]
    assert results.count(1) == 1 and results[4:] == [2, 3, 4, 5]
    recorded = collections.Counter(r["x"] for r in pg_rows(url))
    assert recorded == collections.Counter(str(i) for i in range(1, 6))
    assert asyncio.run(main()) == [None] * 8 and len(calls) == 5


def test_threads_calling_one_run_together_execute_it_once(url: PgStore) -> None:
    calls: list[int] = []
    gate = threading.Barrier(6)

    @stet.once(store=url, name="tf", verbose=False)
    def tf(x: int) -> int:
        calls.append(x)
        return x

    def call() -> None:
        gate.wait(5)
        tf(1)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert calls == [1]
    assert [r["x"] for r in pg_rows(url)] == ["1"]


def test_one_thread_holds_many_claims_each_its_own(url: PgStore) -> None:
    with get_backend(url) as b:
        claims = b.claims()
        o1, o2 = (claim_offset("f", ("x",), (t,)) for t in ("1", "2"))
        info = {"func": "f", "fields": {"x": "1"}}
        assert claims.try_claim(o1, info) is None
        # the same thread, another call: not "ours"
        assert claims.try_claim(o1, info) == "by another call in this process"
        assert claims.try_claim(o2, {"func": "f", "fields": {"x": "2"}}) is None
        assert b.contains_run("f", ("x",), ("1",)) is False  # o2 was claimed last
        b.append_record({"x": "1", "_stet_func": "f"})
        claims.release(o1)
        assert b.contains_run("f", ("x",), ("1",)) is True
        assert b.contains_run("f", ("x",), ("2",)) is False
        held = claims._held[o2]  # still held, not mistaken for done
        assert not held.done_elsewhere and not held.settled
        with get_backend(url) as other:
            assert other.claims().try_claim(o2, {"func": "f"}) is not None
        claims.release(o2)


# ------------------------------------------------------------------- field names
OWN = ["id", "ID", "Id", "record", "run", "k", "owner", "session", "rowid", "oid", "ctid",
       "xmin", "value", "name", "table", "a", "A", "a.b", 'q"uote', "it's", "sp ace",
       "semi;colon", "back\\slash", "new\nline", "caf\u00e9", "\u2603", "-", "0"]
LONG = "p" * 62
names = st.one_of(
    st.sampled_from(OWN),
    # (stet refuses a NUL in a field name, in every format)
    st.text(min_size=1, max_size=12).filter(lambda s: not s.startswith("_stet_")
                                            and "\x00" not in s),
    st.builds(lambda tail: LONG + tail, st.text(alphabet="xyzé☃", min_size=1, max_size=4)),
)
values = st.one_of(st.integers(), st.text(max_size=20), st.floats(allow_nan=False),
                   st.booleans(), st.none())
_counter = itertools.count()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(names, values, min_size=1, max_size=4))
@example(fields={"nul": "v\x00", "id": 1, "ID": 2, "record": "r", "run": None})
@example(fields={LONG + "a": 1, LONG + "b": 2, 'q"uote': "it's", "a.b": 3})
def test_any_field_names_round_trip_and_skip(url: PgStore, fields: dict[str, Any]) -> None:
    name = f"fn{next(_counter)}"
    calls: list[dict[str, Any]] = []

    @stet.once(store=url, name=name, verbose=False)
    def fn(**kw: Any) -> int:
        calls.append(kw)
        return 1

    assert fn(**fields) == 1
    assert fn(**fields) is None
    assert calls == [fields]
    with get_backend(url) as fresh:  # another process's view: from the server
        mine = [r for r in fresh.load() if r.get("_stet_func") == name]
        assert len(mine) == 1
        assert set(mine[0]) - {k for k in mine[0] if k.startswith("_stet_")} == set(fields)
        assert fresh.has(fields)
    # a name differing only in case (or length) is another run
    other = {(k.swapcase() if k.swapcase() not in fields else k + "x"): v
             for k, v in fields.items()}
    assert fn(**other) == 1
    assert fn(**fields) is None and fn(**other) is None
    assert fn.forget(**fields) == 1  # removes that run alone
    assert fn(**other) is None and fn(**fields) == 1


def test_names_sharing_a_63_byte_prefix_are_two_fields(url: PgStore) -> None:
    a, b = LONG + "a", LONG + "b"
    with get_backend(url) as store:
        store.record({a: 1, b: 2})
        assert store.has({a: 1, b: 2}) and not store.has({a: 2, b: 1})
        [rec] = store.load()
        assert (rec[a], rec[b]) == ("1", "2")
        assert store.remove({a: 1, b: 2}) == 1
