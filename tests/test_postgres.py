"""PostgreSQL store: many workers (as on many machines), a real server on loopback.

* Worker processes, each with its own connection, split one sweep: every combination runs
  exactly once; a worker SIGKILLed mid-run has its run taken over; a server restarted
  mid-sweep loses nothing and records nothing twice.
* Ids committed out of order never hide a record (holes are looked for again); holes
  left by rolled-back inserts are dropped once no insert is in flight.
* A run known done costs no round trip; a record costs one; an executed call two.
* The password never shows (repr, errors, status); table names are data, never SQL.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stet
from conftest import PgStore, pg_rows, pg_store
from stet._claims import claim_offset
from stet.backends import get_backend
from stet.backends.postgres import PostgresBackend, mask_url
from stet.backends.postgres import feed as feedmod

pytestmark = pytest.mark.usefixtures("pg_server")


@pytest.fixture
def url(pg_server: Any) -> PgStore:
    return pg_store(pg_server)


def _raw(store: PgStore) -> Any:
    import psycopg

    return psycopg.connect(store.server.url(), autocommit=True)


# ------------------------------------------------------------------- the workers
#: A worker: a sweep over ``n`` combinations starting at ``start`` (wrapping around).
#: Each execution appends "S i" when it starts and "E i" when its body ends to ``log``.
WORKER = textwrap.dedent('''
    import os, sys, time
    import stet

    url, n, start, pause, log, wait = sys.argv[1:7]
    n, start, pause = int(n), int(start), float(pause)
    hold = int(sys.argv[7]) if len(sys.argv) > 7 else -1
    stet.configure(verbose=False)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    @stet.once(store=url, name="sim", wait=wait == "wait")
    def sim(i, alpha=0.5):
        os.write(fd, f"S {i}\\n".encode())
        if i == hold:
            print("holding", flush=True)
            time.sleep(600)
        time.sleep(pause)
        os.write(fd, f"E {i}\\n".encode())
        return i

    print("ready", flush=True)
    sys.stdin.readline()  # go
    for j in range(n):
        sim((start + j) % n)
    print("done", flush=True)
''')


class Workers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.script = tmp / "worker.py"
        self.script.write_text(WORKER)
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, store: str, n: int, start: int, pause: float, log: Path,
              wait: bool = False, hold: int = -1) -> subprocess.Popen[str]:
        args = [sys.executable, str(self.script), store, str(n), str(start), str(pause),
                str(log), "wait" if wait else "nowait"]
        if hold >= 0:
            args.append(str(hold))
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        return p

    @staticmethod
    def go(*procs: subprocess.Popen[str]) -> None:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()

    @staticmethod
    def finish(p: subprocess.Popen[str], timeout: float = 120) -> None:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        assert out.strip().endswith("done"), (out, err[-3000:])

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.close()


def _log(path: Path) -> tuple[collections.Counter[int], collections.Counter[int]]:
    starts: collections.Counter[int] = collections.Counter()
    ends: collections.Counter[int] = collections.Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            kind, i = line.split()
            (starts if kind == "S" else ends)[int(i)] += 1
    return starts, ends


def _recorded(store: PgStore) -> collections.Counter[int]:
    return collections.Counter(int(r["i"]) for r in pg_rows(store))


# ------------------------------------------------------------- many "machines"
def test_eight_workers_split_a_sweep_exactly_once(workers: Workers, url: PgStore,
                                                  tmp_path: Path) -> None:
    n = 200
    logs = [tmp_path / f"w{w}.log" for w in range(8)]
    procs = [workers.start(url, n, 0, 0.002, logs[w]) for w in range(8)]  # same order
    workers.go(*procs)
    for p in procs:
        Workers.finish(p)
    per_worker = [sum(_log(log)[1].values()) for log in logs]
    executed: collections.Counter[int] = sum((_log(log)[1] for log in logs),
                                             collections.Counter())
    assert sum(executed.values()) == n, executed
    assert executed == collections.Counter(range(n))
    assert sum(1 for c in per_worker if c) >= 2, per_worker  # the work was shared
    assert _recorded(url) == collections.Counter(range(n))
    with get_backend(url) as b:
        assert len(b) == n
        assert b.claims().running() == []


@pytest.mark.slow
def test_killed_worker_has_its_run_taken_over(workers: Workers, url: PgStore,
                                              tmp_path: Path) -> None:
    n = 200
    logs = [tmp_path / f"w{w}.log" for w in range(8)]
    victim = workers.start(url, n, 0, 0.01, logs[0], wait=True, hold=7)
    others = [workers.start(url, n, (w * n) // 8, 0.01, logs[w], wait=True)
              for w in range(1, 8)]
    workers.go(victim, *others)
    assert victim.stdout is not None
    assert victim.stdout.readline().strip() == "holding"  # mid-run, claim held
    time.sleep(0.3)
    with get_backend(url) as b:  # the others skip it, or wait for it
        assert any(c.get("fields", {}).get("i") == "7" for c in b.claims().running())
        assert not b.has({"i": 7})
    killed_at = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for p in others:
        Workers.finish(p)
    took_over = time.monotonic() - killed_at
    starts = sum((_log(log)[0] for log in logs), collections.Counter())
    ends = sum((_log(log)[1] for log in logs), collections.Counter())
    assert ends == collections.Counter(range(n)), "each run completed exactly once"
    assert starts[7] == 2  # the victim's start, and the taker's
    assert _log(logs[0])[1][7] == 0
    assert _recorded(url) == collections.Counter(range(n))
    assert took_over < 60


def test_server_restart_mid_sweep_loses_nothing_records_nothing_twice(
    workers: Workers, url: PgStore, tmp_path: Path
) -> None:
    n = 200
    logs = [tmp_path / f"w{w}.log" for w in range(8)]
    procs = [workers.start(url, n, (w * n) // 8, 0.02, logs[w], wait=True)
             for w in range(8)]
    workers.go(*procs)
    deadline = time.monotonic() + 60
    while sum(sum(_log(log)[1].values()) for log in logs) < n // 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    url.server.restart("fast")  # every session is cut; the server is down a moment
    for p in procs:
        Workers.finish(p)
    ends = sum((_log(log)[1] for log in logs), collections.Counter())
    assert set(ends) == set(range(n))
    recorded = _recorded(url)
    assert recorded == collections.Counter(range(n)), [i for i, c in recorded.items()
                                                        if c != 1]
    with get_backend(url) as b:
        assert len(b) == n and len(b.load()) == n


def test_immediate_shutdown_mid_sweep_loses_nothing(url: PgStore) -> None:
    """An in-process sweep survives a crash-like server stop between its records."""
    calls: list[int] = []

    @stet.once(store=url, name="crashy", verbose=False)
    def crashy(i: int) -> int:
        calls.append(i)
        if i == 5:
            url.server.restart("immediate")
        return i

    for i in range(10):
        assert crashy(i) == i
    assert calls == list(range(10))
    assert sorted(_recorded_field(url, "i")) == [str(i) for i in range(10)]
    for i in range(10):
        assert crashy(i) is None


def _recorded_field(store: PgStore, field: str) -> list[str]:
    return [r[field] for r in pg_rows(store)]


def test_connection_dropped_while_idle_is_reestablished(url: PgStore) -> None:
    b = get_backend(url)
    assert isinstance(b, PostgresBackend)
    b.record({"x": 1})
    raw = _raw(url)
    raw.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                "application_name = 'stet' AND pid <> pg_backend_pid()")
    b.record({"x": 2})
    assert b.has({"x": 1}) and b.has({"x": 2})
    assert sorted(r["x"] for r in pg_rows(url)) == ["1", "2"]
    raw.close()
    b.close()


def test_claim_lost_with_the_connection_is_retaken_before_recording(url: PgStore) -> None:
    """A run whose claim was lost with the session and then run and recorded by another
    worker is not recorded a second time."""
    seen: list[int] = []
    other = get_backend(url)

    @stet.once(store=url, name="lost", verbose=False)
    def lost(i: int) -> int:
        seen.append(i)
        raw = _raw(url)
        raw.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "application_name = 'stet' AND pid <> pg_backend_pid()")
        raw.close()
        # meanwhile another worker runs and records the same run
        other.append_record({"i": str(i), "_stet_func": "lost"})
        return i

    assert lost(1) == 1
    assert seen == [1]
    assert _recorded_field(url, "i") == ["1"]
    other.close()


# --------------------------------------------------------------- many at once
AWKWARD = ['plain', 'quote " and \\ backslash', "{braces}, [commas]", "new\nline",
           "caf\u00e9 \u2603", "", "nul \x00 char", "\\\""]


def _trips(b: Any) -> int:
    """Round trips ``b``'s current connection has made (read, never patched)."""
    return int(b._source._session.trips) if b._source._session is not None else 0


