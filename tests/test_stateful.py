"""Try to break the promises from the side: a hypothesis state machine per store format.

Each step does one thing to a store: calls from several threads at once, async tasks
gathered on one loop (the same run several times), a call that fails, ``forget``,
``reset``, closing the backend (reopen), or a subprocess that calls runs and is killed
with SIGKILL at a random moment, mid-write included, while this process calls the same
runs. Every execution (here or in the subprocess) writes ``start``/``end`` lines to one
log; after every step the machine checks the three promises:

* no run executed twice at once (across threads, tasks and processes);
* no recorded run executed again (until it is forgotten or reset);
* no record lost or doubled: the store holds exactly the runs the model says, once each.

The number of examples is bounded (CI: ``STET_STATEFUL_EXAMPLES``, default 6 per format).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

import stet
from stet.backends import get_backend, shared_backend

EXAMPLES = int(os.environ.get("STET_STATEFUL_EXAMPLES", "6"))
STEPS = int(os.environ.get("STET_STATEFUL_STEPS", "10"))
RUNS = st.integers(min_value=0, max_value=5)
NAME = "machine"

_CHILD = textwrap.dedent("""
    import os, sys, time
    import stet

    store, log, xs = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]

    def note(what, x):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        os.write(fd, f"{what} {x} {os.getpid()}\\n".encode())
        os.close(fd)

    @stet.once(store=store, name="machine", verbose=False)
    def run(x):
        note("start", x)
        time.sleep(0.002)
        note("end", x)

    print("ready", flush=True)
    sys.stdin.readline()
    for x in xs:
        run(x)
    print("finished", flush=True)
