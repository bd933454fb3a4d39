"""Per-call cost of stet's skip and record, and time and memory to open a store, by format
and size.

Usage::

    python benchmarks/bench_core.py                 # 20,000 and 1,000,000 records
    python benchmarks/bench_core.py --sizes 20000   # just one size
    python benchmarks/bench_core.py --sizes 20000 1000000 10000000
    python benchmarks/bench_core.py --formats csv sqlite

For each store size, a store with that many completed runs is prepared (written in
stet's own format by stet's own code, a chunk at a time: ten million runs are never in
memory at once), then:

* first open: a fresh process imports stet and asks the store for one run, as the first
  process of a sweep does, then exits normally; whatever stet leaves beside a store at
  normal exit is there after it, as after a user's sweep;
* open:   a fresh process imports stet, decorates ``experiment`` and makes its first call,
  a skip; wall seconds from before ``import stet`` to the skip's return, and the same
  minus that process's own import time of stet (what the store costs);
* RSS:    that process's peak resident memory (its VmHWM, until it exited), minus the
  median peak of a fresh process that only imports stet (printed at the top);
* floor:  a bare in-memory decorator that binds arguments and looks up a dict;
* record: per-call cost of ``@stet.once`` on new no-op runs (check, run, record);
* skip:   per-call cost of ``@stet.once`` on runs that are done (skip messages off);
* skip with opening: what skipping every run of the store costs a process that opens it,
  against the floor's: ``(open − import + N × skip) / (N × floor skip)``, N the store size;
* disk:   bytes the store takes on disk (allocated blocks), with what stet keeps beside it
  after the first open.

Record and skip are timed in this process, on the store opened here (one copy of its
index in this process's memory; the floor's dict holds only the runs it timed). Costs are
microseconds per call and ratios to the floor measured in the same run. Nothing here
asserts; it reports.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import gc
import inspect
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import stet

FORMATS = ["csv", "json", "sqlite", "parquet"]
CALLS = 2_000  # calls timed per measurement
CHUNK = 1 << 17  # records rendered and written at a time by prepare()
ROW_GROUP = 1 << 20  # Parquet rows per row group: pyarrow's default, as stet writes them
IMPORT_RUNS = 11  # fresh processes timing `import stet` (the median is reported)
STAMP = "2026-01-01T00:00:00+00:00"


def floor_decorator(func: Callable[..., Any]) -> Callable[..., Any]:
    """The floor: bind arguments (defaults applied) and look up a dict."""
    sig = inspect.signature(func)
    done: dict[tuple[Any, ...], bool] = {}

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        key = tuple(bound.arguments.values())
        if key in done:
            return None
        result = func(*args, **kwargs)
        done[key] = True
        return result

    return wrapper


def experiment(alpha: float, seed: int, n_iter: int = 100) -> None:
    return None


def _records(n: int, start: int = 0) -> Iterator[dict[str, str]]:
    """The records of runs ``start``..``start+n-1`` (seeds), one at a time."""
    for i in range(start, start + n):
        yield {"alpha": repr(0.5), "seed": str(i), "_stet_func": "experiment",
               "_stet_timestamp": STAMP, "_stet_started": STAMP,
               "_stet_duration": "0.000010", "_stet_host": "bench"}


def _chunks(n: int) -> Iterator[list[dict[str, str]]]:
    for start in range(0, n, CHUNK):
        yield list(_records(min(CHUNK, n - start), start))


def prepare(path: Path, n: int) -> None:
    """Write a store of ``n`` completed runs (seeds 0..n-1) in stet's format, ``CHUNK``
    records at a time (the file is the one a single render of all ``n`` would write)."""
    if n < 1:
        raise ValueError(f"a store to benchmark holds at least one run, not {n}")
    fmt = path.suffix[1:]
    if fmt == "csv":
        _prepare_csv(path, n)
    elif fmt == "json":
        _prepare_json(path, n)
    elif fmt == "sqlite":
        first = next(_records(1))
        conn = sqlite3.connect(path)
        cols = ", ".join(f'"{k}" TEXT' for k in first)
        conn.execute(f"CREATE TABLE stet_records ({cols})")
        marks = ", ".join("?" * len(first))
        conn.executemany(f"INSERT INTO stet_records VALUES ({marks})",
                         (tuple(r.values()) for r in _records(n)))
        # What stet's first write of a store adds: the triggers that count changed rows
        # (without them a snapshot cannot be checked; see backends/_sqlite_snapshot.py).
        from stet.backends._sqlite_snapshot import watch_changes

        watch_changes(conn, "stet_records", "stet_meta")
        conn.commit()
        conn.close()
    elif fmt == "parquet":
        _prepare_parquet(path, n)
    else:
        raise ValueError(f"no store format {fmt!r}: use one of {', '.join(FORMATS)}")


def _prepare_csv(path: Path, n: int) -> None:
    # Imported here, not at the top: benchmarks/peers.py imports this module under
    # stet 0.0.2, which has no codecs.
    from stet._csv_codec import CsvCodec

    codec = CsvCodec()
    header: Any = None
    with open(path, "wb") as out:
        for chunk in _chunks(n):
            data, head = codec.render(chunk, header)
            if header is None:
                header = head
                # render() starts every file with the header line: later chunks are
                # appended without it
                skip = len(codec.render([], header)[0])
            elif head != header or not data.startswith(codec.render([], header)[0]):
                raise RuntimeError("CsvCodec.render changed the header between chunks")
            out.write(data if out.tell() == 0 else data[skip:])


def _prepare_json(path: Path, n: int) -> None:
    from stet._json_codec import JsonCodec

    codec = JsonCodec()
    opening, closing = b"[\n", b"\n]\n"
    with open(path, "wb") as out:
        out.write(opening)
        for k, chunk in enumerate(_chunks(n)):
            data, _ = codec.render(chunk, None)  # "[\n" + objects joined by ",\n" + "\n]\n"
            if not (data.startswith(opening) and data.endswith(closing)):
                raise RuntimeError("JsonCodec.render no longer writes '[\\n ... \\n]\\n'")
            if k:
                out.write(b",\n")
            out.write(memoryview(data)[len(opening):-len(closing)])
        out.write(closing)


def _prepare_parquet(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(next(_records(1)))
    schema = pa.schema([(k, pa.string()) for k in names])
    with pq.ParquetWriter(path, schema) as writer:
        group: list[Any] = []  # ROW_GROUP // CHUNK tables make one row group
        for chunk in _chunks(n):
            group.append(pa.table({k: pa.array([r[k] for r in chunk], type=pa.string())
                                   for k in names}, schema=schema))
            if len(group) * CHUNK >= ROW_GROUP:
                writer.write_table(pa.concat_tables(group), row_group_size=ROW_GROUP)
                group = []
        if group:
            writer.write_table(pa.concat_tables(group), row_group_size=ROW_GROUP)


def per_call(fn: Callable[..., Any], seeds: range) -> float:
    t0 = time.perf_counter()
    for s in seeds:
        fn(0.5, s)
    return (time.perf_counter() - t0) / len(seeds) * 1e6


# ------------------------------------------------------------------ fresh processes
# Each prints a JSON line; ``t_end`` is its time.perf_counter() (CLOCK_MONOTONIC, the same
# clock in every process) when it was done, so the parent can tell how long it took to
# exit (what stet does at normal exit). Its peak memory is the kernel's high-water mark
# of its own address space (VmHWM), printed by the last exit handler (registered first,
# it runs after stet's). Not ru_maxrss: Linux carries the parent's peak over fork and
# exec into the child's, so a child of this benchmark (which holds a whole index) would
# report at least this process's peak.
_PEAK = """\
import atexit, json, resource
def _peak():
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # (no /proc: ru_maxrss, an upper bound)
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss": kib * 1024}), flush=True)
atexit.register(_peak)
"""

_IMPORT_ONLY = _PEAK + """\
import json, time
t0 = time.perf_counter(); c0 = time.process_time()
import stet
t1 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "cpu": time.process_time() - c0, "t_end": t1}))
"""

_FIRST_OPEN = _PEAK + """\
import json, sys, time
t0 = time.perf_counter(); c0 = time.process_time()
import stet
from stet.backends import get_backend
t1 = time.perf_counter()
b = get_backend(sys.argv[1])
found = b.contains_run("experiment", ("alpha", "seed"), ("0.5", "0"))
t2 = time.perf_counter()
b.close()
print(json.dumps({"open": t2 - t0, "import": t1 - t0, "cpu": time.process_time() - c0,
                  "found": found, "t_end": time.perf_counter()}))
