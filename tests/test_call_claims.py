"""A claim belongs to the call, not to the thread that made it.

Concurrent calls of one run, from async tasks sharing a thread, threads, processes or
any mix of them, execute the run once (docs/explanation/promises.md, "Exactly once").
Every test runs against every format.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import stet
from stet.backends import get_backend


def _records(store: Any) -> list[dict[str, Any]]:
    with get_backend(store) as b:
        return b.load()


def _runs(store: Any, func: str, field: str) -> collections.Counter[str]:
    return collections.Counter(r[field] for r in _records(store)
                               if r.get("_stet_func") == func)


def test_async_calls_of_one_run_gathered_execute_it_once(store_path: Path) -> None:
    executions: list[int] = []

    @stet.once(store=store_path)
    async def f(x: int) -> int:
        executions.append(x)
        await asyncio.sleep(0.05)
        return x

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(f(1) for _ in range(4))))

    results = asyncio.run(main())
    assert executions == [1]
    assert sorted(results, key=repr) == [1, None, None, None]
    assert _runs(store_path, "test_async_calls_of_one_run_gathered_execute_it_once"
                 ".<locals>.f", "x") == {"1": 1}


def test_waiting_async_calls_await_the_run_without_blocking_the_event_loop(
        store_path: Path) -> None:
    executions: list[int] = []
    ticks: list[int] = []

    @stet.once(store=store_path, name="slow", wait=True, save_result=True)
    async def f(x: int) -> int:
        executions.append(x)
        await asyncio.sleep(0.3)
        return x * 10

    async def ticker() -> None:
        for i in range(20):
            ticks.append(i)
            await asyncio.sleep(0.01)

    async def main() -> list[Any]:
        tick = asyncio.create_task(ticker())
        out = list(await asyncio.gather(*(f(2) for _ in range(3))))
        await tick
        return out

    assert asyncio.run(main()) == [20, 20, 20]  # the waiters return the saved result
    assert executions == [2]
    assert len(ticks) == 20  # the loop kept running while three calls waited


def test_a_cancelled_async_call_releases_its_run(store_path: Path) -> None:
    @stet.once(store=store_path, name="cancelled")
    async def f(x: int) -> str:
        await asyncio.sleep(10)
        return "never"

    @stet.once(store=store_path, name="cancelled")
    async def quick(x: int) -> str:
        return "ran"

    async def main() -> str | None:
        task = asyncio.create_task(f(1))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await quick(1)

    assert asyncio.run(main()) == "ran"
    assert _runs(store_path, "cancelled", "x") == {"1": 1}


def test_threads_and_tasks_calling_one_run_execute_it_once(store_path: Path) -> None:
    """Sync calls from threads and async calls from tasks, of the same run (one name)."""
    executions: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    @stet.once(store=store_path, name="mixed")
    def sync_f(x: int) -> None:
        with lock:
            executions[x] += 1
        threading.Event().wait(0.002)

    @stet.once(store=store_path, name="mixed")
    async def async_f(x: int) -> None:
        with lock:
            executions[x] += 1
        await asyncio.sleep(0.002)

    def thread_body(kind: str) -> None:
        barrier.wait()
        if kind == "sync":
            for x in range(30):
                sync_f(x)
        else:
            async def gathered() -> None:
                await asyncio.gather(*(async_f(x) for x in range(30) for _ in range(2)))
            asyncio.run(gathered())

    threads = [threading.Thread(target=thread_body, args=(k,))
               for k in ("sync", "async", "sync", "async")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert max(executions.values()) == 1
    assert _runs(store_path, "mixed", "x") == {str(x): 1 for x in range(30)}


_MIXED_WORKER = textwrap.dedent("""
    import asyncio, os, sys, threading
    import stet

    store, log = sys.argv[1], sys.argv[2]

    def note(x):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{x} {os.getpid()}\\n".encode())
        os.close(fd)

    @stet.once(store=store, name="work", verbose=False)
    def sync_f(x):
        note(x)

    @stet.once(store=store, name="work", verbose=False)
    async def async_f(x):
        note(x)
        await asyncio.sleep(0)

    def body(i):
        if i % 2:
            for x in range(40):
                sync_f(x)
        else:
            async def main():
                await asyncio.gather(*(async_f(x) for x in range(40) for _ in range(2)))
            asyncio.run(main())

    threads = [threading.Thread(target=body, args=(i,)) for i in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
""")


def test_processes_of_threads_and_tasks_execute_each_run_once(
        store_path: Path, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_MIXED_WORKER)
    log = tmp_path / "executions.log"
    procs = [subprocess.Popen([sys.executable, str(script), str(store_path), str(log)])
             for _ in range(3)]
    for p in procs:
        assert p.wait(120) == 0
    executed = collections.Counter(line.split()[0] for line in log.read_text().splitlines())
    assert executed == {str(x): 1 for x in range(40)}
    assert _runs(store_path, "work", "x") == {str(x): 1 for x in range(40)}


def test_a_run_calling_itself_is_skipped_inside_itself(store_path: Path) -> None:
    inner: list[Any] = []

    @stet.once(store=store_path, name="recursive")
    def f(x: int, depth: int = 0) -> str:
        inner.append(g(x))
        return "outer"

    @stet.once(store=store_path, name="recursive")
    def g(x: int, depth: int = 0) -> str:
        return "inner ran"

    assert f(1) == "outer"
    assert inner == [None]  # skipped: running elsewhere (this very call)
    assert _runs(store_path, "recursive", "x") == {"1": 1}


def test_waiting_for_a_run_this_thread_is_executing_is_an_error_not_a_hang(
        store_path: Path) -> None:
    @stet.once(store=store_path, name="self-wait", wait=True)
    def f(x: int) -> None:
        g(x)

    @stet.once(store=store_path, name="self-wait", wait=True)
    def g(x: int) -> None:
        raise AssertionError("never runs")

    with pytest.raises(RuntimeError, match=r"already running in this thread.*wait=True"):
        f(1)
    assert _runs(store_path, "self-wait", "x") == {}
    # the outer run is free again
    calls: list[int] = []

    @stet.once(store=store_path, name="self-wait")
    def h(x: int) -> None:
        calls.append(x)

    h(1)
    assert calls == [1]