def test_append_records_writes_thousands_per_statement_exactly(url: PgStore) -> None:
    records = [{"i": str(i), "note": AWKWARD[i % len(AWKWARD)], "_stet_func": "bulk"}
               for i in range(12_000)]
    with get_backend(url) as b:
        b.exists()  # connect
        before = _trips(b)
        b.append_records(records)
        # three statements of at most 5,000 (and two trips to find and create the tables)
        assert _trips(b) - before <= 5, _trips(b) - before
        assert b.has({"i": 11_999, "note": AWKWARD[11_999 % len(AWKWARD)]})
        assert len(b) == 12_000
    with get_backend(url) as fresh:
        got = fresh.load()
    assert [(r["i"], r["note"]) for r in got] == [(r["i"], r["note"]) for r in records]


def test_append_records_statements_stay_small() -> None:
    """At most 5,000 records per statement, and about 32 MB of text (results saved with
    ``save_result`` can be large; one parameter may not exceed 1 GB)."""
    small = [{"i": str(i)} for i in range(12_001)]
    assert [len(c) for c in feedmod._chunks(small)] == [5_000, 5_000, 2_001]
    big = [{"i": str(i), "_stet_result": "x" * (1 << 20)} for i in range(70)]
    sizes = [len(c) for c in feedmod._chunks(big)]
    assert sum(sizes) == 70 and max(sizes) <= 32, sizes
    assert [len(c) for c in feedmod._chunks([{"r": "x" * (64 << 20)}])] == [1]
    assert list(feedmod._chunks([])) == []