"""

_OPEN = _PEAK + """\
import json, sys, time
t0 = time.perf_counter(); c0 = time.process_time()
import stet
t1 = time.perf_counter()
ran = []
def experiment(alpha, seed, n_iter=100):
    ran.append(seed)
stet.configure(verbose=False)
f = stet.once(store=sys.argv[1], key=["alpha", "seed"])(experiment)
f(0.5, 0)
t2 = time.perf_counter()
print(json.dumps({"open": t2 - t0, "import": t1 - t0, "cpu": time.process_time() - c0,
                  "found": not ran, "t_end": t2}))
"""


def fresh(code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; what its JSON lines say, with ``rss`` (its
    peak resident bytes, exit handlers included) and ``exit`` (seconds from its ``t_end``
    until it was gone)."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True)
    gone = time.perf_counter()
    r: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r.update(json.loads(line))
    if proc.returncode != 0 or "t_end" not in r or "rss" not in r:
        raise RuntimeError(f"the fresh process failed (exit {proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    r["exit"] = gone - r.pop("t_end")
    return r


def import_baseline(runs: int = IMPORT_RUNS) -> dict[str, float]:
    """Median seconds of ``import stet`` and median peak RSS (bytes) of a process that
    only does that, over ``runs`` fresh processes."""
    probes = [fresh(_IMPORT_ONLY) for _ in range(runs)]
    return {"import": statistics.median(p["import"] for p in probes),
            "rss": statistics.median(p["rss"] for p in probes), "runs": runs}


def first_open(path: Path | str) -> dict[str, Any]:
    """Settle a store no process has indexed yet: a fresh process imports stet, asks the
    store for one run (``get_backend(...).contains_run``), closes it and exits normally.
    Its seconds to answer (``open``, from before ``import stet``), ``import``, ``rss``
    and ``exit``."""
    r = fresh(_FIRST_OPEN, str(path))
    if not r["found"]:
        raise RuntimeError(f"stet does not find run 0 in the prepared store {path}")
    return r


def open_probe(path: Path | str) -> dict[str, Any]:
    """A fresh process imports stet, decorates ``experiment`` and makes its first call, a
    skip: ``open`` (wall seconds from before ``import stet``), ``import`` (of them, the
    import), ``cpu``, ``rss`` (peak bytes) and ``exit``."""
    r = fresh(_OPEN, str(path))
    if not r["found"]:
        raise RuntimeError(f"the first call ran experiment(0.5, 0): stet did not find it "
                           f"in the prepared store {path}")
    return r


def open_time(path: Path | str) -> float:
    """Seconds for a fresh interpreter to import stet and skip a first call."""
    return open_times(path)[0]


def open_times(path: Path | str) -> tuple[float, float]:
    """:func:`open_time`, and the CPU seconds it took (less sensitive to other load)."""
    r = open_probe(path)
    return r["open"], r["cpu"]


def import_time() -> float:
    """Median seconds of ``import stet`` in a fresh process (of ``IMPORT_RUNS``)."""
    return import_baseline()["import"]


def disk_usage(root: Path) -> int:
    """Bytes allocated on disk to the files under ``root`` (a file or a directory)."""
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in paths)


def peak_rss() -> int:
    """Peak resident bytes of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_memory() -> float:
    """Bytes the kernel says can be used without swapping (``inf`` if it does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def release_memory() -> None:
    """Collect, and hand freed heap back to the system (glibc), so that the index of one
    store does not stay resident in this process while the next is opened elsewhere."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(f: Callable[..., Any], size: int, repeat: int = 1) -> dict[str, float]:
    """Floor, record and skip costs (µs per call) for ``f``, decorated ``experiment`` on a
    store holding seeds 0..size-1. With ``repeat`` > 1, each cost is the best of that many
    rounds, each on new runs (on a loaded machine, the least disturbed)."""
    f(0.5, 0)  # open the store (timed separately)
    gc.collect()  # the collector's one pass over the freshly loaded index belongs to opening
    floor = floor_decorator(experiment)
    for s in range(size - CALLS, size):  # the floor's dict holds the done runs it times
        floor(0.5, s)
    best = dict.fromkeys(("floor_record", "floor_skip", "record", "skip"), float("inf"))
    for r in range(repeat):
        new = range(size + r * CALLS, size + (r + 1) * CALLS)
        costs = {"floor_record": per_call(floor, new), "floor_skip": per_call(floor, new),
                 "record": per_call(f, new), "skip": per_call(f, new)}
        best = {k: min(best[k], costs[k]) for k in best}
    return best


