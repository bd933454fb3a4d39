"""Platforms: stet imports everywhere; file stores need POSIX locks, laid out per platform.

A platform without ``fcntl`` (Windows) is simulated in a fresh interpreter by hiding the
module (``sys.modules["fcntl"] = None``) and naming the platform ``win32`` before
``import stet``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stet
from stet import _platform
from stet._platform import file_lock_problem, pack_flock, unpack_flock, who_locks
from stet.errors import StoreError

SRC = str(Path(stet.__file__).resolve().parent.parent)
WINDOWS = "import sys\nsys.modules['fcntl'] = None\nsys.platform = 'win32'\n"


def _python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_stet_imports_and_its_command_line_helps_where_there_is_no_fcntl(
    tmp_path: Path,
) -> None:
    done = _python(WINDOWS + "import stet, stet.backends\nprint(stet.once.__name__)\n",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "once"
    cli = _python(WINDOWS + "from stet.__main__ import main\nsys.argv[1:] = ['--help']\n"
                  "sys.exit(main())\n", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert "usage: stet" in cli.stdout


@pytest.mark.parametrize("name", ["runs.csv", "runs.json", "runs.parquet", "runs.sqlite"])
def test_a_file_store_is_refused_at_decoration_where_there_are_no_file_locks(
    tmp_path: Path, name: str
) -> None:
    code = WINDOWS + (
        "import stet\n"
        "try:\n"
        "    @stet.once(store=sys.argv[1])\n"
        "    def f(x):\n"
        "        print('ran')\n"
        "except stet.errors.StoreError as exc:\n"
        "    print('refused:', exc)\n"
        "@stet.once(store='postgresql://me@db.example/lab?table=runs')\n"
        "def g(x):\n"
        "    return x\n"
        "print('postgresql: declared')\n"
    )
    done = _python(code, name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    refused, declared = done.stdout.splitlines()
    assert refused.startswith(f"refused: cannot use the file store {name}: ")
    assert "win32" in refused and "no POSIX file locks" in refused
    assert "use a PostgreSQL store" in refused
    assert declared == "postgresql: declared"
    assert os.listdir(tmp_path) == []  # nothing made: no store, no sidecar


def test_the_command_line_refuses_a_file_store_where_there_are_no_file_locks(
    tmp_path: Path,
) -> None:
    (tmp_path / "runs.csv").write_text("x,_stet_timestamp\n1,2024-01-01T00:00:00+00:00\n")
    cli = _python(WINDOWS + "from stet.__main__ import main\n"
                  "sys.argv[1:] = ['status', 'runs.csv']\nsys.exit(main())\n", cwd=tmp_path)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "win32" in cli.stderr and "PostgreSQL" in cli.stderr


def test_the_struct_flock_layout_comes_from_the_platform(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fields = {"l_type": 1, "l_whence": 0, "l_start": (1 << 41) + 5, "l_len": 1,
              "l_pid": 4242}
    darwin = struct.pack("qqihh", fields["l_start"], fields["l_len"], fields["l_pid"],
                         fields["l_type"], fields["l_whence"])
    linux = struct.pack("hhqqi4x", fields["l_type"], fields["l_whence"],
                        fields["l_start"], fields["l_len"], fields["l_pid"])
    monkeypatch.setattr(sys, "platform", "darwin")
    assert unpack_flock(darwin) == fields
    assert pack_flock(fields) == darwin
    monkeypatch.setattr(sys, "platform", "freebsd14")
    assert unpack_flock(darwin) == fields
    monkeypatch.setattr(sys, "platform", "linux")
    assert unpack_flock(linux) == fields
    assert pack_flock(fields) == linux
    assert unpack_flock(darwin + bytes(8)) != fields  # misread with the wrong layout


def test_an_unknown_platform_refuses_file_stores_rather_than_misread_struct_flock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "platform", "sunos5")
    assert "sunos5" in (file_lock_problem() or "")
    with pytest.raises(StoreError, match=r"sunos5.*struct flock"):
        unpack_flock(bytes(24))
    with pytest.raises(StoreError, match=r"cannot use the file store .*runs\.csv: .*sunos5"):
        @stet.once(store=str(tmp_path / "runs.csv"))
        def f(x: int) -> int:
            return x


def test_who_holds_a_byte_is_read_with_this_platforms_layout(tmp_path: Path) -> None:
    path = tmp_path / "s.claims"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            _platform.lock_byte(fd, 1 << 41, wait=True)
            os.write(w, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        assert os.read(r, 1) == b"x"
        assert who_locks(fd, 1 << 41) == child
        assert who_locks(fd, (1 << 41) + 1) is None
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(fd)
        os.close(r)
        os.close(w)
