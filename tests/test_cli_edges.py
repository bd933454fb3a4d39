"""The ``stet`` command on valid stores with awkward content and on paths and URLs one
step off the usual: a lone surrogate or any text the terminal cannot encode is shown and
exported, never an error; a path that cannot be a store and a server that cannot be
reached are one line on stderr and a non-zero exit, a password never shown."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stet
from stet._cli import main

SRC = Path(stet.__file__).resolve().parents[1]
FILES = ["csv", "json", "sqlite", "parquet"]


def stet_cmd(cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command, its output a pipe (as under ``| less`` or in CI logs)."""
    return subprocess.run(
        [sys.executable, "-m", "stet", *argv], capture_output=True, cwd=cwd, timeout=60,
        text=True, encoding="utf-8", errors="replace",
        env={**os.environ, "PYTHONPATH": str(SRC), **env})


def store_with(tmp_path: Path, fmt: str, value: str) -> str:
    store = tmp_path / f"runs.{fmt}"

    @stet.once(store=str(store), save_result=True, verbose=False, name="f")
    def f(x: str) -> str:
        return x + "!"

    f(value)
    f("plain")
    del f
    code = "import sys; from stet.backends import get_backend; get_backend(sys.argv[1]).finish()"
    subprocess.run([sys.executable, "-c", code, str(store)], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(SRC)})
    return store.name


@pytest.mark.parametrize("fmt", FILES)
def test_a_lone_surrogate_in_a_store_is_listed_and_exported_not_an_error(
    tmp_path: Path, fmt: str
) -> None:
    pytest.importorskip("pyarrow")
    store = store_with(tmp_path, fmt, "a\ud800b")
    r = stet_cmd(tmp_path, "ls", store)
    assert r.returncode == 0, r.stderr
    assert "a\\ud800b" in r.stdout and "a\\ud800b!" in r.stdout and r.stderr == ""
    r = stet_cmd(tmp_path, "status", store)
    assert r.returncode == 0 and "2 completed" in r.stdout, r.stderr

    for ext in ("csv", "json", "parquet"):
        r = stet_cmd(tmp_path, "export", store, f"out.{ext}")
        assert r.returncode == 0 and r.stderr == "", (ext, r.stderr)
    # JSON: the escape JSON itself has, read back as the very same string
    rows = json.loads((tmp_path / "out.json").read_bytes())
    assert {r["x"] for r in rows} == {"a\ud800b", "plain"}
    assert {r["result"] for r in rows} == {"a\ud800b!", "plain!"}
    # CSV and Parquet (UTF-8 text only): the character written as its Python escape
    text = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert "a\\ud800b" in text and "a\\ud800b!" in text
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert sorted(table["x"]) == ["a\\ud800b", "plain"]


def test_a_terminal_that_cannot_show_a_value_gets_its_escape(tmp_path: Path) -> None:
    store = store_with(tmp_path, "json", "café ✓")
    for argv in (["ls", store], ["status", store], ["ls", store, "--all"]):
        r = stet_cmd(tmp_path, *argv, PYTHONIOENCODING="ascii")
        assert r.returncode == 0 and "Traceback" not in r.stderr, (argv, r.stderr)
        if argv[0] == "ls":
            assert "caf\\xe9 \\u2713" in r.stdout, r.stdout


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def every_command(store: str) -> list[list[str]]:
    return [["status", store], ["status", store, "--grid", "a,b"], ["ls", store],
            ["ls", store, "--failed"], ["reset", store, "--yes"], ["copy", store, "c.sqlite"],
            ["copy", "good.csv", store], ["export", store, "o.csv"],
            ["export", "good.csv", store], ["export", "good.csv", store, "--force"],
            ["export", "good.csv", store + ".csv"]]


def test_every_command_is_one_line_for_a_path_that_cannot_be_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store_with(tmp_path, "csv", "v")
    os.rename("runs.csv", "good.csv")
    Path("plain").write_text("x\n")
    Path("d.csv").mkdir()
    os.symlink("loop-b.csv", "loop-a.csv")
    os.symlink("loop-a.csv", "loop-b.csv")
    paths = ["missing.csv", "d.csv", "d.csv/", "plain/runs.csv", "loop-a.csv",
             "x" * 300 + ".csv", "nodir/runs.sqlite", "", ".csv", "plain"]
    for path in paths:
        for argv in every_command(path):
            code, out, err = run(argv)
            assert "Traceback" not in out + err and "unexpected" not in err, (argv, err)
            if code == 0:  # copying into a new store, or reading one that is empty
                continue
            assert code in (1, 2) and len(err.strip().splitlines()) == 1, (argv, code, err)
            assert err.startswith(f"stet {argv[0]}: error: "), (argv, err)


@pytest.mark.parametrize("url", [
    "postgresql://127.0.0.1:1/db",
    "postgresql://bob:Secr3t-pw@127.0.0.1:1/db",
    "postgresql://bob:Secr3t%2Fpw@127.0.0.1:1/db",
    "postgresql://bob:Secr3t/pw@127.0.0.1:1/db",
    "postgresql://bob:Secr3t?pw#x@127.0.0.1:1/db",
])
def test_every_command_is_one_line_for_a_server_it_cannot_reach_and_hides_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    store_with(tmp_path, "csv", "v")
    os.rename("runs.csv", "good.csv")
    for argv in every_command(url):
        code, out, err = run(argv)
        assert code in (1, 2), (argv, code, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert "Secr3t" not in out + err, (argv, err)
    r = stet_cmd(tmp_path, "ls", url)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Secr3t" not in r.stdout + r.stderr
