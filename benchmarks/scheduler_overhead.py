"""What the scheduler costs per trial: 1,000 trials whose work is a fixed 0.2 s, no training.

Through the real driver, Ray tasks on the local cluster, the result writer and Optuna studies
(10 tuned cells of 95 tuning trials and 5 final seeds each, plus the teacher and scratch), on
a cluster whose workers have started (torch imported and its first optimiser made, which
imports torch._dynamo; ``--cold``: timed from right after ``ray.init``, while they still start
and import torch).
A trial's duration is its own training time (``train_seconds``: the 0.2 s sleep inside its one
step, and its validation); everything else (Ray, the driver, studies, writing rows, building
the trial's model) counts as overhead:

    overhead per trial = (wall × slots − Σ trial durations) / trials
    busy               = Σ trial durations / (wall × slots)

    python benchmarks/scheduler_overhead.py [--work 0.2] [--cells 10] [--trials 95] [--cpus 2]

Last line: ``overhead per trial: X ms, busy: Y%`` (targets: under 5 ms, at least 95%).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=float, default=0.2, help="seconds of work per trial")
    ap.add_argument("--cells", type=int, default=10)
    ap.add_argument("--trials", type=int, default=95, help="tuning trials per cell")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument(
        "--cold",
        action="store_true",
        help="start the run while the cluster's workers still start (default: once they are up)",
    )
    args = ap.parse_args()
    os.environ["KDBENCH_SLEEP_S"] = str(args.work)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    sys.path.insert(0, str(HERE))

    import ray
    import sleep_plugin

    from kdbench.results import load
    from kdbench.scheduler.driver import run_suite

    sleep_plugin.start_ray(args.cpus, args.work, warm=not args.cold)
    suite = sleep_plugin.sleep_suite("scheduler_overhead", args.cells, args.trials, args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_suite(suite, Path(tmp) / "results", live=False)
        wall = time.perf_counter() - t0
        rows = load(Path(tmp) / "results")
    ray.shutdown()
    slots = args.cpus
    work = float(rows["train_seconds"].sum())
    n = len(rows)
    overhead_ms = (wall * slots - work) / n * 1000
    busy = work / (wall * slots)
    print(
        f"{n} trials ({summary.failed} failed) on {slots} slots in {wall:.1f} s; "
        f"Σ trial durations {work:.1f} s ({work / n * 1000:.0f} ms a trial)"
    )
    print(f"overhead per trial: {overhead_ms:.1f} ms, busy: {100 * busy:.1f}%")


if __name__ == "__main__":
    main()
