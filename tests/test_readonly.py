"""Stores that cannot be written (issue 11, item 8): a run is refused before the function
runs, with a StoreError saying what to do, instead of running it and losing its record;
and reading (``stet status``, ``ls``, ``export``, ``stet.load``, ``stet.status``, skipping
done runs) works on them, creating no file. Tried as an unprivileged user (the tests run
as root in CI), on a read-only bind mount and on an immutable file."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from mounts import read_only_mount, unavailable
from stet._cli import main
from stet.errors import StoreError

FILES = ["csv", "json", "sqlite", "parquet"]
SRC = Path(stet.__file__).resolve().parents[1]
ROOT = os.geteuid() == 0


def as_user(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as an unprivileged user: ``nobody`` when we are root (whose
    permission checks are overridden), else ourselves."""
    prefix: list[str] = []
    if ROOT:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            unavailable("setpriv (util-linux) is needed to run as an unprivileged user")
        prefix = [str(setpriv), "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside pytest's private temporary tree, which another user can
    reach (``/tmp`` itself is world-searchable)."""
    d = Path(tempfile.mkdtemp(prefix="stet-ro-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


POPULATE = """
    import sys, stet
    @stet.once(store=sys.argv[1] if len(sys.argv) > 1 else STORE, verbose=False, name="f")
    def f(x):
        if x < 0:
            raise ValueError("negative")
        print("RAN", x, flush=True)
    for x in (-1, 0, 1, 2):
        try:
            f(x)
        except ValueError:
            pass
"""


def populate(store: Path) -> None:
    code = POPULATE.replace("STORE", repr(str(store)))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert r.returncode == 0, r.stderr


CALL = """
    import stet
    @stet.once(store={store!r}, verbose=False, name="f")
    def f(x):
        print("RAN", x, flush=True)
    f(0)  # done: skipped, which only reads
    try:
        f(7)
    except stet.StoreError as exc:
        print("REFUSED", exc)
"""


@pytest.mark.parametrize("fmt", FILES)
def test_a_store_the_user_cannot_write_is_refused_before_the_function_runs(
    shared_dir: Path, fmt: str
) -> None:
    """The reported case: a 0444 store in a directory the user can write."""
    shared_dir.chmod(0o777)
    store = shared_dir / f"runs.{fmt}"
    r = as_user(POPULATE.replace("STORE", repr(str(store))), shared_dir)
    assert r.returncode == 0, r.stderr
    store.chmod(0o444)
    r = as_user(CALL.format(store=str(store)), shared_dir)
    assert r.returncode == 0, r.stderr
    assert "RAN" not in r.stdout, "the function ran, and its record could not be kept"
    assert "REFUSED cannot write the store" in r.stdout and str(store) in r.stdout
    assert "it was not started" in r.stdout


READ_ALL = """
    import os, sys, stet
    from stet._cli import main
    store, out = sys.argv[1], sys.argv[2]
    assert len(stet.load(store)) == 3, stet.load(store)
    assert len(stet.load(store, failures=True)) == 1
    st = stet.status(store)
    assert st.completed == 3 and st.failed == 1, st
    for argv in (["status", store, "--grid", "x,x"], ["ls", store], ["ls", store, "--failed"],
                 ["export", store, out]):
        try:
            code = main(argv)
        except SystemExit as exc:  # --grid x,x: a usage error, after reading the store
            code = 0 if exc.code == 2 and argv[0] == "status" else exc.code
        assert code == 0, argv
    os.unlink(out)
    print("READ OK")
"""


@pytest.mark.parametrize("lock", ["lock file there", "no lock file"])
@pytest.mark.parametrize("fmt", FILES)
def test_reading_commands_work_in_a_directory_the_user_cannot_write(
    shared_dir: Path, tmp_path: Path, fmt: str, lock: str
) -> None:
    store = shared_dir / f"runs.{fmt}"
    populate(store)
    if lock == "no lock file":
        Path(f"{store}.lock").unlink()
    before = sorted(os.listdir(shared_dir))
    out_dir = Path(tempfile.mkdtemp(dir="/tmp"))
    out_dir.chmod(0o777)
    try:
        r = subprocess.run(  # as the other user, reading what root wrote
            [*(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
               if ROOT else []), sys.executable, "-c", textwrap.dedent(READ_ALL),
             str(store), str(out_dir / "out.csv")],
            capture_output=True, text=True, timeout=120, cwd=out_dir,
            env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"})
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    assert r.returncode == 0 and "READ OK" in r.stdout, r.stderr
    assert sorted(os.listdir(shared_dir)) == before  # reading created no file
    # and a new run there is refused before it starts
    r = as_user(CALL.format(store=str(store)), shared_dir)
    assert "RAN" not in r.stdout and "REFUSED cannot write the store's directory" in r.stdout


@pytest.mark.parametrize("fmt", FILES)
def test_a_store_on_a_read_only_mount_is_read_and_never_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    source = tmp_path / "data"
    source.mkdir()
    populate(source / f"runs.{fmt}")
    with read_only_mount(source, tmp_path / "ro") as ro:
        _read_and_call(ro / f"runs.{fmt}", tmp_path / "out.json")
        capsys.readouterr()


def _read_and_call(store: Path, out: Path) -> None:
    before = sorted(os.listdir(store.parent))
    assert len(stet.load(store)) == 3
    assert stet.status(store).completed == 3
    assert main(["ls", str(store)]) == 0
    assert main(["export", str(store), str(out)]) == 0
    ran: list[int] = []

    @stet.once(store=str(store), verbose=False, name="f")
    def f(x: int) -> None:
        ran.append(x)

    f(1)  # done: skipped
    with pytest.raises(StoreError, match="read-only filesystem") as info:
        f(9)
    assert ran == [] and "not started" in str(info.value)
    assert sorted(os.listdir(store.parent)) == before


@pytest.mark.parametrize("fmt", FILES)
def test_an_immutable_store_is_refused_before_the_function_runs(tmp_path: Path,
                                                                fmt: str) -> None:
    if not ROOT:
        pytest.skip("chattr +i needs root")
    store = tmp_path / f"runs.{fmt}"
    populate(store)
    r = subprocess.run(["chattr", "+i", str(store)], capture_output=True, text=True)
    if r.returncode != 0:
        unavailable(f"chattr +i failed: {r.stderr.strip()}")
    try:
        ran: list[int] = []

        @stet.once(store=str(store), verbose=False, name="f")
        def f(x: int) -> None:
            ran.append(x)

        f(0)
        with pytest.raises(StoreError, match="cannot write the store") as info:
            f(9)
        assert ran == [] and "chattr -i" in str(info.value)
        assert len(stet.load(store)) == 3
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)


@pytest.mark.parametrize("fmt", FILES)
def test_reading_a_store_creates_no_file_even_where_it_could(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    store = tmp_path / f"runs.{fmt}"
    populate(store)
    Path(f"{store}.lock").unlink()
    before = sorted(os.listdir(tmp_path))
    assert len(stet.load(store)) == 3 and len(stet.load(store, failures=True)) == 1
    assert stet.status(store).completed == 3
    assert main(["ls", str(store)]) == 0 and main(["status", str(store)]) == 0
    capsys.readouterr()
    gc.collect()
    assert sorted(os.listdir(tmp_path)) == before
