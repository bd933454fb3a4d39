"""The ``stet`` command prints one line and exits non-zero on any failure, never a
traceback (issue 11, item 9): every subcommand, given a missing store, a directory, a
foreign or damaged file, a file it may not read, or a name without an extension."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from conftest import IN_CI
from stet._cli import main

SRC = Path(stet.__file__).resolve().parents[1]
FILES = ["csv", "json", "sqlite", "parquet"]


def commands(store: str, other: str) -> list[list[str]]:
    return [["status", store], ["status", store, "--grid", "a,b"], ["ls", store],
            ["ls", store, "--failed"], ["reset", store, "--yes"],
            ["export", store, f"{other}.csv"], ["copy", store, f"{other}.sqlite"],
            ["copy", f"{other}-src.csv", store]]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def make(kind: str, path: Path) -> None:
    if kind == "a directory":
        path.mkdir()
    elif kind == "random bytes":
        path.write_bytes(os.urandom(3000))
    elif kind == "a foreign data file":
        path.write_text({"csv": "a,b\n1,2\n", "json": '[{"a": 1}]\n'}.get(
            path.suffix[1:], "not a database\n"))
    elif kind == "an empty file":
        path.write_bytes(b"")
    elif kind == "a truncated store":
        @stet.once(store=str(path), verbose=False, name="f")
        def f(x: int) -> None:
            pass

        for x in range(30):
            f(x)
        del f
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2 + 3])


KINDS = ["missing", "a directory", "random bytes", "a foreign data file", "an empty file",
         "a truncated store"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", FILES)
def test_every_command_fails_in_one_line_on_a_bad_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, kind: str
) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / f"runs.{fmt}"
    make(kind, store)
    make("a truncated store", tmp_path / "other-src.csv")
    for argv in commands(store.name, "other"):
        code, out, err = run(argv)
        assert "Traceback" not in err + out, (argv, err)
        if code == 0:  # read: empty, a torn tail dropped, or only its failures listed
            assert kind != "a directory" or argv[:2] == ["copy", "other-src.csv"], argv
            continue
        assert code in (1, 2), (argv, code, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert err.startswith(f"stet {argv[0]}: error: "), (argv, err)


def test_a_name_without_a_known_extension_is_one_line(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes").write_text("x\n")
    for store in ("notes", "runs.txt", "postgresql-ish://x"):
        for argv in commands(store, "other"):
            code, out, err = run(argv)
            assert code in (1, 2) and "Traceback" not in err + out, (argv, err)
            assert len(err.strip().splitlines()) == 1, (argv, err)


@pytest.fixture
def unreadable_stores() -> Iterator[Path]:
    """Stores of every format that only root may read, in a directory others can reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to make files another user cannot read")
    if shutil.which("setpriv") is None:
        if IN_CI:
            pytest.fail("setpriv (util-linux) is needed to run as another user")
        pytest.skip("setpriv is missing")
    d = Path(tempfile.mkdtemp(prefix="stet-unreadable-", dir="/tmp"))
    d.chmod(0o777)
    try:
        for fmt in FILES:
            store = d / f"runs.{fmt}"

            @stet.once(store=str(store), verbose=False, name="f")
            def f(x: int) -> None:
                pass

            f(1)
            del f
        code = "import sys; from stet.backends import get_backend\n" \
               "for s in sys.argv[1:]: get_backend(s).finish()"
        subprocess.run([sys.executable, "-c", code, *(str(d / f"runs.{f}") for f in FILES)],
                       check=True, env={**os.environ, "PYTHONPATH": str(SRC)})
        for p in d.iterdir():
            p.chmod(0o600)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


UNREADABLE = """
    import contextlib, io, sys
    from stet._cli import main
    store = sys.argv[1]
    for argv in ({commands}):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        print(repr((argv, code, err.getvalue())))
"""


@pytest.mark.parametrize("fmt", FILES)
def test_every_command_fails_in_one_line_on_a_store_it_may_not_read(
    unreadable_stores: Path, fmt: str
) -> None:
    store = unreadable_stores / f"runs.{fmt}"
    cmds = commands(str(store), str(unreadable_stores / "nobodys"))
    r = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
         "-c", textwrap.dedent(UNREADABLE.format(commands=repr(cmds[:-1]))), str(store)],
        capture_output=True, text=True, timeout=120, cwd="/tmp",
        env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    results = [eval(line) for line in r.stdout.splitlines()]  # our own repr
    assert len(results) == len(cmds) - 1
    for argv, code, err in results:
        if "--failed" in argv and code == 0:
            continue  # there are no failures to read
        assert code == 1, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "Permission denied" in err and "Traceback" not in err, (argv, err)
        assert "not a readable" not in err, f"a file it may not read is not corrupt: {err}"


def test_an_error_stet_did_not_foresee_is_still_one_line(tmp_path: Path) -> None:
    """A saved result nested 100,000 deep: decoding it for ``ls`` and ``export`` is a
    RecursionError (another part of issue 11 deals with the result itself); the command
    still prints one line and exits 1, for this or any other error."""
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), save_result=True, verbose=False)
    def f(x: int) -> str:
        return "MARK"

    f(1)
    text = store.read_text()
    assert '"""MARK"""' in text
    store.write_text(text.replace('"""MARK"""', "[" * 100_000 + "]" * 100_000))
    for argv in (["ls", "runs.csv"], ["export", "runs.csv", "out.json"],
                 ["status", "runs.csv"]):
        r = subprocess.run([sys.executable, "-m", "stet", *argv], capture_output=True,
                           text=True, cwd=tmp_path, timeout=60)
        assert "Traceback" not in r.stderr, (argv, r.stderr[-500:])
        if r.returncode:
            assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, argv
