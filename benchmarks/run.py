"""stet against its peers, in one run: per-call cost, open time, size on disk, parallel sweeps.

Usage::

    python benchmarks/run.py                  # full: stores of up to 1,000,000 runs
    python benchmarks/run.py --quick          # under 2 minutes on 2 cores: up to 20,000
    python benchmarks/run.py --postgres postgresql://user:pw@host/db   # add PostgreSQL
    python benchmarks/run.py --quick --plot   # also write docs/bench-*.png (matplotlib)

Extras: ``pip install -e '.[bench]'`` (joblib, diskcache, matplotlib; pyarrow comes with
``[parquet]``).

Measured on a sweep of no-op runs, ``experiment(alpha, seed, n_iter=100)`` keyed by
``alpha`` and ``seed`` (the workload of ``bench_core.py``, whose pieces this reuses), for
each store size and each of stet's backends (CSV, JSON, SQLite, Parquet; PostgreSQL with
``--postgres``):

* floor:  a bare in-memory decorator that binds arguments and looks up a dict;
* record: µs per call on a new run (check, claim, run, record);
* skip:   µs per call on a run that is done;
* open:   seconds for a fresh process to import the library and answer one lookup (stet:
          decorate and make a first call, a skip, on a store a process opened before);
* disk:   bytes the store of that many runs takes on disk (allocated blocks; for
          PostgreSQL, its tables with their indexes), before the timed calls add theirs.

The peers go through the same workload in the same run, each in its own process
(``benchmarks/peers.py``):

* stet 0.0.2 from PyPI, installed by this script into its own virtual environment under
  ``benchmarks/.peers/`` (it has the same import name). It re-reads (and, to record,
  rewrites) the whole store on every call, so each size is timed on a few calls only and
  sizes where one call would take too long are left out ("—, too slow").
* joblib.Memory, which caches return values in a directory of pickles (one directory and
  two files per call), whatever the store format in the row.
* diskcache's ``Cache.memoize``, which caches return values in one SQLite database
  (pickled keys and values; default settings), whatever the store format in the row.

Then a parallel sweep: N worker processes (1, 2, 4, 8) share one store (SQLite, CSV,
PostgreSQL) and each runs the same sweep of no-op runs; claims make every run execute
once. Throughput is runs completed (each a claim and a record) per second of wall time.

Everything is printed as markdown on stdout (progress on stderr). Costs are absolute and
as ratios: to the floor, and each peer's to stet's, all measured in the same run. On a
shared machine the absolute figures move with the load; compare ratios. Nothing here
asserts; it reports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import bench_core
import stet
from stet.backends import get_backend

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"
DOCS = HERE.parent / "docs"
FORMATS = bench_core.FORMATS
PEER_002 = "0.0.2"

QUICK: dict[str, Any] = {"sizes": [100, 2_000, 20_000], "budget": 0.3, "max_call": 0.3,
                         "max_prepare": 20.0, "runs": 5_000}
FULL: dict[str, Any] = {"sizes": [100, 10_000, 100_000, 1_000_000], "budget": 2.0,
                        "max_call": 3.0, "max_prepare": 120.0, "runs": 50_000}
REPEAT = 5  # stet's costs: best of this many rounds of bench_core.CALLS calls
MAX_JOBLIB_DISK = 2e9  # bytes, for joblib and diskcache (joblib: ~10 KB, 3 inodes per call)
WORKERS = [1, 2, 4, 8]
# SPEC §7: per-call cost as a ratio to the floor, and open time at 1,000,000 runs (SPEC
# says 3 s; since the index snapshots, the project holds itself to 1 s).
SKIP_BUDGET = 3.0
RECORD_BUDGET = {"csv": 15.0, "json": 15.0, "sqlite": 15.0, "parquet": 30.0}
OPEN_BUDGET = 1.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the machine
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.machine()}",
            "load": os.getloadavg()[0]}


def describe(m: dict[str, Any]) -> str:
    return f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['system']}"


# ------------------------------------------------------------------ PostgreSQL
def _query(url: str, drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    return [(k, v) for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)
            if k not in drop]


def with_table(url: str, table: str) -> str:
    parts = urlsplit(url)
    q = [*_query(url, drop={"table"}), ("table", table)]
    return urlunsplit(parts._replace(query=urlencode(q)))


def _connect(url: str) -> Any:
    import psycopg

    parts = urlsplit(url)
    plain = urlunsplit(parts._replace(query=urlencode(_query(url, drop={"table"}))))
    return psycopg.connect(plain, autocommit=True)


def _pg_tables(table: str) -> list[str]:
    return [table, f"{table}_failures", f"{table}_meta", f"{table}_claims"]


def pg_missing() -> str | None:
    """Why stet cannot use PostgreSQL here, or ``None``."""
    try:
        if importlib.util.find_spec("stet.backends.postgres") is None:
            return "stet.backends.postgres is not there (yet)"
    except ImportError as exc:
        return str(exc)
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed"
    return None


def pg_prepare(url: str, table: str, n: int) -> str:
    """A table of ``n`` completed runs (seeds 0..n-1); returns the store URL."""
    store = with_table(url, table)
    first, *_ = bench_core._records(1)
    with get_backend(store) as b:  # stet creates its tables and writes seed 0
        b.append_record(first)
    template = {k: v for k, v in first.items() if k != "seed"}
    import psycopg

    try:  # the layout stet's module documents: T (id bigserial, record json)
        with _connect(url) as conn:
            conn.execute(
                f'INSERT INTO "{table}" (record) SELECT '
                "(%s::jsonb || jsonb_build_object('seed', i::text))::json "
                "FROM generate_series(1, %s) AS i",
                (json.dumps(template), n - 1))
    except psycopg.Error as exc:  # another layout: through stet, a round trip per run
        log(f"  bulk insert failed ({type(exc).__name__}), recording {n - 1:,} runs one "
            "by one")
        with get_backend(store) as b:
            for rec in bench_core._records(n - 1, start=1):
                b.append_record(rec)
    return store


def pg_disk(url: str, table: str) -> int:
    with _connect(url) as conn:
        return sum(
            conn.execute("SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)",
                         (f'"{t}"',)).fetchone()[0]
            for t in _pg_tables(table)[:3])  # not the claims table


def pg_drop(url: str, table: str) -> None:
    try:
        with _connect(url) as conn:
            conn.execute("DROP TABLE IF EXISTS "
                         + ", ".join(f'"{t}"' for t in _pg_tables(table)))
    except Exception as exc:  # reported; the run goes on
        log(f"  could not drop the benchmark's tables {table}*: {exc}")


def bench_pg(url: str, size: int) -> dict[str, float]:
    table = f"stet_bench_{secrets.token_hex(4)}"
    try:
        store = pg_prepare(url, table, size)
        disk = pg_disk(url, table)
        opened, opened_cpu = bench_core.open_times(store)
        f = stet.once(store=store, key=["alpha", "seed"])(bench_core.experiment)
        r = bench_core.measure(f, size, REPEAT)
        f.backend().close()  # type: ignore[attr-defined]
        r["open"] = opened
        r["open_cpu"] = opened_cpu
        r["disk"] = disk
        return r
    finally:
        pg_drop(url, table)


# ------------------------------------------------------------------ stet, by backend
def bench_ours(stores: list[str], sizes: list[int], pg_url: str | None,
               workdir: Path) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    stet.configure(verbose=False)
    for size in sizes:
        for store in stores:
            log(f"stet {store} at {size:,} runs ...")
            try:
                if store == "postgresql":
                    assert pg_url is not None
                    out[store, size] = bench_pg(pg_url, size)
                else:
                    out[store, size] = bench_core.bench(store, size, workdir, REPEAT)
            except Exception as exc:  # report and go on: one backend must not stop the run
                out[store, size] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"  failed: {out[store, size]['error']}")
    return out


# ------------------------------------------------------------------ the peers
def stet002_python() -> tuple[Path | None, str]:
    """The interpreter of stet 0.0.2's own venv (made on first use), or why there is none."""
    venv = PEERS_DIR / f"stet-{PEER_002}"
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m; print(m.version('stet'))"]

    def installed() -> bool:
        if not py.exists():
            return False
        r = subprocess.run(probe, capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() == PEER_002

    if installed():
        return py, "cached"
    log(f"installing stet {PEER_002} from PyPI into {venv} ...")
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"python -m venv failed: {made.stderr.strip()[-300:]}"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    got = subprocess.run([*pip, f"stet[parquet]=={PEER_002}"], capture_output=True, text=True)
    if got.returncode != 0:  # without Parquet, rather than not at all
        got = subprocess.run([*pip, f"stet=={PEER_002}"], capture_output=True, text=True)
    if got.returncode != 0 or not installed():
        lines = got.stderr.strip().splitlines()
        tail = [line for line in lines if line.startswith("ERROR")] or lines[-3:]
        return None, "pip could not install it from PyPI: " + " / ".join(tail)
    return py, "installed now"


def run_peer(python: Path, peer: str, spec: dict[str, Any]) -> dict[tuple[str, int], Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(python), str(HERE / "peers.py"), peer, json.dumps(spec)],
                       capture_output=True, text=True, env=env, cwd=spec["workdir"])
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0:
        log(f"  {peer} failed: {r.stderr.strip()[-800:]}")
    out: dict[tuple[str, int], Any] = {(row["fmt"], row["size"]): row for row in rows}
    return out


