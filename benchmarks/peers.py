"""The peers of ``benchmarks/run.py``, each driven through stet's workload in its own process.

Not meant to be run by hand; ``run.py`` starts it as::

    <stet 0.0.2's venv>/bin/python benchmarks/peers.py stet002   SPEC
    <our venv>/bin/python          benchmarks/peers.py joblib    SPEC
    <our venv>/bin/python          benchmarks/peers.py diskcache SPEC

``stet002`` is stet 0.0.2 from PyPI, which has the same import name as stet, hence its own
virtual environment and process; ``joblib`` is ``joblib.Memory`` (it caches return
values: a hit loads the pickled result from a directory of pickles); ``diskcache`` is
``diskcache.Cache.memoize`` (keys and return values pickled into one SQLite database, with
the cache's default settings). SPEC is a JSON object: ``sizes``, ``formats`` (stet002
only), ``workdir``, ``budget`` (seconds of calls per measurement), ``max_call`` (seconds:
a size whose record call is predicted slower, from the sizes before it, is left out),
``max_prepare`` (seconds) and ``max_disk`` (bytes) for joblib's and diskcache's store.

The workload is ``bench_core``'s: the same ``experiment(alpha, seed, n_iter=100)``, a store
holding seeds 0..size-1, new runs recorded from seed ``size`` on, then the same runs
skipped. The peers are far slower than stet, so each measurement times as many calls as
fit in ``budget`` (at most ``bench_core.CALLS``, at least ``MIN_CALLS``). ``open`` is the
time this fresh process took to import the library plus the first lookup on the store
(joblib and diskcache: a fresh ``Memory`` or ``Cache`` on their directory, decorating, one
lookup).

One JSON object is printed per (format, size): ``record``/``skip`` in µs per call,
``calls``, ``open`` and ``open_cpu`` in s, ``disk`` in bytes; or ``skipped`` with the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MIN_CALLS = 3
STAMP = "2026-01-01T00:00:00+00:00"
_out = sys.stdout


def emit(**row: Any) -> None:
    _out.write(json.dumps(row) + "\n")
    _out.flush()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """stet 0.0.2 prints every skip and cannot be told not to: send it to /dev/null."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


def timed(fn: Callable[..., Any], seeds: range, budget: float) -> tuple[float, int]:
    """µs per call of ``fn`` over a prefix of ``seeds`` that fits in ``budget`` seconds."""
    import bench_core

    done, total, n = 0, 0.0, 1
    while done < len(seeds):
        chunk = seeds[done:done + n]
        total += bench_core.per_call(fn, chunk) * len(chunk) / 1e6
        done += len(chunk)
        if total >= budget and done >= MIN_CALLS:
            break
        n *= 2
    return total / done * 1e6, done


# ------------------------------------------------------------------ stet 0.0.2
def prepare_002(path: Path, n: int) -> None:
    """A store of ``n`` runs in the layout stet 0.0.2 writes itself: the key fields and
    ``_stet_timestamp``, values as ``str()``."""
    import pandas as pd

    rows = {"alpha": ["0.5"] * n, "seed": [str(i) for i in range(n)],
            "_stet_timestamp": [STAMP] * n}
    fmt = path.suffix[1:]
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    elif fmt == "json":
        with open(path, "w") as f:
            json.dump([{"alpha": "0.5", "seed": str(i), "_stet_timestamp": STAMP}
                       for i in range(n)], f, indent=2)
    elif fmt == "sqlite":
        import sqlite3

        conn = sqlite3.connect(path)
        conn.execute('CREATE TABLE stet_records ("alpha" TEXT, "seed" TEXT, '
                     '"_stet_timestamp" TEXT)')
        conn.executemany("INSERT INTO stet_records VALUES (?, ?, ?)",
                         zip(rows["alpha"], rows["seed"], rows["_stet_timestamp"],
                             strict=True))
        conn.commit()
        conn.close()


