"""Crash safety: SIGKILL at any instant never breaks a store or loses a run
(docs/explanation/durability.md).

* A real child process runs a sweep and acknowledges each call in a separate file only
  after the decorated call returned; the parent kills it with SIGKILL at a random moment,
  round after round, on the same store: during appends, CSV header widening, Parquet
  folds, and ``remove``. After every kill the store opens, nothing acknowledged is lost,
  and at the end a full run executes exactly the runs not yet recorded.
* Torn tails are made by hand (every byte offset of the last record), and must be
  discarded on reading and repaired by the next record.
* The fsync mode works in every format.
"""

from __future__ import annotations

import collections
import errno
import inspect
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import stet
from formats import other_tools_rows
from stet._logfile import StoreWarning
from stet.backends import BaseBackend, get_backend
from stet.backends._parquet import ParquetBackend, sidecar_path

Key = tuple[int, int]

#: These tests are about store files on one machine (PostgreSQL's crash safety is tested
#: in test_postgres*.py, against its server).
FILE_FORMATS = ("csv", "json", "sqlite", "parquet")


@pytest.fixture(params=FILE_FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    """The file formats only (``store_path`` and ``backend`` follow this choice)."""
    return str(request.param)


def _is_done(f: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """``f.is_done(...)``, the helper stet attaches to a decorated function."""
    return bool(f.is_done(*args, **kwargs))  # type: ignore[attr-defined]


def _backend_of(f: Callable[..., Any]) -> BaseBackend:
    """``f.backend()``, the store of a decorated function."""
    backend: BaseBackend = f.backend()  # type: ignore[attr-defined]
    return backend

# --------------------------------------------------------------------------- the sweep


def combo(s: int, i: int) -> dict[str, Any]:
    """Combination ``i`` of sweep ``s``; odd sweeps add a new field every 100 runs, so a
    CSV store must widen its header (rewrite the file) again and again."""
    fields: dict[str, Any] = {"s": s, "i": i}
    if s % 2:
        fields[f"w{s}_{i // 100}"] = "x"
    return fields


#: The child: a sweep (or a removal loop) that appends one line to an "ack" file after
#: each call has returned. The parent kills it at a random moment.
CHILD = '''
import json
import sys
from typing import Any

import stet
import stet.backends._parquet as _parquet
from stet.backends import get_backend

_parquet.FOLD_MIN = 50  # fold the sidecar often, so that kills land during folds

#COMBO#

def main() -> None:
    mode, store, ack, spec_text = sys.argv[1:5]
    spec = json.loads(spec_text)
    stet.configure(verbose=False)

    @stet.once(store=store, name="work")
    def work(**fields: Any) -> None:
        pass

    with open(ack, "a", encoding="utf-8") as out:
        if mode == "sweep":
            s, fold_every = spec["sweep"], spec["fold_every"]
            backend = work.backend()
            print("ready", flush=True)
            for i in range(spec["n"]):
                work(**combo(s, i))
                out.write(f"{s} {i}\\n")  # only after the call returned
                out.flush()
                if fold_every and i % fold_every == 0:
                    backend.fold()
        elif mode == "remove":
            backend = get_backend(store)
            backend.has({"s": -1})
            print("ready", flush=True)
            for s, i in spec["targets"]:
                backend.remove({"s": s, "i": i})
                out.write(f"{s} {i}\\n")  # only after remove() returned
                out.flush()
        else:
            raise SystemExit(f"unknown mode {mode}")


main()
'''


def _child_script(tmp_path: Path) -> Path:
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("#COMBO#", inspect.getsource(combo)), encoding="utf-8")
    return script


def _acks(path: Path) -> list[Key]:
    """Acknowledged combinations; a last line without its newline was not acknowledged."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline is torn (or empty)
    out = []
    for line in lines:
        s, i = line.split()
        out.append((int(s), int(i)))
    return out


def _first_line(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bytes:
    """The child's first line of output; b"" if it prints none within ``timeout`` s."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else b""


def _kill_after_first_line(code: str, *args: str, env: dict[str, str] | None = None) -> bytes:
    """Run ``python -c code args``, SIGKILL it once it printed a line; return that line."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            env=env)
    try:
        return _first_line(proc).strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _run_and_kill(
    script: Path,
    mode: str,
    store: Path,
    ack: Path,
    spec: dict[str, Any],
    delay: float,
    env: dict[str, str],
    log: Path,
) -> None:
    """Start the child, wait until it is ready, let it work ``delay`` s, SIGKILL it."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), mode, str(store), str(ack), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
        assert proc.stdout is not None
        line = _first_line(proc)
        if line.strip() != b"ready":
            proc.kill()
            proc.wait()
            pytest.fail(f"child did not start ({line!r}): {log.read_text(errors='replace')}")
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        proc.stdout.close()
    if code not in (0, -signal.SIGKILL):
        pytest.fail(f"child failed ({code}): {log.read_text(errors='replace')}")


def _done(backend: BaseBackend) -> collections.Counter[Key]:
    """How many records each (s, i) has in the store, read afresh."""
    return collections.Counter((int(r["s"]), int(r["i"])) for r in backend.load())


def _check_valid_for_other_tools(path: Path, fmt: str, n: int) -> None:
    assert len(other_tools_rows(path, fmt)) == n


ROUNDS = 14
SWEEP_N = 1200


def test_sigkill_at_random_moments_loses_nothing(
    tmp_path: Path, store_path: Path, fmt: str
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    why = f"(fmt={fmt}, random seed {seed})"
    script = _child_script(tmp_path)
    log = tmp_path / "child-stderr.txt"
    env = {**os.environ, "STET_QUIET": "1"}
    env.pop("STET_FSYNC", None)

    # a decorated function in this process, opened before any child ran: a long-lived
    # reader, which must follow everything the children did
    executed: list[Key] = []

    @stet.once(store=store_path, name="work", verbose=False)
    def work(**fields: Any) -> None:
        executed.append((int(fields["s"]), int(fields["i"])))

    assert not _is_done(work, **combo(0, 0))

    must_have: set[Key] = set()  # acknowledged and not removed since
    sweeps: set[int] = set()
    for r in range(ROUNDS):
        ack = tmp_path / f"ack-{r}.txt"
        delay = 0.0 if r % 7 == 1 else rng.uniform(0.0, 0.3)
        round_env = {**env, "STET_FSYNC": "1"} if r % 5 == 2 else env
        if r % 4 == 3:
            # removal: drop some recorded runs, one remove() per run
            with get_backend(store_path) as b:
                before = _done(b)
            targets = rng.sample(sorted(before), min(150, len(before)))
            _run_and_kill(script, "remove", store_path, ack, {"targets": targets},
                          delay, round_env, log)
            removed = _acks(ack)
            assert removed == targets[: len(removed)]
            in_flight = set(targets[len(removed) : len(removed) + 1])
            with get_backend(store_path) as b:
                after = _done(b)
                for key in removed:
                    assert not b.has({"s": key[0], "i": key[1]}), (key, why)
            gone = set(before) - set(after)
            assert gone <= set(removed) | in_flight, (sorted(gone)[:10], why)
            assert not set(removed) & set(after), why
            must_have -= set(removed) | in_flight
            for key in removed:
                assert not _is_done(work, **combo(*key)), (f"round {r}: removed", key, why)
        else:
            s = r // 4
            sweeps.add(s)
            fold_every = 25 if fmt == "parquet" and r % 2 == 0 else 0
            spec = {"sweep": s, "n": SWEEP_N, "fold_every": fold_every}
            _run_and_kill(script, "sweep", store_path, ack, spec, delay, round_env, log)
            acked = _acks(ack)
            with get_backend(store_path) as b:
                after = _done(b)
                for key in acked:
                    assert b.has(combo(*key)), (key, why)
            must_have |= set(acked)
        lost = must_have - set(after)
        assert not lost, (f"round {r}: lost {len(lost)} acknowledged runs", sorted(lost)[:10], why)
        dupes = [k for k, n in after.items() if n > 1]
        assert not dupes, (f"round {r}: runs recorded twice", dupes[:10], why)
        for key in must_have:
            assert _is_done(work, **combo(*key)), (f"round {r}: long-lived reader", key, why)

    # a final full run executes exactly the runs not yet recorded
    everything = [(s, i) for s in sorted(sweeps) for i in range(SWEEP_N)]
    pending = {k for k in everything if not _is_done(work, **combo(*k))}
    with get_backend(store_path) as b:
        assert pending == set(everything) - set(_done(b)), why
    for key in everything:
        work(**combo(*key))
    assert sorted(executed) == sorted(pending), why
    with get_backend(store_path) as b:
        final = _done(b)
    assert sorted(final) == sorted(everything), why
    assert max(final.values()) == 1, why
    if fmt == "parquet":
        backend = _backend_of(work)
        assert isinstance(backend, ParquetBackend)
        backend.fold()
    _check_valid_for_other_tools(store_path, fmt, len(everything))


# ------------------------------------------------------------------------ torn tails

#: Values that make framing hard: quotes, separators, newlines, brackets, non-ASCII.
#: The last record (cut at every byte) gets the hardest one.
NOTES = ["plain", ",", "ü ∑ 🎲", '{"i": 9}', 'a "quoted", value', 'two\nlines, "q" ] } ü🎲']


def _records(n: int) -> list[dict[str, Any]]:
    return [{"i": i, "note": NOTES[i % len(NOTES)]} for i in range(n)]


def _torn_variants(prev: bytes, full: bytes) -> Iterator[tuple[int, bytes]]:
    """Every state an interrupted append of the last record can leave: ``full`` cut at
    every offset past the common prefix, and the prefix of the new write over ``prev``."""
    start = next((k for k, (x, y) in enumerate(zip(prev, full, strict=False)) if x != y),
                 len(prev))
    seen: set[bytes] = set()
    for t in range(start, len(full)):
        for data in (full[:t], full[:t] + prev[t:]):
            if data not in seen:
                seen.add(data)
                yield t, data


def _same(loaded: dict[str, Any], written: dict[str, Any]) -> bool:
    return bool(loaded["i"] == str(written["i"]) and loaded["note"] == written["note"])


N_TORN = 6


def _check_torn_state(path: Path, fmt: str, expected: list[dict[str, Any]], what: str) -> None:
    """Open a store left torn: the first N-1 records are there, and the next record
    repairs it (valid for other tools, N-1+1 records or N+1 if the last was whole)."""
    with get_backend(path) as b:
        loaded = b.load()
        n = len(loaded)
        assert n in (N_TORN - 1, N_TORN), (what, loaded)
        for got, want in zip(loaded, expected, strict=False):
            assert _same(got, want), (what, got, want)
        for rec in expected[: N_TORN - 1]:
            assert b.has(rec), (what, rec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)  # "discarded an interrupted write"
            b.record({"i": 99, "note": "after"})
        assert b.has({"i": 99, "note": "after"})
        if fmt == "parquet":
            # the sidecar must be whole again: every line JSON
            lines = sidecar_path(path).read_bytes().splitlines()
            for line in lines:
                json.loads(line)
            assert isinstance(b, ParquetBackend)
            b.fold()
    _check_valid_for_other_tools(path, fmt, n + 1)
    with get_backend(path) as fresh:
        again = fresh.load()
    assert len(again) == n + 1, what
    for got, want in zip(again, [*expected[:n], {"i": 99, "note": "after"}], strict=True):
        assert _same(got, want), (what, got, want)


def test_torn_tail_is_discarded_and_repaired(tmp_path: Path, store_path: Path, fmt: str) -> None:
    expected = _records(N_TORN)
    if fmt == "sqlite":
        _sqlite_killed_transaction(tmp_path, store_path, expected)
        return
    # the file that an append writes into: the store, or the Parquet store's sidecar
    with get_backend(store_path) as b:
        for rec in expected[:3]:
            b.record(rec)
        if isinstance(b, ParquetBackend):
            b.fold()  # some records in the Parquet file, the rest in the sidecar
        for rec in expected[3:-1]:
            b.record(rec)
    target = sidecar_path(store_path) if fmt == "parquet" else store_path
    prev = target.read_bytes()
    with get_backend(store_path) as b:
        b.record(expected[-1])
    full = target.read_bytes()
    base = store_path.read_bytes()

    count = 0
    for t, data in _torn_variants(prev, full):
        d = tmp_path / f"torn-{count}"
        d.mkdir()
        path = d / store_path.name
        if fmt == "parquet":
            path.write_bytes(base)
            sidecar_path(path).write_bytes(data)
        else:
            path.write_bytes(data)
        # A cut after a line break inside a quoted value, off a page boundary, is no cut
        # write (writes are cut only on page boundaries): a quote opened and never closed,
        # refused, not trimmed.
        may_refuse = fmt == "csv" and b"\n" in data[len(prev):] and len(data) % 4096 != 0
        try:
            _check_torn_state(path, fmt, expected, f"{fmt}: cut at byte {t} of {len(full)}")
        except stet.CorruptStoreError as exc:
            assert may_refuse and "never closes" in str(exc), (t, exc)
            assert path.read_bytes() == data
        count += 1
    assert count >= len(full) - len(prev)


def _sqlite_killed_transaction(
    tmp_path: Path, store_path: Path, expected: list[dict[str, Any]]
) -> None:
    """SQLite's torn tail: a writer killed inside a transaction whose pages were already
    spilled (a hot rollback journal, or uncommitted WAL frames, whichever mode the store
    uses); the next opener must see only committed records."""
    with get_backend(store_path) as b:
        for rec in expected[:-1]:
            b.record(rec)
    code = (
        "import sqlite3, sys, time\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('PRAGMA cache_size=1')\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "for k in range(3000):\n"
        "    conn.execute('INSERT INTO stet_records (i, note) VALUES (?, ?)',"
        " (str(1000 + k), 'x' * 200))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    assert _kill_after_first_line(code, str(store_path)) == b"ready"
    # what was left: a hot rollback journal, or uncommitted frames in the WAL
    left = [store_path.with_name(store_path.name + ext) for ext in ("-journal", "-wal")]
    assert any(p.exists() and p.stat().st_size > 0 for p in left)
    with get_backend(store_path) as b:
        loaded = b.load()
        assert len(loaded) == N_TORN - 1
        for got, want in zip(loaded, expected, strict=False):
            assert _same(got, want)
        b.record(expected[-1])
    _check_valid_for_other_tools(store_path, "sqlite", N_TORN)


def test_leftover_temporary_file_is_ignored(tmp_path: Path, store_path: Path, fmt: str) -> None:
    """A kill during an atomic replace leaves a half-written temporary file beside the
    store; the store itself is whole, later replaces still work and remove it."""
    with get_backend(store_path) as b:
        for rec in _records(4):
            b.record(rec)
        if isinstance(b, ParquetBackend):
            b.fold()
    leftovers = [store_path.with_name(f".{store_path.name}.stet-tmp-{pid}")
                 for pid in (os.getpid(), 999_999)]
    for tmp in leftovers:
        tmp.write_bytes(b"PAR1 half written \x00\x01 ,\n[{\"i\": ")
    other = store_path.with_name(f".other{store_path.name}.stet-tmp-999999")
    other.write_bytes(b"another store's")
    with get_backend(store_path) as b:
        assert len(b.load()) == 4
        assert b.remove({"i": 0}) == 1
        if fmt in ("csv", "json", "parquet"):  # replaced the file: the leftovers went
            assert not any(tmp.exists() for tmp in leftovers)
        b.record({"i": 7, "note": "new"})
    assert other.exists()
    with get_backend(store_path) as b:
        assert sorted(int(r["i"]) for r in b.load()) == [1, 2, 3, 7]
        if isinstance(b, ParquetBackend):
            b.fold()
    _check_valid_for_other_tools(store_path, fmt, 4)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])  # (SQLite: a transaction)
def test_full_disk_during_a_replace_leaves_the_store_as_it_was(
    store_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replace that cannot be written (no space left) fails with a message naming the
    store, leaves the store whole and unchanged, and leaves no temporary file (the stores
    that remove by replacing their file)."""
    with get_backend(store_path) as b:
        for rec in _records(4):
            b.record(rec)
        if isinstance(b, ParquetBackend):
            b.fold()
    before = store_path.read_bytes()
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f".stet-tmp-{os.getpid()}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with get_backend(store_path) as b:
        with pytest.raises(stet.StoreError, match="No space left") as err:
            b.remove({"i": 0})
        assert str(store_path) in str(err.value)
    monkeypatch.undo()
    assert store_path.read_bytes() == before
    assert list(store_path.parent.glob(".*stet-tmp*")) == []
    with get_backend(store_path) as b:
        assert sorted(int(r["i"]) for r in b.load()) == [0, 1, 2, 3]


def test_parquet_kills_between_replace_and_sidecar_delete(tmp_path: Path) -> None:
    """Folding and removing replace the Parquet file, then delete the sidecar. A kill
    between the two leaves the old sidecar beside a file that already holds its records:
    whatever happens next (another such kill included), no record comes back twice and
    no removed record comes back."""
    path = tmp_path / "store.parquet"
    side = sidecar_path(path)
    with get_backend(path) as b:
        for rec in _records(4):
            b.record(rec)
        old_sidecar = side.read_bytes()
        assert isinstance(b, ParquetBackend)
        b.fold()
    side.write_bytes(old_sidecar)  # killed in fold(): file replaced, sidecar not deleted
    with get_backend(path) as b:
        assert sorted(int(r["i"]) for r in b.load()) == [0, 1, 2, 3]
        assert b.remove({"i": 0}) == 1
    side.write_bytes(old_sidecar)  # killed in remove(): file replaced, sidecar not deleted
    with get_backend(path) as b:
        assert not b.has({"i": 0})
        assert sorted(int(r["i"]) for r in b.load()) == [1, 2, 3]
        assert isinstance(b, ParquetBackend)
        b.fold()
    side.write_bytes(old_sidecar)  # and once more, in a fold with nothing new to fold
    with get_backend(path) as b:
        b.record({"i": 4, "note": "new"})
        assert sorted(int(r["i"]) for r in b.load()) == [1, 2, 3, 4]
        assert isinstance(b, ParquetBackend)
        b.fold()
    assert sorted(str(v) for v in pq.read_table(path).column("i").to_pylist()) == [
        "1", "2", "3", "4"]


# ------------------------------------------------------------------------------ fsync


class _FsyncCounter:
    def __init__(self) -> None:
        self.calls = 0
        self._real = os.fsync

    def __call__(self, fd: Any) -> None:
        self.calls += 1
        self._real(fd)


@pytest.mark.parametrize("how", ["configure", "decorator", "backend", "env"])
def test_fsync_mode_works(
    tmp_path: Path, store_path: Path, fmt: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = _FsyncCounter()
    monkeypatch.setattr(os, "fsync", counter)
    n = 12
    if how == "env":
        # a sweep in a child process with STET_FSYNC=1, killed when done: nothing lost
        code = (
            "import sys, stet\n"
            "@stet.once(store=sys.argv[1], name='work', verbose=False)\n"
            "def work(i, note): pass\n"
            f"for i in range({n}):\n"
            "    work(i, 'fsync')\n"
            "print('done', flush=True)\n"
            "import time; time.sleep(60)\n"
        )
        env = {**os.environ, "STET_FSYNC": "1"}
        assert _kill_after_first_line(code, str(store_path), env=env) == b"done"
    elif how == "backend":
        with get_backend(store_path, fsync=True) as b:
            for i in range(n):
                b.record({"i": i, "note": "fsync"})
            assert b.remove({"i": n - 1}) == 1
            b.record({"i": n - 1, "note": "fsync"})
    else:
        if how == "configure":
            stet.configure(fsync=True)
        calls: list[int] = []

        @stet.once(store=store_path, name="work", verbose=False,
                   fsync=True if how == "decorator" else None)
        def work(i: int, note: str) -> None:
            calls.append(i)

        for i in range(n):
            work(i, "fsync")
        for i in range(n):
            work(i, "fsync")
        assert calls == list(range(n))
        assert all(_is_done(work, i, "fsync") for i in range(n))
        backend = _backend_of(work)
        if isinstance(backend, ParquetBackend):
            backend.fold()
    if fmt in ("csv", "json", "parquet") and how != "env":
        # sqlite fsyncs inside the library; the file formats go through os.fsync
        assert counter.calls >= n
    with get_backend(store_path) as fresh:
        recs = fresh.load()
        assert sorted(int(r["i"]) for r in recs) == list(range(n))
        assert all(fresh.has({"i": i, "note": "fsync"}) for i in range(n))