class _CuttingProxy:
    """A TCP relay to the server that, once armed, cuts the connection carrying the next
    statement whose text holds ``trigger`` right after the server's complete answer to
    it arrived (its ReadyForQuery: the statement committed), before the client sees it:
    a network that fails at the worst moment."""

    def __init__(self, port: int, trigger: bytes) -> None:
        import socket

        self.port, self.trigger, self.cuts = port, trigger, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listen_port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, store: PgStore) -> str:
        return str(store).replace(f":{self.port}/", f":{self.listen_port}/")

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            armed: list[bool] = []
            threading.Thread(target=self._up, args=(client, server, armed),
                             daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, armed),
                             daemon=True).start()

    def _up(self, src: Any, dst: Any, armed: list[bool]) -> None:
        try:
            while data := src.recv(1 << 16):
                if not self.cuts and self.trigger in data:
                    armed.append(True)
                dst.sendall(data)
        except OSError:
            pass

    def _down(self, src: Any, dst: Any, armed: list[bool]) -> None:
        held = b""
        try:
            while data := src.recv(1 << 16):
                if armed and not self.cuts:
                    held += data
                    if held[-6:-1] == b"Z\x00\x00\x00\x05":  # ReadyForQuery: committed
                        self.cuts += 1
                        for sock in (src, dst):  # (shutdown: wakes the other thread)
                            sock.shutdown(2)
                            sock.close()
                        return
                    continue
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def test_append_records_answer_lost_is_not_applied_twice(url: PgStore) -> None:
    """The connection goes after the server committed a statement of many records but
    before its answer arrived: the retry finds them and writes nothing again."""
    proxy = _CuttingProxy(url.server.port, b"unnest(")
    records = [{"i": str(i), "_stet_func": "bulk"} for i in range(7_000)]
    with get_backend(proxy.url(url)) as b:
        b.exists()
        b.append_records(records)
        assert proxy.cuts == 1
        assert len(b) == 7_000
    proxy.close()
    assert sorted(int(r["i"]) for r in pg_rows(url)) == list(range(7_000))


