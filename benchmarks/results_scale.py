"""How long `load` + `leaderboard` take on a large results directory, before and after compaction.

Writes 100,000 synthetic trial rows with the real result schema: 90,000 already compacted
(nine runs of 10,000) and the last 10,000 still as one file per trial, as a run in progress
leaves them. Times load + leaderboard (best of three), compacts, and times them again.

    python benchmarks/results_scale.py [--rows 100000] [--loose 10000] [--dir DIR]

Last line: `load+leaderboard after compaction: X s` (target: under 1 s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from kdbench.results import store
from kdbench.results.layout import Layout
from kdbench.results.leaderboard import leaderboard
from kdbench.results.reference import load_reference
from kdbench.results.schema import SCHEMA

DATASETS = ["digits", "cifar10", "cifar100", "mnist"]
PAIRS = [
    ("resnet56", "resnet20"),
    ("resnet32x4", "resnet8x4"),
    ("wrn_40_2", "wrn_16_2"),
    ("vgg13", "vgg8"),
]
METHODS = ["scratch", "kd", "fitnet", "at", "crd", "crd+kd", "dkd", "rkd", "pkt", "sp"]


def synthetic_rows(n: int, start: int, run_id: str, rng: np.random.Generator) -> dict[str, list]:
    i = np.arange(start, start + n)
    phase = np.where(rng.random(n) < 0.7, "tune", "final")
    method = np.array(METHODS)[i % len(METHODS)]
    pair = (i // len(METHODS)) % len(PAIRS)
    dataset = np.array(DATASETS)[(i // (len(METHODS) * len(PAIRS))) % len(DATASETS)]
    base = 0.6 + 0.02 * (i % len(METHODS)) / len(METHODS)
    acc = np.clip(base + rng.normal(0, 0.01, n), 0, 1)
    return {
        "schema_version": [1] * n,
        "run_id": [run_id] * n,
        "suite": ["scale"] * n,
        "trial_id": [f"trial-{k:07d}" for k in i],
        "phase": phase.tolist(),
        "status": np.where(rng.random(n) < 0.05, "pruned", "ok").tolist(),
        "dataset": dataset.tolist(),
        "teacher": [PAIRS[p][0] for p in pair],
        "student": [PAIRS[p][1] for p in pair],
        "method": method.tolist(),
        "seed": (i % 5).tolist(),
        "hparams": [json.dumps({"T": 4.0, "alpha": 0.9})] * n,
        "val_acc": acc.tolist(),
        "test_acc": np.where(phase == "final", acc, np.nan).tolist(),
        "teacher_test_acc": [0.75] * n,
        "train_seconds": rng.uniform(50, 500, n).tolist(),
        "cpus": [1.0] * n,
        "gpus": [0.25] * n,
        "student_params": [270_000] * n,
        "images_seen": [45_000 * 240] * n,
        "finished_at": [f"2026-11-23T00:{k % 60:02d}:00" for k in i],
    }


def to_table(cols: dict[str, list]) -> pa.Table:
    full = {name: cols.get(name, [None] * len(cols["trial_id"])) for name in SCHEMA.names}
    return pa.table(full, schema=SCHEMA)


def timed(root: Path, reference: pd.DataFrame) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(3):
        t0 = time.perf_counter()
        df = store.load(root, expand_hparams=False)
        board = leaderboard(df, reference)
        best = min(best, time.perf_counter() - t0)
        rows = len(df)
        assert len(board.pairs) == len(DATASETS) * len(PAIRS) * len(METHODS)
    return best, rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--loose", type=int, default=10_000, help="rows still as per-trial files")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="kdbench-scale-"))
    rng = np.random.default_rng(0)
    compacted = args.rows - args.loose
    t0 = time.perf_counter()
    per_run = 10_000
    for k, start in enumerate(range(0, compacted, per_run)):
        n = min(per_run, compacted - start)
        store.write_atomic(
            to_table(synthetic_rows(n, start, f"run{k:02d}", rng)),
            Layout(root).compacted_file(f"run{k:02d}"),
        )
    loose = synthetic_rows(args.loose, compacted, "run-live", rng)
    for j in range(args.loose):
        store.write_trial(root, {c: v[j] for c, v in loose.items()})
    print(
        f"wrote {args.rows:,} rows ({compacted:,} compacted, {args.loose:,} per-trial files) "
        f"in {time.perf_counter() - t0:.1f} s to {root}"
    )

    reference = load_reference()
    before, n = timed(root, reference)
    print(
        f"load+leaderboard before compaction ({n:,} rows, {args.loose:,} loose files): {before:.2f} s"
    )
    t0 = time.perf_counter()
    store.compact(root)
    print(f"compact: {time.perf_counter() - t0:.2f} s")
    after, n = timed(root, reference)
    assert n == args.rows, n
    if args.dir is None:
        shutil.rmtree(root)
    print(f"load+leaderboard after compaction: {after:.2f} s")


if __name__ == "__main__":
    main()
