"""A process that holds a store open sees, at its next call, what another process did to
the store file: replaced it, removed it, or moved it away and put another in its place.
(Not SQLite's: a database renamed or unlinked while open is one SQLite's own documents
say corrupts, its journal left beside the wrong file.)

Between calls a file store is asked for changes through the descriptor it holds (one
``fstat``): a rename over the file or an unlink drops its link count, a move of it moves
its ctime; the path itself is looked at again every ``PATH_LOOK`` seconds, for a move
within the coarse clock's tick of the file's last change (see
``stet._logfile.unchanged_by_descriptor``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

import stet
from stet import _logfile
from stet._logfile import _snapshot, unchanged_by_descriptor
from stet.backends._parquet import ParquetBackend

FORMATS = ["csv", "json", "parquet"]

#: Records runs in a store, as another process does (it ends normally: the store file
#: alone then holds them, Parquet's log folded).
WRITER = ("import sys, stet\nstet.configure(verbose=False)\n"
          "@stet.once(store=sys.argv[1], name='run')\ndef run(i):\n    pass\n"
          "for i in sys.argv[2:]:\n    run(int(i))\n")


def _write(store: Path, *runs: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", WRITER, str(store), *map(str, runs)], env=env,
                   check=True, timeout=120)


def _holder(store: Path, calls: list[int]) -> Callable[[int], None]:
    stet.configure(verbose=False)

    @stet.once(store=store, name="run")
    def run(i: int) -> None:
        calls.append(i)

    return run


def _settle(run: Callable[[int], None]) -> None:
    """Fold a Parquet store's log: the Parquet file alone then holds the runs (the log
    beside it, which another process's changes leave alone, is part of the store)."""
    backend = run.backend()  # type: ignore[attr-defined]
    if isinstance(backend, ParquetBackend):
        backend.fold()


def _replacing(store: Path) -> Callable[[], None]:
    """Another store is written beside ``store``; the change returned renames it over."""
    other = store.with_name("other" + store.suffix)
    _write(other, 2, 3)
    return lambda: os.replace(other, store)


def _moving_away(store: Path) -> Callable[[], None]:
    """Another store is written aside; the change returned moves ``store`` away and that
    one into its place."""
    new = store.parent / "new" / store.name
    new.parent.mkdir()
    _write(new, 2, 3)

    def change() -> None:
        os.rename(store, store.with_name("old" + store.suffix))
        os.rename(new, store)
    return change


def _held(tmp_path: Path, ext: str, prepare: Callable[[Path], Callable[[], None]]
          ) -> tuple[Callable[[int], None], list[int], Callable[[], None]]:
    """A process holding ``runs.<ext>``, which holds run 1, written last, and a change
    prepared by ``prepare`` to make to it at once."""
    store, calls = tmp_path / f"runs.{ext}", list[int]()
    run = _holder(store, calls)
    run(0)
    _settle(run)
    change = prepare(store)
    run(1)  # the last write to the file before the change
    _settle(run)
    return run, calls, change


@pytest.mark.parametrize("ext", FORMATS)
def test_a_store_file_replaced_at_once_after_a_record_is_seen_at_the_next_call(
        tmp_path: Path, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_logfile, "PATH_LOOK", 1e9)  # the descriptor alone tells it:
    run, calls, replace = _held(tmp_path, ext, _replacing)
    replace()  # (its link count drops to 0; its ctime may stay within the clock's tick)
    run(1)  # only the old file held it
    run(2)  # the new one holds it
    assert calls == [0, 1, 1]


@pytest.mark.parametrize("ext", FORMATS)
def test_a_store_file_moved_away_and_replaced_is_seen_at_the_next_call(
        tmp_path: Path, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_logfile, "PATH_LOOK", 1e9)
    run, calls, move = _held(tmp_path, ext, _moving_away)
    time.sleep(0.05)  # past the coarse clock's tick of the last record:
    move()  # the move moves the file's ctime (its link count stays)
    run(1)
    run(2)
    assert calls == [0, 1, 1]


