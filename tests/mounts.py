"""A read-only bind mount of a directory, for tests of stores that cannot be written."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import IN_CI

__all__ = ["read_only_mount", "unavailable"]


def unavailable(why: str) -> None:
    """Skip the test (fail it under CI, which runs as root and must run it)."""
    if IN_CI:
        pytest.fail(f"{why}; CI runs as root and must run this test")
    pytest.skip(why)


@contextlib.contextmanager
def read_only_mount(source: Path, where: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``where`` (made here), for the ``with`` block."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    where.mkdir()
    r = subprocess.run(["mount", "--bind", str(source), str(where)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        unavailable(f"cannot bind-mount: {r.stderr.strip()}")
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            unavailable(f"cannot remount read-only: {r.stderr.strip()}")
        yield where
    finally:
        gc.collect()  # backends of the test: their descriptors of files in the mount
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)  # detached when free
