"""PostgreSQL claims outlive the worker's session, never the worker.

A claim is an advisory lock on the worker's session plus a lease row the worker renews.
A session that ends while its worker lives (``pg_terminate_backend``, a server crash
and restart) lets nobody else execute the run: the lease keeps them off until the worker
reconnects and takes its lock again. A SIGKILLed worker's run is free again within 30 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stet
from conftest import PgStore, pg_rows, pg_store

pytestmark = pytest.mark.usefixtures("pg_server")

#: A worker holding run ``long(1)`` until ``flag`` exists; its log gets "S/E 1 pid".
HOLDER = textwrap.dedent('''
    import os, sys, time
    import stet

    url, log, flag = sys.argv[1:4]
    stet.configure(verbose=False)

    @stet.once(store=url, name="long")
    def long(i):
        with open(log, "a") as f:
            f.write(f"S {i} {os.getpid()}\\n")
        print("holding", flush=True)
        while not os.path.exists(flag):
            time.sleep(0.05)
        with open(log, "a") as f:
            f.write(f"E {i} {os.getpid()}\\n")
        return i

    print("ran" if long(1) == 1 else "skipped", flush=True)
''')


@pytest.fixture
def url(pg_server: Any) -> PgStore:
    return pg_store(pg_server)


@pytest.fixture
def holder(url: PgStore, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    p = subprocess.Popen([sys.executable, str(script), url, str(tmp_path / "log"),
                          str(tmp_path / "flag")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    assert line == "holding", (line, p.stderr.read() if p.stderr else "")
    yield p
    if p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)
        p.kill()
    p.wait()


def _raw(store: PgStore) -> Any:
    import psycopg

    return psycopg.connect(store.server.url(), autocommit=True)


def _terminate_claim_sessions(store: PgStore) -> None:
    """End the sessions holding claims of ``store`` (as an administrator would)."""
    with _raw(store) as raw:
        pids = [r[0] for r in raw.execute(
            f'SELECT DISTINCT session FROM "{store.table}_claims" WHERE k >= 0').fetchall()]
        assert pids, "the holder's claim shows in the claims table"
        raw.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
                    (pids,))
        deadline = time.monotonic() + 10
        while raw.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                          (pids,)).fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.slow
def test_a_lost_session_never_lets_another_worker_run_live_work(
    url: PgStore, holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    executed: list[int] = []

    @stet.once(store=url, name="long", verbose=False)
    def long(i: int) -> int:
        executed.append(i)
        return i

    # 1. The holder's session is terminated while the holder is frozen (so it cannot
    # reconnect): its lock is free, its lease is not.
    os.kill(holder.pid, signal.SIGSTOP)
    _terminate_claim_sessions(url)
    assert long(1) is None
    # The holder comes back, reconnects and takes its lock again.
    os.kill(holder.pid, signal.SIGCONT)
    time.sleep(1.0)
    assert long(1) is None

    # 2. The server crashes and restarts (which empties the unlogged claims table) while
    # the holder is frozen: nobody may claim anything until it is back.
    os.kill(holder.pid, signal.SIGSTOP)
    url.server.restart("immediate")
    answer: list[object] = []
    t = threading.Thread(target=lambda: answer.append(long(1)))
    t.start()
    t.join(2.0)
    assert t.is_alive(), "a claim waits for the workers of before the crash"
    os.kill(holder.pid, signal.SIGCONT)
    t.join(15.0)
    assert not t.is_alive() and answer == [None]
    assert long(1) is None
    assert executed == []

    # 3. A worker killed outright leaves its run free within 30 s (8 s: its lease).
    holder.kill()
    holder.wait()
    killed_at = time.monotonic()
    while long(1) is None:
        assert time.monotonic() - killed_at < 30, "a dead worker's run is free in 30 s"
        time.sleep(0.2)
    assert executed == [1]
    log = (tmp_path / "log").read_text().split("\n")
    assert [line.split()[0] for line in log if line] == ["S"]  # the holder's start only
    assert [r["i"] for r in pg_rows(url)] == ["1"]


@pytest.mark.slow
def test_a_worker_whose_session_was_terminated_finishes_and_records_once(
    url: PgStore, holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    """The holder loses its session mid-run (not frozen: it reconnects at once), then
    finishes: one execution, one record, and its lease is gone."""

    @stet.once(store=url, name="long", verbose=False)
    def long(i: int) -> int:
        raise AssertionError("executed twice")

    _terminate_claim_sessions(url)
    assert long(1) is None
    (tmp_path / "flag").write_text("")
    out, err = holder.communicate(timeout=60)
    assert out.strip() == "ran", err[-2000:]
    assert [r["i"] for r in pg_rows(url)] == ["1"]
    assert long(1) is None  # (claimed, found done: released within 50 ms)
    deadline = time.monotonic() + 5
    with _raw(url) as raw:
        while raw.execute(f'SELECT count(*) FROM "{url.table}_claims" '
                          "WHERE k >= 0").fetchone()[0]:
            assert time.monotonic() < deadline, "leases are deleted with their claims"
            time.sleep(0.05)


def test_a_store_made_before_leases_gains_them_and_keeps_its_runs(url: PgStore) -> None:
    t = url.table
    data = "(id bigserial PRIMARY KEY, record json NOT NULL, run json)"
    with _raw(url) as raw:  # the layout of stores made before leases
        raw.execute(f'CREATE TABLE "{t}" {data}')
        raw.execute(f'CREATE TABLE "{t}_failures" {data}')
        raw.execute(f'CREATE TABLE "{t}_meta" (name text PRIMARY KEY, value bigint NOT NULL)')
        raw.execute(f"INSERT INTO \"{t}_meta\" VALUES ('records', 0), ('failures', 0), "
                    "('schema', 1)")
        raw.execute(f'CREATE UNLOGGED TABLE "{t}_claims" (k bigint PRIMARY KEY, session '
                    "integer NOT NULL, host text, pid integer, since double precision, "
                    "info json)")
        raw.execute(f"INSERT INTO \"{t}\" (record, run) VALUES "
                    "('{\"x\": \"1\", \"_stet_func\": \"old\"}', "
                    "'{\"x\": \"1\", \"_stet_func\": \"old\"}')")
    calls: list[int] = []

    @stet.once(store=url, name="old", verbose=False)
    def old(x: int) -> int:
        calls.append(x)
        return x

    assert old(1) is None and old(2) == 2 and calls == [2]
    with _raw(url) as raw:
        assert raw.execute(f'SELECT count(*) FROM "{t}_workers"').fetchone()[0] >= 1
    assert sorted(r["x"] for r in pg_rows(url)) == ["1", "2"]


@pytest.mark.slow
def test_a_clean_restart_longer_than_a_lease_waits_for_the_workers_of_before_it(
    url: PgStore, holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    """A clean shutdown keeps the unlogged claims table, but the server's clock runs on
    while it is down: every lease has expired when it comes back. Claims must still wait
    for the workers that held leases before it went down (here one slow to reconnect)."""
    executed: list[int] = []

    @stet.once(store=url, name="long", verbose=False)
    def long(i: int) -> int:
        executed.append(i)
        return i

    time.sleep(0.5)  # (the holder's lease row is written and renewed)
    os.kill(holder.pid, signal.SIGSTOP)
    url.server.stop("fast")
    time.sleep(9.0)  # longer than a lease (8 s), on the server's clock too
    url.server.start()
    answer: list[object] = []
    t = threading.Thread(target=lambda: answer.append(long(1)))
    t.start()
    t.join(1.5)
    assert t.is_alive() or executed == [], "a claim waits for the workers of before"
    os.kill(holder.pid, signal.SIGCONT)
    t.join(15.0)
    assert not t.is_alive() and answer == [None] and executed == []
    (tmp_path / "flag").write_text("")
    out, err = holder.communicate(timeout=60)
    assert out.strip() == "ran", err[-2000:]
    assert [r["i"] for r in pg_rows(url)] == ["1"]


#: A worker holding run ``spin(1)`` in its main thread until interrupted.
SPINNER = textwrap.dedent('''
    import sys, time
    import stet

    stet.configure(verbose=False)

    @stet.once(store=sys.argv[1], name="spin")
    def spin(i):
        print("holding", flush=True)
        while True:
            time.sleep(0.05)

    spin(1)
''')


def test_ctrl_c_is_prompt_while_the_server_cannot_be_reached(
    url: PgStore, tmp_path: Path
) -> None:
    """The helper thread reconnects without holding the backend's mutex: a server that
    accepts connections but never answers (frozen, or a host the network lost) keeps the
    helper waiting up to ``connect_timeout`` (30 s), never the worker's own thread, nor
    its exit."""
    script = tmp_path / "spinner.py"
    script.write_text(SPINNER)
    p = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    postmaster = int((url.server.data / "postmaster.pid").read_text().split()[0])
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "holding"
        with _raw(url) as raw:  # (connected before the server freezes)
            pids = [r[0] for r in raw.execute(
                f'SELECT session FROM "{url.table}_claims" WHERE k >= 0').fetchall()]
            assert pids
            os.kill(postmaster, signal.SIGSTOP)  # accepts connections, answers none
            raw.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
                        (pids,))
        time.sleep(1.5)  # the helper is now connecting
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        os.kill(postmaster, signal.SIGCONT)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "KeyboardInterrupt" in err, err[-2000:]
    assert took < 5.0, f"Ctrl-C took {took:.1f} s"


def test_a_worker_that_exited_never_holds_back_claims_after_a_crash(
    url: PgStore, tmp_path: Path
) -> None:
    """After a crash, claims wait for the workers that held leases before it: one that
    had exited cleanly holds nothing, and says so as it exits."""
    script = tmp_path / "one.py"
    script.write_text(textwrap.dedent('''
        import sys
        import stet

        stet.configure(verbose=False)
        print(stet.once(store=sys.argv[1], name="f")(lambda i: i)(0))
    '''))
    out = subprocess.run([sys.executable, str(script), url], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "0", out.stderr[-2000:]
    url.server.restart("immediate")
    calls: list[int] = []

    @stet.once(store=url, name="f", verbose=False)
    def f(i: int) -> int:
        calls.append(i)
        return i

    t0 = time.monotonic()
    assert f(1) == 1 and calls == [1]
    assert time.monotonic() - t0 < 4.0, "a claim waited for a worker that had exited"


@pytest.mark.slow
def test_ctrl_c_is_prompt_while_the_server_holds_a_renewal_unanswered(
    url: PgStore, tmp_path: Path
) -> None:
    """The server process of the worker's session freezes (as a network that drops
    every packet would look): the helper's renewal never gets an answer. The helper gives
    up on that session after a few seconds, so Ctrl-C is not kept waiting for it."""
    script = tmp_path / "spinner.py"
    script.write_text(SPINNER)
    p = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    frozen: list[int] = []
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "holding"
        with _raw(url) as raw:
            frozen = [r[0] for r in raw.execute(
                f'SELECT session FROM "{url.table}_claims" WHERE k >= 0').fetchall()]
        os.kill(frozen[0], signal.SIGSTOP)
        time.sleep(2.5)  # a renewal (every 2 s) is now waiting for its answer
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "KeyboardInterrupt" in err, err[-2000:]
    assert took < 8.0, f"Ctrl-C took {took:.1f} s"
