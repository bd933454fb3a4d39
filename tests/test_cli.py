"""The ``stet`` command, run as a subprocess (``python -m stet``) against every backend."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import stet
from stet._cli import main
from stet.backends import get_backend

PY = sys.executable
#: The file formats (FORMATS may also hold "postgres", whose stores are URLs).
FILES = ["csv", "json", "sqlite", "parquet"]


def stet_cmd(*args: str | Path, stdin: str | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    return subprocess.run([PY, "-m", "stet", *map(str, args)], capture_output=True,
                          text=True, input=stdin if stdin is not None else "", env=env,
                          cwd=cwd, timeout=60)


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


def populate(store: Path) -> Any:
    """6 completed runs with results, 3 failures (alpha=-1.0)."""

    @stet.once(store=str(store), key=["alpha", "seed"], save_result=True, verbose=False,
               name="run_experiment")
    def exp(alpha: float, seed: int, n_iter: int = 10) -> dict[str, float]:
        if alpha < 0:
            raise ValueError(f"diverged at alpha={alpha}")
        return {"loss": alpha * seed}

    s = stet.sweep(exp, stet.grid(alpha=[0.1, 0.5, -1.0], seed=range(3)), progress=False)
    assert (s.ran, s.failed) == (6, 3)
    return exp


def records_of(store: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    with get_backend(store) as b:
        clean = [{k: v for k, v in r.items() if k != "_stet_empty"} for r in b.load()]
        return clean, b.failures()


def canon(records: list[dict[str, str]]) -> list[tuple[tuple[str, str], ...]]:
    return sorted(tuple(sorted(r.items())) for r in records)


# ----------------------------------------------------------------------- commands
def test_status_and_grid(store_path: Path) -> None:
    populate(store_path)
    r = stet_cmd("status", store_path, "--grid", "alpha,seed")
    assert r.returncode == 0, r.stderr
    assert "Store: " in r.stdout
    assert "Completed runs: 6" in r.stdout and "Key fields: alpha, seed" in r.stdout
    assert "run_experiment: 6 completed, 3 failed (latest: ValueError: diverged" in r.stdout
    assert "mean duration" in r.stdout
    lines = r.stdout.splitlines()
    grid = lines[lines.index("alpha \\ seed  0 1 2"):]
    assert grid[1].split() == ["-1.0", "✗", "✗", "✗"]  # sorted as numbers
    assert grid[2].split() == ["0.1", "●", "●", "●"]
    assert grid[3].split() == ["0.5", "●", "●", "●"]
    assert "● done 6  ✗ failed 3  ▶ running 0  · pending 0" in r.stdout
    assert "\x1b[" not in r.stdout  # no colour when stdout is not a terminal



def test_status_grid_mistakes_in_process(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.csv"
    populate(store)
    for arg, message in (("alpha,sed", "no run in"), ("alpha", "two key fields"),
                         ("alpha,alpha", "two different fields")):
        with pytest.raises(SystemExit) as info:
            main(["status", str(store), "--grid", arg])
        assert info.value.code == 2
        assert message in capsys.readouterr().err


def test_ls(store_path: Path) -> None:
    populate(store_path)
    r = stet_cmd("ls", store_path, "--where", "seed=1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["alpha", "seed", "result.loss", "finished", "(UTC)", "duration"]
    assert [line.split()[:3] for line in lines[2:4]] == [["0.1", "1", "0.1"],
                                                         ["0.5", "1", "0.5"]]
    assert lines[-1] == "(2 records)"

    r = stet_cmd("ls", store_path, "--failed", "--where", "seed=2")
    assert r.returncode == 0, r.stderr
    assert "ValueError" in r.stdout and "diverged at alpha=-1.0" in r.stdout
    assert r.stdout.splitlines()[-1] == "(1 failure)"



def test_ls_in_process_details(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "runs.json"
    populate(store_path)
    with pytest.raises(SystemExit) as info:
        main(["ls", str(store_path), "--where", "alpha"])
    assert info.value.code == 2 and "FIELD=VALUE" in capsys.readouterr().err
    assert main(["ls", str(store_path), "--where", "alpha=0.10"]) == 0
    out = capsys.readouterr().out
    assert "no record matches" in out and "alpha is stored as 0.1" in out
    with pytest.raises(SystemExit) as info:
        main(["ls", str(store_path), "--where", "alpa=1"])
    assert info.value.code == 2
    assert "has the field 'alpa'; key fields: alpha, seed" in capsys.readouterr().err
    assert main(["ls", str(store_path), "--limit", "2", "--all"]) == 0
    out = capsys.readouterr().out
    assert "_stet_host" not in out and "host" in out and "(2 records of 6 matching)" in out
    assert main(["ls", str(store_path), "--func", "nobody"]) == 0
    assert "no record matches" in capsys.readouterr().out


def test_reset(store_path: Path) -> None:
    populate(store_path)
    r = stet_cmd("reset", store_path, "--where", "alpha=0.1")  # stdin is not a terminal
    assert r.returncode == 2 and "pass --yes" in r.stderr
    no_traceback(r)
    assert len(records_of(store_path)[0]) == 6

    r = stet_cmd("reset", store_path, "--where", "alpha=0.1", "--yes")
    assert r.returncode == 0, r.stderr
    assert "Removed 3 completed runs" in r.stdout
    done, failures = records_of(store_path)
    assert sorted(d["alpha"] for d in done) == ["0.5"] * 3 and len(failures) == 3

    assert main(["reset", str(store_path), "--failed", "--yes"]) == 0
    assert records_of(store_path)[1] == []
    assert main(["reset", str(store_path), "-y"]) == 0
    assert records_of(store_path) == ([], [])


def test_reset_asks_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "runs.sqlite"
    populate(store_path)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["reset", str(store_path), "--where", "seed=0"]) == 1
    assert "Nothing removed" in capsys.readouterr().out
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["reset", str(store_path), "--where", "seed=0"]) == 0
    assert "Removed 2 completed runs and 1 failure record" in capsys.readouterr().out


def _awkward_store(store_path: Path) -> None:
    populate(store_path)
    with get_backend(store_path) as b:  # awkward records: all must survive
        b.append_record({"alpha": "", "seed": "7", "we\"ird name'": "a,b\nc",
                         "_stet_func": "run_experiment", "_stet_timestamp": "t"})
        b.record({"alpha": 0.9, "seed": 9})  # no function name, as stet 0.0.2 wrote


def test_copy_keeps_everything(store_path: Path, fmt: str, tmp_path: Path) -> None:
    _awkward_store(store_path)
    before = records_of(store_path)
    # csv -> json -> sqlite -> parquet -> csv (and any other backend -> csv)
    dst_fmt = FILES[(FILES.index(fmt) + 1) % len(FILES)] if fmt in FILES else "csv"
    dst = tmp_path / f"copy.{dst_fmt}"
    r = stet_cmd("copy", store_path, dst)
    assert r.returncode == 0, r.stderr
    assert "Copied 8 completed runs and 3 failure records" in r.stdout
    after = records_of(dst)
    assert canon(after[0]) == canon(before[0])
    assert canon(after[1]) == canon(before[1])
    _check_copy_works(dst)


def test_copy_any_backend_to_any_backend(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for src_fmt in FILES:
        src = tmp_path / f"src.{src_fmt}"
        _awkward_store(src)
        before = records_of(src)
        for dst_fmt in FILES:
            dst = tmp_path / f"{src_fmt}-to.{dst_fmt}"
            assert main(["copy", str(src), str(dst)]) == 0
            assert canon(records_of(dst)[0]) == canon(before[0]), (src_fmt, dst_fmt)
            assert canon(records_of(dst)[1]) == canon(before[1]), (src_fmt, dst_fmt)
            assert main(["copy", str(src), str(dst)]) == 0  # again: nothing twice
            assert "(8 already there)" in capsys.readouterr().out
            assert canon(records_of(dst)[0]) == canon(before[0])
        with pytest.raises(SystemExit):
            main(["copy", str(src), str(src)])


def _check_copy_works(dst: Path) -> None:
    # The copy is a working store: its runs are skipped by the same function.
    @stet.once(store=str(dst), key=["alpha", "seed"], save_result=True, verbose=False,
               name="run_experiment")
    def exp(alpha: float, seed: int) -> None:
        raise AssertionError("must not run")

    assert exp(0.5, 2) == {"loss": 1.0}


def test_export(store_path: Path, tmp_path: Path) -> None:
    populate(store_path)
    r = stet_cmd("export", store_path, tmp_path / "out.csv")
    assert r.returncode == 0, r.stderr
    assert "Exported 6 runs" in r.stdout
    for ext in ("json", "parquet"):
        assert main(["export", str(store_path), str(tmp_path / f"out.{ext}")]) == 0
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert sorted((r["alpha"], r["seed"], r["result.loss"]) for r in rows)[0] == (
        "0.1", "0", "0.0")
    data = json.loads((tmp_path / "out.json").read_text())
    assert {type(d["alpha"]) for d in data} == {float} and {type(d["seed"]) for d in data} == {int}
    assert all(d["_stet_func"] == "run_experiment" for d in data)
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(tmp_path / "out.parquet")
    assert df["seed"].dtype == "int64" and df["result.loss"].dtype == "float64"
    assert len(df) == 6

    with pytest.raises(SystemExit) as info:
        main(["export", str(store_path), str(tmp_path / "out.xlsx")])
    assert info.value.code == 2


def test_export_failures_in_process(store_path: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    populate(store_path)
    out = tmp_path / "fails.json"
    assert main(["export", str(store_path), str(out), "--failed", "--where", "seed=0"]) == 0
    [fail] = json.loads(out.read_text())
    assert fail["alpha"] == -1.0 and fail["_stet_error_type"] == "ValueError"


# ------------------------------------------------------------------ user mistakes
def test_user_mistakes_exit_non_zero_without_tracebacks(tmp_path: Path, fmt: str) -> None:
    if fmt not in FILES:
        pytest.skip("a corrupt file store")
    bad = tmp_path / f"corrupt.{fmt}"
    garbage = b"\x00\x01 this is not a store \xff\xfe" * 10
    bad.write_bytes(garbage)
    r = stet_cmd("status", bad)
    assert r.returncode == 1 and str(bad) in r.stderr
    no_traceback(r)
    assert bad.read_bytes() == garbage  # left untouched


def test_usage_and_help(tmp_path: Path) -> None:
    r = stet_cmd("ls", tmp_path / "missing.sqlite")
    assert r.returncode == 1 and "no stet store at" in r.stderr and "missing.sqlite" in r.stderr
    no_traceback(r)
    r = stet_cmd("ls", tmp_path / "runs.txt")
    assert r.returncode == 1 and "extension '.txt'" in r.stderr
    no_traceback(r)
    r = stet_cmd()
    assert r.returncode == 2 and "COMMAND" in r.stderr
    r = stet_cmd("--help")
    assert r.returncode == 0
    for command in ("status", "ls", "reset", "copy", "export"):
        assert command in r.stdout
    r = stet_cmd("reset", "--help")
    assert r.returncode == 0 and "--yes" in r.stdout and "--where" in r.stdout
    script = Path(sys.executable).with_name("stet")  # the console script
    if script.exists():
        r = subprocess.run([str(script), "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("stet ")


def test_a_store_with_only_failures_can_be_inspected(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), name="broken")
    def broken(x: int) -> None:
        raise ValueError("bug in the experiment")

    s = stet.sweep(broken, stet.grid(x=range(2)), progress=False)
    assert s.failed == 2 and not store.exists()  # nothing completed: no store file yet
    assert main(["ls", str(store), "--failed"]) == 0
    assert "bug in the experiment" in capsys.readouterr().out
    assert main(["status", str(store)]) == 0
    assert "broken: 0 completed, 2 failed" in capsys.readouterr().out
    assert main(["ls", str(tmp_path / "typo.csv")]) == 1
    assert not (tmp_path / "typo.csv.lock").exists()  # a typo leaves nothing behind
