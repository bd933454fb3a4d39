"""Ctrl-C on stet.sweep, through each kind of executor, in real subprocesses.

The first Ctrl-C starts no new run (not even one a process pool had already queued for a
worker) and waits for the runs in progress, which are recorded and counted; the second
stops at once (a process pool's workers are killed, threads are left to end unrecorded).
The summary counts what the store holds. Each run writes a start and an end marker file
(time and pid), by which the tests synchronise and check what ran when.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest

import stet
from stet.backends import get_backend

PY = sys.executable

WORK = '''
import os
import time

import stet

MARKS = os.environ["STET_TEST_MARKS"]
DURATIONS = [float(d) for d in os.environ["STET_TEST_DURATIONS"].split(",")]
FAIL = int(os.environ.get("STET_TEST_FAIL", "-1"))


def mark(kind, x):
    path = os.path.join(MARKS, f"{kind}-{x}")
    with open(path + ".tmp", "w") as f:
        f.write(f"{time.time()!r} {os.getpid()}")
    os.replace(path + ".tmp", path)


@stet.once(store=os.environ["STET_TEST_STORE"], key=["x"])
def work(x):
    mark("start", x)
    time.sleep(DURATIONS[x % len(DURATIONS)])
    mark("end", x)
    if x == FAIL:
        raise ValueError(f"x={x} fails")
    return x
'''

DRIVER = '''
import json
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import stet
import work

if __name__ == "__main__":
    # Ctrl-C raises KeyboardInterrupt even if started where SIGINT is ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, progress = sys.argv[1], sys.argv[2]
    stop_on_error = mode.endswith("-stop")
    mode = mode.removesuffix("-stop")
    settings = [{"x": x} for x in range(8)]
    out = {}

    def go(executor=None):
        try:
            return stet.sweep(work.work, settings, executor=executor, progress=progress,
                              stop_on_error=stop_on_error)
        finally:
            out["t_return"] = time.time()  # before the pool's shutdown

    try:
        if mode == "process":
            with ProcessPoolExecutor(2) as pool:
                s = go(pool)
        elif mode == "thread":
            with ThreadPoolExecutor(2) as pool:
                s = go(pool)
        elif mode == "dask":
            from dask.distributed import Client, LocalCluster

            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                s = go(client.get_executor())
        else:
            s = go()
    except ValueError as exc:
        print(json.dumps({"error": str(exc), **out}), flush=True)
        sys.exit(4)
    except stet.SweepInterrupted as exc:
        s = exc.summary
        out.update(interrupted=s.interrupted, ran=s.ran, not_run=s.not_run,
                   failed=s.failed, t_exit=time.time())
        print(json.dumps(out), flush=True)
        sys.exit(3)
    print(json.dumps({"interrupted": False, "ran": s.ran, "done": s.skipped_done}), flush=True)
'''


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "work.py").write_text(WORK)
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "marks").mkdir()
    env = dict(os.environ)
    src = str(Path(stet.__file__).parent.parent)  # the stet under test, in the subprocesses too
    env.update(STET_TEST_MARKS=str(tmp_path / "marks"), PYTHONPATH=f"{tmp_path}{os.pathsep}{src}",
               STET_QUIET="1", STET_TEST_STORE=str(tmp_path / "runs.sqlite"))
    return {"dir": tmp_path, "env": env, "marks": tmp_path / "marks"}


class Sweep:
    """The driver running in a subprocess of its own session (a terminal's Ctrl-C goes to
    its process group: ``press(group=True)``)."""

    def __init__(self, lab: dict[str, Any], mode: str, durations: str, progress: str = "lines",
                 store: str = "runs.sqlite", **env: str) -> None:
        self.lab = lab
        self.store = lab["dir"] / store
        env = {**lab["env"], "STET_TEST_DURATIONS": durations,
               "STET_TEST_STORE": str(self.store), **env}
        self.err_path = lab["dir"] / f"stderr-{mode}.txt"
        self.err_file = self.err_path.open("w")
        self.p = subprocess.Popen([PY, "driver.py", mode, progress], cwd=lab["dir"], env=env,
                                  stdout=subprocess.PIPE, stderr=self.err_file, text=True,
                                  start_new_session=True)

    def press(self, group: bool = False) -> float:
        """Ctrl-C: SIGINT to the driver (or its whole process group); returns the time."""
        t = time.time()
        if group:
            os.killpg(self.p.pid, signal.SIGINT)
        else:
            os.kill(self.p.pid, signal.SIGINT)
        return t

    def stderr(self) -> str:
        return self.err_path.read_text()

    def finish(self, timeout: float = 120) -> tuple[int, dict[str, Any]]:
        try:
            out, _ = self.p.communicate(timeout=timeout)
        finally:
            if self.p.poll() is None:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
            self.err_file.close()
        return self.p.returncode, json.loads(out.strip().splitlines()[-1])

    def marks(self, kind: str) -> dict[int, tuple[float, int]]:
        found = {}
        for path in self.lab["marks"].glob(f"{kind}-*"):
            if not path.name.endswith(".tmp"):
                t, pid = path.read_text().split()
                found[int(path.name.split("-")[1])] = (float(t), int(pid))
        return found

    def recorded(self) -> set[int]:
        with get_backend(self.store) as b:
            return {int(r["x"]) for r in b.load()}

    def wait_for(self, what: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert self.p.poll() is None, f"the sweep ended early: {self.stderr()}"
            assert time.monotonic() < deadline, f"timed out; stderr: {self.stderr()}"
            time.sleep(0.02)

    def wait_started(self, *xs: int, timeout: float = 120) -> None:
        self.wait_for(lambda: set(xs) <= set(self.marks("start")), timeout)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# Runs 0 and 1 are short, the rest long: once 2 and 3 have started, a process pool has
# more calls queued for its workers than are running.
SHORT_THEN = "0.3,0.3,{long}"


def _durations(long: float) -> str:
    return SHORT_THEN.format(long=",".join([str(long)] * 6))


@pytest.mark.parametrize("mode", ["process", "thread"])
@pytest.mark.parametrize("group", [False, True], ids=["main-process", "process-group"])
def test_after_ctrl_c_no_run_starts_and_the_runs_in_progress_are_recorded(
        lab: dict[str, Any], mode: str, group: bool) -> None:
    sweep = Sweep(lab, mode, _durations(2.0))
    sweep.wait_started(2, 3)
    t_int = sweep.press(group)
    rc, out = sweep.finish()
    assert rc == 3, sweep.stderr()
    started, ended, recorded = sweep.marks("start"), sweep.marks("end"), sweep.recorded()
    late = {x: t - t_int for x, (t, _) in started.items() if t > t_int}
    assert not late, f"runs started after Ctrl-C: {late}"
    assert {2, 3} <= recorded  # in progress at Ctrl-C: finished and recorded
    assert recorded == set(started) == set(ended)  # nothing started that was not recorded
    assert out["interrupted"] and out["ran"] == len(recorded) and out["failed"] == 0
    assert out["ran"] + out["not_run"] == 8
    assert "waiting for 2 runs in progress to finish" in sweep.stderr()
    assert f"{out['ran']} ran" in sweep.stderr().splitlines()[-1]  # the summary is true
    assert out["t_return"] - t_int < 2.0 + 15  # the runs in progress, not the rest
    assert not Path(str(sweep.store) + "-wal").exists()  # SQLite finished at exit
    again = Sweep(lab, "here", "0.01").finish()
    assert again == (0, {"interrupted": False, "ran": 8 - len(recorded),
                         "done": len(recorded)})


@pytest.mark.parametrize("group", [False, True], ids=["main-process", "process-group"])
def test_a_second_ctrl_c_kills_the_process_pool_and_records_nothing_more(
        lab: dict[str, Any], group: bool) -> None:
    # A Parquet store: what killed workers appended is folded (or dropped) at exit.
    sweep = Sweep(lab, "process", _durations(60.0), store="runs.parquet")
    sweep.wait_started(2, 3)
    sweep.press(group)
    sweep.wait_for(lambda: "waiting for" in sweep.stderr())
    t2 = sweep.press(group)
    rc, out = sweep.finish()
    assert rc == 3, sweep.stderr()
    assert out["t_return"] - t2 < 5, out  # at once, not after the 60 s runs
    assert not sweep.marks("end").keys() - {0, 1}
    assert sweep.recorded() == {0, 1}
    assert (out["ran"], out["not_run"]) == (2, 6)
    assert "Ctrl-C again: stopped at once; killed the worker processes" in sweep.stderr()
    started = sweep.marks("start")
    assert set(started) == {0, 1, 2, 3}
    assert not any(_pid_alive(started[x][1]) for x in (2, 3))  # the workers are gone
    assert not Path(str(sweep.store) + ".stet-log").exists()  # the store file holds all
    again = Sweep(lab, "process", "0.01", store="runs.parquet").finish()
    assert again == (0, {"interrupted": False, "ran": 6, "done": 2})  # claims are free


@pytest.mark.slow
def test_a_second_ctrl_c_leaves_threads_to_end_without_recording_them(
        lab: dict[str, Any]) -> None:
    pytest.importorskip("tqdm")
    sweep = Sweep(lab, "thread", _durations(6.0), progress="bar")
    sweep.wait_started(2, 3)
    sweep.press()
    sweep.wait_for(lambda: "waiting for" in sweep.stderr())
    t2 = sweep.press()
    rc, out = sweep.finish()
    assert rc == 3, sweep.stderr()
    assert out["t_return"] - t2 < 2.5, out  # the sweep returns at once ...
    ended = sweep.marks("end")
    assert {2, 3} <= set(ended)  # ... the pool's shutdown waited for its threads ...
    assert all(t > out["t_return"] for t, _ in (ended[2], ended[3]))
    assert sweep.recorded() == {0, 1}  # ... whose runs were not recorded
    assert (out["ran"], out["not_run"]) == (2, 6)
    err = sweep.stderr()
    assert "go on in their threads" in err and "will not be recorded" in err
    # The bar was closed, then the summary written below it.
    assert err.rstrip().splitlines()[-1].startswith("[stet] work: 8 settings: 2 ran")
    assert "8/8" not in err and "2/8" in err


def test_ctrl_c_in_this_process_stops_the_run_in_progress_unrecorded(
        lab: dict[str, Any]) -> None:
    sweep = Sweep(lab, "here", _durations(30.0))
    sweep.wait_started(2)
    t_int = sweep.press(group=True)
    rc, out = sweep.finish()
    assert rc == 3, sweep.stderr()
    assert out["t_return"] - t_int < 5  # the function itself was interrupted
    assert sweep.recorded() == {0, 1} and set(sweep.marks("start")) == {0, 1, 2}
    assert (out["ran"], out["not_run"]) == (2, 6)


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["main-process", "process-group"])
def test_ctrl_c_on_a_dask_sweep_counts_what_ran(lab: dict[str, Any], group: bool) -> None:
    pytest.importorskip("dask.distributed")
    sweep = Sweep(lab, "dask", _durations(3.0))
    sweep.wait_started(2, 3, timeout=180)
    t_int = sweep.press(group)
    rc, out = sweep.finish(timeout=180)
    for path in Path(tempfile.gettempdir()).glob(f"stet-sweep-{sweep.p.pid}-*"):
        path.unlink()  # the stop files stay for tasks Dask may still be running
    assert rc == 3, sweep.stderr()
    started, recorded = sweep.marks("start"), sweep.recorded()
    assert not [x for x, (t, _) in started.items() if t > t_int]
    assert out["ran"] == len(recorded) and out["ran"] + out["not_run"] == 8
    if group:  # Dask's workers got Ctrl-C too and left the cluster; their runs in
        assert recorded == {0, 1}  # progress were not recorded (they run again next time)
    else:
        assert {2, 3} <= recorded == set(started)


def test_stop_on_error_starts_no_run_a_process_pool_had_queued(lab: dict[str, Any]) -> None:
    # Run 1 fails at once while run 0 takes 2 s; its worker takes run 2 (queued before the
    # failure was known), and the worker of run 0 then takes a queued call that must not
    # start.
    sweep = Sweep(lab, "process-stop", "2,0.05,3,3,3,3,3,3",
                  STET_TEST_FAIL="1")
    rc, out = sweep.finish()
    assert rc == 4 and out["error"] == "x=1 fails", sweep.stderr()
    started = sweep.marks("start")
    t_fail = sweep.marks("end")[1][0]
    late = {x: t - t_fail for x, (t, _) in started.items() if t > t_fail + 1.0}
    assert not late, f"runs started after the failure: {late}"
    assert sweep.recorded() == set(started) - {1}


# ------------------------------------------------------------------- in this process
# A relative store is resolved at decoration (here, at import): put it in a fresh
# directory of its own, not wherever pytest was started.
@stet.once(store=Path(tempfile.mkdtemp()) / "pickled.csv", key=["x"])
def pickled_work(x: int) -> int:
    return x


class PicklingExecutor(Executor):
    """Runs each call here, after a round trip through pickle (as a worker's would be)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        fn, args, kwargs = pickle.loads(pickle.dumps((fn, args, kwargs)))
        fut: Future[Any] = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def test_the_sweeps_own_process_keeps_its_ctrl_c(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Pool workers ignore Ctrl-C (the sweep's process handles it); a call that comes back
    # pickled to the sweep's own process must not make it ignore Ctrl-C too.
    monkeypatch.chdir(tmp_path)
    presses: list[int] = []

    def handler(signum: int, frame: Any) -> None:  # the user's own (not watched by stet)
        presses.append(signum)

    before = signal.signal(signal.SIGINT, handler)
    try:
        s = stet.sweep(pickled_work, [{"x": x} for x in range(3)],
                       executor=PicklingExecutor(), progress=False)
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert s.ran == 3 and sorted(r for _, r in s.results) == [0, 1, 2]


def test_a_stop_flag_sent_elsewhere_reads_the_stop_from_its_files() -> None:
    from stet._interrupt import ABANDON, STOP, StopFlag

    flag = StopFlag()
    copy = pickle.loads(pickle.dumps(flag))
    assert copy.remote and not flag.remote
    assert not copy.stopped() and copy.begin_record()
    flag.set(STOP)
    assert flag.written and copy.stopped() and copy.begin_record()
    flag.set(ABANDON)
    assert not copy.begin_record() and not flag.begin_record()
    flag.remove()
    assert not copy.stopped() and not Path(flag.base + ".stop").exists()


def test_ctrl_c_during_a_thread_pool_sweep_in_this_process(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    started: list[int] = []

    @stet.once(store=str(tmp_path / "runs.csv"), key=["x"])
    def f(x: int) -> int:
        started.append(x)
        if x == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while runs 2 and 3 are going
            time.sleep(0.5)  # ... and this one still finishes, and is recorded
        time.sleep(0.05)
        return x

    with ThreadPoolExecutor(2) as pool, pytest.raises(stet.SweepInterrupted) as info:
        stet.sweep(f, [{"x": x} for x in range(20)], executor=pool, progress=False)
    s = info.value.summary
    with get_backend(tmp_path / "runs.csv") as b:
        recorded = {int(r["x"]) for r in b.load()}
    assert 2 in recorded and recorded == set(started)
    assert len(started) <= 6  # the pool's queue was cancelled, not run
    assert (s.ran, s.not_run) == (len(recorded), 20 - len(recorded)) and s.interrupted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
