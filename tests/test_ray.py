"""stet.sweep on Ray through stet.RayExecutor: a real local Ray (started once for the
module: it takes seconds), a worker killed with SIGKILL mid-run, and Ray's Pool refused."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from stet.backends import get_backend

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
try:
    import ray
except ImportError:  # pragma: no cover
    if IN_CI:
        raise  # CI installs stet[dev]: a missing Ray fails, never skips
    pytest.skip("ray is not installed (pip install 'stet[ray]')", allow_module_level=True)

SRC = str(Path(stet.__file__).parent.parent)

WORK = '''
import os
import time

import stet

LAB = os.environ["STET_RAY_LAB"]


def mark(kind, x):
    open(os.path.join(LAB, "marks", f"{kind}-{x}-{os.getpid()}-{time.time_ns()}"), "w").close()


def starts(x):
    return [n for n in os.listdir(os.path.join(LAB, "marks")) if n.startswith(f"start-{x}-")]


@stet.once(store=os.path.join(LAB, "square.csv"))
def square(x):
    mark("start", x)
    return x * x


def attempt(x):
    mark("start", x)
    if x % 10 == 0 and len(starts(x)) == 1:
        time.sleep(60)  # the first attempt of x=0 or x=10: the test kills its worker
    time.sleep(0.2)
    mark("end", x)
    return x


@stet.once(store=os.path.join(LAB, "slow.csv"))
def slow(x):
    return attempt(x)


@stet.once(store=os.path.join(LAB, "once.csv"))
def slow_once(x):
    return attempt(x)


@stet.once(store=os.path.join(LAB, "paced.csv"))
def paced(x):
    mark("start", x)
    time.sleep(2.0)
    mark("end", x)
    return x
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    lab = tmp_path_factory.mktemp("ray")
    (lab / "marks").mkdir()
    (lab / "ray_work.py").write_text(WORK)
    saved = {k: os.environ.get(k) for k in ("STET_RAY_LAB", "PYTHONPATH")}
    # Ray's workers start with this environment: they import ray_work and this stet.
    os.environ["STET_RAY_LAB"] = str(lab)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(lab), SRC])
    sys.path.insert(0, str(lab))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield lab
    finally:
        ray.shutdown()
        sys.path.remove(str(lab))
        sys.modules.pop("ray_work", None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _marks(lab: Path, kind: str) -> list[tuple[int, int]]:
    out = []
    for p in (lab / "marks").iterdir():
        k, x, pid, _ = p.name.split("-")
        if k == kind:
            out.append((int(x), int(pid)))
    return sorted(out)


def _done(store: Path) -> list[int]:
    with get_backend(store) as b:
        return sorted(int(r["x"]) for r in b.load())


def test_a_sweep_runs_on_ray_each_setting_once(lab: Path) -> None:
    import ray_work

    with stet.RayExecutor() as ex:
        assert ex._max_workers == 2  # from the cluster: the sweep's window follows it
        s = stet.sweep(ray_work.square, stet.grid(x=range(6)), executor=ex, progress=False)
        assert (s.ran, s.failed, s.not_run) == (6, 0, 0), s
        assert sorted(v for _, v in s.results) == [x * x for x in range(6)]
        s2 = stet.sweep(ray_work.square, stet.grid(x=range(8)), executor=ex, progress=False)
    assert (s2.ran, s2.skipped_done) == (2, 6), s2
    assert [x for x, _ in _marks(lab, "start") if x < 8] == list(range(8))
    assert {pid for _, pid in _marks(lab, "start")} != {os.getpid()}  # in Ray's workers
    assert _done(lab / "square.csv") == list(range(8))


def _kill_first_start(lab: Path, x: int, killed: list[int]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        firsts = [pid for y, pid in _marks(lab, "start") if y == x]
        if firsts:
            time.sleep(0.3)  # well inside the run
            os.kill(firsts[0], signal.SIGKILL)
            killed.append(firsts[0])
            return
        time.sleep(0.05)


def test_a_run_whose_worker_is_killed_is_retried_and_recorded_once(lab: Path) -> None:
    import ray_work

    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_start, args=(lab, 0, killed))
    killer.start()
    with stet.RayExecutor() as ex:
        s = stet.sweep(ray_work.slow, stet.grid(x=range(4)), executor=ex, progress=False)
    killer.join()
    assert killed
    starts = [x for x, _ in _marks(lab, "start") if x < 4]
    assert starts.count(0) == 2  # the killed attempt, and Ray's retry
    assert (s.ran, s.failed, s.not_run) == (4, 0, 0), s
    with get_backend(lab / "slow.csv") as b:
        assert sorted(int(r["x"]) for r in b.load()) == [0, 1, 2, 3]  # once each
        assert b.failures() == []


def test_without_retries_a_killed_run_is_left_pending_not_recorded(lab: Path) -> None:
    import ray_work

    killed: list[int] = []
    killer = threading.Thread(target=_kill_first_start, args=(lab, 10, killed))
    killer.start()
    settings = [{"x": x} for x in (10, 11, 12)]
    with stet.RayExecutor(max_retries=0) as ex:
        s = stet.sweep(ray_work.slow_once, settings, executor=ex, progress=False)
        killer.join()
        assert killed
        assert (s.ran, s.failed) == (2, 1), s  # Ray lost the run: said, not recorded
        assert "could not be had from the executor" in s.failures[0].message
        assert _done(lab / "once.csv") == [11, 12]
        s2 = stet.sweep(ray_work.slow_once, settings, executor=ex, progress=False)
    assert (s2.ran, s2.skipped_done) == (1, 2), s2  # the killed run, pending, runs now
    assert _done(lab / "once.csv") == [10, 11, 12]


def test_rays_pool_is_refused_with_a_pointer_to_the_ray_executor(lab: Path) -> None:
    import ray_work
    from ray.util.multiprocessing import Pool

    pool = Pool(processes=1)
    try:
        with pytest.raises(TypeError, match=r"ray\.util\.multiprocessing\.pool\.Pool.*"
                                            r"stet\.RayExecutor\(\)"):
            stet.sweep(ray_work.square, [{"x": 100}], executor=pool, progress=False)
    finally:
        pool.terminate()
    assert 100 not in [x for x, _ in _marks(lab, "start")]


def test_no_ray_no_submitit_imported_by_stet_itself() -> None:
    import subprocess

    code = ("import sys, stet; print('ray' in sys.modules, 'submitit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, check=True).stdout
    assert out.split() == ["False", "False"]


DRIVER = """
import json, signal, sys
import ray
import stet
import ray_work