def run_002(spec: dict[str, Any], import_s: tuple[float, float]) -> None:
    import bench_core
    import stet
    from stet.backends import get_backend

    workdir = Path(spec["workdir"])
    for fmt in spec["formats"]:
        if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
            for size in spec["sizes"]:
                emit(fmt=fmt, size=size, skipped="no pyarrow in its venv")
            continue
        seen: list[tuple[int, float]] = []  # (size, seconds per record call)
        for size in spec["sizes"]:
            if seen and seen[-1][1] > spec["max_call"]:
                emit(fmt=fmt, size=size, skipped="too slow", measured_call=seen[-1][1],
                     at_size=seen[-1][0])
                continue
            if len(seen) >= 2:  # a fixed cost plus one growing with the store
                (s1, c1), (s2, c2) = seen[-2:]
                predicted = c2 + max(0.0, (c2 - c1) / (s2 - s1)) * (size - s2)
                if predicted > spec["max_call"]:
                    emit(fmt=fmt, size=size, skipped="too slow", predicted_call=predicted)
                    seen.append((size, predicted))
                    continue
            store = workdir / "s002"
            store.mkdir()
            path = store / f"store.{fmt}"
            prepare_002(path, size)
            disk = bench_core.disk_usage(store)
            with quiet():
                t0, c0 = time.perf_counter(), time.process_time()
                get_backend(path).has({"alpha": 0.5, "seed": 0})
                opened = import_s[0] + time.perf_counter() - t0
                opened_cpu = import_s[1] + time.process_time() - c0
                f = stet.once(store=path, key=["alpha", "seed"])(bench_core.experiment)
                new = range(size, size + bench_core.CALLS)
                record, calls = timed(f, new, spec["budget"])
                skip, _ = timed(f, new[:calls], spec["budget"])
            emit(fmt=fmt, size=size, record=record, skip=skip, calls=calls, open=opened,
                 open_cpu=opened_cpu, disk=disk)
            seen.append((size, record / 1e6))
            shutil.rmtree(store)


# ------------------------------------------------------------------ caches: joblib, diskcache
class JoblibStore:
    """One joblib cache directory, grown from size to size in joblib's own layout."""

    name = "joblib"

    def __init__(self, root: Path) -> None:
        from joblib import Memory

        import bench_core

        self.root = root
        self.func = Memory(root, verbose=0).cache(bench_core.experiment)
        self.func(0.5, -1)  # a real entry: joblib writes its layout, we copy its output
        self.func_dir = Path(self.func.store_backend.location, self.func.func_id)
        entry = self.func_dir / self.func._get_args_id(0.5, -1)
        self.output = (entry / "output.pkl").read_bytes()
        self.size = 0

    def grow(self, n: int) -> None:
        """Entries for seeds ``self.size``..``n-1``: joblib's hash of the arguments as the
        directory, the pickled result and the metadata joblib writes beside it."""
        args_id = self.func._get_args_id
        for seed in range(self.size, n):
            d = self.func_dir / args_id(0.5, seed)
            d.mkdir(exist_ok=True)
            (d / "output.pkl").write_bytes(self.output)
            meta = {"duration": 1e-5, "input_args": {"alpha": "0.5", "seed": repr(seed),
                                                     "n_iter": "100"}, "time": 0.0}
            (d / "metadata.json").write_text(json.dumps(meta))
        self.size = max(self.size, n)

    def open(self) -> Callable[..., Any]:
        """A fresh ``Memory`` on the directory, the decorated function, one lookup."""
        from joblib import Memory

        import bench_core

        f = Memory(self.root, verbose=0).cache(bench_core.experiment)
        if not f.check_call_in_cache(0.5, 0):
            raise RuntimeError("joblib does not see the prepared store: its layout changed")
        func: Callable[..., Any] = f
        return func

    def close(self) -> None:
        pass


