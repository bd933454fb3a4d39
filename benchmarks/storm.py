"""Crash storm: workers sweeping one store while they are killed and the server restarts.

Usage::

    python benchmarks/storm.py                                   # every format
    python benchmarks/storm.py --formats postgres --runs 24000 --restarts 3 --terminations 24
    python benchmarks/storm.py --formats csv,sqlite --runs 4000 --kills 100

For each format, ``--workers`` processes sweep the same ``--runs`` combinations of a
decorated function (``--run-ms`` long) in one store, each from its own random place, and
sweep again until the store holds every run. Meanwhile this script SIGKILLs a random
worker ``--kills`` times (starting a new one each time) and, for PostgreSQL, restarts
the server with ``pg_ctl restart -m immediate`` ``--restarts`` times and ends a random
worker's session with ``pg_terminate_backend`` ``--terminations`` times (on a throwaway
server it starts itself, as ``tests/pgserver.py`` does; ``--url`` names another server,
which is then never restarted).

Every execution appends ``S <run> <pid> <time>`` when it starts and ``E ...`` when its
body ends to an executions log (``O_APPEND``: two executions of one run both show), and
the worker appends ``R ...`` once the call returned (its record written). At the end:

* duplicate executions by live workers: a run executed again although its earlier
  execution was not cut short by a SIGKILL (its executor was never killed, or was
  killed only after the later execution started, or had recorded it);
* re-executed after a kill: a run executed again because its executor was killed
  before recording it (allowed: that is what a crash costs);
* lost: runs the store does not hold when the workers are done;
* duplicate records: records beyond the first of a run.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FORMATS = ["csv", "json", "sqlite", "parquet", "postgres"]

WORKER = '''
import os, random, sys, time
import stet

store, n, log, seed, run_ms = sys.argv[1:6]
n, run_ms = int(n), float(run_ms)
stet.configure(verbose=False)
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
me = os.getpid()
ran = []


@stet.once(store=store, name="storm")
def storm(i):
    os.write(fd, f"S {i} {me} {time.time():.6f}\\n".encode())
    ran.append(i)
    if run_ms:
        time.sleep(run_ms / 1000)
    os.write(fd, f"E {i} {me} {time.time():.6f}\\n".encode())


start = random.Random(int(seed)).randrange(n)
backend = storm.backend()
while True:
    for j in range(n):
        i = (start + j) % n
        storm(i)
        if ran:
            os.write(fd, f"R {i} {me} {time.time():.6f}\\n".encode())
            ran.clear()
    if len(backend) >= n:
        break
    time.sleep(0.2)
'''


class Storm:
    """One format's storm: the workers, the chaos, and the executions log."""

    def __init__(self, fmt: str, store: str, args: argparse.Namespace, tmp: Path,
                 server: Any) -> None:
        self.fmt, self.store, self.args, self.server = fmt, store, args, server
        self.log = tmp / f"executions-{fmt}.log"
        self.script = tmp / "storm_worker.py"
        self.script.write_text(WORKER)
        self.rng = random.Random(args.seed)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: dict[int, float] = {}  # pid -> when
        self.restarts = self.terminations = 0
        self.env = dict(os.environ)
        import stet

        src = str(Path(stet.__file__).resolve().parent.parent)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [src, *filter(None, [os.environ.get("PYTHONPATH")])])

    def spawn(self) -> None:
        p = subprocess.Popen(
            [sys.executable, str(self.script), self.store, str(self.args.runs),
             str(self.log), str(self.rng.randrange(1 << 30)), str(self.args.run_ms)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(p)

    def recorded(self) -> int:
        """Runs whose call returned so far (from the log)."""
        try:
            data = self.log.read_bytes()
        except FileNotFoundError:
            return 0
        return len({line.split()[1] for line in data.splitlines() if line.startswith(b"R ")})

    def run(self) -> dict[str, Any]:
        a = self.args
        events: list[tuple[float, str]] = []
        # Spread over the sweep (by runs returned): restarts in its first half, kills
        # mostly in its second (a restart soon after a kill waits for the dead worker's
        # lease to expire before anyone claims: up to 8 s).
        for k in range(a.kills):
            events.append((0.3 + 0.6 * (k + 1) / (a.kills + 1), "kill"))
        if self.fmt == "postgres":
            for k in range(a.restarts if self.server is not None else 0):
                events.append((0.05 + 0.45 * (k + 1) / (a.restarts + 1), "restart"))
            for k in range(a.terminations):
                events.append((0.05 + 0.85 * (k + 1) / (a.terminations + 1), "terminate"))
        events.sort()
        t0 = time.monotonic()
        for _ in range(a.workers):
            self.spawn()
        while True:
            live = [p for p in self.procs if p.poll() is None]
            for p in self.procs:
                if p.returncode not in (None, 0, -signal.SIGKILL):
                    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
                    raise RuntimeError(f"{self.fmt}: worker {p.pid} failed:\n{err[-3000:]}")
            if not live and not events:
                break
            if time.monotonic() - t0 > a.timeout:
                raise RuntimeError(f"{self.fmt}: not done after {a.timeout} s")
            done = self.recorded() / a.runs
            while events and (done >= events[0][0] or not live):
                _, what = events.pop(0)
                self.chaos(what)
                live = [p for p in self.procs if p.poll() is None]
            time.sleep(0.01)
        seconds = time.monotonic() - t0
        for p in self.procs:
            if p.stderr:
                p.stderr.close()
        return self.verdict(seconds)

    def chaos(self, what: str) -> None:
        live = [p for p in self.procs if p.poll() is None]
        if what == "kill" and live:
            p = self.rng.choice(live)
            p.send_signal(signal.SIGKILL)
            self.killed[p.pid] = time.time()
            p.wait()
            self.spawn()
        elif what == "restart":
            self.server.restart("immediate")
            self.restarts += 1
        elif what == "terminate":
            import psycopg

            with psycopg.connect(self.admin_url(), autocommit=True) as raw:
                pids = [r[0] for r in raw.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'stet' "
                    "AND datname = current_database() AND pid <> pg_backend_pid()")]
                if pids:
                    raw.execute("SELECT pg_terminate_backend(%s)", (self.rng.choice(pids),))
                    self.terminations += 1

    def admin_url(self) -> str:
        return self.store.split("?")[0]

    def verdict(self, seconds: float) -> dict[str, Any]:
        from stet.backends import get_backend

        starts: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
        returned: set[tuple[int, int]] = set()
        for line in self.log.read_text().splitlines():
            kind, i, pid, t = line.split()
            if kind == "S":
                starts[int(i)].append((float(t), int(pid)))
            elif kind == "R":
                returned.add((int(i), int(pid)))
        live_dups = after_kill = 0
        for i, execs in starts.items():
            execs.sort()
            for (_, p1), (t2, _) in itertools.pairwise(execs):
                cut_short = p1 in self.killed and self.killed[p1] <= t2 and \
                    (i, p1) not in returned
                if cut_short:
                    after_kill += 1
                else:
                    live_dups += 1
        with get_backend(self.store) as b:
            counts = collections.Counter(r["i"] for r in b.load())
        return {
            "format": self.fmt, "runs": self.args.runs, "workers": self.args.workers,
            "kills": len(self.killed), "restarts": self.restarts,
            "terminations": self.terminations,
            "executions": sum(len(v) for v in starts.values()),
            "dup_live": live_dups, "reexec_after_kill": after_kill,
            "lost": self.args.runs - len(counts),
            "dup_records": sum(c - 1 for c in counts.values()),
            "seconds": round(seconds, 1),
        }


def storm(fmt: str, args: argparse.Namespace, tmp: Path, server: Any) -> dict[str, Any]:
    if fmt == "postgres":
        base = args.url or server.url()
        sep = "&" if "?" in base else "?"
        store = f"{base}{sep}table=storm_{secrets.token_hex(4)}"
    else:
        store = str(tmp / f"storm.{fmt}")
    return Storm(fmt, store, args, tmp, server).run()


COLUMNS = ["format", "runs", "workers", "kills", "restarts", "terminations", "executions",
           "dup_live", "reexec_after_kill", "lost", "dup_records", "seconds"]


def table(rows: list[dict[str, Any]]) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS]
    lines = ["  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(str(r[c]).rjust(w) for c, w in zip(COLUMNS, widths, strict=True))
              for r in rows]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formats", default=",".join(FORMATS),
                    help=f"comma-separated, of {', '.join(FORMATS)}")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--runs", type=int, default=4000, help="runs in the sweep")
    ap.add_argument("--run-ms", type=float, default=1.0, help="how long each run lasts")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs of random workers")
    ap.add_argument("--restarts", type=int, default=3, help="PostgreSQL immediate restarts")
    ap.add_argument("--terminations", type=int, default=24,
                    help="pg_terminate_backend of a random worker's session")
    ap.add_argument("--url", help="an existing PostgreSQL server (never restarted)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per format")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = set(args.formats) - set(FORMATS)
    if unknown:
        ap.error(f"unknown formats: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse(argv)
    server = None
    rows = []
    with tempfile.TemporaryDirectory(prefix="stet-storm-") as tmp:
        try:
            if "postgres" in args.formats and args.url is None:
                sys.path.insert(0, str(HERE.parent / "tests"))
                from pgserver import PgServer, find_bindir

                bindir = find_bindir()
                if bindir is None:
                    sys.exit("no PostgreSQL server binaries; install postgresql or pass --url")
                server = PgServer(bindir)
            for fmt in args.formats:
                rows.append(storm(fmt, args, Path(tmp), server))
                print(table(rows[-1:]) if len(rows) == 1 else table(rows).splitlines()[-1],
                      flush=True)
        finally:
            if server is not None:
                server.close()
    return rows


if __name__ == "__main__":
    main()
