"""What stet does at exit to leave Parquet and SQLite stores whole (fold the sidecar, the
WAL) may fail: a sidecar that is a symbolic link (refused), a store deleted or replaced by
a foreign file meanwhile. The process still exits cleanly, with at most one line saying
what could not be finished and why, never a traceback, and touches no foreign file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import stet

SRC = Path(stet.__file__).resolve().parents[1]

#: Writes three runs and ends like a pool worker killed after its last record: the
#: Parquet sidecar (or the SQLite WAL) is left beside the store, unfolded.
LEAVE_UNFINISHED = """
    import os, sys, stet
    @stet.once(store=sys.argv[1], verbose=False)
    def f(x):
        return x
    for i in range(3):
        f(i)
    os._exit(0)
"""

#: Declares a function on the store (as a script whose pool workers ran it) and exits.
DECLARE = """
    import sys, stet
    @stet.once(store=sys.argv[1], verbose=False)
    def f(x):
        return x
"""

#: Writes runs itself, then (before exiting) lets ``damage`` spoil what exit must finish.
WRITE_THEN = """
    import os, sys, stet
    @stet.once(store=sys.argv[1], verbose=False)
    def f(x):
        return x
    for i in range(3):
        f(i)
    {damage}
"""


def python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SRC)})


def assert_one_clean_line(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("[stet] at exit: could not finish"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def unfinished(fmt: str) -> str:
    return ".stet-log" if fmt == "parquet" else "-wal"


@pytest.mark.parametrize("fmt", ["parquet", "sqlite"])
def test_a_sidecar_made_a_link_before_exit_is_one_line_not_a_traceback(
    tmp_path: Path, fmt: str
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    store = f"runs.{fmt}"
    r = python(LEAVE_UNFINISHED, store, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    side = tmp_path / (store + unfinished(fmt))
    assert side.exists()
    target = tmp_path / "elsewhere"
    side.rename(target)
    side.symlink_to(target.name)
    before = target.read_bytes()
    r = python(DECLARE, store, cwd=tmp_path)
    assert_one_clean_line(r, store, "symbolic link")
    assert target.read_bytes() == before and side.is_symlink()


@pytest.mark.parametrize("fmt", ["parquet", "sqlite"])
def test_a_sidecar_made_a_link_under_a_running_script_is_said_once(
    tmp_path: Path, fmt: str
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    store = f"runs.{fmt}"
    side = store + unfinished(fmt)
    damage = (f"os.rename({side!r}, 'elsewhere'); os.symlink('elsewhere', {side!r})"
              if fmt == "parquet" else "pass")
    r = python(WRITE_THEN.format(damage=damage), store, cwd=tmp_path)
    if fmt == "sqlite":  # SQLite keeps its WAL open: closing folds it, nothing to say
        assert r.returncode == 0 and r.stderr == "", r.stderr
        return
    assert_one_clean_line(r, "symbolic link")
    assert (tmp_path / side).is_symlink()


def test_a_parquet_store_replaced_by_a_foreign_file_before_exit_is_one_line(
    tmp_path: Path,
) -> None:
    pytest.importorskip("pyarrow")
    foreign = b"not a parquet file, someone else's\n"
    damage = f"open(sys.argv[1], 'wb').write({foreign!r})"
    r = python(WRITE_THEN.format(damage=damage), "runs.parquet", cwd=tmp_path)
    assert_one_clean_line(r, "runs.parquet")
    assert (tmp_path / "runs.parquet").read_bytes() == foreign
    # and when the runs were written by other processes (declared only)
    (tmp_path / "runs.parquet").unlink()
    (tmp_path / "runs.parquet.stet-log").unlink()
    assert python(LEAVE_UNFINISHED, "runs.parquet", cwd=tmp_path).returncode == 0
    (tmp_path / "runs.parquet").write_bytes(foreign)
    r = python(DECLARE, "runs.parquet", cwd=tmp_path)
    assert_one_clean_line(r, "runs.parquet")
    assert (tmp_path / "runs.parquet").read_bytes() == foreign


def test_a_sqlite_store_replaced_by_a_foreign_file_is_not_overwritten_by_its_old_wal(
    tmp_path: Path,
) -> None:
    assert python(LEAVE_UNFINISHED, "runs.sqlite", cwd=tmp_path).returncode == 0
    assert (tmp_path / "runs.sqlite-wal").exists()
    foreign = b"someone else's notes, not a database\n"
    (tmp_path / "runs.sqlite").write_bytes(foreign)
    r = python(DECLARE, "runs.sqlite", cwd=tmp_path)
    assert_one_clean_line(r, "runs.sqlite", "no longer a SQLite database")
    assert (tmp_path / "runs.sqlite").read_bytes() == foreign
    assert (tmp_path / "runs.sqlite-wal").exists()


@pytest.mark.parametrize("fmt", ["parquet", "sqlite"])
def test_a_store_deleted_before_exit_leaves_a_clean_exit(tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    store = f"runs.{fmt}"
    assert python(LEAVE_UNFINISHED, store, cwd=tmp_path).returncode == 0
    with_file = tmp_path / store
    if with_file.exists():
        with_file.unlink()
    r = python(DECLARE, store, cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 1, r.stderr


def test_ctrl_c_during_the_exit_fold_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    code = """
        import os, signal, stet
        from stet._exit import at_exit

        @stet.once(store="runs.csv", verbose=False)
        def f(x):
            return x

        f(1)
        at_exit(lambda: os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C as exit folds
    """
    r = python(code, cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[stet] at exit: interrupted"), r.stderr
