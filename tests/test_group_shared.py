"""A group-shared store stays usable by every member of the group.

The first process to use a store creates its lock and claims files; with that process's
umask (022) they would be 0644 and owned by its group, and the next member of the store's
group could not claim a run. Sidecars stet creates take the store's permission bits and
group instead. Runs as root, with a second process as another user (setpriv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import IN_CI

GROUP = 1  # "daemon" on Debian: a group the test's second user (uid 1) belongs to


def _second_user() -> list[str]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        why = "needs root and setpriv (util-linux) to run as a second user"
        if IN_CI:
            pytest.fail(why + "; CI runs as root")
        pytest.skip(why)
    return [setpriv, "--reuid=1", f"--regid={GROUP}", "--clear-groups"]


@pytest.mark.parametrize("fmt", ["csv", "json", "sqlite", "parquet"])
def test_a_group_member_can_run_in_a_store_another_member_started(
        request: pytest.FixtureRequest, fmt: str) -> None:
    prefix = _second_user()
    # (pytest's own temporary directories are private to root: the second user could
    # not reach them)
    shared = Path(tempfile.mkdtemp(prefix="stet-group-"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    os.chown(shared, 0, GROUP)
    os.chmod(shared, 0o2775)  # setgid: files made in it belong to the group
    store = shared / f"runs.{fmt}"
    script = textwrap.dedent(f"""
        import os, sys
        os.umask(0o022)
        import stet
        @stet.once(store={str(store)!r}, verbose=False)
        def f(x):
            print("ran", x)
        for x in sys.argv[1:]:
            f(int(x))
    """)

    def run(*xs: int, user: list[str] | None = None) -> list[str]:
        out = subprocess.run([*(user or []), sys.executable, "-c", script,
                              *map(str, xs)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert run(1) == ["ran", "1"]  # root, umask 022: the store is made 0644
    os.chmod(store, 0o664)  # then shared with the group, as its owner would
    for side in shared.iterdir():
        if side.name.endswith((".lock", ".claims")):
            side.unlink()
    assert run(2) == ["ran", "2"]  # root again: makes the lock and claims files anew
    made = [side for side in (".lock", ".claims") if os.path.exists(f"{store}{side}")]
    assert ".claims" in made
    for side in made:
        st = os.stat(f"{store}{side}")
        assert st.st_mode & 0o777 == 0o664, (side, oct(st.st_mode))
        assert st.st_gid == GROUP
    assert run(2, 3, user=prefix) == ["ran", "3"]  # the group's other member