def test_a_record_whose_answer_was_lost_is_not_written_twice(url: PgStore) -> None:
    """The same for one run's record, through the decorator."""
    proxy = _CuttingProxy(url.server.port, b"pg_advisory_xact_lock_shared")
    calls: list[int] = []

    @stet.once(store=proxy.url(url), name="cut", verbose=False)
    def cut(i: int) -> int:
        calls.append(i)
        return i

    assert cut(1) == 1
    assert proxy.cuts == 1
    assert cut(1) is None and calls == [1]
    proxy.close()
    assert [r["i"] for r in pg_rows(url)] == ["1"]


def test_a_retried_insert_looks_for_its_rows_after_the_lost_statement_ends(
    url: PgStore,
) -> None:
    """The server finishes (and commits) a statement whose client went away; a retry
    that looked for its rows before that would write them twice. It waits."""
    raw = _raw(url)
    busy = raw.info.backend_pid
    sleeper = threading.Thread(target=raw.execute, args=("SELECT pg_sleep(1.0)",))
    sleeper.start()
    time.sleep(0.2)
    with get_backend(url) as b:
        assert isinstance(b, PostgresBackend)
        b.exists()
        t0 = time.monotonic()
        b._source._with_retry(lambda s: b._source._await_statement(s, busy))
        waited = time.monotonic() - t0
        t0 = time.monotonic()  # its own session is never waited for (it is not gone)
        b._source._with_retry(lambda s: b._source._await_statement(s, s.backend_pid))
        assert time.monotonic() - t0 < 5
    sleeper.join()
    raw.close()
    assert waited >= 0.5, f"looked after {waited:.2f} s, while the statement still ran"


def test_copy_into_postgres_keeps_everything(url: PgStore, tmp_path: Path) -> None:
    src = tmp_path / "src.csv"
    with get_backend(src) as b:
        for i, note in enumerate(AWKWARD):
            b.append_record({"i": str(i), "note": note, "_stet_func": "f",
                             "_stet_timestamp": "t"})
    from stet._cli import main

    assert main(["copy", str(src), url]) == 0
    assert main(["copy", str(src), url]) == 0  # nothing twice
    assert sorted((r["i"], r["note"]) for r in pg_rows(url)) == sorted(
        (str(i), note) for i, note in enumerate(AWKWARD))

    @stet.once(store=url, name="f", verbose=False)
    def f(i: int, note: str) -> None:
        raise AssertionError("copied, so done")

    for i, note in enumerate(AWKWARD):
        assert f(i, note) is None


