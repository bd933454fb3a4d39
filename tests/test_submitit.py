"""stet.sweep and stet.submit through submitit: real LocalExecutor jobs (subprocesses,
no SLURM), a task killed by its time limit, Ctrl-C, and DebugExecutor.

Each run writes a start and an end marker file (its pid), by which the tests see which
task ran what, and that nothing ran twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stet
from stet.backends import get_backend

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
try:
    import submitit
except ImportError:  # pragma: no cover
    if IN_CI:
        raise  # CI installs stet[dev]: a missing submitit fails, never skips
    pytest.skip("submitit is not installed (pip install 'stet[submitit]')",
                allow_module_level=True)

SRC = str(Path(stet.__file__).parent.parent)

WORK = '''
import os
import time

import stet

MARKS = os.environ["STET_TEST_MARKS"]


def mark(kind, x):
    path = os.path.join(MARKS, f"{kind}-{x}-{os.getpid()}-{time.time_ns()}")
    open(path, "w").close()


@stet.once(store=os.environ["STET_TEST_STORE"], key=["x"])
def work(x, seconds=0.0, fail=False, ctrl_c=False):
    mark("start", x)
    if ctrl_c:
        raise KeyboardInterrupt  # as Ctrl-C would, in a run in the sweep's process
    time.sleep(seconds)
    mark("end", x)
    if fail:
        raise ValueError(f"x={x} fails")
    return x * 10
'''


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    (tmp_path / "submitit_work.py").write_text(WORK)
    marks = tmp_path / "marks"
    marks.mkdir()
    store = tmp_path / "runs.csv"
    # The jobs are processes started by submitit with this process's environment.
    monkeypatch.setenv("STET_TEST_MARKS", str(marks))
    monkeypatch.setenv("STET_TEST_STORE", str(store))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), SRC]))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("submitit_work", None)
    import submitit_work

    yield {"tmp": tmp_path, "marks": marks, "store": store, "work": submitit_work.work,
           "folder": tmp_path / "jobs"}
    sys.modules.pop("submitit_work", None)


def _marks(lab: dict[str, Any], kind: str) -> list[tuple[int, int]]:
    """(x, pid) of each marker of ``kind``."""
    out = []
    for p in lab["marks"].iterdir():
        k, x, pid, _ = p.name.split("-")
        if k == kind:
            out.append((int(x), int(pid)))
    return sorted(out)


def _done(lab: dict[str, Any]) -> list[int]:
    with get_backend(lab["store"]) as b:
        return sorted(int(r["x"]) for r in b.load())


def _local(lab: dict[str, Any], timeout_min: float = 1.0) -> Any:
    ex = submitit.LocalExecutor(folder=lab["folder"])
    ex.update_parameters(timeout_min=timeout_min)
    return ex


def test_a_submitit_sweep_submits_the_pending_settings_as_one_chunked_array(
        lab: dict[str, Any]) -> None:
    work = lab["work"]
    settings = [{"x": x} for x in range(6)]
    s = stet.sweep(work, settings, executor=_local(lab), chunk=2, progress=False)
    assert (s.ran, s.skipped_done, s.failed, s.not_run) == (6, 0, 0, 0), s
    assert sorted(s.results, key=lambda r: r[0]["x"]) == [({"x": x}, 10 * x) for x in range(6)]
    starts = _marks(lab, "start")
    assert [x for x, _ in starts] == list(range(6))
    pids = {pid for _, pid in starts}
    assert len(pids) == 3  # three tasks of two settings
    for x in range(0, 6, 2):  # a chunk's settings ran in one task, in turn
        assert dict(starts)[x] == dict(starts)[x + 1]

    wider = [{"x": x} for x in range(8)]
    s2 = stet.sweep(work, wider, executor=_local(lab), chunk=5, progress=False)
    assert (s2.ran, s2.skipped_done, s2.not_run) == (2, 6, 0), s2
    starts = _marks(lab, "start")
    assert [x for x, _ in starts] == list(range(8))  # nothing ran twice
    assert starts[6][1] == starts[7][1]  # the 2 pending settings: one task
    assert _done(lab) == list(range(8))


def test_a_failing_run_is_counted_and_its_chunk_goes_on(lab: dict[str, Any]) -> None:
    settings = [{"x": x, "fail": x == 1} for x in range(4)]
    s = stet.sweep(lab["work"], settings, executor=_local(lab), chunk=4, progress=False)
    assert (s.ran, s.failed, s.not_run) == (3, 1, 0), s
    f = s.failures[0]
    assert f.setting == {"x": 1, "fail": True}
    assert (f.error_type, f.message) == ("ValueError", "x=1 fails")
    assert "ValueError" in f.traceback
    assert _done(lab) == [0, 2, 3]


@pytest.mark.slow
def test_a_task_killed_by_its_time_limit_leaves_its_finished_runs_and_the_rerun_submits_the_rest(
        lab: dict[str, Any]) -> None:
    work = lab["work"]
    settings = [{"x": x, "seconds": 1.5} for x in range(6)]
    # LocalExecutor's time limit is whole seconds: 0.1 min is 6 s, for 9 s of runs.
    s = stet.sweep(work, settings, executor=_local(lab, timeout_min=0.1), chunk=6,
                   progress=False)
    done = _done(lab)
    assert 1 <= len(done) < 6, (done, s)
    assert done == list(range(len(done)))  # the chunk's runs, in turn, until the limit
    assert (s.ran, s.failed, s.not_run) == (len(done), 0, 6 - len(done)), s
    assert s.complete is False and s.ok is False
    with get_backend(lab["store"]) as b:
        assert b.failures() == []  # the run the limit stopped is not recorded at all
    killed = len(done)  # the run in progress at the limit: started, never ended
    assert killed in [x for x, _ in _marks(lab, "start")]
    assert killed not in [x for x, _ in _marks(lab, "end")]

    s2 = stet.sweep(work, settings, executor=_local(lab), progress=False)
    assert (s2.ran, s2.skipped_done, s2.not_run) == (6 - len(done), len(done), 0), s2
    assert _done(lab) == list(range(6))  # each recorded once
    rerun = [x for x, _ in _marks(lab, "start")]
    assert sorted(rerun) == sorted([*range(6), killed])  # only the killed run started again


@pytest.mark.slow
def test_a_task_killed_outright_leaves_its_finished_runs(lab: dict[str, Any]) -> None:
    """SIGKILL of a task's process (the node lost, the OOM killer): no word comes back;
    the store says which runs are done."""
    work = lab["work"]
    settings = [{"x": x, "seconds": 1.0} for x in range(4)]
    ex = _local(lab)
    import threading

    def kill_when_two_done() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_marks(lab, "end")) < 2:
            time.sleep(0.05)
        for x, pid in _marks(lab, "start"):
            if x == 2:
                os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_two_done)
    killer.start()
    s = stet.sweep(work, settings, executor=ex, chunk=4, progress=False)
    killer.join()
    assert _done(lab) == [0, 1]
    assert (s.ran, s.failed, s.not_run) == (2, 0, 2), s
    s2 = stet.sweep(work, settings, executor=_local(lab), progress=False)
    assert (s2.ran, s2.skipped_done) == (2, 2), s2
    assert _done(lab) == [0, 1, 2, 3]


def test_a_task_that_cannot_import_the_function_counts_its_settings_as_failed(
        lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", SRC)  # the jobs do not see submitit_work.py
    s = stet.sweep(lab["work"], [{"x": x} for x in range(3)], executor=_local(lab), chunk=2,
                   progress=False)
    assert (s.ran, s.failed, s.not_run) == (0, 3, 0), s
    assert "submitit_work" in s.failures[0].message  # the task's own error, said
    assert not lab["store"].exists() or _done(lab) == []
    assert _marks(lab, "start") == []


def test_the_debug_executor_runs_the_array_in_this_process(lab: dict[str, Any]) -> None:
    ex = submitit.DebugExecutor(folder=lab["folder"])
    s = stet.sweep(lab["work"], [{"x": x} for x in range(5)], executor=ex, chunk=2,
                   progress=False)
    assert (s.ran, s.failed, s.not_run) == (5, 0, 0), s
    assert {pid for _, pid in _marks(lab, "start")} == {os.getpid()}
    s2 = stet.sweep(lab["work"], [{"x": x} for x in range(5)], executor=ex, progress=False)
    assert (s2.ran, s2.skipped_done) == (0, 5)


def test_ctrl_c_with_the_debug_executor_stops_the_run_in_progress_as_without_executor(
        lab: dict[str, Any]) -> None:
    ex = submitit.DebugExecutor(folder=lab["folder"])
    settings = [{"x": x, "ctrl_c": x == 2} for x in range(5)]
    with pytest.raises(stet.SweepInterrupted) as info:
        stet.sweep(lab["work"], settings, executor=ex, chunk=2, progress=False)
    s = info.value.summary
    assert (s.ran, s.not_run, s.interrupted) == (2, 3, True), s
    assert _done(lab) == [0, 1]
    assert [x for x, _ in _marks(lab, "start")] == [0, 1, 2]  # nothing after the Ctrl-C


def test_the_auto_executor_on_a_local_cluster_is_taken(lab: dict[str, Any]) -> None:
    ex = submitit.AutoExecutor(folder=lab["folder"], cluster="local")
    ex.update_parameters(timeout_min=1)
    s = stet.sweep(lab["work"], [{"x": x} for x in range(3)], executor=ex, progress=False)
    assert (s.ran, s.not_run) == (3, 0), s


@pytest.mark.slow
def test_submit_returns_at_once_and_status_shows_the_runs_as_they_are_recorded(
        lab: dict[str, Any]) -> None:
    work = lab["work"]
    settings = [{"x": x, "seconds": 1.5} for x in range(4)]

    def status() -> str:
        res = subprocess.run([sys.executable, "-m", "stet", "status", str(lab["store"])],
                             capture_output=True, text=True, env={**os.environ}, timeout=60)
        return res.stdout

    t0 = time.monotonic()
    jobs = stet.submit(work, settings, executor=_local(lab), chunk=2)
    assert time.monotonic() - t0 < 2.0  # the runs take 3 s per task, plus startup
    assert len(jobs) == 2
    seen_running = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not seen_running:
        seen_running = "work: 0 completed, 2 running now" in status()
    assert seen_running  # one run of each task, claimed
    outcomes = [o for job in jobs for o in job.result()]
    assert [o.kind.value for o in outcomes] == ["ran"] * 4
    done = status()
    assert "Completed runs: 4" in done
    assert "Planned: 4 of 4 done (100%)" in done  # submit recorded its plan in the store
    assert stet.submit(work, settings, executor=_local(lab)) == []  # all done: nothing


def test_chunk_is_checked_and_only_for_submitit(lab: dict[str, Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with pytest.raises(ValueError, match="chunk="):
        stet.sweep(lab["work"], [{"x": 1}], executor=_local(lab), chunk=0)
    with ThreadPoolExecutor(1) as pool, pytest.raises(TypeError, match="chunk= is for submitit"):
        stet.sweep(lab["work"], [{"x": 1}], executor=pool, chunk=2)
    with pytest.raises(TypeError, match="submitit executor"):
        stet.submit(lab["work"], [{"x": 1}], executor=None)
    assert _marks(lab, "start") == []


DRIVER = '''
import json, signal, sys
import submitit
import stet
import submitit_work

signal.signal(signal.SIGINT, signal.default_int_handler)
ex = submitit.LocalExecutor(folder=sys.argv[1])
ex.update_parameters(timeout_min=1)
settings = [{"x": x, "seconds": 2.5} for x in range(6)]
try:
    s = stet.sweep(submitit_work.work, settings, executor=ex, chunk=3, progress="lines")
except stet.SweepInterrupted as exc:
    s = exc.summary
    print(json.dumps({"interrupted": True, "ran": s.ran, "not_run": s.not_run}), flush=True)
    sys.exit(3)
print(json.dumps({"interrupted": False, "ran": s.ran}), flush=True)
'''


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_lets_the_runs_in_progress_finish_or_at_the_second_cancels_every_task(
        lab: dict[str, Any], presses: int) -> None:
    (lab["tmp"] / "driver.py").write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(lab["tmp"] / "driver.py"), str(lab["folder"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ}, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_marks(lab, "start")) < 2:
        time.sleep(0.05)
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)  # the sweep's process only, as a kill -INT would
        time.sleep(0.3)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (out, err)
    result = json.loads(out.strip().splitlines()[-1])
    assert "Ctrl-C: no new run starts" in err
    assert "[stet] work: tasks: 2 running, 0 waiting, 0 ended" in err  # the progress
    assert [x for x, _ in _marks(lab, "start")] == [0, 3]  # no run began after Ctrl-C
    if presses == 1:  # the two runs in progress (one per task) finished and were recorded
        assert _done(lab) == [0, 3]
        assert (result["ran"], result["not_run"]) == (2, 4), result
        assert not list(lab["folder"].glob("stet-sweep-*"))  # its stop files are removed
    else:  # every task cancelled: the runs they were in are not recorded
        assert "Ctrl-C again: cancelled every task" in err
        time.sleep(1.5)  # the tasks' processes are gone (SIGINT, then SIGKILL)
        assert _marks(lab, "end") == []
        assert not lab["store"].exists() or _done(lab) == []
        assert (result["ran"], result["not_run"]) == (0, 6), result
