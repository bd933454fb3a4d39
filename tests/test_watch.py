"""Watching a sweep from the shell: failures keep their traceback in every store (and
``stet ls --failed`` / ``stet show`` print it), a sweep says at once when a run fails,
sweeps record their plan so that ``stet status`` counts what is left from another
process, and ``stet status --watch`` refreshes in a terminal or prints lines in a pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import stet
from stet._run import TRACEBACK_LIMIT
from stet._schema import TRACEBACK_FIELD
from stet.backends import get_backend
from test_readonly import as_user, shared_dir  # noqa: F401 - a fixture

PY = sys.executable


def stet_cmd(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "stet", *map(str, args)], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def _deep_helper(x: int) -> None:
    raise ValueError(f"x={x} is odd")


# ------------------------------------------------------------------ item 1: failures
def test_every_store_keeps_a_failures_traceback_and_another_process_prints_it(
        store_path: Path) -> None:
    @stet.once(store=str(store_path), verbose=False)
    def train(x: int) -> int:
        if x % 2:
            _deep_helper(x)
        return x

    summary = stet.sweep(train, stet.grid(x=[0, 1, 2]), progress=False)
    assert len(summary.failures) == 1

    df = stet.load(str(store_path), failures=True)
    (tb,) = list(df[TRACEBACK_FIELD])
    assert "in _deep_helper" in tb and tb.rstrip().endswith("ValueError: x=1 is odd")

    # another process, reading the store afresh
    shown = stet_cmd("show", store_path, "--where", "x=1", "--failed")
    assert shown.returncode == 0, shown.stderr
    assert "Traceback (most recent call last):" in shown.stdout
    assert "in _deep_helper" in shown.stdout and "ValueError: x=1 is odd" in shown.stdout
    listed = stet_cmd("ls", store_path, "--failed")
    assert listed.returncode == 0, listed.stderr
    tail = listed.stdout.split("\n\n", 1)[1]  # under the table
    assert "train(x=1):" in tail and "ValueError: x=1 is odd" in tail
    assert "Traceback (most recent" not in tail  # the last lines only
    status = stet_cmd("status", store_path)
    assert "Planned: 2 of 3 done (66%), 1 failed, 0 running, 0 pending" in status.stdout


def test_a_traceback_too_long_keeps_its_end_and_says_it_was_cut(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), verbose=False)
    def train(x: int) -> None:
        raise ValueError("a" * 30_000 + "THE END")

    stet.sweep(train, [{"x": 1}], progress=False)
    (failure,) = get_backend(store).failures()
    tb = failure[TRACEBACK_FIELD]
    first, rest = tb.split("\n", 1)
    assert re.fullmatch(r"\[traceback cut: its first \d+ characters are not kept\]", first)
    assert len(rest) == TRACEBACK_LIMIT and rest.rstrip().endswith("THE END")


def test_a_sweep_prints_a_line_as_soon_as_a_run_fails(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent(f"""
        import stet, time
        @stet.once(store={str(tmp_path / 'runs.csv')!r}, verbose=False)
        def train(x):
            if x == 0:
                raise KeyError("missing_key")
            time.sleep(0.05)
        stet.sweep(train, stet.grid(x=[0, 1, 2, 3]), progress="lines")
    """))
    r = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=60)
    lines = r.stderr.splitlines()
    failed = "[stet] failed: train(x=0): KeyError: 'missing_key'"
    assert failed in lines, r.stderr
    # said when it happened: before the runs after it, not only in the closing summary
    assert lines.index(failed) < next(i for i, line in enumerate(lines) if "4/4" in line)


# ------------------------------------------------------------------ item 2: plans
SWEEP = """
import sys, time
from pathlib import Path
import stet

gate = Path(sys.argv[2])

@stet.once(store=sys.argv[1], verbose=False)
def train(lr, seed):
    if seed >= 2:  # the second half waits for the test to let it go
        while not gate.exists():
            time.sleep(0.02)
    return lr

