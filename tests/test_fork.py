"""Forked children (``os.fork``, ``multiprocessing``'s fork context) beside a busy parent.

Every object that keeps per-process state registers with :mod:`stet._fork` what a child
resets; these tests fork for real, with stores of every file format open in the parent,
claims and locks held there and a thread of the parent in the middle of a call.
"""

from __future__ import annotations

import collections
import fcntl
import gc
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stet
from stet import _fork
from stet._claims import ClaimFile
from stet._locking import StoreLock
from stet._sidecar import sidecar

FILE_FORMATS = ["csv", "json", "sqlite", "parquet"]

pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")


def _note(log: Path, x: object) -> None:
    """Append ``<pid> <x>`` to ``log`` (one write: lines of processes never mix)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {x}\n".encode())
    finally:
        os.close(fd)


def _ran(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(p), x) for p, x in (line.split() for line in log.read_text().splitlines())]


class _Child:
    """``fn`` run in a forked child; its JSON-able result (or traceback) comes back."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: report, then leave without the parent's cleanup
            os.close(self._r)
            try:
                out = json.dumps({"ok": fn()})
            except BaseException:
                out = json.dumps({"error": traceback.format_exc()})
            os.write(w, out.encode())
            os._exit(0)
        os.close(w)

    def result(self, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                os.close(self._r)
                raise AssertionError(f"the forked child hung for {timeout} s")
            time.sleep(0.01)
        data = b""
        while chunk := os.read(self._r, 65536):
            data += chunk
        os.close(self._r)
        out = json.loads(data)
        assert "error" not in out, out["error"]
        return out["ok"]


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_a_forked_child_checks_claims_records_and_skips_beside_its_busy_parent(
    tmp_path: Path, fmt: str
) -> None:
    """At the fork, a thread of the parent is in the middle of a run (its claim held),
    another holds the store's mutex and its lock file exclusively. The child waits for
    that lock (it is not its own), skips what is done and what the parent is running,
    records a new run; the parent then finishes its run and goes on recording."""
    stet.configure(verbose=False)
    store, ran = str(tmp_path / f"runs.{fmt}"), tmp_path / "ran.log"
    in_call, finish = threading.Event(), threading.Event()

    @stet.once(store=store)
    def f(x: int) -> int:
        _note(ran, x)
        if x == 100:
            in_call.set()
            finish.wait(60)
        return x

    for i in range(3):
        f(i)
    backend = f.backend()  # type: ignore[attr-defined]
    caller = threading.Thread(target=f, args=(100,))
    caller.start()
    assert in_call.wait(10)
    lock = StoreLock.for_path(sidecar(backend.path, ".lock"))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with backend._cache.mutex, lock.exclusive():
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    delay = 1.0

    def in_child() -> dict[str, Any]:
        t0 = time.monotonic()
        out: dict[str, Any] = {"new": f(7), "waited": time.monotonic() - t0}
        out["done"] = [f(i) for i in range(3)]  # skipped: None
        out["parents"] = f(100)  # claimed by the parent: skipped
        out["is_done"] = [f.is_done(7), f.is_done(100)]  # type: ignore[attr-defined]
        out["running"] = [e["pid"] for e in backend.claims().running()]
        return out

    child = _Child(in_child)
    time.sleep(delay)
    release.set()
    out = child.result()
    holder.join()
    assert out["new"] == 7 and out["done"] == [None] * 3 and out["parents"] is None
    assert out["is_done"] == [True, False]
    assert out["running"] == [os.getpid()]
    if fmt != "sqlite":  # (SQLite's records take SQLite's locks, not the lock file)
        assert out["waited"] >= delay * 0.8, "the child wrote under its parent's lock"

    # After the child left, its exit released none of the parent's claims
    later = _Child(lambda: f(100))
    assert later.result() is None
    finish.set()
    caller.join(30)
    f(8)
    assert [x for _, x in _ran(ran)].count("100") == 1
    by = {x: p for p, x in _ran(ran)}
    assert by["7"] == child.pid
    assert all(by[x] == os.getpid() for x in ("0", "1", "2", "8", "100"))
    assert sorted(int(v) for v in stet.load(store)["x"]) == [0, 1, 2, 7, 8, 100]
    assert backend.claims().running() == []


def test_a_forked_child_that_takes_a_lock_never_releases_its_parents_hold(
    tmp_path: Path,
) -> None:
    """``flock`` locks belong to the open file a child shares with its parent: a child
    that believed it held the parent's lock would release it for both on leaving."""
    path = tmp_path / "s.lock"
    lock = StoreLock.for_path(path)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock.exclusive():
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)

    def in_child() -> bool:
        got = threading.Event()

        def take() -> None:
            with StoreLock.for_path(path).exclusive(), lock.shared():
                got.set()

        threading.Thread(target=take, daemon=True).start()
        return got.wait(0.5)

    assert _Child(in_child).result() is False, "the child took a lock its parent holds"
    probe = subprocess.run(
        [sys.executable, "-c", "import fcntl, os, sys\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
         "except BlockingIOError:\n    sys.exit(3)\n", str(path)],
        check=False, timeout=60)
    assert probe.returncode == 3, "the parent's lock was released by its child"
    release.set()
    holder.join()
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the parent's release did release
    finally:
        os.close(fd)


