"""The contract's sharing of one store: threads and processes calling one run, handles
seeing each other's records and failures, and what each capability flag promises."""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stet
from stet._schema import ERROR_FIELD, FUNC_FIELD, TIMESTAMP_FIELD, is_bookkeeping
from stet.backends import Store

OpenStore = Callable[[], Store]

#: Runs each of two processes calls, in the same order.
RUNS = 4


def _user(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not is_bookkeeping(k)}


def _key(seed: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return ("seed",), (seed,)


def _spawned_worker(store: Any, log: str, barrier: Any) -> None:
    """A child process (started with 'spawn'): call every run of ``work`` once, logging
    each execution to ``log`` with one ``O_APPEND`` write. ``store`` is what
    ``@stet.once(store=...)`` takes: a store object, a path or a URL."""

    @stet.once(store=store, name="contract_work", verbose=False)
    def work(seed: int) -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{os.getpid()} {seed}\n".encode())
        finally:
            os.close(fd)
        time.sleep(0.2)  # long enough for the other process to find it running

    barrier.wait(timeout=120)
    for seed in range(RUNS):
        work(seed)


class SharingContract:
    """One store, many callers: each run executes once, and every handle sees what the
    others recorded (as the store's capabilities say)."""

    @pytest.mark.parametrize("wait", [False, True], ids=["skip", "wait"])
    def test_threads_calling_the_same_runs_at_once_execute_each_once(
        self, store: Store, wait: bool
    ) -> None:
        """Eight threads call 40 runs each, in shuffled orders: each run executes once,
        is recorded once, and (``wait=True``) a call returns only once its run is done."""
        n = 40
        executed: list[int] = []
        not_done_after_return: list[int] = []

        @stet.once(store=store, name="threads", wait=wait, verbose=False)
        def run(i: int) -> None:
            executed.append(i)
            time.sleep(0.002 + 0.001 * (i % 5))

        helpers: Any = run  # (is_done: attached by the decorator)
        barrier = threading.Barrier(8)

        def thread(seed: int) -> None:
            order = list(range(n))
            random.Random(seed).shuffle(order)
            barrier.wait(timeout=60)
            for i in order:
                run(i)
                if wait and not helpers.is_done(i):
                    not_done_after_return.append(i)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(thread, seed) for seed in range(8)]:
                future.result(timeout=120)
        assert collections.Counter(executed) == dict.fromkeys(range(n), 1)
        recorded = collections.Counter(r["i"] for r in store.load())
        assert recorded == {str(i): 1 for i in range(n)}
        assert not_done_after_return == []

    def test_two_processes_execute_each_run_once_with_shared_claims(
        self, open_store: OpenStore, store_spec: Any, tmp_path: Path
    ) -> None:
        """With :attr:`~stet.backends.Capabilities.shared_claims`, two processes (started
        with 'spawn', each sent the pickled ``store_spec``) split the runs, each executed
        once. Without it, claims exclude this process's calls only: a second handle's
        claim is not refused."""
        if not open_store().capabilities.shared_claims:
            with open_store() as first, open_store() as second:
                info = {"func": "f", "fields": {"seed": "1"}}
                assert first.claims().try_claim(7, info) is None
                assert second.claims().try_claim(7, info) is None
                assert second.claims().running() == []
                first.claims().release(7)
                second.claims().release(7)
            return
        log = tmp_path / "executions.log"
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        children = [ctx.Process(target=_spawned_worker, args=(store_spec, str(log), barrier))
                    for _ in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(timeout=180)
        assert [c.exitcode for c in children] == [0, 0]
        seeds = sorted(int(line.split()[1]) for line in log.read_text().splitlines())
        assert seeds == list(range(RUNS)), "a run executed twice, or not at all"
        with open_store() as store:
            assert sorted(r["seed"] for r in store.load()) == [str(s) for s in range(RUNS)]

    def test_a_second_handle_follows_appends_removals_and_new_fields(
        self, open_store: OpenStore
    ) -> None:
        with open_store() as first, open_store() as other:
            assert not other.has({"x": 1})
            first.record({"x": 1})
            assert other.has({"x": 1})
            first.record({"x": 2})  # appended after `other` has read the store
            assert other.has({"x": 2})
            other.record({"x": 3})
            assert first.has({"x": 3})
            first.remove({"x": 1})
            assert not other.has({"x": 1})
            first.record({"x": 4})  # appended after a removal
            assert sorted(r["x"] for r in other.load()) == ["2", "3", "4"]
            first.clear()
            assert not other.has({"x": 2})
            assert other.load() == []
            first.record({"x": 5})
            first.record({"x": 6, "y": ""})  # a field first seen now
            assert other.has({"x": 6, "y": ""})
            assert not other.has({"x": 5, "y": ""})
            other.record({"x": 7, "z": "1"})
            assert first.has({"x": 7, "z": 1})
            assert sorted(r["x"] for r in first.load()) == ["5", "6", "7"]
            first.record({"rowid": 1})  # a store's own name for its rows, as a field
            assert other.has({"rowid": 1})
            for x in range(8, 11):  # rows after it are still found
                first.record({"x": x})
                assert other.has({"x": x})
            assert len(other.load()) == 7

    def test_the_decorator_sees_a_removal_made_through_another_handle(
        self, open_store: OpenStore
    ) -> None:
        with open_store() as store, open_store() as other:
            calls: list[int] = []

            @stet.once(store=store, verbose=False)
            def f(x: int) -> None:
                calls.append(x)

            f(1), f(2)
            other.remove({"x": 1})
            f(1), f(2)
            assert calls == [1, 2, 1]
            other.clear()
            f(2)
            assert calls == [1, 2, 1, 2]

    def test_failures_follow_the_durable_failures_flag(self, open_store: OpenStore) -> None:
        """Durable: a failure recorded by one handle is seen by another and after the
        store is closed and opened again. Otherwise it lives in the handle that recorded
        it alone, and is gone with it."""
        durable = open_store().capabilities.durable_failures
        failure = {FUNC_FIELD: "f", "seed": "1", ERROR_FIELD: "boom"}
        with open_store() as first, open_store() as second:
            first.append_failure(failure)
            assert first.contains_failure("f", *_key("1"))
            assert second.contains_failure("f", *_key("1")) is durable
            assert not second.contains_failure("g", *_key("1"))
        with open_store() as reopened:
            assert reopened.contains_failure("f", *_key("1")) is durable
            assert [f[ERROR_FIELD] for f in reopened.failures()] == (["boom"] if durable
                                                                     else [])
            assert reopened.load() == []  # a failure is not a completed run
            if durable:
                assert reopened.remove_failures("f", {"seed": "1"}) == 1
        with open_store() as last:
            assert last.failures() == []

    def test_a_failed_call_is_reported_by_status_and_retried(self, store: Store) -> None:
        calls: list[int] = []

        @stet.once(store=store, verbose=False)
        def f(seed: int) -> None:
            calls.append(seed)
            if len(calls) == 1:
                raise ValueError("first time")

        with pytest.raises(ValueError, match="first time"):
            f(1)
        assert stet.status(f).failed == 1
        assert store.load() == []
        f(1)  # retried (skip_failed is off)
        f(1)
        assert calls == [1, 1]
        assert stet.status(f).completed == 1

    def test_many_records_appended_at_once_are_all_kept_in_order(
        self, open_store: OpenStore
    ) -> None:
        """``append_records`` (what ``stet copy`` calls; one write with
        :attr:`~stet.backends.Capabilities.bulk_append`, one by one otherwise)."""
        records: list[dict[str, str]] = [
            {"x": str(i), FUNC_FIELD: "f", TIMESTAMP_FIELD: "t"} for i in range(60)]
        for i in range(30, 60):  # a field first seen halfway
            records[i]["extra"] = "" if i % 2 else f'e,"{i}"\n'
        with open_store() as store, open_store() as fresh:
            store.append_records(records)
            store.append_records([])
            assert [_user(r) for r in fresh.load()] == [_user(r) for r in records]
            for r in records:
                fields = {k: v for k, v in r.items() if not is_bookkeeping(k)}
                names = tuple(sorted(fields))
                assert fresh.contains_run("f", names, tuple(fields[n] for n in names))

    def test_the_cached_look_follows_the_claim_catches_up_flag(
        self, open_store: OpenStore
    ) -> None:
        """``contains_run_cached`` never finds a run that is not recorded. Without
        :attr:`~stet.backends.Capabilities.claim_catches_up` it is ``contains_run``, so it
        sees every record (another handle's too) at once; with it, it may lag (a missed
        run is then found by ``contains_run``, the look after claiming)."""
        catches_up = open_store().capabilities.claim_catches_up
        with open_store() as store, open_store() as other:
            assert not store.contains_run_cached("f", *_key("1"))
            store.append_record({FUNC_FIELD: "f", "seed": "1", TIMESTAMP_FIELD: "t"})
            other.append_record({FUNC_FIELD: "f", "seed": "2", TIMESTAMP_FIELD: "t"})
            for seed in ("1", "2"):
                assert store.contains_run("f", *_key(seed))
                assert store.contains_run_cached("f", *_key(seed)) or catches_up
            for func, seed in (("g", "1"), ("f", "3")):
                assert not store.contains_run_cached(func, *_key(seed))
                assert not store.contains_run(func, *_key(seed))

    def test_load_and_status_agree_with_the_stores_records(self, store: Store) -> None:
        @stet.once(store=store, verbose=False, name="f")
        def f(a: int, b: str) -> None:
            if a == 3:
                raise ValueError("three")

        @stet.once(store=store, verbose=False, name="other")
        def other(a: int, b: str) -> None:
            pass

        stet.sweep(f, stet.grid(a=[1, 2, 3], b=["x", "y"]), progress=False)
        other(9, "z")
        mine = [_user(r) for r in store.load() if r.get(FUNC_FIELD) == "f"]
        frame = stet.load(f)
        assert len(frame) == len(mine) == 4
        assert sorted(zip(frame["a"], frame["b"], strict=True)) == sorted(
            (int(r["a"]), r["b"]) for r in mine)
        assert len(stet.load(store)) == len(store.load()) == 5
        st = stet.status(f, settings=stet.grid(a=[1, 2, 3], b=["x", "y"]))
        assert (st.completed, st.failed) == (5, 2)  # the store's (status asks it)
        assert (st.functions["f"].completed, st.functions["f"].failed) == (4, 2)
        assert st.functions["other"].completed == 1
