"""Filesystem-specific behaviour: refused locks, network filesystems and SQLite journals."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import stet
from stet import _fs
from stet.backends import _sqlite as sqlite_backend
from stet.backends import get_backend


def test_refused_file_locks_stop_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that refuses locks (ENOLCK, as NFS without lockd) is an error, never a
    silent run without locking."""
    import fcntl

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    store = tmp_path / "nolocks.csv"

    @stet.once(store=store)
    def f(x: int) -> int:
        return x

    with pytest.raises(stet.StoreError) as info:
        f(1)
    message = str(info.value)
    assert "refuses file locks" in message and str(store) in message
    assert not store.exists()


def test_refused_claim_locks_stop_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", refuse)
    ran = []

    @stet.once(store=tmp_path / "s.json")
    def f(x: int) -> None:
        ran.append(x)

    with pytest.raises(stet.StoreError, match="byte-range locks"):
        f(1)
    assert ran == []


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /home rw,relatime shared:20 - nfs4 server:/home rw,vers=4.2
41 40 0:36 / /home/me/scratch\\040space rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("path", "kind", "local"),
    [
        ("/data/x.db", "ext4", True),
        ("/home/me/runs.sqlite", "nfs4", False),
        ("/home/me/scratch space/x.db", "tmpfs", True),
        ("/homework/x.db", "ext4", True),
    ],
)
def test_filesystem_type_from_mountinfo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, kind: str, local: bool
) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    real_open = open

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if file == "/proc/self/mountinfo":
            return real_open(info, *args, **kwargs)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(_fs.os.path, "realpath", lambda p: str(p))
    monkeypatch.setattr(_fs.os.path, "isdir", lambda p: False)
    assert _fs.filesystem_type(path) == kind
    assert _fs.is_local_filesystem(path) is local


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        conn.close()


def test_sqlite_uses_wal_on_local_disks_and_folds_it_back(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    b = get_backend(store)
    b.record({"a": 1})
    assert Path(str(store) + "-wal").exists()
    b.close()
    assert not Path(str(store) + "-wal").exists()  # checkpointed into the file itself
    assert _journal_mode(store) == "wal"
    assert get_backend(store).has({"a": 1})


def test_sqlite_uses_a_rollback_journal_on_network_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "is_local_filesystem", lambda p: False)
    store = tmp_path / "s.sqlite"
    writer, reader = get_backend(store), get_backend(store)
    writer.record({"a": 1})
    assert not Path(str(store) + "-wal").exists()
    assert _journal_mode(store) != "wal"
    assert reader.has({"a": 1})
    writer.record({"a": 2})
    assert reader.has({"a": 2})  # freshness through the header's change counter
    writer.remove({"a": 1})
    assert not reader.has({"a": 1})