_WORKER_FUNCS: list[Any] = []


def _worker(i: int) -> list[Any]:
    return [func(i) for func in _WORKER_FUNCS]


def test_a_fork_pool_records_each_run_once_in_every_format_beside_a_parents_claim(
    tmp_path: Path,
) -> None:
    """Stores of every file format open in the parent, one run claimed there by a thread
    in mid-call: forked pool workers run every other run exactly once, skip the claimed
    one, and the parent goes on using each store afterwards."""
    stet.configure(verbose=False)
    ran = tmp_path / "ran.log"
    in_call, finish = threading.Event(), threading.Event()
    funcs = []
    for fmt in FILE_FORMATS:
        @stet.once(store=str(tmp_path / f"runs.{fmt}"), name="work")
        def work(i: int, fmt: str = fmt) -> str:
            _note(ran, f"{fmt}:{i}")
            if i == 0 and fmt == "csv":  # the parent's thread is in this one at the fork
                in_call.set()
                finish.wait(60)
            return f"{fmt}:{i}"

        work(1)  # open, and record a run before the fork
        funcs.append(work)
    busy = threading.Thread(target=funcs[0], args=(0,))
    busy.start()
    assert in_call.wait(10)
    _WORKER_FUNCS[:] = funcs
    try:
        with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_worker, range(12)))
    finally:
        _WORKER_FUNCS.clear()
    finish.set()
    busy.join(30)
    # claimed by the parent's thread: skipped by a worker; the other stores' run 0 ran
    assert results[0] == [None] + [f"{fmt}:0" for fmt in FILE_FORMATS[1:]]
    assert all(r is None for r in results[1])  # recorded by the parent
    for i in range(2, 12):
        assert results[i] == [f"{fmt}:{i}" for fmt in FILE_FORMATS]
    counts = collections.Counter(x for _, x in _ran(ran))
    assert set(counts.values()) == {1}, counts
    for func, fmt in zip(funcs, FILE_FORMATS, strict=True):
        assert func(12) == f"{fmt}:12"  # the parent's store objects still work
        xs = sorted(int(v) for v in stet.load(str(tmp_path / f"runs.{fmt}"))["i"])
        assert xs == list(range(13)), fmt


# ----------------------------------------------------------------- the module itself
class _Counter:
    def __init__(self) -> None:
        self.n = 0
        _fork.on_fork_child(self.hit)

    def hit(self) -> None:
        self.n += 1