""")


class StoreMachine(RuleBasedStateMachine):
    """One store; the model is the set of runs recorded in it."""

    store_for: Any = None  # set per format: () -> store path or URL

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="stet-machine-"))
        self.store = type(self).store_for(self.tmp)
        self.log = self.tmp / "executions.log"
        self.log.touch()
        self.child_script = self.tmp / "child.py"
        self.child_script.write_text(_CHILD)
        self.recorded: set[int] = set()
        self.violations: list[str] = []
        self._checked = 0  # log lines already checked
        self._open: dict[int, set[int]] = {}  # run -> pids executing it

        def note(what: str, x: int) -> None:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, f"{what} {x} {os.getpid()}\n".encode())
            finally:
                os.close(fd)

        @stet.once(store=self.store, name=NAME, verbose=False)
        def run(x: int) -> None:
            note("start", x)
            time.sleep(0.002)
            note("end", x)

        @stet.once(store=self.store, name=NAME, verbose=False)
        async def arun(x: int) -> None:
            note("start", x)
            await asyncio.sleep(0.002)
            note("end", x)

        @stet.once(store=self.store, name=NAME, verbose=False)
        def failing(x: int) -> None:
            note("start", x)
            note("end", x)
            raise ValueError("this run fails")

        self.run, self.arun, self.failing = run, arun, failing

    def teardown(self) -> None:
        backend = shared_backend(self.store, create=False)
        if backend is not None:
            backend.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ the log
    def _scan(self, killed: int | None = None) -> set[int]:
        """Check new log lines; return the runs this process executed in them."""
        lines = self.log.read_text().splitlines()
        executed: set[int] = set()
        for line in lines[self._checked:]:
            what, x_text, pid_text = line.split()
            x, pid = int(x_text), int(pid_text)
            running = self._open.setdefault(x, set())
            if what == "start":
                if pid == os.getpid():
                    executed.add(x)
                if running:
                    self.violations.append(f"run {x} started by {pid} while {running} ran it")
                if x in self.recorded:
                    self.violations.append(f"run {x} executed again after being recorded")
                running.add(pid)
            else:
                running.discard(pid)
        self._checked = len(lines)
        if killed is not None:  # runs the killed process was executing ended with it
            for running in self._open.values():
                running.discard(killed)
        return executed

    def _stored(self) -> list[int]:
        with get_backend(self.store) as b:
            return sorted(int(r["x"]) for r in b.load() if r.get("_stet_func") == NAME)

    # ------------------------------------------------------------------- rules
    @rule(xs=st.lists(RUNS, min_size=1, max_size=6), threads=st.integers(2, 4))
    def call_from_threads(self, xs: list[int], threads: int) -> None:
        barrier = threading.Barrier(threads)

        def body() -> None:
            barrier.wait()
            for x in xs:
                self.run(x)

        workers = [threading.Thread(target=body) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        self._scan()
        self.recorded |= set(xs)

    @rule(xs=st.lists(RUNS, min_size=1, max_size=6), copies=st.integers(1, 3))
    def call_from_async_tasks(self, xs: list[int], copies: int) -> None:
        async def main() -> None:
            await asyncio.gather(*(self.arun(x) for x in xs for _ in range(copies)))

        asyncio.run(main())
        self._scan()
        self.recorded |= set(xs)

    @rule(x=RUNS)
    def call_a_run_that_fails(self, x: int) -> None:
        if x in self.recorded:
            assert self.failing(x) is None  # done: skipped, never run
        else:
            with pytest.raises(ValueError):
                self.failing(x)
        self._scan()

    @rule(x=RUNS)
    def forget(self, x: int) -> None:
        self.run.forget(x)
        self.recorded.discard(x)

    @rule()
    def reset(self) -> None:
        with get_backend(self.store) as b:
            exists = b.exists()
        stet.reset(self.store)  # (no store yet: nothing to do, nothing raised, as in 0.0.2)
        with get_backend(self.store) as b:
            assert b.exists() == exists  # (a reset neither creates nor deletes the store)
        self.recorded.clear()

    @rule()
    def reopen(self) -> None:
        backend = shared_backend(self.store, create=False)
        if backend is not None:
            backend.close()

    @rule(xs=st.lists(RUNS, min_size=1, max_size=6), here=st.lists(RUNS, max_size=4),
          delay=st.floats(0, 0.03), seed=st.integers(0, 2**16))
    def a_process_killed_mid_sweep(self, xs: list[int], here: list[int], delay: float,
                                   seed: int) -> None:
        child = subprocess.Popen(
            [sys.executable, str(self.child_script), str(self.store), str(self.log),
             ",".join(map(str, xs))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        for x in here:  # this process calls runs while the child does
            self.run(x)
        time.sleep(random.Random(seed).uniform(0, delay))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
        child.stdin.close()
        # A call made here while the child ran the same run was skipped as running
        # elsewhere: only what this process executed is recorded by it.
        self.recorded |= self._scan(killed=child.pid)
        stored = set(self._stored())
        new = stored - self.recorded
        assert new <= set(xs), f"runs {new - set(xs)} recorded by nobody"
        self.recorded |= new  # what the child recorded before it died

    # -------------------------------------------------------------- invariants
    @invariant()
    def promises_hold(self) -> None:
        assert not self.violations, self.violations
        stored = self._stored()
        assert len(stored) == len(set(stored)), f"doubled records: {stored}"
        assert set(stored) == self.recorded, (
            f"store holds {sorted(stored)}, model {sorted(self.recorded)}")


def _machine_for(fmt: str, pg: Any) -> type[StoreMachine]:
    if fmt == "postgres":
        from conftest import pg_store

        def store_for(tmp: Path) -> Any:
            return str(pg_store(pg, "machine"))
    else:
        def store_for(tmp: Path) -> Any:
            return tmp / f"store.{fmt}"

    return type(f"StoreMachine_{fmt}", (StoreMachine,), {"store_for": staticmethod(store_for)})


def test_no_interleaving_of_calls_forgets_and_crashes_breaks_a_promise(
        fmt: str, request: pytest.FixtureRequest) -> None:
    pg = request.getfixturevalue("pg_server") if fmt == "postgres" else None
    run_state_machine_as_test(
        _machine_for(fmt, pg),
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )
