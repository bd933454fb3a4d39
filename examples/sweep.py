"""A real, resumable parameter sweep on the default store (``_stet_store.csv``).

A random walk with drift ``alpha`` is simulated for every (alpha, seed); each run takes
a moment. Run it, interrupt it with Ctrl-C (or pass ``--stop-after 5`` to simulate a
crash), run it again: finished runs are skipped, the rest run. ``--reset`` starts over.

    python examples/sweep.py
    python examples/sweep.py --stop-after 5 ; python examples/sweep.py
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time

import stet


@stet.once(key=["alpha", "seed"])
def run_experiment(alpha: float, seed: int, n_iter: int = 200_000) -> float:
    """Mean position of a random walk with drift ``alpha`` (a stand-in for real work)."""
    rng = random.Random(seed)
    x, total = 0.0, 0.0
    for _ in range(n_iter):
        x += alpha + rng.gauss(0.0, 1.0)
        total += x
    mean = total / n_iter
    print(f"  ran alpha={alpha} seed={seed}: mean position {mean:10.1f}")
    return mean


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stop-after", type=int, default=None,
                    help="simulate a crash after this many new runs")
    ap.add_argument("--reset", action="store_true", help="forget every run first")
    args = ap.parse_args()
    if args.reset:
        with contextlib.suppress(FileNotFoundError):  # nothing to reset yet
            stet.reset(key_dict=None)
    alphas = [0.0, 0.01, 0.05, 0.1]
    seeds = range(6)
    new = 0
    t0 = time.perf_counter()
    results = []
    for alpha in alphas:
        for seed in seeds:
            value = run_experiment(alpha, seed)
            if value is not None:
                results.append(value)
                new += 1
                if args.stop_after is not None and new >= args.stop_after:
                    print(f"Simulated crash after {new} new runs; run again to resume.")
                    return 1
    total = len(alphas) * len(seeds)
    print(f"\n{new} run(s) executed, {total - new} skipped as done, "
          f"in {time.perf_counter() - t0:.1f} s.")
    if results:
        print(f"Mean of this session's results: {statistics.fmean(results):.1f}")
    stet.status()
    print("Run this script again: every finished run is skipped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
