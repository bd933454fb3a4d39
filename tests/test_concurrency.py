"""Concurrency: threads and processes on one machine share a store of any format
(docs/explanation/promises.md).

No record is lost, and a call sees what other processes recorded before it started. These
tests are not about claims (exactly-once across workers): workers record disjoint sets of
runs, or overlapping ones where duplicates are allowed but nothing may be lost.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stet
from formats import FOLDED_LATER, other_tools_rows
from stet._sidecar import parquet_log_file
from stet.backends import BaseBackend, get_backend

Key = tuple[int, int]

def _is_done(f: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """``f.is_done(...)``, the helper stet attaches to a decorated function."""
    return bool(f.is_done(*args, **kwargs))  # type: ignore[attr-defined]


def _backend_of(f: Callable[..., Any]) -> BaseBackend:
    """``f.backend()``, the store of a decorated function."""
    backend: BaseBackend = f.backend()  # type: ignore[attr-defined]
    return backend

# ---------------------------------------------------------------------------- helpers


def _fields(worker: int, i: int, widen: bool) -> dict[str, Any]:
    """Run ``i`` of ``worker``; a widening worker adds a new field every 25 runs (a CSV
    store rewrites its header, a SQLite store adds a column, while others append)."""
    fields: dict[str, Any] = {"w": worker, "i": i}
    if widen:
        fields[f"extra{worker}_{i // 25}"] = i
    return fields


def _counts(backend: BaseBackend) -> collections.Counter[Key]:
    """How many records each (worker, i) has, read afresh."""
    return collections.Counter((int(r["w"]), int(r["i"])) for r in backend.load())


def _fresh_counts(path: Path) -> collections.Counter[Key]:
    with get_backend(path) as b:
        return _counts(b)


def _other_tools_count(path: Path, fmt: str) -> int:
    """Records in the store file as another tool sees it (raises if it is not valid)."""
    return len(other_tools_rows(path, fmt))


def _fold(path: Path) -> None:
    """Make the store file whole on its own (Parquet: fold the log beside it), so that
    other tools see every record."""
    with get_backend(path) as b:
        b.finish()


def _wait_for(go: str) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError(go)
        time.sleep(0.002)


def _expect_each_once(counts: collections.Counter[Key], expected: set[Key]) -> None:
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:10]}"
    extra = set(counts) - expected
    assert not extra, f"unexpected records {sorted(extra)[:10]}"
    dupes = {k: n for k, n in counts.items() if n != 1}
    assert not dupes, f"recorded more than once: {sorted(dupes.items())[:10]}"


# ---------------------------------------------------------------------------- workers
# (module level, so that spawned processes can import them)


def sweep_worker(store: str, worker: int, n: int, widen: bool, go: str) -> list[int]:
    """Run ``n`` runs of one worker through a decorated function; return those executed."""
    stet.configure(verbose=False)
    executed: list[int] = []

    @stet.once(store=store, name="work")
    def work(**fields: Any) -> None:
        executed.append(int(fields["i"]))

    _backend_of(work)  # open the store before the start signal
    _wait_for(go)
    for i in range(n):
        work(**_fields(worker, i, widen))
        assert _is_done(work, **_fields(worker, i, widen)), f"run {i} not done after it ran"
    return executed


def record_worker(store: str, worker: int, keys: list[Key], go: str) -> int:
    """Record every key through a backend of its own (no claims, no skipping)."""
    with get_backend(store) as b:
        b.has({"w": -1})
        _wait_for(go)
        for w, i in keys:
            b.record({"w": w, "i": i, "by": worker})
    return len(keys)


# ---------------------------------------------------------------------------- threads

N_THREADS = 8
PER_THREAD = 120


def test_threads_share_one_decorated_function(store_path: Path, fmt: str) -> None:
    executed: list[Key] = []

    @stet.once(store=store_path, name="work", verbose=False)
    def work(**fields: Any) -> None:
        executed.append((int(fields["w"]), int(fields["i"])))

    barrier = threading.Barrier(N_THREADS)

    def run(t: int) -> None:
        barrier.wait()
        for i in range(PER_THREAD):
            work(**_fields(t, i, widen=t % 2 == 1))
            assert _is_done(work, **_fields(t, i, widen=t % 2 == 1))

    with ThreadPoolExecutor(N_THREADS) as pool:
        for fut in [pool.submit(run, t) for t in range(N_THREADS)]:
            fut.result(timeout=120)

    expected = {(t, i) for t in range(N_THREADS) for i in range(PER_THREAD)}
    assert sorted(executed) == sorted(expected)
    _expect_each_once(_fresh_counts(store_path), expected)
    # a second pass skips everything
    executed.clear()
    for t in range(N_THREADS):
        for i in range(PER_THREAD):
            work(**_fields(t, i, widen=t % 2 == 1))
    assert executed == []
    _fold(store_path)
    assert _other_tools_count(store_path, fmt) == len(expected)


def test_threads_with_separate_backends(store_path: Path, fmt: str) -> None:
    barrier = threading.Barrier(N_THREADS)
    acked: list[Key] = []  # records whose record() had returned, in any thread

    def run(t: int) -> None:
        with get_backend(store_path) as b:
            barrier.wait()
            for i in range(PER_THREAD):
                b.record(_fields(t, i, widen=t % 3 == 0))
                acked.append((t, i))
                assert b.has({"w": t, "i": i})
                if i % 30 == 29:  # what other threads recorded before is visible here
                    for w, j in list(acked):
                        assert b.has({"w": w, "i": j}), (t, (w, j))
            assert all(b.has({"w": t, "i": i}) for i in range(PER_THREAD))

    with ThreadPoolExecutor(N_THREADS) as pool:
        for fut in [pool.submit(run, t) for t in range(N_THREADS)]:
            fut.result(timeout=120)

    expected = {(t, i) for t in range(N_THREADS) for i in range(PER_THREAD)}
    _expect_each_once(_fresh_counts(store_path), expected)
    _fold(store_path)
    assert _other_tools_count(store_path, fmt) == len(expected)


# -------------------------------------------------------------------------- processes

N_PROCS = 4
PER_PROC = 150


def test_spawned_processes_record_disjoint_sets(
    tmp_path: Path, store_path: Path, fmt: str
) -> None:
    go = tmp_path / "go"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=sweep_worker,
                    args=(str(store_path), w, PER_PROC, w >= N_PROCS // 2, str(go)))
        for w in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    go.touch()
    for p in procs:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
            p.join()
    assert [p.exitcode for p in procs] == [0] * N_PROCS

    expected = {(w, i) for w in range(N_PROCS) for i in range(PER_PROC)}
    _expect_each_once(_fresh_counts(store_path), expected)
    # every worker ended normally: the store file alone holds every run
    if fmt in FOLDED_LATER:
        assert not parquet_log_file(store_path).exists()
    assert _other_tools_count(store_path, fmt) == len(expected)


def _parent_widens(i: int) -> bool:
    return i >= 10 and i % 20 == 0


def test_process_pool_records_disjoint_sets(
    tmp_path: Path, store_path: Path, fmt: str
) -> None:
    # the parent opens the store and records first; pool workers are forked from it
    @stet.once(store=store_path, name="work", verbose=False)
    def work(**fields: Any) -> None:
        pass

    parent = N_PROCS
    for i in range(10):
        work(**_fields(parent, i, widen=_parent_widens(i)))

    go = tmp_path / "go"
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(N_PROCS, mp_context=ctx) as pool:
        futures = [
            pool.submit(sweep_worker, str(store_path), w, PER_PROC, w % 2 == 1, str(go))
            for w in range(N_PROCS)
        ]
        go.touch()
        # the parent keeps recording while the workers run
        for i in range(10, 60):
            work(**_fields(parent, i, widen=_parent_widens(i)))
        results = [f.result(timeout=120) for f in futures]

    assert results == [list(range(PER_PROC))] * N_PROCS
    expected = {(w, i) for w in range(N_PROCS) for i in range(PER_PROC)}
    expected |= {(parent, i) for i in range(60)}
    _expect_each_once(_fresh_counts(store_path), expected)
    for w, i in expected:
        widen = w % 2 == 1 if w < parent else _parent_widens(i)
        assert _is_done(work, **_fields(w, i, widen=widen)), (w, i)
    _fold(store_path)
    assert _other_tools_count(store_path, fmt) == len(expected)


def test_overlapping_records_from_processes_are_all_kept(
    tmp_path: Path, store_path: Path, fmt: str
) -> None:
    """Every process records the same runs (in its own order) with ``backend.record``:
    duplicates are expected, and every single record must be there."""
    keys = [(0, i) for i in range(100)]
    go = tmp_path / "go"
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(N_PROCS, mp_context=ctx) as pool:
        futures = [
            pool.submit(record_worker, str(store_path), w,
                        random.Random(w).sample(keys, len(keys)), str(go))
            for w in range(N_PROCS)
        ]
        time.sleep(0.2)
        go.touch()
        assert sum(f.result(timeout=120) for f in futures) == N_PROCS * len(keys)

    with get_backend(store_path) as b:
        records = b.load()
    assert len(records) == N_PROCS * len(keys)
    by_worker = collections.Counter(r["by"] for r in records)
    assert by_worker == {str(w): len(keys) for w in range(N_PROCS)}
    assert set(collections.Counter((int(r["w"]), int(r["i"])) for r in records).values()) == {
        N_PROCS
    }
    _fold(store_path)
    assert _other_tools_count(store_path, fmt) == N_PROCS * len(keys)


# ------------------------------------------------------------------------- visibility

_RECORD_X = """
import os, signal, sys
import stet
stet.configure(verbose=False)

