"""A run's claim is a POSIX lock, which the kernel drops when the process closes *any*
descriptor of the claims file. So a process must keep one descriptor per claims file,
whatever path reaches it: here the same directory seen through a bind mount, which no
``realpath`` joins. Looking at the store through the other path (``stet.status``, a
backend dropped afterwards) must not free a run that is still executing."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from conftest import IN_CI
from stet.backends import get_backend

SRC = Path(stet.__file__).resolve().parents[1]


@pytest.fixture
def two_paths() -> Iterator[tuple[Path, Path]]:
    """One directory under two paths (``a`` bind-mounted on ``b``)."""
    d = Path(tempfile.mkdtemp(prefix="stet-bind-"))
    (d / "a").mkdir()
    (d / "b").mkdir()
    r = subprocess.run(["mount", "--bind", str(d / "a"), str(d / "b")],
                       capture_output=True, text=True)
    if r.returncode:
        shutil.rmtree(d)
        if IN_CI:
            pytest.fail(f"mount --bind is needed (CI runs as root): {r.stderr}")
        pytest.skip(f"cannot bind-mount here: {r.stderr.strip()}")
    try:
        yield d / "a", d / "b"
    finally:
        subprocess.run(["umount", "--lazy", str(d / "b")], check=False)  # (fds may be open)
        shutil.rmtree(d, ignore_errors=True)


OTHER = """
import sys, stet
@stet.once(store=sys.argv[1], verbose=False, name="f")
def f(x):
    print("SECOND EXECUTION", flush=True)
f(1)
"""


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_looking_through_another_path_does_not_free_a_running_claim(
    two_paths: tuple[Path, Path], fmt: str
) -> None:
    a, b = two_paths
    started, go = threading.Event(), threading.Event()

    @stet.once(store=str(a / f"runs.{fmt}"), verbose=False, name="f")
    def f(x: int) -> int:
        started.set()
        go.wait(30)
        return x

    t = threading.Thread(target=f, args=(1,))
    t.start()
    try:
        assert started.wait(10)
        other = get_backend(b / f"runs.{fmt}")
        assert len(other.claims().running()) == 1  # seen running through either path
        del other
        gc.collect()
        r = subprocess.run([sys.executable, "-c", OTHER, str(b / f"runs.{fmt}")],
                           capture_output=True, text=True, timeout=60,
                           env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
        assert "SECOND EXECUTION" not in r.stdout, "a live run was executed twice"
        assert r.returncode == 0, r.stderr
    finally:
        go.set()
        t.join()
