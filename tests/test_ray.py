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


@stet.once(store=os.path.join(LAB, "slow.csv"))
def slow(x):
    mark("start", x)
    if x == 0 and len(starts(0)) == 1:
        time.sleep(60)  # the first attempt: the test kills its worker
    time.sleep(0.2)
    mark("end", x)
    return x


@stet.once(store=os.path.join(LAB, "once.csv"))
def slow_once(x):
    mark("start", x)
    if x == 10 and len(starts(10)) == 1:
        time.sleep(60)  # the first attempt: the test kills its worker
    time.sleep(0.2)
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