@stet.once(store=sys.argv[1], name="work")
def work(**fields):
    print("ran", flush=True)

work(alpha=0.1, seed=int(sys.argv[2]))
print("recorded", flush=True)
if sys.argv[3] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
"""

_CHECK_X = """
import sys
import stet
stet.configure(verbose=False)

@stet.once(store=sys.argv[1], name="work")
def work(**fields):
    print("ran", flush=True)

print("done" if work.is_done(alpha=0.1, seed=int(sys.argv[2])) else "not done", flush=True)
work(alpha=0.1, seed=int(sys.argv[2]))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("before, ending", [("new", "exit"), ("existing", "killed")])
def test_process_sees_what_an_earlier_process_recorded(
    store_path: Path, fmt: str, before: str, ending: str
) -> None:
    # opened (and its index built) before process A wrote anything
    b0 = get_backend(store_path)
    ran: list[int] = []

    @stet.once(store=store_path, name="work", verbose=False)
    def work(**fields: Any) -> None:
        ran.append(int(fields["seed"]))

    if before == "existing":
        work(alpha=0.1, seed=0)
        b0.record({"alpha": 0.2, "seed": 0})
    assert not b0.has({"alpha": 0.1, "seed": 7})
    assert not _is_done(work, alpha=0.1, seed=7)

    a = _python(_RECORD_X, str(store_path), "7", ending)
    assert "recorded" in a.stdout, a.stderr
    assert a.returncode == (0 if ending == "exit" else -signal.SIGKILL), a.stderr

    b = _python(_CHECK_X, str(store_path), "7")
    assert b.returncode == 0, b.stderr
    assert b.stdout.split("\n")[:1] == ["done"], b.stdout + b.stderr
    assert "ran" not in b.stdout

    assert b0.has({"alpha": 0.1, "seed": 7})
    assert _is_done(work, alpha=0.1, seed=7)
    work(alpha=0.1, seed=7)
    assert 7 not in ran
    if before == "existing":
        assert b0.has({"alpha": 0.2, "seed": 0})
        assert _is_done(work, alpha=0.1, seed=0)
    b0.close()