class DiskcacheStore:
    """One ``diskcache.Cache`` directory (a SQLite database of pickled keys and values),
    grown from size to size through the cache's own ``set``, under the keys its
    ``memoize`` makes."""

    name = "diskcache"
    BATCH = 10_000  # entries set per transaction while growing

    def __init__(self, root: Path) -> None:
        from diskcache import Cache

        import bench_core

        self.root = root
        self.cache = Cache(root)  # default settings, as a user gets them (1 GB size limit)
        self.func = self.cache.memoize()(bench_core.experiment)
        self.opened: list[Any] = []  # the caches open() made, closed at the end
        self.size = 0

    def grow(self, n: int) -> None:
        """Entries for seeds ``self.size``..``n-1``: what ``memoize`` stores for a call
        that returned ``None``."""
        key = self.func.__cache_key__
        for start in range(self.size, n, self.BATCH):
            with self.cache.transact():
                for seed in range(start, min(n, start + self.BATCH)):
                    self.cache.set(key(0.5, seed), None)
        self.size = max(self.size, n)
        if len(self.cache) < n:
            raise RuntimeError(f"diskcache holds {len(self.cache):,} entries, not {n:,}: "
                               "it evicted some (its size limit)")

    def open(self) -> Callable[..., Any]:
        """A fresh ``Cache`` on the directory, the memoized function, one lookup."""
        from diskcache import Cache

        import bench_core

        cache = Cache(self.root)
        f = cache.memoize()(bench_core.experiment)
        if f.__cache_key__(0.5, 0) not in cache:
            raise RuntimeError("diskcache does not see the prepared entries: memoize's "
                               "keys changed")
        self.opened.append(cache)
        func: Callable[..., Any] = f
        return func

    def close(self) -> None:
        for cache in [self.cache, *self.opened]:
            cache.close()


def run_cache(store: JoblibStore | DiskcacheStore, spec: dict[str, Any],
              import_s: tuple[float, float]) -> None:
    """joblib.Memory or diskcache: one store of its own, grown from size to size (the same
    on every row of a size), whatever the store format."""
    import bench_core

    name = store.name
    rate: float | None = None  # seconds to write one entry
    per_entry: float | None = None  # bytes on disk per entry
    for size in spec["sizes"]:
        if rate is not None and per_entry is not None:
            if rate * (size - store.size) > spec["max_prepare"]:
                emit(fmt=name, size=size, skipped="too slow",
                     predicted_prepare=rate * (size - store.size))
                continue
            if per_entry * size > spec["max_disk"]:
                emit(fmt=name, size=size, skipped="too big", predicted_disk=per_entry * size)
                continue
        t0 = time.perf_counter()
        grown = size - store.size
        store.grow(size)
        if grown > 0:
            rate = (time.perf_counter() - t0) / grown
        disk = bench_core.disk_usage(store.root)
        per_entry = disk / store.size
        t0, c0 = time.perf_counter(), time.process_time()
        f = store.open()
        opened = import_s[0] + time.perf_counter() - t0
        opened_cpu = import_s[1] + time.process_time() - c0
        first = max(size, store.size)  # never a seed cached by an earlier size
        new = range(first, first + bench_core.CALLS)
        record, calls = timed(f, new, spec["budget"])
        skip, _ = timed(f, new[:calls], spec["budget"])
        store.size = first + calls
        emit(fmt=name, size=size, record=record, skip=skip, calls=calls, open=opened,
             open_cpu=opened_cpu, disk=disk)
    store.close()
    shutil.rmtree(store.root)


def main() -> None:
    peer, spec = sys.argv[1], json.loads(sys.argv[2])
    t0, c0 = time.perf_counter(), time.process_time()
    importlib.import_module({"stet002": "stet", "joblib": "joblib",
                             "diskcache": "diskcache"}[peer])
    import_s = (time.perf_counter() - t0, time.process_time() - c0)
    root = Path(spec["workdir"]) / peer
    if peer == "stet002":
        run_002(spec, import_s)
    elif peer == "joblib":
        run_cache(JoblibStore(root), spec, import_s)
    else:
        run_cache(DiskcacheStore(root), spec, import_s)


if __name__ == "__main__":
    main()
