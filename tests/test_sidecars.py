"""Files stet keeps beside a store are never opened through a symbolic link (issue 11,
item 11): a link in a sidecar's place is refused, before the function runs, and the file
it points to is left as it was (or not created). The store itself may be a link."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from stet.errors import StoreError

FILES = ["csv", "json", "sqlite", "parquet"]
#: Sidecars of every file store, and of one format only.
COMMON = [".lock", ".claims", ".failures.jsonl"]
OWN = {"parquet": [".stet-log"], "sqlite": ["-wal", "-shm", "-journal"]}
CASES = [(fmt, s) for fmt in FILES for s in COMMON + OWN.get(fmt, [])]


def counted(store: Path, ran: list[object], *, fail: bool = False) -> stet.Once:
    @stet.once(store=str(store), verbose=False)
    def f(x: int) -> int:
        ran.append(x)
        if fail:
            raise ValueError("no")
        return x

    return f


def victim(tmp_path: Path) -> tuple[Path, bytes, int]:
    v = tmp_path / "elsewhere" / "precious.txt"
    v.parent.mkdir()
    data = b"someone else's file\n" * 50_000  # 1 MB: more than claims compaction keeps
    v.write_bytes(data)
    return v, data, v.stat().st_mtime_ns


@pytest.mark.parametrize(("fmt", "suffix"), CASES)
def test_a_sidecar_that_links_to_another_file_is_refused_before_the_run(
    tmp_path: Path, fmt: str, suffix: str
) -> None:
    store = tmp_path / f"runs.{fmt}"
    counted(store, [])(0)  # the store exists, with its sidecars
    link = Path(f"{store}{suffix}")
    if link.exists():
        link.unlink()
    v, data, mtime = victim(tmp_path)
    link.symlink_to(v)
    ran: list[object] = []
    f = counted(store, ran)
    with pytest.raises(StoreError, match="symbolic link") as info:
        f(1)
    assert str(link) in str(info.value) and "Remove the link" in str(info.value)
    assert ran == []
    assert v.read_bytes() == data and v.stat().st_mtime_ns == mtime
    try:
        f(0)  # a done run: skipped, or refused if reading needs the link; never run
    except StoreError as exc:
        assert "symbolic link" in str(exc)
    assert ran == []


@pytest.mark.parametrize(("fmt", "suffix"), CASES)
def test_a_dangling_sidecar_link_does_not_make_stet_create_its_target(
    tmp_path: Path, fmt: str, suffix: str
) -> None:
    store = tmp_path / f"runs.{fmt}"
    target = tmp_path / "elsewhere" / "created-by-stet"
    target.parent.mkdir()
    Path(f"{store}{suffix}").symlink_to(target)
    ran: list[object] = []
    with pytest.raises(StoreError, match="symbolic link"):
        counted(store, ran)(1)
    assert ran == []
    assert not target.exists() and os.listdir(target.parent) == []


def test_a_thousand_claims_never_truncate_the_file_a_claims_link_points_to(
    tmp_path: Path,
) -> None:
    """The reported case: announcements were appended to the linked file and, after
    1,000 claims, it was truncated to the live ones (1,056,000 bytes became 12,387)."""
    store = tmp_path / "runs.csv"
    v, data, _ = victim(tmp_path)
    Path(f"{store}.claims").symlink_to(v)
    ran: list[object] = []
    f = counted(store, ran)
    for x in range(1_001):
        with pytest.raises(StoreError):
            f(x)
    assert ran == [] and v.read_bytes() == data


@pytest.mark.parametrize("fmt", FILES)
def test_a_failure_is_not_recorded_through_a_linked_failure_log(
    tmp_path: Path, fmt: str
) -> None:
    store = tmp_path / f"runs.{fmt}"
    counted(store, [])(0)
    v, data, _ = victim(tmp_path)
    Path(f"{store}.failures.jsonl").symlink_to(v)
    ran: list[object] = []
    with pytest.raises(StoreError, match="symbolic link"):
        counted(store, ran, fail=True)(1)
    assert ran == [] and v.read_bytes() == data


@pytest.mark.parametrize("fmt", FILES)
def test_reading_a_store_refuses_a_linked_sidecar_and_names_it(tmp_path: Path,
                                                                fmt: str) -> None:
    store = tmp_path / f"runs.{fmt}"
    counted(store, [])(0)
    v, data, _ = victim(tmp_path)
    link = Path(f"{store}.failures.jsonl")
    link.symlink_to(v)
    with pytest.raises(StoreError, match="symbolic link") as info:
        stet.status(store)
    assert str(link) in str(info.value)
    r = subprocess.run([sys.executable, "-m", "stet", "ls", str(store), "--failed"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "symbolic link" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert v.read_bytes() == data


@pytest.mark.parametrize("suffix", [".lock", ".claims"])
def test_a_fifo_in_a_sidecars_place_is_refused_not_waited_on(tmp_path: Path,
                                                            suffix: str) -> None:
    store = tmp_path / "runs.csv"
    counted(store, [])(0)
    side = Path(f"{store}{suffix}")
    side.unlink()
    os.mkfifo(side)
    ran: list[object] = []
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            counted(store, ran)(1)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "stet hung opening a FIFO"
    assert isinstance(outcome[0], StoreError) and "not a regular file" in str(outcome[0])
    assert ran == []


@pytest.mark.parametrize("fmt", FILES)
def test_a_store_that_is_a_symbolic_link_is_used_through_it(tmp_path: Path,
                                                             fmt: str) -> None:
    real = tmp_path / "kept" / f"real.{fmt}"
    real.parent.mkdir()
    ran: list[object] = []
    counted(real, ran)(1)
    link = tmp_path / f"runs.{fmt}"
    link.symlink_to(real)
    f = counted(link, ran)
    f(1)
    f(2)
    f(1)
    assert ran == [1, 2]
    stet.sweep(f, [{"x": 3}], progress=False)
    assert sorted(int(r["x"]) for r in get_records(link)) == [1, 2, 3]


@pytest.fixture(autouse=True)
def _unlink_links(tmp_path: Path) -> Iterator[None]:
    """Remove the links left by a test, so that the stores they sit beside can be
    finished (folded) when the test process exits."""
    yield
    for p in tmp_path.iterdir():
        if p.is_symlink():
            p.unlink()


def get_records(store: Path) -> list[dict[str, str]]:
    from stet.backends import get_backend

    with get_backend(store) as b:
        return b.load()


@pytest.mark.parametrize("suffix", [".claims", ".failures.jsonl"])
def test_a_sidecar_hard_linked_to_another_file_is_not_written(tmp_path: Path,
                                                              suffix: str) -> None:
    store = tmp_path / "runs.csv"
    counted(store, [])(0)
    side = Path(f"{store}{suffix}")
    with contextlib.suppress(FileNotFoundError):
        side.unlink()
    v, data, _ = victim(tmp_path)
    os.link(v, side)
    ran: list[object] = []
    with pytest.raises(StoreError, match="hard link"):
        counted(store, ran, fail=True)(1)
    assert ran == [] and v.read_bytes() == data
