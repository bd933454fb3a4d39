"""The check made before a run that its record can be written says what is really wrong
and never refuses a store that works: a directory that does not exist (or is a file) is
named as such, not "permission denied"; a store reached through a symbolic link from a
directory the user may not write, into one they may, runs; and the check stays cheap."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from stet._sidecar import check_writable
from stet.errors import StoreError
from test_readonly import as_user

FILES = ["csv", "json", "sqlite", "parquet"]


def runs_and_records(store: Path) -> list[int]:
    ran: list[int] = []

    @stet.once(store=str(store), verbose=False, name="f")
    def f(x: int) -> None:
        ran.append(x)

    f(1)
    return ran


@pytest.mark.parametrize("fmt", FILES)
def test_a_store_in_a_directory_that_does_not_exist_says_so_before_running(
    tmp_path: Path, fmt: str
) -> None:
    store = tmp_path / "not-yet" / f"runs.{fmt}"
    with pytest.raises(StoreError) as info:
        runs_and_records(store)
    text = str(info.value)
    assert "does not exist" in text and "mkdir -p" in text, text
    assert "permission denied" not in text, text
    assert not store.parent.exists()


@pytest.mark.parametrize("fmt", FILES)
def test_a_store_under_a_file_is_a_store_error_before_running(
    tmp_path: Path, fmt: str
) -> None:
    (tmp_path / "notes").write_text("mine\n")
    ran: list[int] = []

    @stet.once(store=str(tmp_path / "notes" / f"runs.{fmt}"), verbose=False)
    def f(x: int) -> None:
        ran.append(x)

    with pytest.raises(StoreError) as info:
        f(1)
    assert ran == [] and "not a directory" in str(info.value).lower(), str(info.value)
    assert (tmp_path / "notes").read_text() == "mine\n"


@pytest.fixture
def linked_store() -> Iterator[tuple[Path, Path]]:
    """``links/runs.*`` (in a directory only root may write) pointing at ``data/`` (which
    anyone may write), outside pytest's private tree so another user can reach it."""
    d = Path(tempfile.mkdtemp(prefix="stet-link-", dir="/tmp"))
    d.chmod(0o755)
    (d / "links").mkdir(mode=0o755)
    (d / "data").mkdir(mode=0o777)
    (d / "data").chmod(0o777)
    yield d / "links", d / "data"
    shutil.rmtree(d, ignore_errors=True)


RUN = """
    import sys, stet
    for fmt in ("csv", "json", "sqlite", "parquet"):
        @stet.once(store=f"runs.{fmt}", verbose=False, name="f")
        def f(x):
            print("RAN", fmt, x, flush=True)
        f(1)
        f(1)
"""


def test_a_store_linked_from_a_directory_it_may_not_write_runs(
    linked_store: tuple[Path, Path],
) -> None:
    pytest.importorskip("pyarrow")
    links, data = linked_store
    for fmt in FILES:
        (links / f"runs.{fmt}").symlink_to(data / f"runs.{fmt}")
    r = as_user(RUN, cwd=links)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:-1] == [f"RAN {fmt} 1" for fmt in FILES], r.stdout
    assert sorted(p.name for p in data.iterdir() if p.name.startswith("runs.")
                  and p.suffix[1:] in FILES) == sorted(f"runs.{fmt}" for fmt in FILES)
    assert all((links / f"runs.{fmt}").is_symlink() for fmt in FILES)


def test_the_check_before_a_run_costs_a_few_microseconds(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    store.write_text("")
    check_writable(store)
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        check_writable(store)
    per_call = (time.perf_counter() - t) / n
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per check"
    # and a directory that changes is looked at again at once
    side = Path(str(store) + ".failures.jsonl")
    os.symlink(tmp_path / "elsewhere", side)
    with pytest.raises(StoreError, match="symbolic link"):
        check_writable(store)


def test_a_file_named_like_another_kinds_sidecar_does_not_stop_a_store(
    tmp_path: Path,
) -> None:
    for fmt, foreign in (("csv", "-wal"), ("json", ".stet-log"), ("parquet", "-journal")):
        if fmt == "parquet":
            pytest.importorskip("pyarrow")
        store = tmp_path / f"runs.{fmt}"
        (tmp_path / "elsewhere").write_text("someone else's\n")
        Path(str(store) + foreign).symlink_to(tmp_path / "elsewhere")
        assert runs_and_records(store) == [1], fmt
        assert (tmp_path / "elsewhere").read_text() == "someone else's\n"
    # while a sidecar the store does use, made a link, is still refused before the run
    store = tmp_path / "runs.sqlite"
    Path(str(store) + "-wal").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="symbolic link"):
        runs_and_records(store)
