"""Per-call cost of stet's skip and record, and time to open a store, by format and size.

Usage::

    python benchmarks/bench_core.py                 # 20,000 and 1,000,000 records
    python benchmarks/bench_core.py --sizes 20000   # just one size
    python benchmarks/bench_core.py --formats csv sqlite

For each store size, a store with that many completed runs is prepared (written in
stet's own format by stet's own code), then, in the same process:

* floor:  a bare in-memory decorator that binds arguments and looks up a dict;
* record: per-call cost of ``@stet.once`` on new no-op runs (check, run, record);
* skip:   per-call cost of ``@stet.once`` on runs that are done (skip messages off);
* open:   wall time for a fresh process to answer its first lookup on the store;
* disk:   bytes the prepared store takes on disk (allocated blocks).

Costs are printed as microseconds per call and as ratios to the floor measured in the
same run. Nothing here asserts; it reports.
"""

from __future__ import annotations

import argparse
import functools
import gc
import inspect
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stet

FORMATS = ["csv", "json", "sqlite", "parquet"]
CALLS = 2_000  # calls timed per measurement


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


def _records(n: int, start: int = 0) -> list[dict[str, str]]:
    stamp = "2026-01-01T00:00:00+00:00"
    return [
        {"alpha": repr(0.5), "seed": str(i), "_stet_func": "experiment",
         "_stet_timestamp": stamp, "_stet_started": stamp, "_stet_duration": "0.000010",
         "_stet_host": "bench"}
        for i in range(start, start + n)
    ]


def prepare(path: Path, n: int) -> None:
    """Write a store of ``n`` completed runs (seeds 0..n-1) in stet's format."""
    # Imported here, not at the top: benchmarks/peers.py imports this module under
    # stet 0.0.2, which has no codecs.
    from stet._csv_codec import CsvCodec
    from stet._json_codec import JsonCodec

    recs = _records(n)
    fmt = path.suffix[1:]
    if fmt == "csv":
        path.write_bytes(CsvCodec().render(recs, None)[0])
    elif fmt == "json":
        path.write_bytes(JsonCodec().render(recs, None)[0])
    elif fmt == "sqlite":
        conn = sqlite3.connect(path)
        cols = ", ".join(f'"{k}" TEXT' for k in recs[0])
        conn.execute(f"CREATE TABLE stet_records ({cols})")
        marks = ", ".join("?" * len(recs[0]))
        conn.executemany(f"INSERT INTO stet_records VALUES ({marks})",
                         [tuple(r.values()) for r in recs])
        conn.commit()
        conn.close()
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {k: pa.array([r[k] for r in recs], type=pa.string()) for k in recs[0]}
        pq.write_table(pa.table(cols), path)


def per_call(fn: Callable[..., Any], seeds: range) -> float:
    t0 = time.perf_counter()
    for s in seeds:
        fn(0.5, s)
    return (time.perf_counter() - t0) / len(seeds) * 1e6


def open_time(path: Path) -> float:
    """Seconds for a fresh interpreter to import stet and answer one lookup."""
    return open_times(path)[0]


def open_times(path: Path) -> tuple[float, float]:
    """:func:`open_time`, and the CPU seconds it took (less sensitive to other load)."""
    code = (
        "import time, sys; t0 = time.perf_counter(); c0 = time.process_time(); import stet;"
        "from stet.backends import get_backend;"
        f"b = get_backend({str(path)!r}); b.contains_run('experiment', ('alpha', 'seed'),"
        " ('0.5', '0')); print(time.perf_counter() - t0, time.process_time() - c0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def import_time() -> float:
    code = ("import time; t0 = time.perf_counter(); import stet;"
            "print(time.perf_counter() - t0)")
    best = min(
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(5)
    )
    return best


def disk_usage(root: Path) -> int:
    """Bytes allocated on disk to the files under ``root`` (a file or a directory)."""
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in paths)


def measure(f: Callable[..., Any], size: int, repeat: int = 1) -> dict[str, float]:
    """Floor, record and skip costs (µs per call) for ``f``, decorated ``experiment`` on a
    store holding seeds 0..size-1. With ``repeat`` > 1, each cost is the best of that many
    rounds, each on new runs (on a loaded machine, the least disturbed)."""
    f(0.5, 0)  # open the store (timed separately)
    gc.collect()  # the collector's one pass over the freshly loaded index belongs to opening
    floor = floor_decorator(experiment)
    for s in range(size - CALLS, size):  # the floor's dict holds the done runs too
        floor(0.5, s)
    best = dict.fromkeys(("floor_record", "floor_skip", "record", "skip"), float("inf"))
    for r in range(repeat):
        new = range(size + r * CALLS, size + (r + 1) * CALLS)
        costs = {"floor_record": per_call(floor, new), "floor_skip": per_call(floor, new),
                 "record": per_call(f, new), "skip": per_call(f, new)}
        best = {k: min(best[k], costs[k]) for k in best}
    return best


def bench(fmt: str, size: int, workdir: Path, repeat: int = 1) -> dict[str, float]:
    path = workdir / f"store_{size}.{fmt}"
    prepare(path, size)
    disk = disk_usage(workdir)
    opened, opened_cpu = open_times(path)
    stet.configure(verbose=False)
    f = stet.once(store=path, key=["alpha", "seed"])(experiment)
    r = measure(f, size, repeat)
    f.backend().close()  # type: ignore[attr-defined]
    r["open"] = opened
    r["open_cpu"] = opened_cpu
    r["disk"] = disk
    for p in workdir.iterdir():
        p.unlink()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 1_000_000])
    ap.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    args = ap.parse_args()
    print(f"stet {stet.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"import stet: {import_time() * 1000:.0f} ms\n")
    print("| format | records | floor µs (miss / hit) | record µs | record × "
          "| skip µs | skip × | open s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for fmt in args.formats:
                r = bench(fmt, size, Path(tmp))
                fr, fs = r["floor_record"], r["floor_skip"]
                print(f"| {fmt} | {size:,} | {fr:.1f} / {fs:.1f} | {r['record']:.1f} | "
                      f"{r['record'] / fr:.1f} | {r['skip']:.1f} | {r['skip'] / fs:.1f} | "
                      f"{r['open']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
