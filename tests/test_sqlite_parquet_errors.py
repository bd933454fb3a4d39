"""Store failures that are not corruption are said as what they are
(docs/explanation/promises.md).

A full disk under a SQLite store used to be reported as a corrupt file to move aside.
These tests fill a real filesystem: a small tmpfs mounted for the test (root only, as
in CI, which installs packages as root).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from conftest import IN_CI
from stet.backends import get_backend


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 1 MiB tmpfs of its own (unmounted afterwards)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        reason = "mounting a small tmpfs needs root"
        if IN_CI:
            pytest.fail(reason + " (CI runs as root)")
        pytest.skip(reason)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        reason = f"cannot mount a tmpfs: {out.stderr.strip()}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the filesystem to the last byte with a file that can be removed later."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_under_a_sqlite_store_is_said_to_be_full(small_disk: Path) -> None:
    store = small_disk / "runs.sqlite"
    with get_backend(store) as b:
        for i in range(20):
            b.record({"x": i})
    calls: list[int] = []

    @stet.once(store=store, verbose=False)
    def f(x: int, pad: str) -> int:
        calls.append(x)
        return x

    assert f(0, "") == 0
    filler = _fill(small_disk)
    assert f(0, "") is None  # a skip needs no space
    # Another process: its record cannot be written (whether it can open the store
    # depends on whether WAL's -shm file exists yet); said so, not called corruption.
    script = textwrap.dedent(
        f"""
        import stet
        @stet.once(store={str(store)!r}, verbose=False)
        def f(x, pad):
            print("ran")
        try:
            f(1, "")
        except stet.CorruptStoreError as exc:
            print("corrupt:", exc)
        except stet.StoreError as exc:
            print("error:", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    error = out.stdout.split("\n")[-2]
    assert error.startswith("error:"), out.stdout + out.stderr
    assert "disk is full" in error and str(store) in error
    with pytest.raises(stet.StoreError) as info:
        for i in range(1000):  # the WAL may still have room for a few
            f(100 + i, "p" * 2000)
    message = str(info.value)
    assert not isinstance(info.value, stet.CorruptStoreError)
    assert str(store) in message
    assert "disk is full" in message
    assert "move it aside" not in message
    # The calls that ran after the first: each is recorded, but for the last, which may
    # have run and then not fit (or been refused before running, once no block is left).
    ran = calls[1:]
    done = sum(1 for x in ran if f.is_done(x, "p" * 2000))
    assert done >= len(ran) - 1
    os.unlink(filler)
    # Nothing lost, nothing half-written: every recorded run is there, and the store
    # takes new runs once there is space again.
    fresh = 100 + 1000  # a run never tried
    assert f(fresh, "p" * 2000) == fresh
    script = textwrap.dedent(
        f"""
        from stet.backends import get_backend
        with get_backend({str(store)!r}) as b:
            last = {{"x": {fresh}, "pad": "p" * 2000}}
            print(len(b.load()), b.has({{"x": 19}}), b.has(last))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == [str(20 + 1 + done + 1), "True", "True"], out.stderr


def test_a_full_disk_when_a_sqlite_store_is_created_is_not_corruption(
    small_disk: Path,
) -> None:
    filler = _fill(small_disk)
    store = small_disk / "runs.sqlite"
    with get_backend(store) as b, pytest.raises(stet.StoreError) as info:
        b.record({"x": 1})
    assert not isinstance(info.value, stet.CorruptStoreError)
    assert str(store) in str(info.value)
    os.unlink(filler)
    with get_backend(store) as b:
        b.record({"x": 1})
        assert b.has({"x": 1})


def test_sqlite_says_when_a_store_has_as_many_fields_as_it_can_hold(tmp_path: Path) -> None:
    """SQLite allows so many columns in a table (2000 unless built otherwise; lowered to
    30 on this connection, for speed): the field after that is refused with a StoreError
    saying why (not "try again"), and the store keeps every earlier record."""
    store = tmp_path / "runs.sqlite"
    with get_backend(store) as b:
        b.record({"f0": 0})
        conn = b._connect(create=False)  # type: ignore[attr-defined]
        conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, 30)
        with pytest.raises(stet.StoreError, match="at most 30 columns") as info:
            for i in range(1, 100):
                b.record({f"f{i}": i})
        assert not isinstance(info.value, stet.CorruptStoreError)
        assert str(store) in str(info.value)
        kept = len(b.load())
        assert kept == 29  # (one column holds _stet_timestamp)
        b.record({"f0": 2})
    with get_backend(store) as b:
        assert len(b.load()) == kept + 1