# -------------------------------------------------------------------- the index
def test_ids_committed_out_of_order_are_not_missed(url: PgStore) -> None:
    """Two writers on their own connections: the first takes an id and commits after the
    second, which took the next id; a reader that saw the second must still see the first,
    however long the first takes (the server slows its insert down with a trigger)."""
    reader = get_backend(url)
    slow, fast = get_backend(url), get_backend(url)
    fast.record({"x": 0})  # (creates the tables)
    assert reader.has({"x": 0})
    raw = _raw(url)
    raw.execute(
        "CREATE FUNCTION stet_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.record->>'x' = 'slow' THEN PERFORM pg_sleep(1.5); END IF; "
        "IF NEW.record->>'x' = 'gone' THEN PERFORM pg_sleep(0.5); "
        "RAISE EXCEPTION 'rolled back'; END IF; RETURN NEW; END $$")
    raw.execute(f'CREATE TRIGGER stet_test_slow BEFORE INSERT ON "{url.table}" '
                f"FOR EACH ROW EXECUTE FUNCTION stet_test_slow()")

    def asleep() -> bool:  # the slow insert, its id taken, sleeps uncommitted
        return bool(raw.execute("SELECT count(*) FROM pg_stat_activity "
                                "WHERE wait_event = 'PgSleep'").fetchone()[0])

    def in_flight() -> None:
        deadline = time.monotonic() + 10
        while not asleep():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    errors: list[BaseException] = []

    def write(backend: Any, value: str) -> None:
        try:
            backend.record({"x": value})
        except BaseException as exc:  # (told to the test's thread)
            errors.append(exc)

    first = threading.Thread(target=write, args=(slow, "slow"))
    first.start()
    in_flight()
    fast.record({"x": "fast"})  # a later id, committed first
    assert reader.has({"x": "fast"})
    # Longer than a reader waits before it gives up on an id. A lookup made while the
    # insert still sleeps in the server (seen asleep after the lookup returned) must miss
    # it; the thread itself outlives its commit for a moment, so it is no guide.
    while True:
        seen = reader.has({"x": "slow"})
        if not asleep():
            break
        assert not seen
        time.sleep(0.05)
    first.join()
    assert not errors
    assert reader.has({"x": "slow"}), "a record committed out of id order was missed"
    assert len(reader) == 3

    # An insert that takes an id and rolls back leaves that id empty for good: the reader
    # neither waits for it nor misses what comes after.
    lost = threading.Thread(target=write, args=(slow, "gone"))
    lost.start()
    in_flight()
    fast.record({"x": "after"})
    lost.join()
    assert len(errors) == 1 and "rolled back" in str(errors[0])
    assert reader.has({"x": "after"}) and not reader.has({"x": "gone"})
    time.sleep(0.5)
    fast.record({"x": "later"})
    assert reader.has({"x": "later"})
    assert len(reader) == 5
    assert sorted(r["x"] for r in reader.load()) == ["0", "after", "fast", "later", "slow"]
    raw.close()
    for b in (reader, slow, fast):
        b.close()