@pytest.mark.parametrize("ext", FORMATS)
def test_a_store_file_moved_away_at_once_is_seen_once_the_path_is_looked_at(
        tmp_path: Path, ext: str) -> None:
    run, calls, move = _held(tmp_path, ext, _moving_away)
    move()  # within the clock's tick of the last record, maybe: the descriptor cannot tell
    time.sleep(2 * min(_logfile.PATH_LOOK, 1.0))
    run(1)
    run(2)
    assert calls == [0, 1, 1]


@pytest.mark.parametrize("ext", FORMATS)
def test_a_removed_store_file_is_seen_at_the_next_call(
        tmp_path: Path, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_logfile, "PATH_LOOK", 1e9)
    run, calls, _ = _held(tmp_path, ext, lambda store: lambda: None)
    os.unlink(store := tmp_path / f"runs.{ext}")  # (its link count drops to 0)
    run(1)
    assert calls == [0, 1, 1]
    assert not stet.load(store).empty


@pytest.mark.parametrize("ext", FORMATS)
def test_runs_appended_by_another_process_are_seen_at_the_next_call(
        tmp_path: Path, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_logfile, "PATH_LOOK", 1e9)
    store, calls = tmp_path / f"runs.{ext}", list[int]()
    run = _holder(store, calls)
    run(1)
    _write(store, 2)
    run(2)
    assert calls == [1]


def _file_with_descriptor(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "file"
    path.write_bytes(b"x")
    return path, os.open(path, os.O_RDONLY)


def test_the_descriptor_tells_an_unlinked_file_even_when_its_times_stand_still(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, fd = _file_with_descriptor(tmp_path)
    before = os.fstat(fd)
    snap = _snapshot(before)
    assert unchanged_by_descriptor(fd, snap, time.monotonic())
    os.unlink(path)
    real = os.fstat

    def coarse_clock(fd: int) -> object:  # a kernel whose ctime did not move this tick
        st = real(fd)
        return SimpleNamespace(st_ino=st.st_ino, st_size=st.st_size, st_nlink=st.st_nlink,
                               st_mtime_ns=before.st_mtime_ns,
                               st_ctime_ns=before.st_ctime_ns)

    monkeypatch.setattr(os, "fstat", coarse_clock)
    assert not unchanged_by_descriptor(fd, snap, time.monotonic())
    # and a snapshot taken of an unlinked file never passes for the file at the path
    assert not unchanged_by_descriptor(fd, _snapshot(coarse_clock(fd)),  # type: ignore[arg-type]
                                       time.monotonic())
    os.close(fd)


def test_the_path_is_looked_at_again_once_path_look_has_passed(tmp_path: Path) -> None:
    _, fd = _file_with_descriptor(tmp_path)
    snap = _snapshot(os.fstat(fd))
    assert unchanged_by_descriptor(fd, snap, time.monotonic())
    assert not unchanged_by_descriptor(fd, snap, time.monotonic() - 2 * _logfile.PATH_LOOK)
    assert not unchanged_by_descriptor(-1, snap, time.monotonic())
    assert not unchanged_by_descriptor(fd, None, time.monotonic())
    os.close(fd)


FORGETTER = ("import sys, stet\n@stet.once(store=sys.argv[1], name='run')\n"
             "def run(i):\n    pass\nrun.forget(int(sys.argv[2]))\n")


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "as recorded"])
@pytest.mark.parametrize("ext", [*FORMATS, "sqlite"])
def test_a_run_forgotten_by_another_process_runs_again_at_the_next_call(
        tmp_path: Path, ext: str, folded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_logfile, "PATH_LOOK", 1e9)  # what the store's files tell alone
    store, calls = tmp_path / f"runs.{ext}", list[int]()
    run = _holder(store, calls)
    run(1)
    run(2)
    if folded:  # (Parquet: the runs in the Parquet file; else in the log beside it)
        _settle(run)
    run(1)  # a lookup that finds its run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", FORGETTER, str(store), "1"], env=env, check=True,
                   timeout=120)
    run(1)
    run(2)
    assert calls == [1, 2, 1]
