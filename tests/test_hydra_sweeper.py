"""The Hydra sweeper (``hydra/sweeper=stet``): real Hydra multiruns, in subprocesses.

A small Hydra app (``train.py`` in a temporary directory) appends a line to a log when a
job starts and when it ends, so the tests count what really ran; the store says what stet
recorded. The sweeper must expand the sweep as Hydra's basic sweeper does, drop the jobs
already done before the launcher sees them, and have each launched job claim its run and
record it as done or failed, with any launcher (basic, joblib, submitit).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import stet
from conftest import IN_CI

try:
    import hydra  # noqa: F401
except ImportError:
    if IN_CI:
        raise  # CI installs stet[hydra] (via .[dev]): the sweeper is tested there
    pytest.skip("hydra-core is not installed (pip install 'stet[hydra]')",
                allow_module_level=True)

from stet._hydra import job_fields, override_field

SRC = Path(stet.__file__).resolve().parents[1]

APP = '''
import os
import time

import hydra
from hydra.core.config_store import ConfigStore

ConfigStore.instance().store(name="config", node={
    "lr": 0.1, "seed": 0, "note": "x", "sleep": 0.0,
    "optim": {"name": "sgd", "momentum": 0.9},
    "stamp": "${now:%H-%M-%S-%f}",
})


def log(what, cfg):
    with open(os.environ["RAN_LOG"], "a") as fh:
        fh.write(f"{what} lr={cfg.lr} seed={cfg.seed} note={cfg.note} "
                 f"momentum={cfg.optim.momentum} cwd={os.getcwd()}\\n")


@hydra.main(version_base=None, config_path=None, config_name="config")
def train(cfg):
    log("start", cfg)
    time.sleep(cfg.sleep)
    if str(cfg.seed) == os.environ.get("FAIL_SEED"):
        raise RuntimeError(f"seed {cfg.seed} diverged")
    log("end", cfg)
    return cfg.lr


if __name__ == "__main__":
    train()
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(APP, encoding="utf-8")
    return tmp_path


def _env(app: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STET_", "HYDRA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAN_LOG"] = str(app / "ran.log")
    env.update(extra)
    return env


def _cmd(app: Path, args: tuple[str, ...], sweeper: str = "stet") -> list[str]:
    return [sys.executable, str(app / "train.py"), "--multirun", f"hydra/sweeper={sweeper}",
            *args]


def multirun(app: Path, *args: str, ok: bool = True, cwd: Path | None = None,
             sweeper: str = "stet", **env: str) -> str:
    """Run a multirun to its end; its output (stdout and stderr)."""
    res = subprocess.run(_cmd(app, args, sweeper), cwd=cwd or app, env=_env(app, **env),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert (res.returncode == 0) == ok, f"exit {res.returncode}:\n{res.stdout[-4000:]}"
    return res.stdout


def ran(app: Path, what: str = "end") -> Counter[str]:
    """How many times each job started or ended (``lr=.. seed=.. note=.. momentum=..``)."""
    log = app / "ran.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split(" cwd=")[0].split(" ", 1)[1] for line in lines
                   if line.startswith(what + " "))


def job(lr: float, seed: int, note: str = "x", momentum: float = 0.9) -> str:
    return f"lr={lr} seed={seed} note={note} momentum={momentum}"


def runs_of(store: Path) -> tuple[int, int]:
    """(completed, failed) runs of ``train`` in the store."""
    fn = stet.status(str(store)).functions["train"]
    return fn.completed, fn.failed


def job_dirs(app: Path) -> list[Path]:
    """The job directories every multirun so far made (``multirun/DAY/TIME/N``)."""
    return sorted(p for p in (app / "multirun").glob("*/*/*") if p.is_dir())


SWEEP = ("hydra.sweeper.store=runs.sqlite", "lr=0.1,0.01", "seed=0,1,2")
SIX = {job(lr, seed) for lr in (0.1, 0.01) for seed in (0, 1, 2)}


# ------------------------------------------------------------------------- identity
def test_a_job_is_its_task_overrides_with_plus_prefixes_and_hydra_ones_left_out() -> None:
    assert override_field("lr=0.1") == ("lr", "0.1")
    assert override_field("+lr=0.1") == ("lr", "0.1")
    assert override_field("++lr=0.1") == ("lr", "0.1")
    assert override_field("db@pkg=mysql") == ("db@pkg", "mysql")
    assert override_field("~db") == ("~db", "")
    assert override_field("x='a=b'") == ("x", "'a=b'")
    for hydra_override in ("hydra.job.chdir=True", "hydra/launcher=joblib", "+hydra.x=1",
                           "~hydra.y", "hydra=x"):
        assert override_field(hydra_override) is None, hydra_override
    assert override_field("hydrant=1") == ("hydrant", "1")
    assert job_fields(["seed=1", "+lr=0.1", "hydra.job.chdir=True"], None, None) == \
        job_fields(["lr=0.1", "seed=1"], None, None) == {"lr": "0.1", "seed": "1"}


def test_hydra_finds_the_sweeper_without_importing_stet() -> None:
    """Hydra imports every plugin module whenever it starts: the sweeper's must be light,
    and ``hydra_plugins`` must stay a namespace package (an ``__init__.py`` in it would
    hide every other plugin installed)."""
    assert not (SRC / "hydra_plugins" / "__init__.py").exists()
    code = ("import sys\n"
            "from hydra.core.plugins import Plugins\n"
            "from hydra.plugins.sweeper import Sweeper\n"
            "plugins = Plugins.instance().discover(Sweeper)\n"
            "found = [f'{c.__module__}.{c.__name__}' for c in plugins]\n"
            "print('stet' in sys.modules, *found)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STET_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out[0] == "False", out
    assert "hydra_plugins.stet_sweeper.stet_sweeper.StetSweeper" in out[1:], out


# --------------------------------------------------------------------- the promises
def test_a_rerun_of_a_done_sweep_launches_no_job(app: Path) -> None:
    out = multirun(app, *SWEEP)
    assert "stet: 6 jobs, 0 done, launching 6" in out
    assert set(ran(app)) == SIX and sum(ran(app).values()) == 6
    assert runs_of(app / "runs.sqlite") == (6, 0)
    assert len(job_dirs(app)) == 6

    t0 = time.perf_counter()
    out = multirun(app, *SWEEP)
    rerun = time.perf_counter() - t0
    assert "stet: 6 jobs, 6 done, launching 0" in out, out
    assert sum(ran(app, "start").values()) == 6  # nothing ran again
    assert len(job_dirs(app)) == 6  # and no job directory was made for the done jobs
    assert "Launching" not in out  # the launcher never saw them
    print(f"rerun of a done 6-job multirun with the stet sweeper: {rerun:.2f} s")

    # A wider sweep launches only its new jobs; the order of the overrides is no matter.
    out = multirun(app, "hydra.sweeper.store=runs.sqlite", "seed=0,1,2,3", "lr=0.1,0.01")
    assert "stet: 8 jobs, 6 done, launching 2" in out
    assert set(ran(app)) == SIX | {job(0.1, 3), job(0.01, 3)}
    assert max(ran(app, "start").values()) == 1


def test_a_multirun_killed_mid_sweep_reruns_only_the_jobs_not_done(app: Path) -> None:
    out = app / "first.out"
    with out.open("w") as fh:
        proc = subprocess.Popen(_cmd(app, (*SWEEP, "sleep=0.4")), cwd=app, env=_env(app),
                                stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while sum(ran(app).values()) < 2 or sum(ran(app, "start").values()) < 3:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # the third job is running
    finally:
        proc.kill()
        proc.wait()
    done, failed = runs_of(app / "runs.sqlite")
    assert 2 <= done < 6 and failed == 0
    started_before = sum(ran(app, "start").values())

    text = multirun(app, *SWEEP, "sleep=0.4")
    assert f"stet: 6 jobs, {done} done, launching {6 - done}" in text, text
    assert sum(ran(app, "start").values()) == started_before + 6 - done
    ends = ran(app)
    assert set(ends) == SIX and \
        max(ends.values()) == 1, ends  # each job ended once, over both multiruns
    assert runs_of(app / "runs.sqlite") == (6, 0)


def test_a_job_that_raises_is_recorded_as_failed_and_tried_again_on_rerun(app: Path) -> None:
    args = ("hydra.sweeper.store=runs.csv", "lr=0.1", "seed=0,1,2")
    out = multirun(app, *args, ok=False, FAIL_SEED="1")
    assert "seed 1 diverged" in out  # Hydra sees the job fail, as with its basic sweeper
    fn = stet.status(str(app / "runs.csv")).functions["train"]
    assert (fn.completed, fn.failed) == (2, 1)
    assert "RuntimeError: seed 1 diverged" in str(fn.latest_error)

    out = multirun(app, *args, "hydra.sweeper.skip_failed=true", FAIL_SEED="1")
    assert "stet: 3 jobs, 2 done, 1 failed before (skip_failed), launching 0" in out

    out = multirun(app, *args)
    assert "stet: 3 jobs, 2 done, launching 1" in out
    assert ran(app) == Counter({job(0.1, 0): 1, job(0.1, 1): 1, job(0.1, 2): 1})
    assert runs_of(app / "runs.csv") == (3, 0)


def test_two_multiruns_started_at_once_on_one_store_run_each_job_once(app: Path) -> None:
    procs = [subprocess.Popen(_cmd(app, (*SWEEP, "sleep=0.5")), cwd=app, env=_env(app),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    for p, text in zip(procs, outs, strict=True):
        assert p.returncode == 0, text
        # Both looked at the store before the other was done: they really raced.
        assert "launching 0" not in text, text
    assert "running elsewhere" in "".join(outs)  # a job skipped as the other ran it
    assert ran(app, "start") == Counter(dict.fromkeys(SIX, 1))  # each job ran once
    # The jobs one multirun skipped (the other held them) are not failures.
    assert runs_of(app / "runs.sqlite") == (6, 0)
    assert "stet: 6 jobs, 6 done, launching 0" in multirun(app, *SWEEP)


def test_with_chdir_a_relative_store_is_relative_to_where_the_multirun_started(
        app: Path) -> None:
    where = app / "here"
    where.mkdir()
    args = ("hydra.sweeper.store=runs.csv", "hydra.job.chdir=True", "lr=0.1", "seed=0,1")
    multirun(app, *args, cwd=where)
    cwds = {line.split(" cwd=")[1] for line in (app / "ran.log").read_text().splitlines()}
    assert len(cwds) == 2 and all("multirun" in c for c in cwds)  # the jobs did chdir
    assert runs_of(where / "runs.csv") == (2, 0)
    assert not list(where.glob("multirun/**/runs.csv"))
    assert "stet: 2 jobs, 2 done, launching 0" in multirun(app, *args, cwd=where)


def test_a_narrowed_key_makes_jobs_that_differ_elsewhere_one_run(app: Path) -> None:
    key = "hydra.sweeper.key=[seed,optim.momentum]"
    out = multirun(app, "hydra.sweeper.store=runs.json", key, "lr=0.1,0.2", "seed=0,1")
    assert "stet: 4 jobs (2 the same run as another under key [seed, optim.momentum]), " \
           "0 done, launching 2" in out
    assert ran(app) == Counter({job(0.1, 0): 1, job(0.1, 1): 1})
    records = stet.load(str(app / "runs.json"))
    assert sorted(c for c in records.columns if not c.startswith("_")) == \
        ["optim.momentum", "seed"]

    # Other lr, note: the same runs. A new momentum (from the config) or seed: new runs.
    out = multirun(app, "hydra.sweeper.store=runs.json", key, "lr=0.5", "note=y",
                   "seed=0,1,2", "optim.momentum=0.9,0.5")
    assert "stet: 6 jobs, 2 done, launching 4" in out
    assert set(ran(app)) == {job(0.1, 0), job(0.1, 1), job(0.5, 2, "y"),
                             job(0.5, 0, "y", 0.5), job(0.5, 1, "y", 0.5),
                             job(0.5, 2, "y", 0.5)}


def test_a_key_that_cannot_identify_a_job_is_refused_before_any_job_runs(app: Path) -> None:
    for key, said in [("[seed,nope]", "names 'nope', which this job's config does not have"),
                      ("[stamp]", "comes from ${now:%H-%M-%S-%f}"),
                      ("[hydra.job.name]", "Hydra's own settings are not part of"),
                      ("[]", "must be a list of config keys")]:
        out = multirun(app, "hydra.sweeper.store=runs.csv", f"hydra.sweeper.key={key}",
                       "seed=0,1", ok=False)
        assert said in out, out
        assert "Traceback" not in out  # said as Hydra says a config error
    out = multirun(app, "hydra.sweeper.store=runs.txt", "seed=0,1", ok=False)
    assert "hydra.sweeper.store: " in out and "'.txt'" in out, out
    assert not (app / "ran.log").exists()
    # One key may be given alone.
    out = multirun(app, "hydra.sweeper.store=runs.csv", "hydra.sweeper.key=seed", "lr=0.1,0.2",
                   "seed=0")
    assert "stet: 2 jobs (1 the same run as another under key [seed]), 0 done, launching 1" \
        in out, out


def test_plus_prefixed_and_reordered_overrides_are_the_same_job(app: Path) -> None:
    multirun(app, "hydra.sweeper.store=runs.csv", "++note=y", "seed=0,1")
    out = multirun(app, "hydra.sweeper.store=runs.csv", "seed=0,1,2", "note=y")
    assert "stet: 3 jobs, 2 done, launching 1" in out
    assert max(ran(app, "start").values()) == 1


# ----------------------------------------------------------------------- launchers
def _launcher(name: str) -> None:
    try:
        __import__(f"hydra_plugins.hydra_{name}_launcher")
    except ImportError:
        if IN_CI:
            raise  # CI installs it (via .[dev])
        pytest.skip(f"pip install hydra-{name}-launcher")


def test_the_joblib_launcher_runs_only_the_jobs_not_done(app: Path) -> None:
    _launcher("joblib")
    args = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "hydra.sweeper.store=runs.sqlite", "lr=0.1,0.01", "seed=0,1")
    multirun(app, "hydra.sweeper.store=runs.sqlite", "lr=0.1", "seed=0")  # one done first
    out = multirun(app, *args)
    assert "stet: 4 jobs, 1 done, launching 3" in out
    assert ran(app, "start") == Counter({job(lr, s): 1 for lr in (0.1, 0.01) for s in (0, 1)})
    assert runs_of(app / "runs.sqlite") == (4, 0)
    assert "stet: 4 jobs, 4 done, launching 0" in multirun(app, *args)


def test_the_submitit_launcher_records_failures_and_launches_only_the_rest(
        app: Path) -> None:
    _launcher("submitit")
    args = ("hydra/launcher=submitit_local", "hydra.sweeper.store=runs.sqlite", "lr=0.1",
            "seed=0,1,2")
    out = multirun(app, *args, ok=False, FAIL_SEED="1")
    assert "stet: 3 jobs, 0 done, launching 3" in out
    assert runs_of(app / "runs.sqlite") == (2, 1)
    out = multirun(app, *args)
    assert "stet: 3 jobs, 2 done, launching 1" in out
    assert ran(app) == Counter({job(0.1, s): 1 for s in (0, 1, 2)})
    assert runs_of(app / "runs.sqlite") == (3, 0)


SWEEP_YAML = """
defaults:
  - config
  - override hydra/sweeper: stet
  - _self_