def test_removal_by_another_process_is_seen_without_polling(url: PgStore) -> None:
    calls: list[int] = []

    @stet.once(store=url, name="rm", verbose=False)
    def rm(i: int) -> int:
        calls.append(i)
        return i

    rm(1)
    rm(1)
    assert calls == [1]
    code = (f"import stet; stet.reset({str(url)!r}, key_dict={{'i': 1}})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   timeout=60)
    time.sleep(0.2)  # the notification travels
    assert rm(1) == 1
    assert calls == [1, 1]


def test_known_runs_cost_no_round_trip_a_record_one_a_run_two(url: PgStore) -> None:
    @stet.once(store=url, name="count", verbose=False)
    def count(i: int) -> int:
        return i

    count(0)  # connect, create the tables
    backend = count.backend()
    before = _trips(backend)
    assert count(1) == 1
    assert _trips(backend) - before == 2, \
        "an executed run: claim (with catch-up), record (with release)"
    before = _trips(backend)
    for _ in range(100):
        assert count(1) is None
        assert count.is_done(0)
    assert _trips(backend) == before, "a run known done cost a round trip"
    backend.append_record({"i": "9", "_stet_func": "count"})
    assert _trips(backend) - before == 1, "a record is one round trip"


def test_claims_back_off_after_collisions_only_for_runs_shorter_than_a_trip(
    url: PgStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers walking a sweep in the same order collide on every run; a worker that
    collided waits a random moment before its next claim, but only while the function's
    runs are shorter than a round trip (the pause itself is measured by the benchmark)."""
    import stet.backends.postgres.claims as claimsmod

    monkeypatch.setattr(claimsmod, "random", type("R", (), {"uniform": staticmethod(
        lambda lo, hi: hi)}))  # the longest pause the policy allows

    @stet.once(store=url, name="quick", verbose=False)
    def quick(i: int) -> int:
        return i

    @stet.once(store=url, name="slow", verbose=False)
    def slow(i: int) -> int:
        time.sleep(0.05)
        return i

    for i in range(5):
        quick(i)
        slow(i)
    claims = quick.backend().claims()
    assert claims is slow.backend().claims()
    quick_info, slow_info = {"func": "quick"}, {"func": "slow"}
    assert claims._pause_for(quick_info) == 0.0, "no collision yet, yet a pause"

    # A round trip of 20 ms, whatever the machine's load: quick runs are shorter, slow ones
    # (50 ms) longer. (The benchmark measures the real thing.)
    monkeypatch.setattr(claims, "timed", lambda trip: None)
    claims._rtt = 0.02

    def longest(info: dict[str, str]) -> float:  # as if asked right at the collision
        return claims._pause_for(info, now=claims._collided_at)

    def held() -> float:  # how long a run of quick holds its claim: run, record
        return claims._short["quick"] + claims._rtt

    with get_backend(url) as other:  # another worker (its own session) holds two runs
        for name in ("quick", "slow"):
            assert other.claims().try_claim(
                claim_offset(name, ("i",), ("7",)), {"func": name}) is None
        assert quick(7) is None  # running elsewhere: a collision
        assert longest(quick_info) == pytest.approx(held())
        assert quick(7) is None
        assert longest(quick_info) == pytest.approx(2 * held())  # doubled
        for _ in range(4):  # 6 collisions: 1, 2, 4, 8, 16, 16
            quick(7)
        assert longest(quick_info) == pytest.approx(16 * held())  # capped
        claims._rtt = 1.0  # a slow link: never more than half a second all the same
        assert longest(quick_info) == pytest.approx(0.5)
        claims._rtt = 0.02
        assert claims._pause_for(quick_info, now=claims._collided_at + 1.0) < 0, \
            "time spent since the collision does not count"
        assert longest(slow_info) == 0.0, "a claim of a long run would pause"
        assert slow(7) is None
        assert longest(slow_info) == 0.0

    assert quick(100) == 100  # it ran: the pause halves
    assert longest(quick_info) == pytest.approx(8 * held())

    # Never on a thread running an event loop (an ``async def`` function's call).
    import asyncio

    async def inside() -> bool:
        return claimsmod._in_event_loop()

    assert not claimsmod._in_event_loop() and asyncio.run(inside())


def test_tables_created_once_by_workers_starting_together(url: PgStore) -> None:
    code = textwrap.dedent('''
        import sys, stet
        from stet.backends import get_backend
        with get_backend(sys.argv[1]) as b:
            b.record({"w": sys.argv[2]})
    ''')
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(w)],
                              stderr=subprocess.PIPE, text=True) for w in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert sorted(r["w"] for r in pg_rows(url)) == [str(w) for w in range(8)]


def test_threads_and_a_forked_child_share_the_store(url: PgStore) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    @stet.once(store=url, name="thr", verbose=False)
    def thr(i: int) -> int:
        with lock:
            calls.append(i)
        time.sleep(0.002)
        return i

    def sweep() -> None:
        for i in range(50):
            thr(i)

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == list(range(50))
    pid = os.fork()
    if pid == 0:  # the child must not use (or close) the parent's session
        code = 0
        try:
            code = 0 if thr(100) == 100 and thr(1) is None else 3
        except BaseException:
            traceback.print_exc()
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert thr(101) == 101 and thr(100) is None  # the parent's session still works
    assert sorted(int(x) for x in _recorded_field(url, "i")) == [*range(50), 100, 101]


def test_failures_and_status_through_a_url(url: PgStore,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    @stet.once(store=url, name="flaky", verbose=False)
    def flaky(i: int) -> int:
        if i == 3:
            raise ValueError("three is bad")
        return i

    for i in range(5):
        if i == 3:
            with pytest.raises(ValueError):
                flaky(i)
        else:
            flaky(i)
    with get_backend(url) as b:
        assert [f["i"] for f in b.failures()] == ["3"]
    capsys.readouterr()
    stet.status(url)
    out = capsys.readouterr().out
    assert "4 completed" in out and "1 failed" in out and "three is bad" in out
    assert url.server.password not in out
    stet.reset(url, key_dict={"i": 3})
    with get_backend(url) as b:
        assert b.failures() == []
        assert len(b) == 4


def test_postgres_scheme_alias_and_default_table(pg_server: Any) -> None:
    base = pg_server.url().replace("postgresql://", "postgres://")
    with get_backend(base) as b:
        assert isinstance(b, PostgresBackend)
        assert b.table == "stet_records"
        b.clear()
        b.record({"alias": 1})
        assert b.has({"alias": 1})
        b.clear()


def test_foreign_table_is_an_error_and_untouched(url: PgStore) -> None:
    raw = _raw(url)
    raw.execute(f'CREATE TABLE "{url.table}" (a int, b text)')
    raw.execute(f'INSERT INTO "{url.table}" VALUES (1, %s)', ("keep",))
    with get_backend(url) as b, pytest.raises(stet.CorruptStoreError, match="not a stet store"):
        b.record({"x": 1})
    assert raw.execute(f'SELECT * FROM "{url.table}"').fetchall() == [(1, "keep")]
    # A table of no columns (as one being created elsewhere may look for a moment) too.
    raw.execute(f'CREATE TABLE "{url.table}_empty" ()')
    with get_backend(f"{url.server.url()}?table={url.table}_empty") as b, \
            pytest.raises(stet.CorruptStoreError, match="not a stet store"):
        b.record({"x": 1})
    raw.close()


def test_missing_psycopg_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                             url: PgStore) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ImportError, match=r"pip install 'stet\[postgres\]'"):
        get_backend(url)


def test_import_stet_does_not_import_psycopg() -> None:
    code = ("import sys, stet; stet.once(store='postgresql://u:p@h/db')(lambda x: x);"
            "print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------- security
def _texts(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


def test_password_never_shows(pg_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pw = pg_server.password
    store = pg_store(pg_server)
    b = get_backend(store)
    for text in (repr(b), b.describe(), str(b)):
        assert pw not in text and "***" in text
    b.record({"x": 1})
    stet.status(store)
    stet.reset(store, key_dict={"x": 1})
    out = capsys.readouterr()
    assert pw not in out.out + out.err
    b.close()

    wrong = pg_server.url(table="t", password="not-the-" + pw)
    with pytest.raises(stet.StoreError) as info:
        get_backend(wrong).record({"x": 1})
    assert "password authentication failed" in str(info.value)
    assert pw not in _texts(info.value)

    refused = store.replace(f":{pg_server.port}/", ":1/")
    with pytest.raises(stet.StoreError) as info:
        get_backend(refused).has({"x": 1})
    assert pw not in _texts(info.value)
    assert "***" in str(info.value)

    in_query = f"postgresql://{pg_server.user}@127.0.0.1:1/db?password={pw}&table=t"
    assert pw not in mask_url(in_query)
    with pytest.raises(stet.StoreError) as info:
        get_backend(in_query).has({"x": 1})
    assert pw not in _texts(info.value)

    with pytest.raises(ValueError) as vinfo:
        get_backend(store.replace("postgresql://", "mysql://"))
    assert pw not in _texts(vinfo.value)
    with pytest.raises(ValueError) as vinfo:
        get_backend(pg_server.url(table=""))
    assert pw not in _texts(vinfo.value)
    with pytest.raises(FileNotFoundError) as finfo:
        stet.status(pg_store(pg_server))
    assert pw not in _texts(finfo.value)

    @stet.once(store=store, name="leak")
    def leak(x: int) -> int:
        return x

    assert pw not in repr(leak.backend())


def test_lost_server_error_names_no_password(url: PgStore) -> None:
    b = PostgresBackend(url, reconnect_timeout=0.5)
    b.record({"x": 1})
    url.server.stop("fast")
    try:
        with pytest.raises(stet.StoreError, match="could not reconnect") as info:
            b.record({"x": 2})
        assert url.server.password not in _texts(info.value)
    finally:
        url.server.start()
    b.record({"x": 2})  # and back
    assert sorted(r["x"] for r in pg_rows(url)) == ["1", "2"]
    b.close()


@pytest.mark.parametrize("table", [
    'x"; DROP TABLE canary; --',
    "stet_records; DROP TABLE canary",
    "canary",  # an existing foreign table: refused, untouched
    "Mixed Case ünï",
    "it's",
    "a\"b",
])
def test_table_names_are_data_never_sql(pg_server: Any, table: str) -> None:
    import psycopg

    raw = psycopg.connect(pg_server.url(), autocommit=True)
    raw.execute("CREATE TABLE IF NOT EXISTS canary (v text)")
    raw.execute("DELETE FROM canary")
    raw.execute("INSERT INTO canary VALUES ('alive')")
    store = PgStore(pg_server.url(table=table))
    try:
        with get_backend(store) as b:
            if table == "canary":
                with pytest.raises(stet.CorruptStoreError):
                    b.record({"x": 1})
            else:
                b.record({"x": 1})
                assert b.has({"x": 1})
                b.clear()
        assert raw.execute("SELECT v FROM canary").fetchall() == [("alive",)]
        if table != "canary":
            assert raw.execute("SELECT to_regclass(%s)", ('"' + table.replace('"', '""')
                                                          + '"',)).fetchone() != (None,)
    finally:
        raw.close()


@pytest.mark.parametrize("table", ["", "x" * 60, "tab\tname", "nul\x00"])
def test_bad_table_names_are_value_errors(pg_server: Any, table: str) -> None:
    from urllib.parse import quote

    url = pg_server.url() + "?table=" + quote(table, safe="")
    with pytest.raises(ValueError, match="table"):
        get_backend(url)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:p%40ss@h:5432/db?table=x&sslmode=require",
     "postgresql://u:***@h:5432/db?table=x&sslmode=require"),
    ("postgresql://?table=x", "postgresql://?table=x"),
    ("postgresql:///db?host=/run/pg&password=zz", "postgresql:///db?host=/run/pg&password=***"),
    ("postgres://u@h1:1,h2:2/db", "postgres://u@h1:1,h2:2/db"),
    ("postgresql://u:pw@h", "postgresql://u:***@h"),
])
def test_urls_are_shown_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_everything_from_the_environment(pg_server: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``postgresql://?table=...``: host, port, user, password and database from libpq's
    environment variables (and the password never shown)."""
    for k, v in (("PGHOST", "127.0.0.1"), ("PGPORT", str(pg_server.port)),
                 ("PGUSER", pg_server.user), ("PGPASSWORD", pg_server.password),
                 ("PGDATABASE", pg_server.dbname)):
        monkeypatch.setenv(k, v)
    with get_backend("postgresql://?table=from_env") as b:
        b.record({"x": 1})
        assert b.has({"x": 1})
        assert repr(b) == "PostgresBackend('postgresql://?table=from_env')"
    monkeypatch.setenv("PGUSER", "nobody")
    with pytest.raises(stet.StoreError) as info:
        get_backend("postgresql://?table=from_env").has({"x": 1})
    assert pg_server.password not in _texts(info.value)


def test_the_postgres_modules_are_layered_and_claims_do_not_know_the_store() -> None:
    """Each module of ``stet.backends.postgres`` imports only modules below it in
    url < session < tables < feed < claims < plans < source < store (no cycle); the claims
    see their store through ``claims.ClaimsHost`` only, never the backend's module."""
    import ast

    import stet.backends.postgres as package

    order = ["url", "session", "tables", "feed", "claims", "plans", "source", "store"]
    here = Path(package.__file__).parent
    assert sorted(p.stem for p in here.glob("*.py") if p.stem != "__init__") == sorted(order)
    for i, name in enumerate(order):
        tree = ast.parse((here / f"{name}.py").read_text(encoding="utf-8"))
        siblings = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
        assert siblings <= set(order[:i]), f"{name} imports {siblings - set(order[:i])}"
        assert len((here / f"{name}.py").read_text(encoding="utf-8").splitlines()) <= 800