stet.sweep(train, stet.grid(lr=[0.1, 0.01], seed=[0, 1, 2, 3]), progress=False)
"""


def test_stet_status_in_another_process_counts_a_running_sweeps_plan(tmp_path: Path) -> None:
    store, gate, script = tmp_path / "runs.csv", tmp_path / "go", tmp_path / "sweep.py"
    script.write_text(SWEEP)
    proc = subprocess.Popen([PY, str(script), str(store), str(gate)])
    try:
        deadline = time.monotonic() + 30
        out = ""
        while time.monotonic() < deadline:
            out = stet_cmd("status", store).stdout
            if "1 running" in out:
                break
            time.sleep(0.1)
        assert "Planned: 2 of 8 done (25%), 0 failed, 1 running, 5 pending" in out, out
        gate.touch()
        assert proc.wait(timeout=60) == 0
    finally:
        gate.touch()
        proc.kill()
        proc.wait()
    out = stet_cmd("status", store).stdout
    assert "Planned: 8 of 8 done (100%), 0 failed, 0 running, 0 pending" in out


def test_plans_of_several_sweeps_combine_as_a_union(tmp_path: Path) -> None:
    store = tmp_path / "runs.json"

    @stet.once(store=str(store), verbose=False)
    def train(lr: float, seed: int) -> None:
        pass

    stet.sweep(train, stet.grid(lr=[0.1], seed=[0, 1]), progress=False)
    stet.sweep(train, stet.grid(lr=[0.1, 0.2], seed=[0, 1]), progress=False)  # extended
    stet.sweep(train, stet.grid(lr=[0.1], seed=[0, 1]), progress=False)  # a rerun
    plans = get_backend(store).plans()
    assert sorted((p["lr"], p["seed"]) for p in plans) == [
        ("0.1", "0"), ("0.1", "1"), ("0.2", "0"), ("0.2", "1")]
    assert "Planned: 4 of 4 done" in stet_cmd("status", store).stdout


def test_the_grid_marks_pending_only_what_was_planned_and_not_done(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), verbose=False)
    def train(a: int, b: int) -> None:
        if a > 1:
            raise KeyboardInterrupt  # the sweep is interrupted after its first run

    diagonal = [{"a": i, "b": i} for i in (1, 2, 3)]
    with pytest.raises(stet.SweepInterrupted):
        stet.sweep(train, diagonal, progress=False)
    out = stet_cmd("status", store, "--grid", "a,b").stdout
    assert "Planned: 1 of 3 done (33%), 0 failed, 0 running, 2 pending" in out
    assert "· pending 2" in out  # not the 8 cells of a 3x3 grid with no run recorded


def test_a_full_reset_forgets_the_plan_and_a_partial_one_keeps_it(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), verbose=False)
    def train(x: int) -> None:
        pass

    stet.sweep(train, stet.grid(x=[1, 2, 3]), progress=False)
    assert stet_cmd("reset", store, "--where", "x=1", "--yes").returncode == 0
    assert "Planned: 2 of 3 done (66%), 0 failed, 0 running, 1 pending" in stet_cmd(
        "status", store).stdout
    assert stet_cmd("reset", store, "--yes").returncode == 0
    assert get_backend(store).plans() == []
    assert "Planned" not in stet_cmd("status", store).stdout


def test_a_plan_with_no_run_yet_is_what_stet_status_shows(store_path: Path) -> None:
    # (record_plan: as the Hydra sweeper records its jobs, before any of them runs)
    from stet._run import record_plan, run_of

    @stet.once(store=str(store_path), verbose=False)
    def train(x: int) -> None:
        pass

    record_plan(run_of(train), [{"x": 1}, {"x": 2}, {"x": 1}])
    shown = stet_cmd("status", store_path)
    assert "Planned: 0 of 2 done (0%), 0 failed, 0 running, 2 pending" in shown.stdout, \
        shown.stdout + shown.stderr


def test_the_plan_is_kept_in_postgresql_in_a_table_of_its_own(pg_server: object) -> None:
    from conftest import pg_store

    url = pg_store(pg_server)

    @stet.once(store=str(url), verbose=False)
    def train(x: int) -> None:
        pass

    stet.sweep(train, stet.grid(x=[1, 2]), progress=False)
    stet.sweep(train, stet.grid(x=[2, 3]), progress=False)
    import psycopg

    with psycopg.connect(url.server.url()) as conn:  # type: ignore[attr-defined]
        n = conn.execute(f'SELECT count(*) FROM "{url.table}_plan"').fetchone()
    assert n is not None and n[0] == 3


# ------------------------------------------------------------------ --watch
def _finished_store(tmp_path: Path) -> Path:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), verbose=False)
    def train(x: int) -> None:
        if x == 2:
            raise ValueError("no")

    stet.sweep(train, stet.grid(x=[1, 2, 3]), progress=False)
    return store


def test_watch_prints_plain_lines_when_its_output_is_a_pipe(tmp_path: Path) -> None:
    store = _finished_store(tmp_path)
    r = stet_cmd("status", store, "--watch", "--interval", "0.1")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout
    (line,) = r.stdout.splitlines()  # the planned runs are all done or failed: it stops
    assert re.fullmatch(r"\d\d:\d\d:\d\d Planned: 2 of 3 done \(66%\), 1 failed, 0 running, "
                        r"0 pending.*", line)


def test_watch_refreshes_in_place_in_a_terminal(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), verbose=False)
    def train(x: int) -> None:
        pass

    stet.sweep(train, stet.grid(x=[1, 2]), progress=False)
    get_backend(store).add_plan([{"_stet_func": "train", "x": "3"}])  # never done
    master, slave = pty.openpty()
    proc = subprocess.Popen([PY, "-m", "stet", "status", str(store), "--watch",
                             "--interval", "0.1"], stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while out.count(b"Planned:") < 3 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    text = out.decode()
    assert text.count("Planned: 2 of 3 done (66%), 0 failed, 0 running, 1 pending") >= 3
    n = text.split("\x1b[J")[1].split("\x1b[")[0].count("\n")  # the first frame's lines
    # each refresh goes back up over the lines drawn before, clears, and draws anew
    assert f"\x1b[{n}F\x1b[J" in text, text


def test_a_done_sweep_reruns_where_the_user_cannot_write_its_plan(
        shared_dir: Path) -> None:  # noqa: F811 - test_readonly's fixture

    store = shared_dir / "runs.csv"

    @stet.once(store=str(store), verbose=False, name="train")
    def train(x: int) -> None:
        pass

    stet.sweep(train, stet.grid(x=[1, 2]), progress=False)
    Path(f"{store}.plan.jsonl").unlink()  # as in a store made before plans were kept
    r = as_user(f"""
        import stet
        @stet.once(store={str(store)!r}, verbose=False, name="train")
        def train(x):
            pass
        s = stet.sweep(train, stet.grid(x=[1, 2]), progress=False)
        print("SKIPPED", s.skipped_done)
    """, shared_dir)
    assert "SKIPPED 2" in r.stdout, r.stderr[-3000:]  # nothing to run: no plan needed, no error


def test_a_failure_line_goes_above_the_bar_which_is_drawn_again_whole(tmp_path: Path) -> None:
    import fcntl
    import struct
    import termios

    script = tmp_path / "bar.py"
    script.write_text(textwrap.dedent(f"""
        import stet, time
        @stet.once(store={str(tmp_path / 'runs.csv')!r}, verbose=False)
        def train(x):
            time.sleep(0.2)
            if x == 1:
                raise KeyError("missing_key")
        stet.sweep(train, stet.grid(x=[0, 1, 2]))
    """))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([PY, str(script)], stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    try:
        while select.select([master], [], [], 30)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child is gone
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    text = out.decode()
    line = "[stet] failed: train(x=1): KeyError: 'missing_key'\r\n"
    before, after = text.split(line, 1)
    assert before.rstrip(" ").endswith("\r") and "train:  33%|" in before  # bar cleared
    assert after.startswith("\rtrain:  33%|")  # and drawn again under the line
    assert "3/3" in after


def test_stet_status_of_a_function_counts_its_own_plan(tmp_path: Path) -> None:
    store = str(tmp_path / "runs.csv")

    @stet.once(store=store, verbose=False, name="f")
    def f(x: int) -> None:
        pass

    @stet.once(store=store, verbose=False, name="g")
    def g(x: int) -> None:
        pass

    stet.sweep(f, stet.grid(x=[1, 2]), progress=False)
    from stet._run import record_plan, run_of

    record_plan(run_of(g), [{"x": 1}, {"x": 2}, {"x": 3}])
    assert str(stet.status(f).progress_line()).startswith("Planned: 2 of 2 done (100%)")
    assert str(stet.status(store).progress_line()).startswith("Planned: 2 of 5 done (40%)")