hydra:
  sweeper:
    store: runs.sqlite
    name: sgd_runs
    max_batch_size: 2
    params:
      seed: 0,1,2,3
"""


def test_a_config_file_sets_the_sweeper_its_params_batches_and_name(app: Path) -> None:
    (app / "conf").mkdir()
    (app / "conf" / "sweep.yaml").write_text(SWEEP_YAML, encoding="utf-8")
    multirun(app, "hydra.sweeper.store=runs.sqlite", "hydra.sweeper.name=sgd_runs", "lr=0.1",
             "seed=1")
    out = subprocess.run([sys.executable, str(app / "train.py"), "--multirun",
                          "--config-path", str(app / "conf"), "--config-name", "sweep",
                          "lr=0.1"], cwd=app, env=_env(app), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=60).stdout
    assert "stet: 4 jobs, 1 done, launching 3" in out, out
    # The basic sweeper's batches, of the jobs left: 2, then 1.
    assert "Launching 2 jobs locally" in out and "Launching 1 jobs locally" in out, out
    assert ran(app, "start") == Counter({job(0.1, s): 1 for s in range(4)})
    st = stet.status(str(app / "runs.sqlite"))
    assert set(st.functions) == {"sgd_runs"} and st.functions["sgd_runs"].completed == 4


def test_the_sweepers_jobs_are_a_plan_stet_status_counts(app: Path) -> None:
    multirun(app, "hydra.sweeper.store=runs.csv", "lr=0.1", "seed=0,1,2", ok=False,
             FAIL_SEED="1")
    st = stet.status(str(app / "runs.csv"))
    assert st.progress_line() is not None
    assert "Planned: 2 of 3 done (66%), 1 failed, 0 running, 0 pending" in str(
        st.progress_line())
