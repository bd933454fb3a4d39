"""A full disk (issue 11, item 9) is a StoreError naming the file and saying what to do,
never a bare ``OSError [Errno 28]`` nor, for SQLite, "corrupt": tried on a real 256 kB
tmpfs filled to the last byte. What the store held before is kept, and once space is
freed the store works again."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from conftest import IN_CI
from stet._cli import main
from stet.backends import get_backend
from stet.errors import CorruptStoreError, StoreError

FILES = ["csv", "json", "sqlite", "parquet"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    where.mkdir()
    why = "mounting a tmpfs needs root" if os.geteuid() != 0 else ""
    if not why:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
                           capture_output=True, text=True)
        why = r.stderr.strip() if r.returncode else ""
    if why:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs ({why}); CI runs as root and must run this")
        pytest.skip(why)
    try:
        yield where
    finally:
        gc.collect()  # backends of the test: their descriptors of files on the disk
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the file to remove to free it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    with pytest.raises(OSError) as info:  # really full now
        (disk / "probe").write_bytes(b"x" * 4096)
    assert info.value.errno == errno.ENOSPC
    (disk / "probe").unlink()
    return filler


def once(store: Path, ran: list[int], fail: bool = False) -> stet.Once:
    @stet.once(store=str(store), verbose=False, save_result=True, name="f")
    def f(x: int) -> str:
        ran.append(x)
        if fail:
            raise ValueError("no")
        return "v" * 5000

    return f


def count(store: Path) -> int:
    with get_backend(store) as b:
        return len(b.load())


@pytest.mark.parametrize("fmt", FILES)
def test_a_full_disk_is_a_store_error_naming_the_file(tiny_disk: Path, fmt: str) -> None:
    store = tiny_disk / f"runs.{fmt}"
    ran: list[int] = []
    f = once(store, ran)
    for x in range(3):
        f(x)
    filler = fill(tiny_disk)
    # one block left: the run is not refused beforehand, and its record does not fit
    os.truncate(filler, filler.stat().st_size - 4096)
    errors = []
    for x in range(3, 40):  # until the last free bytes of a page are gone too
        try:
            f(x)
        except StoreError as exc:
            errors.append(exc)
            break
    assert errors, "40 records of 5 kB fitted on a full disk"
    exc = errors[0]
    assert type(exc) is StoreError, f"a full disk is not a corrupt store: {exc}"
    assert str(tiny_disk) in str(exc) and "full" in str(exc), str(exc)
    kept = count(store)
    assert kept >= 3
    filler.unlink()
    f(100)
    assert count(store) == kept + 1
    before = len(ran)
    for x in (0, 1, 2, 100):
        f(x)
    assert len(ran) == before  # nothing recorded before was lost


@pytest.mark.parametrize("fmt", ["csv", "sqlite"])
def test_a_failure_that_cannot_be_recorded_on_a_full_disk_is_a_store_error(
    tiny_disk: Path, fmt: str
) -> None:
    store = tiny_disk / f"runs.{fmt}"
    once(store, [])(0)
    fill(tiny_disk)
    g = once(store, [], fail=True)
    with pytest.raises(StoreError) as info:
        for x in range(1, 40):
            with contextlib.suppress(ValueError):
                g(x)
    assert not isinstance(info.value, CorruptStoreError)
    assert "full" in str(info.value) or "No space left" in str(info.value)


def test_the_command_says_the_disk_is_full_in_one_line(
    tiny_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "runs.csv"
    f = once(source, [])
    for x in range(20):
        f(x)
    fill(tiny_disk)
    for argv in (["export", str(source), str(tiny_disk / "out.csv")],
                 ["copy", str(source), str(tiny_disk / "copy.csv")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "No space left on device" in err or "disk is full" in err, err
    assert sorted(p.name for p in tiny_disk.iterdir() if p.name != "filler") in (
        [], ["copy.csv.claims", "copy.csv.lock"], ["copy.csv.lock"])


@pytest.mark.parametrize("fmt", FILES)
def test_a_disk_with_no_block_left_is_refused_before_the_function_runs(
    tiny_disk: Path, fmt: str
) -> None:
    store = tiny_disk / f"runs.{fmt}"
    ran: list[int] = []
    f = once(store, ran)
    f(0)
    filler = fill(tiny_disk)
    with pytest.raises(StoreError, match="the disk is full") as info:
        f(1)
    assert ran == [0] and "not started" in str(info.value)
    f(0)  # a done run is still skipped
    filler.unlink()
    f(1)
    assert ran == [0, 1]
