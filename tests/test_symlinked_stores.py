"""One store named by different paths (a symlink, its target, a symlink to the symlink).

Locks, claims and sidecars sit beside the store's real file, so processes naming it
differently still exclude each other: with sidecars beside each name, their CSV and JSON
appends overwrote each other (a store stet then refused to read) and one run could
execute in two processes at once. Real processes on a real symlinked store.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stet.backends import get_backend

FILE_FORMATS = ["csv", "json", "sqlite", "parquet"]

_WORKER = textwrap.dedent(
    """
    import os, sys, time
    import stet

    store, tag, executions = sys.argv[1], sys.argv[2], sys.argv[3]

    @stet.once(store=store, verbose=False)
    def f(tag, i):
        pass

    @stet.once(store=store, verbose=False)
    def g(i):
        fd = os.open(executions, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{i}\\n".encode())
        os.close(fd)
        time.sleep(0.003)

    for i in range(120):
        f(tag, i)
        if i % 3 == 0:
            g(i // 3)
    """
)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_processes_naming_one_store_by_different_paths_share_its_locks(
    tmp_path: Path, fmt: str
) -> None:
    real = tmp_path / "data" / f"runs.{fmt}"
    real.parent.mkdir()
    link = tmp_path / f"link.{fmt}"
    link.symlink_to(real)
    link2 = tmp_path / "other" / f"again.{fmt}"
    link2.parent.mkdir()
    link2.symlink_to(link)
    executions = tmp_path / "executions"
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(path), tag, str(executions)],
                         stderr=subprocess.PIPE, text=True)
        for tag, path in (("a", link), ("b", real), ("c", link2), ("d", link))
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert link.is_symlink() and link2.is_symlink()
    with get_backend(real) as b:
        records = b.load()
    tags = collections.Counter(r["tag"] for r in records if "tag" in r)
    assert tags == {"a": 120, "b": 120, "c": 120, "d": 120}
    assert sorted(int(r["i"]) for r in records if "tag" not in r) == list(range(40))
    runs = collections.Counter(executions.read_text().split())
    assert runs == {str(i): 1 for i in range(40)}, "a run executed twice at once"
    # Nothing of the store's was left beside the symlinks.
    assert sorted(os.listdir(link2.parent)) == [link2.name]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(link.name + ".")]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("kind", ["directory", "symlink loop"])
def test_a_store_path_that_is_no_file_is_a_store_error_before_the_run(
    tmp_path: Path, fmt: str, kind: str
) -> None:
    """A directory or a loop of symlinks where the store should be: a StoreError naming
    the path before the function runs (a raw IsADirectoryError or ELOOP OSError before)."""
    import stet
    from stet.errors import StoreError

    store = tmp_path / f"runs.{fmt}"
    if kind == "directory":
        store.mkdir()
    else:
        store.symlink_to(store.name)
    ran = []

    @stet.once(store=store, verbose=False)
    def f(x: int) -> None:
        ran.append(x)

    with pytest.raises(StoreError, match=r"(cannot read the store|reading .* failed)") as info:
        f(1)
    assert str(store) in str(info.value)
    assert ran == []
    with pytest.raises(StoreError, match=r"(cannot read the store|reading .* failed)"):
        get_backend(store).load()