def bench(fmt: str, size: int, workdir: Path, repeat: int = 1) -> dict[str, float]:
    """Prepare, settle (first open), open in a fresh process, then time record and skip
    here. Keys: ``floor_record``, ``floor_skip``, ``record``, ``skip`` (µs per call);
    ``first_open``, ``open``, ``open_cpu``, ``open_import``, ``first_exit``, ``exit``
    (s); ``open_rss``, ``first_rss`` (peak bytes of those processes); ``disk`` (bytes,
    after the first open), ``disk_store`` (the prepared file alone); ``prepare`` (s)."""
    path = workdir / f"store_{size}.{fmt}"
    t0 = time.perf_counter()
    prepare(path, size)
    prepared = time.perf_counter() - t0
    disk_store = disk_usage(path)
    settled = first_open(path)
    disk = disk_usage(workdir)
    opened = open_probe(path)
    # Record and skip are timed on the store opened here: one more copy of its index,
    # in this process. Not when that would not fit (a fresh process needed this much).
    if opened["rss"] < 0.8 * available_memory():
        stet.configure(verbose=False)
        f = stet.once(store=path, key=["alpha", "seed"])(experiment)
        r = measure(f, size, repeat)
        f.backend().close()  # type: ignore[attr-defined]
        del f  # (this process keeps no index between stores)
        release_memory()
    else:
        print(f"  {fmt} at {size:,}: record and skip not timed: opening the store took "
              f"{opened['rss'] / 1e9:.1f} GB, {available_memory() / 1e9:.1f} GB are free",
              file=sys.stderr, flush=True)
        r = dict.fromkeys(("floor_record", "floor_skip", "record", "skip"), float("nan"))
    r.update(open=opened["open"], open_cpu=opened["cpu"], open_import=opened["import"],
             open_rss=opened["rss"], exit=opened["exit"], first_open=settled["open"],
             first_rss=settled["rss"], first_exit=settled["exit"], disk=disk,
             disk_store=disk_store, prepare=prepared)
    for p in workdir.iterdir():
        p.unlink()
    return r


