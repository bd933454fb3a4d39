"""The crash storm of ``benchmarks/storm.py``, small: PostgreSQL workers are SIGKILLed,
their sessions terminated and the server restarted (immediate mode) mid-sweep, and no
run executes twice while its worker lives, none is lost, none is recorded twice."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import storm


@pytest.mark.slow
def test_a_small_postgres_storm_executes_each_run_once_while_workers_live(
    pg_server: Any, tmp_path: Path
) -> None:
    args = storm.parse(["--formats", "postgres", "--workers", "4", "--runs", "2000",
                        "--restarts", "1", "--terminations", "4", "--kills", "2",
                        "--timeout", "240", "--seed", "11"])
    row = storm.storm("postgres", args, tmp_path, pg_server)
    assert (row["restarts"], row["kills"]) == (1, 2), row
    assert row["terminations"] >= 3, row  # (a worker may be between sessions)
    assert row["dup_live"] == 0, row
    assert row["lost"] == 0, row
    assert row["dup_records"] == 0, row
    assert row["executions"] == 2000 + row["reexec_after_kill"], row