# ------------------------------------------------------------------ parallel sweep
def _sweep_worker(store: str, runs: int, ready: Any, go: Any, out: Any) -> None:
    """Run the sweep once ``go`` is set; put (executed, end time, error or None)."""
    executed, error = 0, None
    try:
        @stet.once(store=store, name="noop", verbose=False)
        def noop(i: int) -> int:
            return 1

        noop.backend()  # type: ignore[attr-defined]  # set up before the clock starts
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    ready.put(os.getpid())
    if error is None:
        go.wait()
        try:
            for i in range(runs):
                if noop(i) is not None:
                    executed += 1
        except Exception as exc:  # reported in the table, the others go on
            error = f"{type(exc).__name__}: {exc}"
    out.put((executed, time.time(), error))


def sweep(store: str, workers: int, runs: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # no inherited threads or connections
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_sweep_worker, args=(store, runs, ready, go, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)
    t0 = time.time()
    go.set()
    results: list[tuple[int, float, str | None]] = []
    while len(results) < workers:
        try:
            results.append(out.get(timeout=5))
        except queue.Empty:
            if not any(p.is_alive() for p in procs):  # died without a word
                results += [(0, time.time(), "worker died")] * (workers - len(results))
    for p in procs:
        p.join()
    elapsed = max(end for _, end, _ in results) - t0
    executed = sum(n for n, _, _ in results)
    with get_backend(store) as b:
        recorded = len(b.load())
    r: dict[str, Any] = {"rate": runs / elapsed, "elapsed": elapsed, "executed": executed,
                         "recorded": recorded}
    errors = [e for _, _, e in results if e]
    if errors:
        r["failed"] = f"{len(errors)} of {workers} workers failed: {errors[0]}"
    return r


def bench_parallel(kinds: list[str], runs: int, pg_url: str | None,
                   workdir: Path) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for kind in kinds:
        for n in WORKERS:
            log(f"parallel: {kind}, {n} worker(s), {runs:,} runs ...")
            table = f"stet_bench_par_{secrets.token_hex(4)}"
            store = (with_table(pg_url, table) if kind == "postgresql" and pg_url
                     else str(workdir / f"par{n}.{kind}"))
            try:
                out[kind, n] = sweep(store, n, runs)
            except Exception as exc:
                out[kind, n] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"  failed: {out[kind, n]['error']}")
            finally:
                if kind == "postgresql" and pg_url:
                    pg_drop(pg_url, table)
                else:
                    for p in workdir.glob(f"par{n}.{kind}*"):
                        p.unlink()
    return out


