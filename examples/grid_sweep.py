"""A sweep session: run a grid with a progress bar, interrupt it, resume it, analyse it.

Each (alpha, seed) simulates a random walk with drift ``alpha`` and returns metrics,
which ``save_result=True`` stores with the run (store: ``grid_runs.sqlite``). Press
Ctrl-C at any time and run the script again: the finished runs are skipped in bulk and
the rest run. Then look at the store with ``stet status grid_runs.sqlite --grid
alpha,seed`` or load it into pandas (done at the end when pandas is installed).

    python examples/grid_sweep.py               # in this process
    python examples/grid_sweep.py --workers 2   # in a process pool
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor

import stet

STORE = "grid_runs.sqlite"


@stet.once(store=STORE, key=["alpha", "seed"], save_result=True)
def run_experiment(alpha: float, seed: int, n_iter: int = 500_000) -> dict[str, float]:
    """Mean and spread of a random walk with drift ``alpha`` (a stand-in for training)."""
    rng = random.Random(seed)
    x, positions = 0.0, []
    for i in range(n_iter):
        x += alpha + rng.gauss(0.0, 1.0)
        if i % 100 == 0:
            positions.append(x)
    return {"mean": statistics.fmean(positions), "spread": statistics.pstdev(positions)}


# Non-rectangular: the large drift only needs three seeds.
SETTINGS = stet.grid(alpha=[0.0, 0.01, 0.05], seed=range(6)) + stet.grid(alpha=0.5,
                                                                        seed=range(3))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=0, help="run in a pool of N processes")
    args = ap.parse_args()
    try:
        if args.workers:
            with ProcessPoolExecutor(args.workers) as pool:
                summary = stet.sweep(run_experiment, SETTINGS, executor=pool)
        else:
            summary = stet.sweep(run_experiment, SETTINGS)
    except stet.SweepInterrupted:
        return 130  # the summary is printed; run again to resume
    print()
    stet.status(run_experiment, SETTINGS)
    try:
        df = stet.load(STORE)
    except ImportError:
        return 0 if summary.ok else 1
    print()
    print(df.groupby("alpha")[["result.mean", "result.spread"]].mean().round(1))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