def test_a_dead_objects_fork_callback_neither_keeps_it_alive_nor_piles_up() -> None:
    obj = _Counter()
    ref = weakref.ref(obj)
    del obj
    gc.collect()
    assert ref() is None
    for _ in range(10_000):
        _Counter()
    assert len(_fork._child) < 1000  # dead objects' entries are pruned as others come
    assert _Child(lambda: 1).result() == 1  # and a fork after they died is fine


def test_callbacks_reset_in_the_child_only_and_one_that_raises_stops_none() -> None:
    before = _Counter()

    def boom() -> None:
        raise RuntimeError("a half-reset object")

    _fork.on_fork_child(boom)
    after = _Counter()
    assert _Child(lambda: [before.n, after.n, _fork.pid() == os.getpid()]).result() == [
        1, 1, True]
    assert (before.n, after.n) == (0, 0)
    assert _fork.pid() == os.getpid()


class _Spawner:
    """Makes (and registers) another object in its own fork callback."""

    def __init__(self) -> None:
        self.made: list[_Counter] = []
        _fork.on_fork_child(self.spawn)

    def spawn(self) -> None:
        self.made.append(_Counter())


def test_a_callback_that_registers_another_during_the_fork_runs_it_from_the_next() -> None:
    spawner = _Spawner()

    def in_child() -> list[int]:
        first = [c.n for c in spawner.made]  # made during this fork: not run for it
        grandchild = _Child(lambda: [c.n for c in spawner.made])
        return [*first, *grandchild.result()]

    # in the grandchild: the child's object ran once, the grandchild's own not yet
    assert _Child(in_child).result() == [0, 1, 0]


class _Around:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        _fork.around_fork(self.before, self.after)

    def before(self) -> None:
        self.log.append(f"before {os.getpid()}")

    def after(self) -> None:
        self.log.append(f"after {os.getpid()}")


def test_around_fork_runs_before_in_the_parent_and_after_in_both() -> None:
    log: list[str] = []
    keep = _Around(log)
    child = _Child(lambda: list(log))
    seen = child.result()
    me = os.getpid()
    assert seen == [f"before {me}", f"after {child.pid}"]
    assert keep.log == [f"before {me}", f"after {me}"]


def test_a_mutex_a_parents_thread_held_is_free_in_the_child_and_the_forkers_is_kept(
) -> None:
    other, mine = _fork.RLock(), _fork.RLock()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with other:
            held.set()
            release.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    with mine:
        def in_child() -> list[bool]:
            free = other.acquire(timeout=2)
            mine.release()  # held by this (the forking) thread: still held, releasable
            return [free, mine.acquire(blocking=False)]

        assert _Child(in_child).result() == [True, True]
    release.set()
    t.join()


def test_claim_files_are_one_per_file_across_a_fork(tmp_path: Path) -> None:
    """A forked child keeps the parent's registry (its entries reset), so it never has
    two descriptors of one claims file (closing one would drop the other's locks)."""
    claims = ClaimFile.for_path(tmp_path / "s.claims")
    assert claims.try_claim(1 << 41, {"func": "f"}) is None
    assert _Child(lambda: [
        ClaimFile.for_path(tmp_path / "s.claims") is claims,
        claims.try_claim(1 << 41, {"func": "f"}) is not None,  # the parent's claim
        claims.try_claim(1 << 42, {"func": "f"}),
    ]).result() == [True, True, None]
    assert claims.running()[0]["pid"] == os.getpid()
    claims.release(1 << 41)
    assert claims.running() == []


def test_a_first_claim_that_waited_is_released_for_other_processes(tmp_path: Path) -> None:
    """(Opening the claims file once dropped the reservation the waiting claim had just
    made, so releasing it unlocked nothing.)"""
    claims = ClaimFile.for_path(tmp_path / "s.claims")
    claims.wait_claim(1 << 41, {"func": "f"})
    claims.release(1 << 41)
    assert _Child(lambda: claims.try_claim(1 << 41, {"func": "f"})).result() is None
