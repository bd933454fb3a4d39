"""``stet export`` and ``stet copy`` never write onto a store (issue 11, item 7): not the
store itself by any spelling (``./``, an absolute path, a symbolic or hard link), not a
file stet keeps beside it, not another store, and, without ``--force``, no existing
file. Each refusal is one line, exit status 2, and leaves every file as it was."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import stet
from stet._cli import main
from stet.backends import get_backend

FILES = ["csv", "json", "sqlite", "parquet"]
OUTS = ["csv", "json", "parquet"]


def populate(store: Path) -> None:
    @stet.once(store=str(store), save_result=True, verbose=False, name="f")
    def f(x: int) -> dict[str, int]:
        if x < 0:
            raise ValueError("negative")
        return {"y": 2 * x}

    for x in range(-1, 6):
        with contextlib.suppress(ValueError):
            f(x)
    del f
    gc.collect()  # the decorated function's backend: closed (SQLite folds its WAL)
    with get_backend(store) as b:
        b.finish()  # Parquet: the store file itself holds every run


def snapshot(directory: Path) -> dict[str, str]:
    """Every entry of ``directory``: a link's target, or a file's content digest."""
    out = {}
    for p in sorted(directory.iterdir()):
        if p.name.endswith(("-wal", "-shm")) and not p.is_symlink():
            continue  # SQLite's own, while a connection is open
        out[p.name] = (f"-> {os.readlink(p)}" if p.is_symlink() else
                       hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
    return out


#: Ways to name the store (or a file beside it) as OUT: (name of OUT, how to make it).
Spelling = Callable[[Path, Path], str]
SPELLINGS: dict[str, Spelling] = {
    "the same name": lambda d, s: s.name,
    "./name": lambda d, s: f"./{s.name}",
    "an absolute path": lambda d, s: str(s),
    "a symbolic link": lambda d, s: (os.symlink(s.name, d / f"link{s.suffix}"),
                                     f"link{s.suffix}")[1],
    "a hard link": lambda d, s: (os.link(s, d / f"hard{s.suffix}"), f"hard{s.suffix}")[1],
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.parametrize("fmt", OUTS)
@pytest.mark.parametrize("force", [False, True])
def test_export_never_writes_onto_its_own_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    fmt: str, spelling: str, force: bool,
) -> None:
    store = tmp_path / f"runs.{fmt}"
    populate(store)
    monkeypatch.chdir(tmp_path)
    out = SPELLINGS[spelling](tmp_path, store)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["export", store.name, out, *(["--force"] if force else [])])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "never onto a store" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
    assert len(stet.load(store)) == 6


@pytest.mark.parametrize("fmt", FILES)
@pytest.mark.parametrize("suffix", [".lock", ".claims", ".failures.jsonl", ".stet-log",
                                    "-wal", "-shm", "-journal"])
def test_export_never_writes_onto_a_file_beside_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, suffix: str
) -> None:
    store = tmp_path / f"runs.{fmt}"
    populate(store)
    monkeypatch.chdir(tmp_path)
    os.symlink(f"runs.{fmt}{suffix}", tmp_path / "out.csv")  # existing or dangling
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["export", store.name, "out.csv", "--force"])
    assert info.value.code == 2
    assert snapshot(tmp_path) == before


def test_the_reported_case_exporting_a_store_onto_itself_loses_nothing(tmp_path: Path
                                                                     ) -> None:
    store = tmp_path / "runs.csv"
    populate(store)
    data = store.read_bytes()
    r = subprocess.run([sys.executable, "-m", "stet", "export", "runs.csv", "runs.csv"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and not r.stdout
    assert r.stderr.startswith("stet export: error: OUT runs.csv is the store runs.csv")
    assert store.read_bytes() == data

    @stet.once(store=str(store), save_result=True, verbose=False, name="f")
    def f(x: int) -> dict[str, int]:
        raise AssertionError("a done run ran again")

    assert f(3) == {"y": 6}  # the saved result is still there


def test_export_replaces_an_existing_file_only_with_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.sqlite"
    populate(store)
    monkeypatch.chdir(tmp_path)
    Path("results.csv").write_text("someone's notes\n")
    with pytest.raises(SystemExit) as info:
        main(["export", "runs.sqlite", "results.csv"])
    assert info.value.code == 2 and "--force" in capsys.readouterr().err
    assert Path("results.csv").read_text() == "someone's notes\n"
    assert main(["export", "runs.sqlite", "results.csv", "--force"]) == 0
    assert Path("results.csv").read_text().startswith("x,result.y,")
    # a link at OUT is replaced by the export, not written through
    Path("notes.txt").write_text("keep me\n")
    os.symlink("notes.txt", "linked.csv")
    assert main(["export", "runs.sqlite", "linked.csv", "--force"]) == 0
    assert Path("notes.txt").read_text() == "keep me\n"
    assert not Path("linked.csv").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if ".stet-export-" in p.name) == []


def test_export_never_replaces_another_store_even_with_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(tmp_path / "a.sqlite")
    populate(tmp_path / "b.csv")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["export", "a.sqlite", "b.csv", "--force"])
    assert info.value.code == 2
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.parametrize("fmt", FILES)
def test_copy_refuses_a_store_onto_itself_by_any_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    fmt: str, spelling: str,
) -> None:
    store = tmp_path / f"runs.{fmt}"
    populate(store)
    monkeypatch.chdir(tmp_path)
    dst = SPELLINGS[spelling](tmp_path, store)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["copy", store.name, dst])
    assert info.value.code == 2
    assert "copying a store onto itself" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("suffix", [".lock", ".claims", ".stet-log", "-wal"])
def test_copy_refuses_a_destination_that_is_a_file_beside_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    store = tmp_path / "runs.parquet" if suffix == ".stet-log" else tmp_path / "runs.csv"
    populate(store)
    monkeypatch.chdir(tmp_path)
    os.symlink(f"{store.name}{suffix}", tmp_path / "dst.csv")
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["copy", store.name, "dst.csv"])
    assert info.value.code == 2
    assert snapshot(tmp_path) == before