# ------------------------------------------------------------------ the tables
def num(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def open_text(row: dict[str, Any]) -> str:
    return f"{num(row['open'])} ({num(row['open_cpu'])})"


def size_text(b: float | None) -> str:
    if b is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


#: The peers of the tables, in their order: key, name in column headers, name in ratios.
PEERS = [("002", "stet 0.0.2", "0.0.2"), ("joblib", "joblib", "joblib"),
         ("diskcache", "diskcache", "diskcache")]


class Report:
    def __init__(self, ours: dict[tuple[str, int], Any], s002: dict[tuple[str, int], Any],
                 joblib: dict[tuple[str, int], Any], why_no_002: str | None,
                 why_no_joblib: str | None, stores: list[str], sizes: list[int],
                 diskcache: dict[tuple[str, int], Any] | None = None,
                 why_no_diskcache: str | None = "not measured") -> None:
        self.ours, self.s002, self.joblib = ours, s002, joblib
        self.diskcache = diskcache or {}
        self.why_no_002, self.why_no_joblib = why_no_002, why_no_joblib
        self.why_no_diskcache = why_no_diskcache
        self.stores, self.sizes = stores, sizes

    def peer(self, which: str, store: str, size: int) -> tuple[dict[str, Any] | None, str]:
        """A peer's row for this store and size, or the text to show instead."""
        if which == "002":
            if self.why_no_002:
                return None, "not installed"
            if store == "postgresql":
                return None, "n/a"
            row = self.s002.get((store, size))
        elif which == "joblib":
            if self.why_no_joblib:
                return None, "not installed"
            row = self.joblib.get(("joblib", size))
        else:
            if self.why_no_diskcache:
                return None, ("not installed" if "not installed" in self.why_no_diskcache
                              else "not measured")
            row = self.diskcache.get(("diskcache", size))
        if row is None:
            return None, "failed"
        if "skipped" in row:
            return None, f"—, {row['skipped']}"
        return row, ""

    def per_call_table(self, metric: str) -> list[str]:
        floor_key = f"floor_{metric}"
        head = "".join(f" | {name} µs | × floor | {short} / stet" for _, name, short in PEERS)
        lines = [f"| store | runs in store | floor µs | stet µs | × floor{head} |",
                 "|---|---:|---:|---:|---:" + "|---:|---:|---:" * len(PEERS) + "|"]
        for store in self.stores:
            for size in self.sizes:
                ours = self.ours.get((store, size), {})
                if "error" in ours:
                    lines.append(f"| {store} | {size:,} | failed: {ours['error'][:60]} "
                                 "| |" + " | | |" * len(PEERS) + " |")
                    continue
                floor, cost = ours[floor_key], ours[metric]
                cells = [store, f"{size:,}", num(floor), num(cost), num(cost / floor)]
                for which, _, _ in PEERS:
                    row, text = self.peer(which, store, size)
                    if row is None:
                        cells += [text, "", ""]
                    else:
                        cells += [num(row[metric]), num(row[metric] / floor),
                                  num(row[metric] / cost)]
                lines.append("| " + " | ".join(cells) + " |")
        return lines

    def open_table(self) -> list[str]:
        opens = "".join(f" | {name} open s (CPU s) | {short} / stet"
                        for _, name, short in PEERS)
        disks = "".join(f" | {name} disk" for _, name, _ in PEERS)
        lines = [f"| store | runs in store | stet open s (CPU s){opens} | stet disk{disks} |",
                 "|---|---:|---:" + "|---:|---:" * len(PEERS) + "|---:" * (1 + len(PEERS))
                 + "|"]
        for store in self.stores:
            for size in self.sizes:
                ours = self.ours.get((store, size), {})
                if "error" in ours:
                    continue
                cells = [store, f"{size:,}", open_text(ours)]
                sizes = [size_text(ours["disk"])]
                for which, _, _ in PEERS:
                    row, text = self.peer(which, store, size)
                    if row is None:
                        cells += [text, ""]
                        sizes.append(text)
                    else:
                        cells += [open_text(row), num(row["open"] / ours["open"])]
                        sizes.append(size_text(row["disk"]))
                lines.append("| " + " | ".join(cells + sizes) + " |")
        return lines

    def budgets(self) -> list[str]:
        """Where stet misses a SPEC §7 budget in this run."""
        misses: list[str] = []
        for (store, size), r in sorted(self.ours.items()):
            if "error" in r or store not in RECORD_BUDGET:
                continue
            skip = r["skip"] / r["floor_skip"]
            record = r["record"] / r["floor_record"]
            if skip > SKIP_BUDGET:
                misses.append(f"skip {store} at {size:,}: {skip:.1f}× floor "
                              f"(budget {SKIP_BUDGET:g}×)")
            if record > RECORD_BUDGET[store]:
                misses.append(f"record {store} at {size:,}: {record:.1f}× floor "
                              f"(budget {RECORD_BUDGET[store]:g}×)")
            if size >= 1_000_000 and r["open"] >= OPEN_BUDGET:
                under = " (under load only: less CPU than that)" \
                    if r["open_cpu"] < OPEN_BUDGET else ""
                misses.append(f"open {store} at {size:,}: {r['open']:.2f} s, "
                              f"{r['open_cpu']:.2f} s of CPU (budget < {OPEN_BUDGET:g} s)"
                              + under)
        return misses

    def summary(self) -> list[str]:
        """stet at the largest size, and each peer against stet at the largest size it
        reached."""
        top = self.sizes[-1]
        ratios = "".join(f" | {name} / stet: record, skip" for _, name, _ in PEERS)
        lines = [
            "| store | runs in store | record µs | × floor | skip µs | × floor "
            f"| open s (CPU s) | disk{ratios} |",
            "|---|---:|---:|---:|---:|---:|---:|---:" + "|---" * len(PEERS) + "|",
        ]
        for store in self.stores:
            r = self.ours.get((store, top), {"error": "not measured"})
            if "error" in r:
                lines.append(f"| {store} | {top:,} | failed: {r['error'][:80]} "
                             "| | | | | |" + " |" * len(PEERS))
                continue
            cells = [store, f"{top:,}", num(r["record"]), num(r["record"] / r["floor_record"]),
                     num(r["skip"]), num(r["skip"] / r["floor_skip"]), open_text(r),
                     size_text(r["disk"])]
            for which, _, _ in PEERS:
                text = ""
                for size in reversed(self.sizes):
                    row, text = self.peer(which, store, size)
                    ours = self.ours.get((store, size), {})
                    if row is not None and "error" not in ours:
                        text = (f"{num(row['record'] / ours['record'])}×, "
                                f"{num(row['skip'] / ours['skip'])}× (at {size:,})")
                        break
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
        return lines


def parallel_table(par: dict[tuple[str, int], dict[str, Any]], runs: int) -> list[str]:
    lines = ["| store | workers | runs/s | × 1 worker | wall s | executed | recorded |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for kind in dict.fromkeys(k for k, _ in par):
        base = par.get((kind, 1), {}).get("rate")
        for n in WORKERS:
            r = par.get((kind, n))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {kind} | {n} | failed: {r['error'][:80]} | | | | |")
                continue
            if "failed" in r:
                lines.append(f"| {kind} | {n} | {r['failed'][:200]} | | | "
                             f"{r['executed']:,} | {r['recorded']:,} |")
                continue
            once = "" if r["executed"] == r["recorded"] == runs else " (not exactly once!)"
            lines.append(f"| {kind} | {n} | {num(r['rate'])} | "
                         f"{num(r['rate'] / base) if base else '—'} | {r['elapsed']:.2f} | "
                         f"{r['executed']:,}{once} | {r['recorded']:,} |")
    return lines


# ------------------------------------------------------------------ the charts
def plot(rep: Report, par: dict[tuple[str, int], dict[str, Any]], m: dict[str, Any],
         mode: str, docs: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs.mkdir(parents=True, exist_ok=True)
    colors = {"csv": "C0", "json": "C1", "sqlite": "C2", "parquet": "C3", "postgresql": "C4"}
    caption = f"{describe(m)}; {mode} run, load average {m['load']:.1f} at start"
    written = []
    charts = [("record", "Record a new no-op run", "µs per call"),
              ("skip", "Skip a run that is done", "µs per call"),
              ("open", "Open a store: fresh process, import, first lookup", "seconds")]
    for metric, title, unit in charts:
        fig, ax = plt.subplots(figsize=(9, 4.8), dpi=100)
        for store in rep.stores:
            pts = [(s, rep.ours[store, s][metric]) for s in rep.sizes
                   if "error" not in rep.ours.get((store, s), {"error": 1})]
            if pts:
                ax.plot(*zip(*pts, strict=True), "-o", color=colors[store],
                        label=f"stet {store}")
            pts002 = [(s, row[metric]) for s in rep.sizes
                      if (row := rep.peer("002", store, s)[0]) is not None]
            if pts002:
                ax.plot(*zip(*pts002, strict=True), "--s", color=colors[store], alpha=0.6,
                        label=f"stet 0.0.2 {store}")
        pts_j = [(s, row[metric]) for s in rep.sizes
                 if (row := rep.peer("joblib", "csv", s)[0]) is not None]
        if pts_j:
            ax.plot(*zip(*pts_j, strict=True), ":^", color="black", label="joblib.Memory")
        pts_d = [(s, row[metric]) for s in rep.sizes
                 if (row := rep.peer("diskcache", "csv", s)[0]) is not None]
        if pts_d:
            ax.plot(*zip(*pts_d, strict=True), ":v", color="dimgrey",
                    label="diskcache Cache.memoize")
        if metric != "open":
            floors = [(s, min(rep.ours[st, s][f"floor_{metric}"] for st in rep.stores
                              if "error" not in rep.ours.get((st, s), {"error": 1})))
                      for s in rep.sizes]
            ax.plot(*zip(*floors, strict=True), "-", color="grey", lw=3, alpha=0.5,
                    label="floor (bare decorator)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("runs in the store")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.text(0.01, 0.005, caption, fontsize=7, color="dimgrey")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = docs / f"bench-{metric}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    if par:
        fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=100)
        for kind in dict.fromkeys(k for k, _ in par):
            pts = [(n, par[kind, n]["rate"]) for n in WORKERS
                   if "rate" in par.get((kind, n), {}) and "failed" not in par[kind, n]]
            if pts:
                ax.plot(*zip(*pts, strict=True), "-o", color=colors.get(kind, "black"),
                        label=f"stet {kind}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(WORKERS, [str(n) for n in WORKERS])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("worker processes sharing one store")
        ax.set_ylabel("runs per second (claim + record each)")
        ax.set_title("Parallel sweep of no-op runs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.text(0.01, 0.005, caption, fontsize=7, color="dimgrey")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = docs / "bench-parallel.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


# ------------------------------------------------------------------ main
def installed_peer(res: dict[str, Any], module: str, label: str,
                   spec: dict[str, Any]) -> dict[tuple[str, int], Any]:
    """Run the peer ``module`` (installed in this environment) through ``spec``; set
    ``res["why_no_<module>"]`` (``None``, or why it was not measured) and its version."""
    if importlib.util.find_spec(module) is None:
        res[f"why_no_{module}"] = f"{module} is not installed (pip install -e '.[bench]')"
        log(f"{label}: NOT MEASURED, {res[f'why_no_{module}']}")
        return {}
    res[f"{module}_version"] = importlib.import_module(module).__version__
    res[f"why_no_{module}"] = None
    log(f"{label} ...")
    return run_peer(Path(sys.executable), module, spec)


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement; the raw figures, as ``--json`` saves them."""
    cfg = QUICK if args.quick else FULL
    sizes: list[int] = cfg["sizes"]
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full", "machine": machine(), "sizes": sizes,
        "stet_version": stet.__version__, "joblib_version": "?", "diskcache_version": "?",
        "pg_note": "",
        "runs": int(cfg["runs"]), "max_call": cfg["max_call"],
        "max_prepare": cfg["max_prepare"], "why_no_002": "--no-peers",
        "why_no_joblib": "--no-peers", "why_no_diskcache": "--no-peers"}
    t_start = time.perf_counter()
    stores = list(FORMATS)
    pg_url: str | None = None
    if args.postgres:
        why = pg_missing()
        if why is None:
            try:
                _connect(args.postgres).close()
            except Exception as exc:
                why = f"cannot connect: {type(exc).__name__}: {exc}"
        if why is None:
            pg_url = args.postgres
            stores.append("postgresql")
        else:
            res["pg_note"] = f"PostgreSQL: not measured, {why}."
            log(res["pg_note"])
    res["stores"] = stores

    workdir = Path(tempfile.mkdtemp(prefix="stet-bench-"))
    s002: dict[tuple[str, int], Any] = {}
    jl: dict[tuple[str, int], Any] = {}
    dc: dict[tuple[str, int], Any] = {}
    par: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        (workdir / "ours").mkdir()
        ours = bench_ours(stores, sizes, pg_url, workdir / "ours")
        if not args.no_peers:
            spec = {"sizes": sizes, "formats": FORMATS, "workdir": str(workdir),
                    "budget": cfg["budget"], "max_call": cfg["max_call"],
                    "max_prepare": cfg["max_prepare"], "max_disk": MAX_JOBLIB_DISK}
            py002, how = stet002_python()
            if py002 is None:
                res["why_no_002"] = how
                log(f"stet {PEER_002}: NOT MEASURED, {how}")
            else:
                res["why_no_002"] = None
                log(f"stet {PEER_002} ({how}) ...")
                s002 = run_peer(py002, "stet002", spec)
            jl = installed_peer(res, "joblib", "joblib.Memory", spec)
            dc = installed_peer(res, "diskcache", "diskcache.Cache.memoize", spec)
        if not args.no_parallel:
            kinds = ["sqlite", "csv"] + (["postgresql"] if pg_url else [])
            par = bench_parallel(kinds, res["runs"], pg_url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def rows(d: dict[tuple[str, int], Any]) -> list[Any]:
        return [[k[0], k[1], v] for k, v in d.items()]

    res.update(stet=rows(ours), stet002=rows(s002), joblib=rows(jl), diskcache=rows(dc),
               parallel=rows(par),
               load_end=os.getloadavg()[0], minutes=(time.perf_counter() - t_start) / 60)
    return res


def render(res: dict[str, Any]) -> tuple[list[str], Report, dict[tuple[str, int], Any]]:
    """The markdown report of a run's raw figures."""
    def keyed(rows: list[Any]) -> dict[tuple[str, int], Any]:
        return {(k, n): v for k, n, v in rows}

    ours, s002, jl = keyed(res["stet"]), keyed(res["stet002"]), keyed(res["joblib"])
    # (runs saved before diskcache was a peer have no diskcache keys)
    dc = keyed(res.get("diskcache", []))
    why_no_diskcache = res.get("why_no_diskcache", "not measured in this run (saved before "
                                                   "diskcache was a peer)")
    par = keyed(res["parallel"])
    sizes, m = res["sizes"], res["machine"]
    why_no_002, why_no_joblib = res["why_no_002"], res["why_no_joblib"]
    rep = Report(ours, s002, jl, why_no_002, why_no_joblib, res["stores"], sizes,
                 dc, why_no_diskcache)
    out = [
        f"## stet {res['stet_version']} against stet {PEER_002}, joblib.Memory "
        f"({res['joblib_version']}) and diskcache ({res.get('diskcache_version', '?')}): "
        f"{res['mode']} run",
        "",
        f"Machine: {describe(m)}. Load average {m['load']:.1f} at the start, "
        f"{res['load_end']:.1f} at the end; the run took {res['minutes']:.1f} min. Absolute "
        "figures move with the load of a shared machine: the ratios, measured in the same "
        "run, are what count.",
        "",
        "Workload: `experiment(alpha, seed, n_iter=100)`, a no-op keyed by alpha and seed, on "
        "a store already holding `runs in store` completed runs. *floor*: a bare in-memory "
        "decorator (bind arguments, look up a dict). *× floor*: cost ÷ the floor of the same "
        "row. *0.0.2 / stet*, *joblib / stet*, *diskcache / stet*: how many times slower the "
        "peer is than stet on that row. joblib.Memory and diskcache's Cache.memoize each have "
        "one store of their own (a directory of pickles; one SQLite database), the same on "
        "every row of a size.",
    ]
    if why_no_002:
        out += ["", f"**stet {PEER_002}: not measured: {why_no_002}.**"]
    if why_no_joblib:
        out += ["", f"**joblib.Memory: not measured: {why_no_joblib}.**"]
    if why_no_diskcache:
        out += ["", f"**diskcache: not measured: {why_no_diskcache}.**"]
    if res["pg_note"]:
        out += ["", f"**{res['pg_note']}**"]
    out += ["", f"### Summary: stet at {sizes[-1]:,} runs; each peer ÷ stet at the largest "
            "size the peer reached", ""]
    out += rep.summary()
    out += ["", "### Record: µs per call of a new run (check, claim, run, record)", ""]
    out += rep.per_call_table("record")
    out += ["", "### Skip: µs per call of a run that is done", ""]
    out += rep.per_call_table("skip")
    out += ["", "### Open (fresh process: import, first lookup; wall and CPU seconds) and "
            "size on disk", ""]
    out += rep.open_table()
    out += ["", "*disk*: allocated blocks of a store holding `runs in store` runs. stet: in "
            "its format, with bookkeeping fields (function, timestamps, duration, host); "
            "PostgreSQL: its tables with their indexes; a store in use also has "
            "`<store>.claims` (announcements of running runs, compacted at 1 MiB). stet 0.0.2: "
            "its own layout (key fields and a timestamp). joblib, diskcache: their cache "
            "directory."]
    if any(r.get("skipped") for r in s002.values()):
        out += ["", f"*—, too slow*: stet {PEER_002} re-reads the whole store on every call "
                f"(and rewrites it to record); a size is left out when one call there is "
                f"predicted, from the sizes before it, to take over {res['max_call']:g} s."]
    if any(r.get("skipped") for r in jl.values()):
        out += ["", "joblib.Memory *—, too slow / too big*: its store (about 10 KB, a "
                "directory and two files per cached call) would take over "
                f"{res['max_prepare']:g} s to write or {MAX_JOBLIB_DISK / 1e9:g} GB at that "
                "size; its per-call cost does not depend on the number of entries."]
    if any(r.get("skipped") for r in dc.values()):
        out += ["", "diskcache *—, too slow / too big*: its store would take over "
                f"{res['max_prepare']:g} s to write or {MAX_JOBLIB_DISK / 1e9:g} GB at that "
                "size."]
    out += ["", budgets_line(rep.budgets(), sizes)]
    if par:
        runs = res["runs"]
        out += ["", f"### Parallel: N processes share one store, each sweeping the same "
                f"{runs:,} no-op runs", "",
                "Every run is claimed, executed once and recorded; *runs/s* is runs completed "
                "per second of wall time, all workers together.", ""]
        out += parallel_table(par, runs)
    return out, rep, par


def budgets_line(misses: list[str], sizes: list[int]) -> str:
    """What this run says of the SPEC §7 budgets: met or missed, and which it did not
    measure (``--quick`` stops at 20,000 runs: the open budget is for 1,000,000)."""
    measured = "skip ≤ 3× floor; record ≤ 15× for CSV/JSON/SQLite, ≤ 30× for Parquet"
    unmeasured = ""
    if max(sizes) >= 1_000_000:
        measured += f"; open of 1,000,000 runs < {OPEN_BUDGET:g} s"
    else:
        unmeasured = (f" The open budget (1,000,000 runs open in < {OPEN_BUDGET:g} s) was "
                      f"not measured: "
                      f"this run's largest store holds {max(sizes):,} runs (run without "
                      f"--quick to measure it).")
    verdict = ("all met in this run." if not misses else
               "missed in this run: " + "; ".join(misses) + ".")
    return f"SPEC §7 budgets ({measured}): {verdict}{unmeasured}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="stores of up to 20,000 runs, short timings (under 2 minutes)")
    ap.add_argument("--postgres", metavar="URL",
                    help="also measure a PostgreSQL store on this server (tables are "
                         "created and dropped)")
    ap.add_argument("--plot", action="store_true",
                    help="write PNG charts into docs/ (needs matplotlib)")
    ap.add_argument("--docs", type=Path, default=DOCS, help="where --plot writes")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also save the raw figures")
    ap.add_argument("--from-json", type=Path, metavar="FILE",
                    help="measure nothing: report (and --plot) a run saved with --json")
    ap.add_argument("--no-peers", action="store_true", help="measure stet only")
    ap.add_argument("--no-parallel", action="store_true", help="skip the parallel sweep")
    args = ap.parse_args()

    if args.from_json:
        res = json.loads(args.from_json.read_text())
    else:
        res = measure_all(args)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
    out, rep, par = render(res)
    if args.plot:
        written = plot(rep, par, res["machine"], res["mode"], args.docs)
        out += ["", "Charts: " + ", ".join(str(p.relative_to(HERE.parent))
                                           if p.is_relative_to(HERE.parent) else str(p)
                                           for p in written)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
