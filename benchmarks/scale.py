"""Whether the driver keeps up with thousands of trials: a suite of about 5,000 trials planned,
dry-run and scheduled.

The suite is the sleep plugin's (``sleep_plugin.py``): 50 tuned cells of 95 tuning trials and
5 final seeds each, plus the teacher and scratch (5,006 trials). Three timings:

- plan: ``expand`` and every trial's spec and id;
- dry run: what ``kdbench run --dry-run`` prints (the plan, the studies, the cost estimate);
- schedule: the whole run through the real driver, Ray tasks, studies and writer, with trials
  that do no work (``--work 0``), so that the driver's own pace is what is measured. Its
  throughput (trials a second) is the most trials of any length it can feed; the driver's
  CPU time per trial says how much of a core it needs for that.

    python benchmarks/scale.py [--cells 50] [--trials 95] [--work 0] [--cpus 2]

Last line: ``5006 trials: plan X s, dry run Y s, schedule Z s (N trials/s, driver CPU M ms a trial)``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=50)
    ap.add_argument("--trials", type=int, default=95, help="tuning trials per cell")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--work", type=float, default=0.0, help="seconds of work per trial")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    os.environ["KDBENCH_SLEEP_S"] = str(args.work)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    sys.path.insert(0, str(HERE))

    import ray
    import sleep_plugin

    from kdbench.cli import _dry_run
    from kdbench.plan import expand
    from kdbench.results import load
    from kdbench.scheduler.driver import run_suite

    sleep_plugin.register()
    suite = sleep_plugin.sleep_suite("scale", args.cells, args.trials, args.seeds)
    t0 = time.perf_counter()
    plan = expand(suite)
    every = plan.representative()  # each trial's spec (tuned ones at default values) and id
    ids = {t.trial_id for t in every}
    t_plan = time.perf_counter() - t0
    n = sum(plan.counts().values())
    assert len(ids) == len(every) == n, "two trials with one id"

    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        out = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out):
            _dry_run(plan, results, retry_failed=False)
        t_dry = time.perf_counter() - t0
        print("\n".join(line.strip() for line in out.getvalue().splitlines()[-3:-1]))

        sleep_plugin.start_ray(args.cpus, args.work)
        cpu0, t0 = time.process_time(), time.perf_counter()
        summary = run_suite(suite, results, live=False)
        t_run = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        rows = load(results)
        ray.shutdown()
    print(
        f"planned {n} trials; ran {summary.ran} ({summary.failed} failed); {len(rows)} rows, "
        f"{rows['trial_id'].nunique()} distinct"
    )
    print(
        f"{n} trials: plan {t_plan:.2f} s, dry run {t_dry:.1f} s, schedule {t_run:.0f} s "
        f"({summary.ran / t_run:.1f} trials/s, driver CPU {cpu / summary.ran * 1000:.1f} ms a trial)"
    )


if __name__ == "__main__":
    main()
