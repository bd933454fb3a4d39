"""The tests of :class:`StoreContract` (see :mod:`stet.testing`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

import stet
from stet._schema import FUNC_FIELD, TIMESTAMP_FIELD, is_bookkeeping
from stet.backends import Store

from ._matching import MatchingContract
from ._sharing import SharingContract

__all__ = ["StoreContract"]

OpenStore = Callable[[], Store]

#: Values whose canonical texts all differ, and which a naive store confuses: empty and
#: missing-value spellings, CSV/JSON/SQL metacharacters, unicode, a long text.
TRICKY: list[Any] = [None, "", "NA", "null", "NULL", "nan", "NaN", "N/A", "#N/A", "\\N",
                     " ", "  padded  ", "0", "-0", "a,b", 'say "hi"', '"', '""', "'", "it's",
                     ",", "line1\nline2", "\n", "cr\rlf\r\n", "tab\there",
                     "ünïcødé ✓ 日本語 🎉", "[]", "{}", '{"a": 1}', "=1+1", "#comment",
                     "x" * 3000]


def _user(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not is_bookkeeping(k)}


class StoreContract(MatchingContract, SharingContract):
    """Behaviour every store owes stet (docs/how-to/own-store.md); subclass it and
    define the ``open_store`` fixture. Each test reads the store's
    :class:`~stet.backends.Capabilities`, never its kind."""

    @pytest.fixture
    def open_store(self) -> OpenStore:
        raise NotImplementedError("define an open_store fixture returning a callable "
                                  "that opens one fresh store (see stet.testing)")

    @pytest.fixture
    def store_spec(self, open_store: OpenStore) -> Any:
        """What a child process started with 'spawn' passes as ``@stet.once(store=...)``
        to reach the same store: by default a new handle, ``open_store()``, which must
        then pickle (as for a process pool). Override it with the store's path or URL
        when handles do not pickle."""
        return open_store()

    @pytest.fixture
    def store(self, open_store: OpenStore) -> Any:
        handle = open_store()
        yield handle
        handle.close()

    # ----------------------------------------------------------- the five methods
    def test_a_new_store_does_not_exist_until_its_first_record(self, store: Store) -> None:
        assert not store.exists()
        assert store.load() == []
        store.record({"alpha": 1})
        assert store.exists()

    def test_a_recorded_combination_is_found_and_loaded_with_a_timestamp(
        self, store: Store
    ) -> None:
        assert not store.has({"alpha": 0.1, "seed": 0})
        store.record({"alpha": 0.1, "seed": 0})
        assert store.has({"alpha": 0.1, "seed": 0})
        assert store.has({"alpha": "0.1", "seed": "0"})  # a value and its text: one run
        assert not store.has({"alpha": 0.1, "seed": 1})
        assert not store.has({"alpha": 0.1, "seed": 0, "beta": 1})  # a field it lacks
        [rec] = store.load()
        assert _user(rec) == {"alpha": "0.1", "seed": "0"}
        stamp = dt.datetime.fromisoformat(rec[TIMESTAMP_FIELD])  # UTC, ISO 8601
        assert stamp.utcoffset() == dt.timedelta(0)
        assert abs(dt.datetime.now(dt.UTC) - stamp) < dt.timedelta(minutes=5)

    def test_tricky_values_round_trip_as_distinct_texts(self, open_store: OpenStore) -> None:
        with open_store() as store, open_store() as fresh:
            for i, value in enumerate(TRICKY):
                store.record({"i": i, "v": value})
            texts = {r["i"]: r["v"] for r in map(_user, fresh.load())}
            assert texts == {str(i): stet.canonical(v) for i, v in enumerate(TRICKY)}
            for i, value in enumerate(TRICKY):
                assert fresh.has({"i": i, "v": value}), repr(value)
                assert not fresh.has({"i": i + 1, "v": value}), repr(value)
            for miss in ["na", "Null", "nan ", " NA", "a, b", "line1 line2",
                         "line1\r\nline2", "x"]:
                assert not fresh.has({"v": miss}), repr(miss)
        calls: list[Any] = []
        with open_store() as handle:
            @stet.once(store=handle, verbose=False)
            def f(i: int, v: Any) -> None:
                calls.append(v)

            for i, value in enumerate(TRICKY):  # recorded by hand: every one done
                f(i, value)
        assert calls == []

    def test_remove_takes_one_combination_and_clear_takes_all(self, store: Store) -> None:
        for seed in range(3):
            store.record({"seed": seed})
        store.remove({"seed": 1})
        assert sorted(r["seed"] for r in store.load()) == ["0", "2"]
        store.clear()
        assert store.load() == []
        assert not store.has({"seed": 0})

    def test_a_closed_store_opens_again_when_used(self, store: Store) -> None:
        store.record({"seed": 1})
        store.close()
        assert store.has({"seed": 1})

    # -------------------------------------------------------- what stet calls
    def test_remove_where_removes_as_the_capabilities_say(self, store: Store) -> None:
        store.append_records([{FUNC_FIELD: "f", "seed": "1", TIMESTAMP_FIELD: "t"},
                              {FUNC_FIELD: "g", "seed": "1", TIMESTAMP_FIELD: "t"}])
        removed = store.remove_where("f", {"seed": "1"})
        left = [r.get(FUNC_FIELD) for r in store.load()]
        if store.capabilities.remove_by_match:
            assert removed == 1
            assert left == ["g"]
        else:  # through remove(): every function's record of these fields
            assert removed in (-1, 2)
            assert left == []

    def test_plans_combine_as_a_union_and_a_full_reset_forgets_them(
            self, open_store: OpenStore) -> None:
        with open_store() as store:
            store.add_plan([{FUNC_FIELD: "f", "seed": "1"}, {FUNC_FIELD: "f", "seed": "2"}])
            store.add_plan([{FUNC_FIELD: "f", "seed": "2"}, {FUNC_FIELD: "g", "seed": "2"}])
            wanted = [("f", "1"), ("f", "2"), ("g", "2")]
            assert [(p[FUNC_FIELD], p["seed"]) for p in store.plans()] == wanted
            with open_store() as other:
                seen = [(p[FUNC_FIELD], p["seed"]) for p in other.plans()]
                assert seen == (wanted if store.capabilities.durable_plans else [])
            store.clear_plans()
            assert store.plans() == []

    def test_claims_are_taken_and_released(self, store: Store) -> None:
        claims = store.claims()
        info = {"func": "f", "fields": {"seed": "1"}}
        assert claims.try_claim(12345, info) is None
        if store.capabilities.shared_claims:
            assert [r["func"] for r in claims.running()] == ["f"]
        claims.release(12345)
        assert claims.try_claim(12345, info) is None
        claims.release(12345)

    def test_describe_names_the_store(self, store: Store) -> None:
        assert isinstance(store.describe(), str)
        assert store.describe()

    def test_check_writable_passes_for_a_writable_store(self, store: Store) -> None:
        store.check_writable()
        store.finish()

    # ------------------------------------------------------- through stet's API
    def test_the_decorator_runs_each_combination_once(self, store: Store) -> None:
        calls: list[int] = []

        @stet.once(store=store, verbose=False)
        def f(seed: int) -> int:
            calls.append(seed)
            return seed

        f(1)
        f(1)
        f(2)
        assert calls == [1, 2]
        helpers: Any = f  # (is_done, forget: attached by the decorator)
        assert helpers.is_done(1)
        assert helpers.forget(1) in (-1, 1)
        assert not helpers.is_done(1)
        f(1)
        assert calls == [1, 2, 1]
