"""The tests of :class:`StoreContract` (see :mod:`stet.testing`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import stet
from stet._schema import ERROR_FIELD, FUNC_FIELD, TIMESTAMP_FIELD, is_bookkeeping
from stet.backends import Store

__all__ = ["StoreContract"]

OpenStore = Callable[[], Store]

#: Values whose canonical texts differ, and which a naive store confuses.
TRICKY: list[Any] = [None, "", "NA", "null", "nan", " ", "0", "-0", "a,b", 'say "hi"',
                     "it's", "line1\nline2", "tab\there", "ünïcødé ✓ 日本語", "[]", "{}",
                     "x" * 3000]


def _user(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not is_bookkeeping(k)}


class StoreContract:
    """Behaviour every store owes stet (docs/how-to/own-store.md); subclass it and
    define the ``open_store`` fixture."""

    @pytest.fixture
    def open_store(self) -> OpenStore:
        raise NotImplementedError("define an open_store fixture returning a callable "
                                  "that opens one fresh store (see stet.testing)")

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
        assert not store.has({"alpha": 0.1, "seed": 1})
        [rec] = store.load()
        assert _user(rec) == {"alpha": "0.1", "seed": "0"}
        assert rec[TIMESTAMP_FIELD]

    def test_tricky_values_round_trip_as_distinct_texts(self, store: Store) -> None:
        for i, value in enumerate(TRICKY):
            store.record({"i": i, "v": value})
        texts = {r["i"]: r["v"] for r in map(_user, store.load())}
        assert texts == {str(i): stet.canonical(v) for i, v in enumerate(TRICKY)}
        for i, value in enumerate(TRICKY):
            assert store.has({"i": i, "v": value})

    def test_remove_takes_one_combination_and_clear_takes_all(self, store: Store) -> None:
        for seed in range(3):
            store.record({"seed": seed})
        store.remove({"seed": 1})
        assert sorted(r["seed"] for r in store.load()) == ["0", "2"]
        store.clear()
        assert store.load() == []
        assert not store.has({"seed": 0})

    def test_a_second_handle_sees_what_the_first_wrote(self, open_store: OpenStore) -> None:
        with open_store() as first, open_store() as second:
            first.record({"seed": 1})
            assert second.has({"seed": 1})
            first.record({"seed": 2})
            assert sorted(r["seed"] for r in second.load()) == ["1", "2"]
            second.remove({"seed": 1})
            assert not first.has({"seed": 1})

    def test_a_closed_store_opens_again_when_used(self, store: Store) -> None:
        store.record({"seed": 1})
        store.close()
        assert store.has({"seed": 1})

    # -------------------------------------------------------- what stet calls
    def test_runs_are_told_apart_by_function(self, store: Store) -> None:
        store.append_record({FUNC_FIELD: "f", "seed": "1", TIMESTAMP_FIELD: "t"})
        store.append_record({"seed": "2", TIMESTAMP_FIELD: "t"})  # of no function
        assert store.contains_run("f", ("seed",), ("1",))
        assert not store.contains_run("g", ("seed",), ("1",))
        assert store.contains_run("g", ("seed",), ("2",))
        assert store.contains_run_cached("f", ("seed",), ("1",))

    def test_append_records_keeps_order_and_fields_appearing_midway(
        self, store: Store
    ) -> None:
        store.append_records([{"a": "1", TIMESTAMP_FIELD: "t"},
                              {"a": "2", "b": "x", TIMESTAMP_FIELD: "t"},
                              {"a": "3", TIMESTAMP_FIELD: "t"}])
        assert [_user(r) for r in store.load()] == [{"a": "1"}, {"a": "2", "b": "x"},
                                                   {"a": "3"}]

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

    def test_failures_are_kept_apart_and_forgotten(self, open_store: OpenStore) -> None:
        with open_store() as store:
            store.append_failure({FUNC_FIELD: "f", "seed": "1", ERROR_FIELD: "boom"})
            assert store.contains_failure("f", ("seed",), ("1",))
            assert not store.contains_failure("g", ("seed",), ("1",))
            assert store.load() == []
            with open_store() as other:
                seen = other.failures()
                if store.capabilities.durable_failures:
                    assert [f[ERROR_FIELD] for f in seen] == ["boom"]
                else:
                    assert seen == []
            assert store.remove_failures("f", {"seed": "1"}) == 1
            assert store.failures() == []

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

    def test_sweep_load_and_status_work_through_the_store(self, store: Store) -> None:
        lock = threading.Lock()
        calls: list[int] = []

        @stet.once(store=store, verbose=False)
        def g(a: int, b: str) -> None:
            with lock:
                calls.append(a)
            if a == 3:
                raise ValueError("three")

        summary = stet.sweep(g, stet.grid(a=[1, 2, 3], b=["x"]), progress=False)
        assert (summary.ran, summary.failed) == (2, 1)
        again = stet.sweep(g, stet.grid(a=[1, 2, 3], b=["x"]), progress=False)
        assert again.skipped_done == 2
        frame = stet.load(g)
        assert sorted(frame["a"]) == [1, 2]
        st = stet.status(g, settings=stet.grid(a=[1, 2, 3], b=["x"]))
        assert st.completed == 2
        assert st.failed == 1
