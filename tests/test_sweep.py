"""stet.sweep, f.pending, f.forget: bulk planning, executors, progress, failures, Ctrl-C.

The process-pool, Dask, progress and Ctrl-C tests run real scripts in subprocesses
(``experiment.py`` below, importable by worker processes) and check, from a log each
execution appends to, that every combination ran exactly once across invocations.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stet
from stet.backends import get_backend

PY = sys.executable
ALPHAS = [0.0, 0.01, 0.05, 0.1]
SEEDS = range(6)

EXPERIMENT = '''
"""The experiment the scripts sweep: appends one line per execution to a log."""
import os
import time

import stet

STORE = os.environ["STET_TEST_STORE"]
LOG = os.environ["STET_TEST_LOG"]
SLEEP = float(os.environ.get("STET_TEST_SLEEP", "0"))


def log_execution(alpha, seed):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{alpha} {seed} {os.getpid()}\\n".encode())
    os.close(fd)


@stet.once(store=STORE, key=["alpha", "seed"])
def run_experiment(alpha, seed, n_iter=10):
    time.sleep(SLEEP)
    log_execution(alpha, seed)
    return alpha * seed
'''

POOL_SCRIPT = '''
import json
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor

import stet
import experiment

if __name__ == "__main__":
    method, n_alpha = sys.argv[1], int(sys.argv[2])
    settings = stet.grid(alpha=[0.0, 0.01, 0.05, 0.1][:n_alpha], seed=range(6))
    with ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as pool:
        s = stet.sweep(experiment.run_experiment, settings, executor=pool, progress=False)
    for f in s.failures:
        print(f.traceback, file=sys.stderr)
    print(json.dumps({"ran": s.ran, "done": s.skipped_done, "running": s.skipped_running,
                      "failed": s.failed, "total": s.total}))
'''

DASK_SCRIPT = '''
import json
import os
import sys
import time

import stet

if sys.argv[1] == "main":
    # Defined in the script itself: Dask pickles it by value (cloudpickle).
    @stet.once(store=os.environ["STET_TEST_STORE"], key=["alpha", "seed"])
    def run_experiment(alpha, seed, n_iter=10):
        time.sleep(float(os.environ.get("STET_TEST_SLEEP", "0")))
        fd = os.open(os.environ["STET_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{alpha} {seed} {os.getpid()}\\n".encode())
        os.close(fd)
        return alpha * seed
else:
    from experiment import run_experiment  # importable: pickled by reference

if __name__ == "__main__":
    from dask.distributed import Client, LocalCluster

    n_alpha = int(sys.argv[2])
    settings = stet.grid(alpha=[0.0, 0.01, 0.05, 0.1][:n_alpha], seed=range(6))
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        s = stet.sweep(run_experiment, settings, executor=client.get_executor(),
                       progress=False)
    print(json.dumps({"ran": s.ran, "done": s.skipped_done, "running": s.skipped_running,
                      "failed": s.failed, "total": s.total}))
'''

SWEEP_SCRIPT = '''
import json
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

import stet
import experiment

if __name__ == "__main__":
    # Ctrl-C raises KeyboardInterrupt even if this was started where SIGINT is ignored
    # (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, progress = sys.argv[1], sys.argv[2]
    progress = {"true": True, "false": False}.get(progress, progress)
    settings = stet.grid(alpha=[0.0, 0.01, 0.05, 0.1], seed=range(6))
    try:
        if mode == "pool":
            with ProcessPoolExecutor(2) as pool:
                s = stet.sweep(experiment.run_experiment, settings, executor=pool,
                               progress=progress)
        else:
            s = stet.sweep(experiment.run_experiment, settings, progress=progress)
    except stet.SweepInterrupted as exc:
        s = exc.summary
        claims = experiment.run_experiment.backend().claims()
        print(json.dumps({"interrupted": s.interrupted, "ran": s.ran, "not_run": s.not_run,
                          "done": s.skipped_done, "running_now": claims.running()}),
              flush=True)
        sys.exit(3)
    print(json.dumps({"interrupted": False, "ran": s.ran, "done": s.skipped_done}), flush=True)
'''


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Any]:
    """A directory with experiment.py and the scripts, and the environment to run them."""
    (tmp_path / "experiment.py").write_text(EXPERIMENT)
    (tmp_path / "sweep_pool.py").write_text(POOL_SCRIPT)
    (tmp_path / "sweep_dask.py").write_text(DASK_SCRIPT)
    (tmp_path / "sweep_script.py").write_text(SWEEP_SCRIPT)
    env = dict(os.environ)
    src = str(Path(stet.__file__).parent.parent)  # the stet under test, in the subprocesses too
    env.update(STET_TEST_STORE=str(tmp_path / "runs.sqlite"), STET_TEST_LOG=str(
        tmp_path / "executions.log"), PYTHONPATH=f"{tmp_path}{os.pathsep}{src}",
        STET_QUIET="1")
    env.pop("STET_TEST_SLEEP", None)
    return {"dir": tmp_path, "env": env, "log": tmp_path / "executions.log",
            "store": tmp_path / "runs.sqlite"}


def _run(lab: dict[str, Any], *args: str, timeout: float = 120, **env: str
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, *args], cwd=lab["dir"], env={**lab["env"], **env},
                          capture_output=True, text=True, timeout=timeout)


def _executions(lab: dict[str, Any]) -> Counter[tuple[str, str]]:
    if not lab["log"].exists():
        return Counter()
    return Counter(tuple(line.split()[:2]) for line in lab["log"].read_text().splitlines())


def _last_json(out: str) -> dict[str, Any]:
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _all_once(lab: dict[str, Any], n: int = 24) -> None:
    counts = _executions(lab)
    assert len(counts) == n, counts
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    with get_backend(lab["store"]) as b:
        assert len(b.load()) == n


# Module-level decorated function: pickled by reference (its qualified name resolves to
# the wrapper, since the decorator replaced the module attribute).
@stet.once(store="_stet_never_written.csv", key=["x"])
def module_level(x: int, y: int = 0) -> int:
    return x + y


# ---------------------------------------------------------------- in this process
def make(tmp_path: Path, **options: Any) -> tuple[Any, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    @stet.once(store=str(tmp_path / "runs.csv"), **options)
    def exp(alpha: float, seed: int, n_iter: int = 10) -> float:
        calls.append({"alpha": alpha, "seed": seed})
        if alpha < 0:
            raise ValueError(f"negative alpha {alpha}")
        return alpha * seed

    return exp, calls


def test_sweep_runs_each_setting_once_and_skips_done_in_bulk(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp, calls = make(tmp_path)
    g = stet.grid(alpha=[0.1, 0.2], seed=range(3))
    exp(0.1, 0)  # done before the sweep
    capsys.readouterr()
    s = stet.sweep(exp, g, progress=False)
    assert (s.total, s.ran, s.skipped_done, s.failed) == (6, 5, 1, 0)
    assert s.ok and s.complete
    assert len(calls) == 6
    assert sorted(r for _, r in s.results) == sorted(a * b for a in [0.1, 0.2]
                                                     for b in range(3) if (a, b) != (0.1, 0))
    s2 = stet.sweep(exp, g, progress=False)
    assert (s2.ran, s2.skipped_done) == (0, 6)
    assert len(calls) == 6  # done runs were never called
    out = capsys.readouterr()
    assert "Skipping" not in out.out + out.err  # found in bulk, nothing printed
    assert "6 settings: 0 ran, 6 skipped as done" in str(s2)


def test_sweep_without_keeping_results(tmp_path: Path) -> None:
    exp, calls = make(tmp_path)
    g = stet.grid(alpha=[0.1, 0.2], seed=range(3))
    s = stet.sweep(exp, g, progress=False, keep_results=False)
    assert (s.ran, s.results) == (6, [])
    assert len(calls) == 6 and s.complete
    with ThreadPoolExecutor(2) as pool:  # through an executor: the same
        s = stet.sweep(exp, stet.grid(alpha=[0.3], seed=range(4)), executor=pool,
                       progress=False, keep_results=False)
    assert (s.ran, s.results) == (4, [])


def test_pending_in_bulk_and_duplicates(tmp_path: Path) -> None:
    exp, calls = make(tmp_path, key=["alpha", "seed"])
    g = stet.grid(alpha=[0.1, 0.2], seed=range(2))
    assert exp.pending(g) == list(g)
    exp(0.2, 1, n_iter=99)
    assert exp.pending(g) == [{"alpha": 0.1, "seed": 0}, {"alpha": 0.1, "seed": 1},
                              {"alpha": 0.2, "seed": 0}]
    assert len(calls) == 1  # pending() runs nothing
    s = stet.sweep(exp, list(g) + list(g), progress=False)  # each given twice
    assert (s.total, s.duplicates, s.ran, s.skipped_done) == (4, 4, 3, 1)
    assert exp.pending(g) == []


def test_failures_do_not_stop_the_sweep(tmp_path: Path) -> None:
    exp, calls = make(tmp_path)
    g = stet.grid(alpha=[0.1, -1.0, 0.2], seed=[0])
    s = stet.sweep(exp, g, progress=False)
    assert (s.ran, s.failed, s.not_run) == (2, 1, 0)
    assert len(calls) == 3
    assert not s.ok
    f = s.failures[0]
    assert f.setting == {"alpha": -1.0, "seed": 0}
    assert f.error_type == "ValueError" and "negative alpha" in f.message
    assert isinstance(f.exception, ValueError)
    assert "Traceback" in f.traceback and "negative alpha" in f.traceback
    assert "1 failed" in str(s)
    assert exp.pending(g) == [{"alpha": -1.0, "seed": 0}]  # failed runs stay pending
    failures = exp.backend().failures()
    assert [r["alpha"] for r in failures] == ["-1.0"]


def test_stop_on_error_raises_the_first_error(tmp_path: Path) -> None:
    exp, calls = make(tmp_path)
    g = stet.grid(alpha=[0.1, -1.0, 0.2, 0.3], seed=[0])
    with pytest.raises(ValueError, match="negative alpha") as info:
        stet.sweep(exp, g, progress=False, stop_on_error=True)
    assert any("stop_on_error" in n and "2 not run" in n for n in info.value.__notes__)
    assert [c["alpha"] for c in calls] == [0.1, -1.0]


def test_skip_failed_counts_failed_before(tmp_path: Path) -> None:
    exp, _ = make(tmp_path, skip_failed=True)
    g = stet.grid(alpha=[-1.0, 0.5], seed=[0])
    stet.sweep(exp, g, progress=False)
    assert exp.pending(g) == []
    s = stet.sweep(exp, g, progress=False)
    assert (s.skipped_failed, s.skipped_done, s.ran) == (1, 1, 0)
    exp.forget(-1.0, 0)  # typed arguments, no string spelling
    assert exp.pending(g) == [{"alpha": -1.0, "seed": 0}]


def test_forget_with_typed_arguments(tmp_path: Path) -> None:
    import numpy as np

    exp, _ = make(tmp_path, key=["alpha", "seed"])
    stet.sweep(exp, stet.grid(alpha=[0.1, 0.2], seed=range(2)), progress=False)
    assert exp.is_done(np.float64(0.1), seed=np.int64(1))
    assert exp.forget(np.float64(0.1), seed=np.int64(1), n_iter=5) == 1
    assert not exp.is_done(0.1, 1) and exp.is_done(0.1, 0)
    s = stet.sweep(exp, stet.grid(alpha=[0.1, 0.2], seed=range(2)), progress=False)
    assert s.ran == 1 and s.results[0][0] == {"alpha": 0.1, "seed": 1}


def test_a_run_another_worker_is_running_is_left_to_it(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    @stet.once(store=str(tmp_path / "runs.json"), verbose=False)
    def slow(x: int) -> int:
        if x == 0:
            started.set()
            release.wait(10)
        return x

    t = threading.Thread(target=slow, args=(0,))
    t.start()
    assert started.wait(10)
    try:
        s = stet.sweep(slow, [{"x": 0}, {"x": 1}], progress=False)
    finally:
        release.set()
        t.join()
    assert (s.ran, s.skipped_running, s.skipped_done) == (1, 1, 0)
    assert "1 skipped as running elsewhere" in str(s)
    assert not s.complete
    assert stet.sweep(slow, [{"x": 0}, {"x": 1}], progress=False).skipped_done == 2


def test_bad_arguments(tmp_path: Path) -> None:
    exp, calls = make(tmp_path)
    with pytest.raises(TypeError, match=r"decorated with @stet\.once"):
        stet.sweep(lambda alpha: alpha, [{"alpha": 1}])
    with pytest.raises(TypeError, match="does not fit"):
        stet.sweep(exp, [{"alpha": 0.1, "seed": 0}, {"alpha": 0.1}], progress=False)
    with pytest.raises(TypeError, match="does not fit"):
        stet.sweep(exp, [{"alpha": 0.1, "seed": 0, "bogus": 1}], progress=False)
    assert calls == []  # nothing ran: settings are checked first
    with pytest.raises(TypeError, match="iterable of dicts"):
        stet.sweep(exp, {"alpha": 0.1, "seed": 0})
    with pytest.raises(TypeError, match="dict of keyword arguments"):
        stet.sweep(exp, [(0.1, 0)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="progress="):
        stet.sweep(exp, [], progress="fancy")


def test_thread_pool_runs_each_once(tmp_path: Path) -> None:
    exp, calls = make(tmp_path)
    g = stet.grid(alpha=[0.1, 0.2, 0.3], seed=range(5))
    with ThreadPoolExecutor(4) as pool:
        s1 = stet.sweep(exp, g, executor=pool, progress=False)
        s2 = stet.sweep(exp, g, executor=pool, progress=False, max_in_flight=1)
    assert (s1.ran, s2.ran, s2.skipped_done) == (15, 0, 15)
    assert len(calls) == 15


def test_async_functions_are_swept(tmp_path: Path) -> None:
    import asyncio

    @stet.once(store=str(tmp_path / "runs.csv"))
    async def aexp(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    s = stet.sweep(aexp, stet.grid(x=range(3)), progress=False)
    assert sorted(r for _, r in s.results) == [0, 2, 4]


def test_decorated_functions_pickle() -> None:
    # By reference: the qualified name resolves to the wrapper itself.
    assert pickle.loads(pickle.dumps(module_level)) is module_level
    # By value (cloudpickle, as Dask does for functions of a script's __main__): the
    # run's settings travel, not its open store.
    cloudpickle = pytest.importorskip("cloudpickle")

    @stet.once(store="elsewhere.sqlite", key=["x"], name="nested", save_result=True)
    def nested(x: int) -> int:
        return x

    nested.backend()  # an open backend (locks, files) must not be pickled
    copy = cloudpickle.loads(cloudpickle.dumps(nested))
    run = copy.__stet_run__
    assert (run.name, run.store, run.key, run.save_result) == ("nested", "elsewhere.sqlite",
                                                                ["x"], True)
    assert run.backend is None and copy is not nested


# -------------------------------------------------------------- real subprocesses
def test_process_pools_two_concurrent_invocations_run_each_once(lab: dict[str, Any]) -> None:
    env = {**lab["env"], "STET_TEST_SLEEP": "0.1"}
    procs = [subprocess.Popen([PY, "sweep_pool.py", method, "4"], cwd=lab["dir"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for method in ("fork", "spawn")]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    a, b = (_last_json(out) for out, _ in outs)
    for s, (_, err) in zip((a, b), outs, strict=True):
        assert s["failed"] == 0, err
        assert s["ran"] + s["done"] + s["running"] == 24, (a, b)
    _all_once(lab)
    assert a["ran"] + b["ran"] == 24
    pids = {line.split()[2] for line in lab["log"].read_text().splitlines()}
    assert len(pids) >= 2  # executed in the pools' worker processes
    again = _run(lab, "sweep_pool.py", "fork", "4")
    assert _last_json(again.stdout) == {"ran": 0, "done": 24, "running": 0, "failed": 0,
                                        "total": 24}


def test_dask_local_cluster_two_invocations_run_each_once(lab: dict[str, Any]) -> None:
    pytest.importorskip("dask.distributed")
    first = _run(lab, "sweep_dask.py", "main", "2", timeout=180)
    assert first.returncode == 0, first.stderr
    assert _last_json(first.stdout) == {"ran": 12, "done": 0, "running": 0, "failed": 0,
                                        "total": 12}
    second = _run(lab, "sweep_dask.py", "module", "4", timeout=180)
    assert second.returncode == 0, second.stderr
    assert _last_json(second.stdout) == {"ran": 12, "done": 12, "running": 0, "failed": 0,
                                         "total": 24}
    _all_once(lab)
    pids = {line.split()[2] for line in lab["log"].read_text().splitlines()}
    assert len(pids) >= 2


def test_progress_lines_when_stderr_is_not_a_terminal(lab: dict[str, Any]) -> None:
    _run(lab, "-c", "import experiment as e; [e.run_experiment(0.0, s) for s in range(6)]")
    r = _run(lab, "sweep_script.py", "here", "true")
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert "\r" not in err and "\x1b" not in err  # no bar, no escape codes in a log
    lines = err.splitlines()
    assert lines[0] == "[stet] run_experiment: 24 settings, 6 done before, 18 to run"
    assert any("24/24 (100%)" in line and "runs/s" in line for line in lines)
    assert "[stet] run_experiment: 24 settings: 18 ran, 6 skipped as done, 0 failed" in lines[-1]
    assert 4 <= len(lines) <= 12  # a line per tenth, not one per run
    assert _last_json(r.stdout) == {"interrupted": False, "ran": 18, "done": 6}


def test_progress_bar_on_a_terminal(lab: dict[str, Any]) -> None:
    pytest.importorskip("tqdm")
    import fcntl
    import pty
    import struct
    import termios

    try:
        master, slave = pty.openpty()
    except OSError as exc:  # no pseudo-terminals in this sandbox
        pytest.skip(f"no pty: {exc}")
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    p = subprocess.Popen([PY, "sweep_script.py", "here", "true"], cwd=lab["dir"],
                         env=lab["env"], stdout=subprocess.PIPE,
                         stderr=slave, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    p.communicate(timeout=60)
    assert p.returncode == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\r" in screen and "run_experiment:" in screen
    assert "24/24" in screen and "run/s" in screen  # tqdm's counts and rate
    assert "[stet] run_experiment: 24 settings: 24 ran" in screen


@pytest.mark.parametrize("mode", ["here", "pool"])
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(lab: dict[str, Any], mode: str) -> None:
    env = {**lab["env"], "STET_TEST_SLEEP": "0.3"}
    p = subprocess.Popen([PY, "sweep_script.py", mode, "lines"], cwd=lab["dir"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 60
    while len(_executions(lab)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # now in the middle of a run
    os.killpg(p.pid, signal.SIGINT)  # as Ctrl-C does: the whole process group
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    s = _last_json(out)
    assert s["interrupted"] and s["running_now"] == []  # every claim released
    assert s["ran"] + s["not_run"] == 24 and s["not_run"] > 0
    assert "interrupted; run the sweep again to resume" in err
    executed = sum(_executions(lab).values())
    with get_backend(lab["store"]) as b:
        recorded = len(b.load())
    assert recorded == executed >= 2  # the interrupted run recorded nothing
    again = _run(lab, "sweep_script.py", "here", "false")
    assert _last_json(again.stdout) == {"interrupted": False, "ran": 24 - recorded,
                                        "done": recorded}
    _all_once(lab)


# ------------------------------------------------------------------ watching a sweep
def test_status_with_settings_done_of_total_and_eta(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stet._status import render_grid

    started, release = threading.Event(), threading.Event()
    store = str(tmp_path / "runs.csv")

    @stet.once(store=store, key=["alpha", "seed"], verbose=False, name="exp")
    def exp(alpha: float, seed: int, n_iter: int = 10) -> None:
        if alpha < 0:
            raise ValueError("negative")
        if seed == 3:
            started.set()
            release.wait(10)

    g = stet.grid(alpha=[0.1, -1.0], seed=range(3)).chain([{"alpha": 0.1, "seed": 3},
                                                            {"alpha": 0.2, "seed": 0}])
    stet.sweep(exp, stet.grid(alpha=[0.1, -1.0], seed=range(3)), progress=False)
    t = threading.Thread(target=exp, args=(0.1, 3))
    t.start()
    assert started.wait(10)
    try:
        capsys.readouterr()
        st = stet.status(exp, g)  # a decorated function: its store and identity
        out = capsys.readouterr().out
        sw = st.sweep
        assert sw is not None
        assert (sw.total, sw.done, sw.failed, sw.running, sw.pending) == (8, 3, 3, 1, 1)
        assert sw.workers == 1 and sw.eta is not None and sw.eta >= 0
        assert "Sweep: 3 of 8 done (37%), 3 failed, 1 running, 1 pending; ETA" in out
        fs = st.functions["exp"]
        assert (fs.completed, fs.failed, fs.running) == (3, 3, 1)
        assert fs.first and fs.last and fs.mean_duration is not None
        assert "exp: 3 completed, 3 failed (latest: ValueError: negative), 1 running now" in out
        assert out.startswith(f"Store: {store} (CsvBackend)\nCompleted runs: 3\n")
        # Without the function: settings are matched on the store's key fields
        # (n_iter, which no record holds, is ignored).
        st2 = stet.status(store, [{**s, "n_iter": 5} for s in g])
        assert st2.sweep is not None
        assert (st2.sweep.done, st2.sweep.failed, st2.sweep.running) == (3, 3, 1)
        grid = render_grid(st, "alpha", "seed")
        assert grid.splitlines()[1].split() == ["-1.0", "✗", "✗", "✗", "·"]
        assert grid.splitlines()[2].split() == ["0.1", "●", "●", "●", "▶"]
    finally:
        release.set()
        t.join()
    assert "Completed runs: 4" in str(stet.status(store))


def test_stop_on_error_through_an_executor(tmp_path: Path) -> None:
    exp, calls = make(tmp_path)
    g = stet.grid(alpha=[-1.0, *[0.1 * i for i in range(1, 30)]], seed=[0])
    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="negative alpha"):
        stet.sweep(exp, g, executor=pool, progress=False, stop_on_error=True,
                   max_in_flight=2)
    assert len(calls) < 10  # no new run started after the failure
