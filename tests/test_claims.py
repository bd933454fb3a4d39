"""Issue 3 conformance: parallel workers split a sweep, over every store format.

Real processes and threads, no mocks. Each test runs against every format through the
``fmt``/``store_path`` fixtures and hands the store to stet as ``str(store_path)``, so the
tests apply to a store URL too (only the two tests that look at files beside the store,
``test_pool_sweep_leaves_every_run_in_the_store_file`` and ``test_no_file_per_claim``, skip
URL stores).

* Exactly once: 4 processes running the same sweep script and a forked
  ``multiprocessing`` pool whose parent already used the store execute every combination
  exactly once (skipping, or with ``wait=True``); 8 threads calling the same decorated
  function are checked by ``stet.testing``'s contract (``test_store_contract.py``).
* The README's process-pool example leaves every run in the store file itself
  (docs/explanation/durability.md).
* A run held by a live worker is skipped with a "running elsewhere" message (or waited for
  with ``wait=True``); a worker killed by SIGKILL frees its claim within seconds.
* A failing run is recorded as failed (type, message, time, host, pid) apart from
  completed runs; it is retried by default, skipped with ``skip_failed=True``, and
  ``f.forget(...)`` clears it. Ctrl-C releases the claim and records nothing.
* Completed records carry ``_stet_started``, ``_stet_duration`` and ``_stet_host``;
  ``stet.status`` reports completed, failed (latest error) and running now per function.
* A stress test: 6 workers, 300 short runs, random SIGKILLs, then a final pass.
* No file is left per claim.

Child processes run ``WORKER`` (below) and talk to the test line by line over their
stdin/stdout. Executions are logged by the children with ``O_APPEND`` writes to one file,
so the file's order is the order in which they happened.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import multiprocessing
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stet
from formats import other_tools_rows
from stet.backends import get_backend

HOST = os.uname().nodename

# ------------------------------------------------------------------------------ the child

#: A worker process. ``sweep``: wait for a line on stdin, then call ``run(i)`` for every
#: combination (in an order given by a seed; with ``wait``, waiting for runs held
#: elsewhere), logging ``start``/``end`` from inside the run and ``done`` once a call that
#: executed has returned. ``hold``: call ``f(x)``, whose body says ``started`` and waits
#: for a command (``return`` or ``raise``); then say how the call ended and stay alive
#: until stdin closes.
WORKER = r'''
import os
import random
import signal
import sys
import time

import stet


def sweep(store: str, execs: str, n: int, lo_ms: float, hi_ms: float, seed: int,
          wait: bool) -> None:
    fd = os.open(execs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    def log(what: str, i: int) -> None:
        os.write(fd, f"{what} {i} {pid}\n".encode())

    @stet.once(store=store, name="sweep", wait=wait)
    def run(i: int) -> int:
        log("start", i)
        time.sleep((lo_ms + (hi_ms - lo_ms) * ((i * 7919) % 101) / 100) / 1000)
        log("end", i)
        return i

    order = list(range(n))
    if seed:
        random.Random(seed).shuffle(order)
    run.is_done(-1)  # open the store (and import what its format needs) before "ready"
    print("ready", flush=True)
    sys.stdin.readline()
    for i in order:
        if run(i) is not None:
            log("done", i)  # only after the decorated call returned (recorded)
    print("finished", flush=True)


def hold(store: str, name: str, x: int) -> None:
    ran = []

    @stet.once(store=store, name=name)
    def f(x: int) -> int:
        ran.append(x)
        print("started", flush=True)
        command = sys.stdin.readline().strip()
        if command == "raise":
            raise ValueError(f"child failure {x}")
        return x

    try:
        f(x)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    except ValueError:
        print("raised", flush=True)
    else:
        print("returned" if ran else "skipped", flush=True)
    sys.stdin.read()  # stay alive, holding no claim, until the test closes stdin


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    stet.configure(verbose=False)
    mode, store, *rest = sys.argv[1:]
    if mode == "sweep":
        execs, n, lo, hi, seed, wait = rest
        sweep(store, execs, int(n), float(lo), float(hi), int(seed), wait == "wait")
    elif mode == "hold":
        name, x = rest
        hold(store, name, int(x))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


main()
'''


class Child:
    """A running ``WORKER``, with its stdout read line by line in the background."""

    def __init__(self, script: Path, args: tuple[str, ...], err_path: Path) -> None:
        self.err_path = err_path
        env = {k: v for k, v in os.environ.items() if k not in ("STET_FSYNC", "STET_QUIET")}
        with open(err_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
                env=env,
            )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.ready = threading.Event()  # set once the child has said "ready"
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line == "ready\n":
                self.ready.set()
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def expect(self, want: str, timeout: float = 30.0) -> None:
        """Wait for the child's next line and check it is ``want``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"child {self.pid} said nothing for {timeout} s (expected {want!r});"
                        f" stderr:\n{self.stderr()}")
        if line != want:
            pytest.fail(f"child {self.pid} said {line!r}, expected {want!r}; "
                        f"stderr:\n{self.stderr()}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60.0) -> None:
        """Close stdin, wait for a normal exit and check it succeeded."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        code = self.proc.wait(timeout=timeout)
        if code != 0:
            pytest.fail(f"child {self.pid} exited with {code}; stderr:\n{self.stderr()}")

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()


class Workers:
    """Starts ``WORKER`` children (killed at teardown); ``dir`` holds their files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.script = directory / "worker.py"
        self.script.write_text(WORKER, encoding="utf-8")
        self.children: list[Child] = []

    def start(self, *args: str) -> Child:
        child = Child(self.script, args, self.dir / f"stderr-{len(self.children)}.txt")
        self.children.append(child)
        return child

    def sweep(self, store: str, execs: Path, n: int, lo_ms: float, hi_ms: float,
              seed: int, wait: bool = False) -> Child:
        return self.start("sweep", store, str(execs), str(n), str(lo_ms), str(hi_ms),
                          str(seed), "wait" if wait else "skip")

    def hold(self, store: str, name: str, x: int) -> Child:
        return self.start("hold", store, name, str(x))


@pytest.fixture
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Child processes; their script and logs live apart from the store's directory."""
    w = Workers(tmp_path_factory.mktemp("workers"))
    yield w
    for child in w.children:
        child.kill()
        if child.proc.stdout is not None:
            child.proc.stdout.close()


# ---------------------------------------------------------------------------- helpers


class Probe:
    """A decorated ``f(x)`` in this process that remembers its executions in ``calls``;
    ``raises[x]`` makes the run of ``x`` raise that exception."""

    def __init__(self, store: str, name: str, **options: Any) -> None:
        self.calls: list[int] = []
        self.raises: dict[int, BaseException] = {}

        @stet.once(store=store, name=name, **options)
        def f(x: int) -> int:
            self.calls.append(x)
            exc = self.raises.get(x)
            if exc is not None:
                raise exc
            return x

        self.f: Any = f

    def __call__(self, x: int) -> int | None:
        result: int | None = self.f(x)
        return result


def records(store: str) -> list[dict[str, Any]]:
    """Completed runs, as a fresh reader (not the decorator's cached backend) sees them."""
    backend = get_backend(store)
    try:
        return backend.load()
    finally:
        backend.close()


def failures(store: str) -> list[dict[str, str]]:
    """Failure records, as a fresh reader sees them."""
    backend = get_backend(store)
    try:
        return backend.failures()
    finally:
        backend.close()


def runs_of(recs: list[dict[str, Any]], name: str, field: str = "x") -> list[str]:
    """Values of ``field`` in the records of function ``name``."""
    return [str(r[field]) for r in recs if r.get("_stet_func") == name]


def skip_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[stet] Skipping")]


def parse_iso(text: str) -> dt.datetime:
    stamp = dt.datetime.fromisoformat(text)
    # docs/reference/store-files.md: ISO 8601, UTC
    assert stamp.tzinfo is not None, f"{text!r} has no time zone"
    return stamp


Event = tuple[str, int, int]  # (start/end/done, combination, pid)


def file_store(store_path: Path) -> Path:
    """``store_path`` for a test about files beside the store; skips URL stores."""
    if not isinstance(store_path, Path):
        pytest.skip("about the files of a file store; this store is a URL")
    return store_path


def read_execs(path: Path) -> list[Event]:
    """The executions log, in the order the writes happened."""
    if not path.exists():
        return []
    out: list[Event] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        what, i, pid = line.split()
        out.append((what, int(i), int(pid)))
    return out


# ------------------------------------------------------------------------ exactly once


@pytest.mark.parametrize("wait", [False, True], ids=["skip", "wait"])
def test_processes_run_each_combination_exactly_once(
    workers: Workers, store_path: Path, wait: bool
) -> None:
    store, n = str(store_path), 40
    execs = workers.dir / "execs.log"
    children = [workers.sweep(store, execs, n, 5, 25, seed=k, wait=wait) for k in range(4)]
    for child in children:
        child.expect("ready")
    for child in children:  # a start line: all four race through the sweep together
        child.send("go")
    for child in children:
        child.expect("finished", timeout=60)
        child.finish()

    events = read_execs(execs)
    starts = collections.Counter(i for what, i, _ in events if what == "start")
    assert starts == dict.fromkeys(range(n), 1), (
        f"executions per combination: {sorted(starts.items())}"
    )
    assert collections.Counter(i for what, i, _ in events if what == "end") == starts
    pids = {pid for what, _, pid in events if what == "start"}
    assert len(pids) >= 2, "one worker did everything: the test did not run in parallel"
    assert collections.Counter(runs_of(records(store), "sweep", "i")) == {
        str(i): 1 for i in range(n)
    }


#: The decorated function forked pool workers call (set by the test before forking).
_forked_run: Any = None
FORK_N = 80


def _forked_sweep(seed: int) -> int:
    order = list(range(FORK_N))
    if seed:
        random.Random(seed).shuffle(order)
    for i in order:
        _forked_run(i)
    return os.getpid()


@pytest.mark.parametrize("wait", [False, True], ids=["skip", "wait"])
def test_forked_pool_runs_each_combination_exactly_once(
    store_path: Path, tmp_path_factory: pytest.TempPathFactory, wait: bool
) -> None:
    """``multiprocessing`` with ``fork`` (the default on Linux before Python 3.14), after
    the parent used the decorated function: it ran half the sweep and looked up which runs
    are left, so the workers inherit a function whose store is open."""
    global _forked_run
    store, n = str(store_path), FORK_N
    execs = tmp_path_factory.mktemp("fork") / "execs.log"
    stet.configure(verbose=False)

    @stet.once(store=store, name="forked", wait=wait)
    def run(i: int) -> int:
        fd = os.open(execs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"start {i} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        time.sleep(0.005 + 0.001 * (i % 10))
        return i

    for i in range(0, n, 2):
        run(i)
    assert [i for i in range(n) if not run.is_done(i)] == list(range(1, n, 2))
    _forked_run = run
    try:
        with multiprocessing.get_context("fork").Pool(4) as pool:
            pool.map(_forked_sweep, range(4), chunksize=1)
    finally:
        _forked_run = None
    events = read_execs(execs)
    parent = [i for _, i, pid in events if pid == os.getpid()]
    assert parent == list(range(0, n, 2))
    children = collections.Counter(i for _, i, pid in events if pid != os.getpid())
    assert children == dict.fromkeys(range(1, n, 2), 1), (
        f"forked workers ran {sorted(children.elements())}"
    )
    assert collections.Counter(runs_of(records(store), "forked", "i")) == {
        str(i): 1 for i in range(n)
    }
    assert all(run.is_done(i) for i in range(n))  # the parent sees what they recorded


#: The README's multiprocessing example (any start method), as a script of its own.
POOL_SCRIPT = """
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import stet

STORE, METHOD = sys.argv[1], sys.argv[2]


@stet.once(store=STORE, key=["alpha", "seed"], verbose=False)
def run_experiment(alpha, seed):
    pass


def worker(_):
    for alpha in [0.1, 0.5, 1.0]:
        for seed in range(10):
            run_experiment(alpha, seed)


if __name__ == "__main__":
    context = multiprocessing.get_context(METHOD)
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        list(pool.map(worker, range(2)))
"""


def _rows_in_store_file_alone(store_path: Path, fmt: str, scratch: Path) -> int:
    """Completed runs in a copy of the store file alone, read by standard tools."""
    scratch.mkdir()
    alone = scratch / store_path.name
    if store_path.exists():
        alone.write_bytes(store_path.read_bytes())
    else:
        return 0
    return len(other_tools_rows(alone, fmt))


@pytest.mark.parametrize("method", ["fork", "spawn"])  # forkserver behaves as fork
def test_pool_sweep_leaves_every_run_in_the_store_file(
    workers: Workers, store_path: Path, fmt: str, method: str
) -> None:
    """File-specific (docs/explanation/durability.md): once the script has ended
    normally, the store file alone holds every completed run, also when a process pool's
    workers wrote them."""
    store_path = file_store(store_path)
    script = workers.dir / "pool_sweep.py"
    script.write_text(POOL_SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(store_path), method],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # look before stet opens the store here (closing it could tidy up what was left)
    beside = sorted(p.name for p in store_path.parent.iterdir())
    rows = _rows_in_store_file_alone(store_path, fmt, workers.dir / "alone")
    assert len(records(str(store_path))) == 30
    assert rows == 30, f"the store file alone holds {rows} of 30 runs; beside it: {beside}"


# ---------------------------------------------------------------- running elsewhere


def test_run_held_by_another_process_is_skipped(
    workers: Workers, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(store_path)
    child = workers.hold(store, "held", 1)
    child.expect("started")
    probe = Probe(store, "held")
    assert not probe.f.is_done(1)  # open the store before timing a skip
    capsys.readouterr()

    t0 = time.monotonic()
    assert probe(1) is None
    elapsed = time.monotonic() - t0
    assert probe.calls == []
    assert elapsed < 2.0, f"a skip of a run held elsewhere took {elapsed:.2f} s"
    lines = skip_lines(capsys.readouterr().out)
    assert len(lines) == 1, lines
    m = re.fullmatch(r"\[stet\] Skipping f\(x=1\): running elsewhere \((.+)\)", lines[0])
    assert m is not None, lines[0]
    assert str(child.pid) in m.group(1), f"the message does not say where: {lines[0]!r}"

    assert probe(2) == 2  # other runs are not blocked
    child.send("return")
    child.expect("returned")
    assert probe(1) is None  # now done
    assert skip_lines(capsys.readouterr().out)[-1] == "[stet] Skipping f(x=1)"
    child.finish()
    assert sorted(runs_of(records(store), "held")) == ["1", "2"]


def test_wait_true_waits_then_skips_as_done(
    workers: Workers, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(store_path)
    child = workers.hold(store, "held", 1)
    child.expect("started")
    waiter = Probe(store, "held", wait=True)
    capsys.readouterr()

    release = threading.Timer(0.5, child.send, args=("return",))
    t0 = time.monotonic()
    release.start()
    try:
        result = waiter(1)
    finally:
        release.join()
    elapsed = time.monotonic() - t0

    assert result is None
    assert waiter.calls == [], "the waiter ran the run the other worker had just finished"
    assert elapsed >= 0.4, f"wait=True returned after {elapsed:.2f} s, before the holder"
    lines = skip_lines(capsys.readouterr().out)
    assert lines == ["[stet] Skipping f(x=1)"]
    child.expect("returned")
    child.finish()
    assert runs_of(records(store), "held") == ["1"]


# ---------------------------------------------------------------------------- SIGKILL


@pytest.mark.parametrize("waiting", [False, True], ids=["retry", "wait"])
def test_sigkill_frees_the_claim_within_seconds(
    workers: Workers, store_path: Path, waiting: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(store_path)
    child = workers.hold(store, "held", 1)
    child.expect("started")
    probe = Probe(store, "held")
    assert probe(1) is None
    assert "running elsewhere" in capsys.readouterr().out
    assert not probe.f.is_done(1)

    if waiting:
        waiter = Probe(store, "held", wait=True)
        killer = threading.Timer(0.3, child.kill)
        t0 = time.monotonic()
        killer.start()
        try:
            result = waiter(1)
        finally:
            killer.join()
        elapsed = time.monotonic() - t0
        assert result == 1 and waiter.calls == [1], "the waiter did not take over the run"
    else:
        child.kill()
        assert not probe.f.is_done(1), "a run killed mid-way is recorded as done"
        t0 = time.monotonic()
        while probe(1) is None:
            assert time.monotonic() - t0 < 10, "the dead worker's claim was never freed"
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        assert probe.calls == [1]
    assert elapsed < 10, f"the claim of a killed worker was freed after {elapsed:.1f} s"
    assert runs_of(records(store), "held") == ["1"]
    assert runs_of(failures(store), "held") == []


# --------------------------------------------------------------------------- failures


def test_failed_run_recorded_retried_skipped_and_forgotten(
    workers: Workers, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(store_path)
    f = Probe(store, "flaky")
    g = Probe(store, "flaky", skip_failed=True)
    g.calls = f.calls  # one log of executions for both decorated functions
    f.raises[1] = ValueError("bad x=1")
    before = dt.datetime.now(dt.UTC)

    with pytest.raises(ValueError, match="bad x=1"):
        f(1)
    (fail,) = failures(store)
    assert fail["x"] == "1"
    assert fail.get("_stet_func") == "flaky"
    assert fail["_stet_error_type"].split(".")[-1] == "ValueError"
    assert fail["_stet_error"] == "bad x=1"
    assert fail["_stet_host"] == HOST
    assert fail["_stet_pid"] == str(os.getpid())
    stamp = parse_iso(fail["_stet_timestamp"])
    assert before - dt.timedelta(seconds=5) <= stamp <= dt.datetime.now(dt.UTC)
    # not done, and the completed-runs view does not show it
    assert not f.f.is_done(1)
    assert runs_of(records(store), "flaky") == []

    # by default a failed run is tried again
    f.raises[1] = ValueError("bad again")
    with pytest.raises(ValueError, match="bad again"):
        f(1)
    assert f.calls == [1, 1]
    assert failures(store)[-1]["_stet_error"] == "bad again"

    # skip_failed=True skips it, saying why
    capsys.readouterr()
    assert g(1) is None
    assert f.calls == [1, 1]
    (line,) = skip_lines(capsys.readouterr().out)
    assert line.startswith("[stet] Skipping f(x=1)") and "fail" in line, line

    # once it succeeds it is done, for both
    del f.raises[1]
    assert f(1) == 1
    assert g(1) is None and f(1) is None
    assert f.calls == [1, 1, 1]
    assert runs_of(records(store), "flaky") == ["1"]
    assert all(not k.startswith("_stet_error") for r in records(store) for k in r)

    # forget clears a failure ...
    f.raises[2] = RuntimeError("bad x=2")
    with pytest.raises(RuntimeError):
        f(2)
    assert g(2) is None
    f.f.forget(2)
    assert runs_of(failures(store), "flaky").count("2") == 0
    del f.raises[2]
    assert g(2) == 2
    # ... and a completion
    f.f.forget(1)
    assert not f.f.is_done(1)
    assert runs_of(failures(store), "flaky").count("1") == 0
    assert f(1) == 1
    assert f.calls == [1, 1, 1, 2, 2, 1]
    assert sorted(runs_of(records(store), "flaky")) == ["1", "2"]

    # a failure in another process: its pid, and other processes skip it with the option
    child = workers.hold(store, "flaky", 5)
    child.expect("started")
    child.send("raise")
    child.expect("raised")
    (fail,) = [r for r in failures(store) if r.get("x") == "5"]
    assert fail["_stet_pid"] == str(child.pid)
    assert fail["_stet_host"] == HOST
    assert fail["_stet_error_type"].split(".")[-1] == "ValueError"
    assert fail["_stet_error"] == "child failure 5"
    assert g(5) is None  # skip_failed
    assert f(5) == 5  # default: retried
    child.finish()
    assert sorted(runs_of(records(store), "flaky")) == ["1", "2", "5"]


# ---------------------------------------------------------------------------- Ctrl-C


def test_sigint_in_a_run_releases_claim_and_records_nothing(
    workers: Workers, store_path: Path
) -> None:
    store = str(store_path)
    child = workers.hold(store, "held", 1)
    child.expect("started")
    probe = Probe(store, "held")
    assert probe(1) is None  # held

    child.proc.send_signal(signal.SIGINT)
    child.expect("interrupted")
    assert child.proc.poll() is None  # alive: only releasing the claim can free the run
    assert not probe.f.is_done(1)
    assert probe(1) == 1, "the claim of an interrupted run was not released"
    assert probe.calls == [1]
    assert runs_of(failures(store), "held") == []
    assert runs_of(records(store), "held") == ["1"]
    child.finish()


def test_keyboard_interrupt_in_process_releases_claim_and_records_nothing(
    workers: Workers, store_path: Path
) -> None:
    store = str(store_path)
    probe = Probe(store, "held")
    probe.raises[1] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        probe(1)
    assert not probe.f.is_done(1)
    assert runs_of(records(store), "held") == []
    assert runs_of(failures(store), "held") == []

    child = workers.hold(store, "held", 1)  # another process claims it at once
    child.expect("started")
    child.send("return")
    child.expect("returned")
    del probe.raises[1]
    assert probe(1) is None
    assert probe.calls == [1]
    child.finish()
    assert runs_of(records(store), "held") == ["1"]


# --------------------------------------------------------------------------- metadata


def test_completed_records_carry_start_duration_host(store_path: Path) -> None:
    store = str(store_path)
    stet.configure(verbose=False)
    before = dt.datetime.now(dt.UTC)

    @stet.once(store=store, name="timed")
    def timed(x: int) -> int:
        time.sleep(0.05 * x)
        if x == 3:
            raise ValueError("no")
        return x

    assert timed(1) == 1
    assert timed(2) == 2
    with pytest.raises(ValueError):
        timed(3)
    after = dt.datetime.now(dt.UTC)

    recs = {r["x"]: r for r in records(store)}
    assert sorted(recs) == ["1", "2"], "a failed run appears in the completed-runs view"
    for x, rec in recs.items():
        started = parse_iso(rec["_stet_started"])
        finished = parse_iso(rec["_stet_timestamp"])
        duration = float(rec["_stet_duration"])
        assert before - dt.timedelta(seconds=1) <= started <= finished <= after
        assert 0.05 * int(x) * 0.9 <= duration < 0.05 * int(x) + 5
        assert abs((finished - started).total_seconds() - duration) < 1
        assert rec["_stet_host"] == HOST
        assert not any(k.startswith("_stet_error") for k in rec)


# ----------------------------------------------------------------------------- status


def _func_line(out: str, name: str) -> str:
    lines = [line for line in out.splitlines() if re.match(rf"\s*{name}\b", line)]
    assert len(lines) == 1, f"no single status line for {name}:\n{out}"
    return lines[0]


def test_status_reports_completed_failed_running_per_function(
    workers: Workers, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(store_path)
    held = Probe(store, "held")
    flaky = Probe(store, "flaky")
    other = Probe(store, "other")
    held(10)
    held(11)
    flaky.raises[12] = ValueError("first failure")
    flaky.raises[13] = KeyError("latest boom")
    flaky.raises[14] = ValueError("failed then completed")
    with pytest.raises(ValueError):
        flaky(12)
    time.sleep(0.01)
    with pytest.raises(ValueError):
        flaky(14)
    time.sleep(0.01)
    with pytest.raises(KeyError):
        flaky(13)
    del flaky.raises[14]
    flaky(14)
    other(1)
    child = workers.hold(store, "held", 1)
    child.expect("started")

    capsys.readouterr()
    stet.status(store)
    out = capsys.readouterr().out
    line = _func_line(out, "held")
    assert re.search(r"\b2 completed", line), line
    assert re.search(r"\b1 running", line), line
    assert not re.search(r"\b[1-9]\d* failed", line), line
    line = _func_line(out, "flaky")
    assert re.search(r"\b1 completed", line), line
    assert re.search(r"\b2 failed", line), line
    assert "KeyError" in line and "latest boom" in line, line
    assert "first failure" not in line, line
    assert not re.search(r"\b[1-9]\d* running", line), line
    line = _func_line(out, "other")
    assert re.search(r"\b1 completed", line), line

    child.kill()  # a dead worker is not running any more
    stet.status(store)
    out = capsys.readouterr().out
    line = _func_line(out, "held")
    assert not re.search(r"\b[1-9]\d* running", line), line
    assert re.search(r"\b2 completed", line), line


# ----------------------------------------------------------------------------- stress

STRESS_N = 300
STRESS_WORKERS = 6
STRESS_KILLS = 8


def test_stress_random_sigkills(workers: Workers, store_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    why = f"(random seed {seed})"
    store, n = str(store_path), STRESS_N
    execs = workers.dir / "execs.log"
    killed: set[int] = set()
    next_seed = 1

    def start() -> Child:
        nonlocal next_seed
        # odd workers wait for runs held elsewhere (and take over those of killed ones)
        child = workers.sweep(store, execs, n, 10, 40, seed=next_seed, wait=next_seed % 2 == 1)
        next_seed += 1
        child.send("go")
        return child

    live = [start() for _ in range(STRESS_WORKERS)]
    deadline = time.monotonic() + 90
    kills = 0
    while live:
        time.sleep(rng.uniform(0.05, 0.2))
        for child in [c for c in live if c.proc.poll() is not None]:
            live.remove(child)
            child.finish()  # exited by itself: must have succeeded
        started = [c for c in live if c.ready.is_set()]  # kill workers, not interpreters
        if started and kills < STRESS_KILLS:
            victim = rng.choice(started)
            victim.kill()
            killed.add(victim.pid)
            kills += 1
            live.remove(victim)
            live.append(start())
        assert time.monotonic() < deadline, f"the stressed sweep did not finish {why}"

    done_before_final = set(runs_of(records(store), "sweep", "i"))
    final_start = len(read_execs(execs))
    final = start()
    final.expect("ready")
    final.expect("finished", timeout=60)
    final.finish()

    events = read_execs(execs)
    final_ran = {i for what, i, _ in events[final_start:] if what == "start"}
    assert final_ran == {i for i in range(n) if str(i) not in done_before_final}, (
        f"the final pass ran {sorted(final_ran)}, but the store held "
        f"{len(done_before_final)} runs {why}"
    )

    problems: list[str] = []
    completed_at: dict[int, int] = {}
    running: dict[int, set[int]] = collections.defaultdict(set)
    for at, (what, i, pid) in enumerate(events):
        if what == "start":
            if i in completed_at:
                problems.append(f"{i} ran again in pid {pid} after it completed")
            alive = running[i] - killed
            if alive:
                problems.append(f"{i} started in pid {pid} while running in {alive}")
            running[i].add(pid)
        elif what == "end":
            running[i].discard(pid)
        else:
            completed_at.setdefault(i, at)
    assert problems == [], f"{problems[:10]} {why}"
    ended = {i for what, i, _ in events if what == "end"}
    assert ended == set(range(n)), f"never ran to the end: {set(range(n)) - ended} {why}"
    counts = collections.Counter(runs_of(records(store), "sweep", "i"))
    assert counts == {str(i): 1 for i in range(n)}, (
        f"records per combination: {[kv for kv in counts.items() if kv[1] != 1]} {why}"
    )
    # the test did what it says: workers died (most of the time; the sweep may finish
    # first) and some of them while holding a claim
    killed_mid_run = {i for i, pids in running.items() if pids & killed}
    assert kills >= 3 and killed_mid_run, f"kills={kills} {why}"


# ---------------------------------------------------------------- no file per claim


def test_no_file_per_claim(workers: Workers, store_path: Path) -> None:
    """File-specific: 1,000 runs (two processes, threads, failures, Ctrl-C) leave only
    the store and its fixed companion files beside it."""
    store_path = file_store(store_path)
    store, n = str(store_path), 1000
    stet.configure(verbose=False)
    child = workers.sweep(store, workers.dir / "execs.log", n, 0, 0, seed=1)
    child.expect("ready")
    child.send("go")

    @stet.once(store=store, name="sweep")
    def run(i: int) -> int:
        if i % 250 == 7:
            raise ValueError(f"bad {i}")
        if i % 250 == 8:
            raise KeyboardInterrupt
        return i

    def thread(seed: int) -> None:
        order = list(range(n))
        random.Random(seed).shuffle(order)
        for i in order:
            with contextlib.suppress(ValueError, KeyboardInterrupt):
                run(i)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(thread, seed) for seed in range(100, 104)]:
            future.result()
    child.expect("finished", timeout=60)
    child.finish()
    flaky = {i for i in range(n) if i % 250 in (7, 8)}
    assert set(range(n)) - flaky <= {int(i) for i in runs_of(records(store), "sweep", "i")}

    name = store_path.name
    allowed = {name, *(name + suffix for suffix in (
        ".lock", ".claims", ".failures.jsonl", "-journal", "-wal", "-shm", ".stet-log",
        ".stet-index"))}  # (the index snapshot: one per store, whatever the claims)
    present = {p.name for p in store_path.parent.iterdir()}
    assert name in present
    assert present <= allowed, f"unexpected files beside the store: {present - allowed}"
