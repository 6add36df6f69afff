"""What seed-confirmed selection changes, and what best-epoch reporting would add, on digits.

Runs one suite (digits; cnn_wide → cnn_tiny and cnn_small → cnn_tiny; kd, crd, at, dkd and
scratch; every study ``--trials`` trials; 5 final seeds) twice, through the real driver:

1. without ``tuning.confirm``: each study's pick is its best single-seed trial;
2. on a copy of that results directory, with ``tuning.confirm: {top: 3, seeds: 2}``: the
   studies are the same (confirmation is not part of a study's identity), so only the
   confirm trials run, and the finals of the cells whose pick changed.

Prints per cell: the two picks, their validation accuracy (the pick's own trial; with
confirmation the mean over 3 tuning seeds), and the finals' test accuracy at each (mean ± std
over 5 seeds); then per method the mean best-minus-last epoch gain of the finals.
Last line: ``confirmation changed N of M picks; finals' mean test accuracy A% without,
B% with``.

    python benchmarks/seed_confirmation.py [--trials 12] [--results DIR]

About 8 minutes on 2 cores. ``kdbench leaderboard DIR/confirmed`` and ``kdbench report``
then show the rank intervals and the critical-difference diagram of the confirmed run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def suite(trials: int, confirm: bool) -> dict:
    tuning: dict = {"trials": trials, "pruner": "median"}
    if confirm:
        tuning["confirm"] = {"top": 3, "seeds": 2}
    return {
        "name": "seed_confirmation",
        "datasets": ["digits"],
        "pairs": [
            {"teacher": "cnn_wide", "student": "cnn_tiny"},
            {"teacher": "cnn_small", "student": "cnn_tiny"},
        ],
        "methods": ["kd", "crd", "at", "dkd"],
        "seeds": [0, 1, 2, 3, 4],
        "budget": {"epochs": 30, "batch_size": 64, "lr": 0.05, "schedule": "cosine"},
        "teacher": {"epochs": 30},
        "tuning": tuning,
        "resources": {"cpus_per_trial": 1},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12, help="tuning trials per study")
    ap.add_argument("--results", help="where to keep both runs (default: a temporary folder)")
    args = ap.parse_args()

    import pandas as pd

    from kdbench.results import store
    from kdbench.results.leaderboard import current_finals
    from kdbench.scheduler.driver import run_suite
    from kdbench.validation import parse_suite

    root = Path(args.results or tempfile.mkdtemp(prefix="kdbench-confirm-"))
    single, confirmed = root / "single", root / "confirmed"
    t0 = time.perf_counter()
    run_suite(parse_suite(suite(args.trials, False)), single, live=False)
    t1 = time.perf_counter()
    if not confirmed.exists():  # else: a finished (or interrupted) earlier run goes on
        shutil.copytree(single, confirmed)
    run_suite(parse_suite(suite(args.trials, True)), confirmed, live=False)
    t2 = time.perf_counter()
    print(f"run without confirmation: {t1 - t0:.0f} s; confirmation on its copy: {t2 - t1:.0f} s")

    a, b = store.load(single), store.load(confirmed)
    cell = ["teacher", "student", "method"]
    tuned = sorted(set(map(tuple, a[a["phase"] == "tune"][cell].to_numpy())))

    def finals(rows: pd.DataFrame, key: tuple, hp: str | None = None) -> pd.DataFrame:
        f = rows[(rows["phase"] == "final") & (rows["status"] == "ok")]
        f = f[(f["teacher"] == key[0]) & (f["student"] == key[1]) & (f["method"] == key[2])]
        return f if hp is None else f[f["hparams"] == hp]

    changed = 0
    means_a, means_b = [], []
    print(
        f"\n{'cell':<32} {'pick':<9} {'val':>7} {'test (5 seeds)':>15}   hyperparameters",
    )
    for key in tuned:
        fa = finals(a, key)
        hp_a = fa["hparams"].iloc[0]
        newest = finals(b, key).sort_values("finished_at")
        hp_b = newest["hparams"].iloc[-1]
        fb = finals(b, key, hp_b)
        tune = a[(a["phase"] == "tune") & (a[cell] == pd.Series(key, index=cell)).all(axis=1)]
        conf = b[(b["phase"] == "confirm") & (b[cell] == pd.Series(key, index=cell)).all(axis=1)]
        val_a = tune[tune["hparams"] == hp_a]["val_acc"].max()
        vals_b = list(tune[tune["hparams"] == hp_b]["val_acc"]) + list(
            conf[conf["hparams"] == hp_b]["val_acc"].dropna()
        )
        val_b = sum(vals_b) / len(vals_b)
        changed += hp_a != hp_b
        means_a.append(fa["test_acc"].mean())
        means_b.append(fb["test_acc"].mean())
        name = f"{key[0]}->{key[1]}/{key[2]}"
        for label, hp, val, f in (("single", hp_a, val_a, fa), ("confirmed", hp_b, val_b, fb)):
            shown = json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in json.loads(hp).items()}
            )
            print(
                f"{name:<32} {label:<9} {100 * val:6.2f}% "
                f"{100 * f['test_acc'].mean():6.2f} ± {100 * f['test_acc'].std():4.2f}   {shown}"
            )
            name = ""
    fb_all = current_finals(b)
    fb_all = fb_all[fb_all["status"] == "ok"]
    gain = (
        (fb_all["best_test_acc"] - fb_all["test_acc"])
        .groupby(fb_all["method"])
        .agg(["mean", "max", "size"])
    )
    print("\nbest − last epoch, final trials (points of test accuracy):")
    for method, r in gain.iterrows():
        print(
            f"  {method:<8} mean +{100 * r['mean']:.2f}, max +{100 * r['max']:.2f} ({int(r['size'])} trials)"
        )
    mean_a = 100 * sum(means_a) / len(means_a)
    mean_b = 100 * sum(means_b) / len(means_b)
    print(f"results: {single} and {confirmed}", file=sys.stderr)
    print(
        f"confirmation changed {changed} of {len(tuned)} picks; finals' mean test accuracy "
        f"{mean_a:.2f}% without, {mean_b:.2f}% with"
    )


if __name__ == "__main__":
    main()
