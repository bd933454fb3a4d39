"""Throughput of a PostgreSQL store: many worker processes split one sweep of no-op runs.

Usage::

    python benchmarks/bench_postgres.py                      # a throwaway loopback server
    python benchmarks/bench_postgres.py --url postgresql://user@host/db
    python benchmarks/bench_postgres.py --workers 8 --runs 20000 --server-fsync

Without ``--url`` a throwaway server is started on 127.0.0.1 from the machine's
PostgreSQL binaries (as ``tests/pgserver.py`` does for the tests), with ``fsync=off`` by
default so that the figure measures stet and the protocol rather than the disk's flush
latency (``--server-fsync`` turns it on).

Measured, in this order, each on a new table:

* sweep: ``--workers`` processes, each with its own connection, call the same decorated
  no-op function over the same ``--runs`` combinations, claims included. Twice: each
  worker starting at its own place in the sweep ("spread"), then all walking it in the
  same order ("same order", as a job array of one script does: they reach each run
  together, so most calls are skips of runs another worker holds or has just finished,
  and workers that collided back off for a moment). Every combination must run exactly
  once (checked); the figure is runs per second overall.
* record / skip: in one process, the cost per call of a new run (check, claim, run,
  record) and of a run already done (answered from the local index, no round trip).

Nothing here asserts beyond exactly-once; it reports.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import stet
from stet.backends import get_backend

HERE = Path(__file__).resolve().parent


def _worker(url: str, runs: int, offset: int, start_at: float, out: Any) -> None:
    @stet.once(store=url, name="noop", verbose=False)
    def noop(i: int) -> int:
        return 1

    noop.backend().exists()  # connect before the clock starts
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    executed = 0
    for j in range(runs):
        if noop((j + offset) % runs) is not None:
            executed += 1
    out.put((executed, time.perf_counter() - t0))


def sweep(url: str, workers: int, runs: int, rotate: bool) -> tuple[float, int, int]:
    """Runs per second, executions, and records, for ``workers`` processes."""
    ctx = mp.get_context("fork")
    out: Any = ctx.Queue()
    start_at = time.time() + 1.5
    procs = [
        ctx.Process(target=_worker,
                    args=(url, runs, (w * runs) // workers if rotate else 0, start_at, out))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    executed = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    with get_backend(url) as b:
        recorded = len(b.load())
    return executed / elapsed, executed, recorded


def per_call(url: str, n: int) -> tuple[float, float]:
    """Microseconds per call: a new run (record) and a done run (skip), one process."""

    @stet.once(store=url, name="single", verbose=False)
    def single(i: int) -> int:
        return 1

    single(-1)  # connect, create the tables
    t0 = time.perf_counter()
    for i in range(n):
        single(i)
    record = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(5):
        for i in range(n):
            single(i)
    skip = (time.perf_counter() - t0) / (5 * n) * 1e6
    return record, skip


def throwaway_server(fsync: bool = False) -> Any:
    """A loopback server from this machine's PostgreSQL binaries (``tests/pgserver.py``);
    ``close()`` it."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from pgserver import PgServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL server binaries; install postgresql or pass --url")
    return PgServer(bindir, fsync=fsync)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an existing server (default: start a throwaway one)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--runs", type=int, default=20_000, help="combinations in the sweep")
    ap.add_argument("--server-fsync", action="store_true",
                    help="throwaway server: fsync on (flush latency of this machine's disk)")
    ap.add_argument("--calls", type=int, default=2_000, help="calls timed per call cost")
    args = ap.parse_args()

    server = None
    url = args.url
    if url is None:
        server = throwaway_server(fsync=args.server_fsync)
        url = server.url()
    sep = "&" if "?" in url else "?"
    try:
        print(f"stet {stet.__version__}, {os.cpu_count()} cores, {args.workers} workers, "
              f"{args.runs} runs, server fsync {'on' if args.server_fsync else 'off'}"
              + ("" if server is None else " (throwaway loopback server)"))
        for label, rotate in (("spread", True), ("same order", False)):
            table = f"bench_{secrets.token_hex(4)}"
            rate, executed, recorded = sweep(f"{url}{sep}table={table}", args.workers,
                                             args.runs, rotate)
            ok = "ok" if executed == recorded == args.runs else "WRONG"
            print(f"sweep, {label + ':':11} {rate:7.0f} runs/s  ({executed} executions, "
                  f"{recorded} records: exactly once {ok})")
        record, skip = per_call(f"{url}{sep}table=single_{secrets.token_hex(4)}", args.calls)
        print(f"record (1 process): {record:7.1f} us/call  (claim, run, record: 2 round trips)")
        print(f"skip (1 process):   {skip:7.1f} us/call  (known done: no round trip)")
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