signal.signal(signal.SIGINT, signal.default_int_handler)
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
settings = [{"x": x} for x in range(100, 108)]
try:
    with stet.RayExecutor() as ex:
        s = stet.sweep(ray_work.paced, settings, executor=ex, progress="lines")
except stet.SweepInterrupted as exc:
    s = exc.summary
    print(json.dumps({"ran": s.ran, "not_run": s.not_run}), flush=True)
    sys.exit(3)
print(json.dumps({"ran": s.ran}), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_on_ray_waits_for_the_runs_in_progress_or_kills_them_at_the_second(
        lab: Path, presses: int) -> None:
    import json
    import subprocess

    (lab / "ray_driver.py").write_text(DRIVER)
    for name in ("paced.csv", "paced.csv.claims", "paced.csv.lock"):
        (lab / name).unlink(missing_ok=True)
    for p in (lab / "marks").glob("*-10[0-9]-*"):
        p.unlink()
    proc = subprocess.Popen([sys.executable, str(lab / "ray_driver.py")], cwd=lab,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ}, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(
                [x for x, _ in _marks(lab, "start") if x >= 100]) < 2:
            time.sleep(0.05)
        time.sleep(0.3)
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)  # the driver only, as kill -INT would
            time.sleep(0.3)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3, (out, err[-3000:])
    result = json.loads(out.strip().splitlines()[-1])
    started = sorted(x for x, _ in _marks(lab, "start") if x >= 100)
    assert started == [100, 101], started  # no run started after Ctrl-C
    done = _done(lab / "paced.csv") if (lab / "paced.csv").exists() else []
    if presses == 1:  # the two runs in progress finished and were recorded
        assert done == [100, 101]
        assert (result["ran"], result["not_run"]) == (2, 6), (result, err[-2000:])
    else:  # killed: not recorded, they run again next time
        assert done == []
        assert (result["ran"], result["not_run"]) == (0, 8), (result, err[-2000:])
