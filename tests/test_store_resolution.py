"""A relative store is resolved when the function is decorated (issue 13, item 3).

The current directory is process-wide, so each test changes it in a subprocess of its
own: a script that decorates, ``os.chdir``s elsewhere, then uses every entry point; and a
real Hydra app run as a multirun with ``hydra.job.chdir=True``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stet
from conftest import IN_CI

SRC = Path(stet.__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STET_", "HYDRA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _python(code: str, cwd: Path, *args: str, ok: bool = True, **env: str) -> str:
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(**env),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert (res.returncode == 0) == ok, f"exit {res.returncode}:\n{res.stdout[-4000:]}"
    return res.stdout


ENTRY_POINTS = '''
import os, sys
import stet

ext = sys.argv[1]
os.makedirs("launch/elsewhere")
os.chdir("launch")

@stet.once(store="runs" + ext)
def f(x):
    print("ran", x)

os.chdir("elsewhere")  # as Hydra's job.chdir, or a library, would

f(1)                                          # once
f(1)
assert f.is_done(1)
summary = stet.sweep(f, [{"x": 1}, {"x": 2}, {"x": 3}])   # sweep
assert (summary.ran, summary.skipped_done) == (2, 1), summary
st = stet.status(f)                                       # status
assert (st.completed, st.path) == (3, "runs" + ext)  # shown as written
assert sorted(stet.load(f)["x"]) == [1, 2, 3]             # load of a decorated function
assert f.forget(3) == 1                                   # forget
stet.reset(f, {"x": 2})                                   # reset
assert sorted(stet.load(f)["x"]) == [1]
rebuild, args = f.__stet_run__.__reduce__()               # as pickled for a worker
run = rebuild(*args)
os.chdir("/")
assert run.get_backend().contains_run(run.name, ("x",), ("1",))
assert f.store == run.store == "runs" + ext  # shown as written

assert not [n for n in os.listdir(os.path.join(os.path.dirname(run.location), "elsewhere"))
            if n.startswith("runs")], "a store was opened in the directory changed to"
print("store at", run.location)
'''


@pytest.mark.parametrize("ext", [".csv", ".json", ".sqlite", ".parquet"])
def test_a_relative_store_stays_where_it_was_decorated_after_a_chdir(
        tmp_path: Path, ext: str) -> None:
    out = _python(ENTRY_POINTS, tmp_path, ext)
    assert f"store at {tmp_path / 'launch' / ('runs' + ext)}" in out, out
    assert out.count("ran ") == 3  # 1, 2, 3: each once
    assert (tmp_path / "launch" / f"runs{ext}").exists()


def test_an_absolute_store_and_a_url_are_left_as_they_are(tmp_path: Path) -> None:
    from stet._run import resolve_store

    assert resolve_store(str(tmp_path / "a.csv")) == str(tmp_path / "a.csv")
    url = "postgresql://me@db.example/stet?table=runs"
    assert resolve_store(url) == url
    assert resolve_store(Path("rel.csv")) == os.path.join(os.getcwd(), "rel.csv")


HAVE_HYDRA = importlib.util.find_spec("hydra") is not None

APP = '''
import os

import hydra
from hydra.core.config_store import ConfigStore

import stet

ConfigStore.instance().store(name="config", node={
    "lr": 0.1, "seed": 0, "out": "${hydra:runtime.output_dir}",
})

KEY = None if os.environ.get("WHOLE_CONFIG") else ["cfg.lr", "cfg.seed"]


@stet.once(store="runs.csv", key=KEY)
def fit(cfg):
    with open(os.environ["RAN_LOG"], "a") as fh:
        fh.write(f"lr={cfg.lr} seed={cfg.seed} cwd={os.getcwd()}\\n")


@hydra.main(version_base=None, config_path=None, config_name="config")
def main(cfg):
    fit(cfg)


if __name__ == "__main__":
    main()
'''


def _multirun(app: Path, ok: bool = True, **env: str) -> str:
    res = subprocess.run(
        [sys.executable, str(app / "train.py"), "--multirun", "hydra.job.chdir=True",
         "lr=0.1,0.01", "seed=0,1"],
        cwd=app, env=_env(RAN_LOG=str(app / "ran.log"), **env), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert (res.returncode == 0) == ok, f"exit {res.returncode}:\n{res.stdout[-4000:]}"
    return res.stdout


@pytest.fixture
def app(tmp_path: Path) -> Path:
    if not HAVE_HYDRA:
        if IN_CI:
            pytest.fail("hydra-core is not installed; CI installs stet[hydra]")
        pytest.skip("hydra-core is not installed (pip install 'stet[hydra]')")
    (tmp_path / "train.py").write_text(APP, encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_a_hydra_task_with_chdir_keeps_one_store_where_the_multirun_started(
        app: Path) -> None:
    _multirun(app)
    lines = (app / "ran.log").read_text().splitlines()
    assert len(lines) == 4
    assert not [line for line in lines if line.endswith(f"cwd={app}")]  # chdir=True
    second = _multirun(app)
    assert len((app / "ran.log").read_text().splitlines()) == 4, second  # all skipped
    assert second.count("[stet] Skipping fit(cfg.lr=") == 4, second
    assert [p.relative_to(app) for p in app.rglob("runs.csv")] == [Path("runs.csv")]
    records = stet.load(app / "runs.csv")
    assert sorted(zip(records["cfg.lr"], records["cfg.seed"], strict=True)) == [
        (0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]


@pytest.mark.slow
def test_a_hydra_output_dir_in_a_keyed_config_is_refused_before_the_task_runs(
        app: Path) -> None:
    out = _multirun(app, ok=False, WHOLE_CONFIG="1")
    assert "key field 'cfg.out' comes from the interpolation '${hydra:runtime.output_dir}'" \
        in out, out
    assert "key=['cfg.lr', 'cfg.seed']" in out, out
    assert not (app / "ran.log").exists()