_REMOVE_X = """
import sys
from stet.backends import get_backend
with get_backend(sys.argv[1]) as b:
    print(b.remove({"alpha": 0.1, "seed": int(sys.argv[2])}), flush=True)
"""


def test_cached_backend_sees_removal_by_another_process(store_path: Path, fmt: str) -> None:
    ran: list[int] = []

    @stet.once(store=store_path, name="work", verbose=False)
    def work(**fields: Any) -> None:
        ran.append(int(fields["seed"]))

    for seed in range(5):
        work(alpha=0.1, seed=seed)
    b0 = get_backend(store_path)
    assert all(b0.has({"alpha": 0.1, "seed": s}) for s in range(5))  # index cached
    assert all(_is_done(work, alpha=0.1, seed=s) for s in range(5))

    r = _python(_REMOVE_X, str(store_path), "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"

    assert not b0.has({"alpha": 0.1, "seed": 3})
    assert not _is_done(work, alpha=0.1, seed=3)
    assert all(b0.has({"alpha": 0.1, "seed": s}) for s in (0, 1, 2, 4))
    ran.clear()
    for seed in range(5):
        work(alpha=0.1, seed=seed)
    assert ran == [3]
    assert b0.has({"alpha": 0.1, "seed": 3})

    # and again, with a removal that another process follows by new records
    r = _python(_REMOVE_X, str(store_path), "4")
    assert r.returncode == 0, r.stderr
    a = _python(_RECORD_X, str(store_path), "9", "exit")
    assert a.returncode == 0, a.stderr
    assert not b0.has({"alpha": 0.1, "seed": 4})
    assert b0.has({"alpha": 0.1, "seed": 9})
    assert not _is_done(work, alpha=0.1, seed=4)
    assert _is_done(work, alpha=0.1, seed=9)
    assert sorted(int(x["seed"]) for x in b0.load()) == [0, 1, 2, 3, 9]
    b0.close()


# ------------------------------------------------------- a long-lived reader under load

_WRITER = '''
import sys
from typing import Any

import stet
import stet.backends._parquet as _parquet

_parquet.FOLD_MIN = 20  # fold often

def main() -> None:
    store, ack, role, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    stet.configure(verbose=False)

    @stet.once(store=store, name="work")
    def work(**fields: Any) -> None:
        pass

    backend = work.backend()
    with open(ack, "a", encoding="utf-8") as out:
        for i in range(n):
            if role == "writer":
                fields = {"w": 0, "i": i}
                if i % 50 == 0:
                    fields[f"extra{i}"] = "x"
                work(**fields)
                out.write(f"{i} {sorted(fields)[0]}\\n")
                out.flush()
                if i % 15 == 0 and hasattr(backend, "fold"):
                    backend.fold()
            else:  # churn: records and removes other runs, rewriting the store
                backend.record({"w": 1, "i": i})
                backend.remove({"w": 1, "i": i})

main()
'''


def test_long_lived_reader_never_loses_sight_of_a_record(
    tmp_path: Path, store_path: Path, fmt: str
) -> None:
    """While one process appends (and folds) and another rewrites the store, a backend
    and a decorated function in this process keep seeing every acknowledged run."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER, encoding="utf-8")
    ack = tmp_path / "ack.txt"
    ack.touch()
    with get_backend(store_path) as b:
        b.record({"w": 1, "i": -1})  # the store exists before the reader opens it
    reader = get_backend(store_path)

    @stet.once(store=store_path, name="work", verbose=False)
    def work(**fields: Any) -> None:
        raise AssertionError(f"re-ran an acknowledged run {fields}")

    procs = [
        subprocess.Popen([sys.executable, str(script), str(store_path), str(ack), role, n])
        for role, n in (("writer", "400"), ("churn", "60"))
    ]
    seen: list[int] = []
    rng = random.Random()
    try:
        deadline = time.monotonic() + 60
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            lines = ack.read_text(encoding="utf-8").split("\n")[:-1]
            acked = [int(line.split()[0]) for line in lines]
            new = acked[len(seen):]
            seen.extend(new)
            sample = new + rng.sample(seen, min(20, len(seen)))
            for i in sample:
                fields: dict[str, Any] = {"w": 0, "i": i}
                if i % 50 == 0:
                    fields[f"extra{i}"] = "x"
                assert reader.has(fields), f"acknowledged run {i} not visible"
                assert _is_done(work, **fields), f"acknowledged run {i} not done"
                work(**fields)  # skipped, never re-run
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
    assert [p.returncode for p in procs] == [0, 0]
    reader.close()
    counts = _fresh_counts(store_path)
    assert {k for k in counts if k[0] == 0} == {(0, i) for i in range(400)}
    assert {k for k in counts if k[0] == 1} == {(1, -1)}
    assert max(counts.values()) == 1


# ------------------------------------------------------------ SQLite, one process
_DMS_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + "-shm", os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
except OSError:
    print("in use")
else:
    print("free")
"""


def test_sqlite_closing_one_backend_keeps_the_other_connections_locks(
    tmp_path: Path,
) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's too. Two backends of one WAL store in one process (a decorated function and
    a ``stet.status``, say): closing one must leave the other's connection its locks, or
    another process would think the store unused and rebuild the ``-shm`` that connection
    has mapped (a SIGBUS, or a corrupt WAL index). SQLite marks a store in use by a shared
    lock on byte 128 of the ``-shm`` (its "DMS" lock); another process probes it."""
    path = tmp_path / "store.sqlite"

    def probe() -> str:
        return subprocess.run([sys.executable, "-c", _DMS_PROBE, str(path)],
                              capture_output=True, text=True, check=True).stdout.strip()

    a = get_backend(path)
    a.record({"x": 1})
    if not Path(str(path) + "-shm").exists():
        pytest.skip("not in WAL mode here (the filesystem is not known to be local)")
    assert probe() == "in use"
    for _ in range(3):
        b = get_backend(path)
        assert b.has({"x": 1}) and a.has({"x": 1})  # both read the change counter
        b.close()
        assert probe() == "in use", "closing one backend dropped the other's locks"
        c = get_backend(path)
        assert c.has({"x": 1})
        del c  # dropped without close(): the same
        assert a.has({"x": 1})
        assert probe() == "in use"
    a.close()
    assert probe() == "free"