def skip_with_opening(r: dict[str, float], size: int) -> float:
    """Skipping all ``size`` runs of the store, opening included, ÷ the floor's skips."""
    return ((r["open"] - r["open_import"]) * 1e6 + size * r["skip"]) / (size * r["floor_skip"])


def table(rows: list[tuple[str, int, dict[str, float]]], base_rss: float) -> list[str]:
    lines = ["| format | records | first open s | open s | open − import s "
             "| peak RSS MB above `import stet` | record µs (× floor) | skip µs (× floor) "
             "| skip with opening × floor | disk MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fmt, size, r in rows:
        fr, fs = r["floor_record"], r["floor_skip"]
        if fr == fr:  # (NaN when not timed: the index would not fit twice in memory)
            costs = (f"{r['record']:.1f} ({r['record'] / fr:.1f}) | {r['skip']:.2f} "
                     f"({r['skip'] / fs:.1f}) | {skip_with_opening(r, size):.1f}")
        else:
            costs = "not timed | not timed | —"
        lines.append(
            f"| {fmt} | {size:,} | {r['first_open']:.2f} | {r['open']:.2f} | "
            f"{r['open'] - r['open_import']:.2f} | {(r['open_rss'] - base_rss) / 1e6:,.0f} | "
            f"{costs} | {r['disk'] / 1e6:,.1f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 1_000_000])
    ap.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to write the stores (default: a temporary directory)")
    args = ap.parse_args()
    print(f"stet {stet.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    # Fresh processes load stet's modules from bytecode, as after `pip install` (which
    # compiles them); otherwise, with PYTHONDONTWRITEBYTECODE set, every open would
    # include compiling stet's source (about 40 ms: more than reading 20,000 runs).
    compileall.compile_dir(Path(stet.__file__).parent, quiet=1)
    print("stet's modules compiled to bytecode first (as pip install does)")
    base = import_baseline()
    print(f"import stet: {base['import'] * 1000:.0f} ms (median of {base['runs']} fresh "
          f"processes); peak RSS of a process that only imports stet: "
          f"{base['rss'] / 1e6:.1f} MB (median)", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in args.sizes:
            rows = []
            print(f"\n### {size:,} runs\n", flush=True)
            for fmt in args.formats:
                print(f"  {fmt} ...", file=sys.stderr, flush=True)
                rows.append((fmt, size, bench(fmt, size, Path(tmp))))
            print("\n".join(table(rows, base["rss"])))
            notes = [f"{fmt} {r['first_exit']:.2f} / {r['exit']:.2f} s, prepared in "
                     f"{r['prepare']:.1f} s, beside the store after the first open "
                     f"{(r['disk'] - r['disk_store']) / 1e6:,.1f} MB, floor µs "
                     f"{r['floor_record']:.1f} / {r['floor_skip']:.1f}"
                     for fmt, _, r in rows]
            print("\nExit (first open / open: from the lookup answered to the process "
                  "gone), preparing, files beside the store, floor (record / skip):")
            print("\n".join(f"* {n}" for n in notes))
            print(f"\nThis benchmark process's peak RSS so far: {peak_rss() / 1e6:,.0f} MB",
                  flush=True)


if __name__ == "__main__":
    main()

