"""A full reset while another process keeps recording runs loses none of the runs that
process records after it (the file is replaced in place, under the store's lock, and every
append re-reads the store's path under that lock: nothing goes to a file no longer the
store). Also stet 0.0.2's behaviour of ``reset`` on a missing store and its words."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import stet

WORKER = textwrap.dedent("""
    import os, sys, time
    import stet

    @stet.once(store=sys.argv[1])
    def run(i):
        time.sleep(0.002)

    i = 0
    while not os.path.exists(sys.argv[2]):  # until the resets are over,
        run(i)
        i += 1
    for _ in range(20):  # then 20 more
        run(i)
        i += 1
    print(i)
""")


def _holds_runs(store: Path) -> bool:
    """Whether the store holds a run yet (a Parquet store's first ten thousand or so are
    in the log beside it: the Parquet file comes with the first fold)."""
    try:
        return not stet.load(store).empty
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("ext", ["csv", "json", "sqlite", "parquet"])
def test_a_worker_loses_no_run_recorded_after_a_full_reset_by_another_process(
    tmp_path: Path, ext: str
) -> None:
    store, stop = tmp_path / f"runs.{ext}", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(store), str(stop)],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        resets = 0
        while resets < 5 and worker.poll() is None:
            if _holds_runs(store):
                stet.reset(store)  # (stdin is not a terminal: no question)
                resets += 1
            time.sleep(0.02)
        stop.touch()
        out, _ = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 0
    total = int(out)
    recorded = sorted(int(r["i"]) for r in stet.load(store).to_dict("records"))
    # Each reset removed the runs before it; every run after the last one is there.
    assert resets == 5
    assert len(recorded) >= 20
    assert recorded == list(range(recorded[0], total))


def test_a_full_reset_keeps_the_store_file_empty(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=store)
    def run(x: int) -> None:
        pass

    run(1)
    stet.reset(store)
    assert store.exists()
    assert stet.load(store).empty
    assert "Store cleared" in capsys.readouterr().out  # (0.0.2's words)


@pytest.mark.parametrize("key", [None, {"x": "1"}])
def test_a_reset_of_a_missing_store_does_nothing_and_raises_nothing_as_in_0_0_2(
    tmp_path: Path, key: dict[str, str] | None, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "missing.csv"
    stet.reset(store, key)
    assert not store.exists()
    assert list(tmp_path.iterdir()) == []
    assert "no store at" in capsys.readouterr().out
