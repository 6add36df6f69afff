"""The leaderboard: pure functions, result rows in, tables out. Values stay numbers.

Per (dataset, teacher → student), one row per method over the `final` rows that finished:
test accuracy mean and sample standard deviation over seeds, n, the difference to `scratch`,
the share of the teacher–student gap closed ((method − scratch) / (teacher − scratch)), and
the rank by mean (1 = best). Overall: each method's average rank across all pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PAIR_KEYS = ["dataset", "teacher", "student"]


@dataclass(frozen=True)
class Leaderboard:
    pairs: pd.DataFrame
    """dataset, teacher, student, method, n, mean, std, delta_scratch, gap_closed, rank, teacher_acc."""
    overall: pd.DataFrame
    """method, pairs, avg_rank, mean_delta_scratch."""


def teacher_accuracy(rows: pd.DataFrame) -> pd.DataFrame:
    """dataset, teacher -> teacher_acc: the teacher rows' test accuracy, else the final rows' record."""
    ok = rows[rows["status"] == "ok"]
    own = (
        ok[ok["phase"] == "teacher"]
        .groupby(["dataset", "teacher"], as_index=False)["test_acc"]
        .mean()
    )
    seen = (
        ok[ok["phase"] == "final"]
        .groupby(["dataset", "teacher"], as_index=False)["teacher_test_acc"]
        .mean()
    )
    merged = seen.merge(own, on=["dataset", "teacher"], how="outer")
    merged["teacher_acc"] = merged["test_acc"].fillna(merged["teacher_test_acc"])
    return merged[["dataset", "teacher", "teacher_acc"]]


def leaderboard(rows: pd.DataFrame) -> Leaderboard:
    final = rows[(rows["phase"] == "final") & (rows["status"] == "ok") & rows["test_acc"].notna()]
    if final.empty:
        empty_pairs = pd.DataFrame(
            columns=[
                *PAIR_KEYS,
                "method",
                "n",
                "mean",
                "std",
                "delta_scratch",
                "gap_closed",
                "rank",
                "teacher_acc",
            ]
        )
        return Leaderboard(
            empty_pairs, pd.DataFrame(columns=["method", "pairs", "avg_rank", "mean_delta_scratch"])
        )
    g = final.groupby([*PAIR_KEYS, "method"], as_index=False)["test_acc"]
    table = g.agg(n="count", mean="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else np.nan)
    scratch = table[table["method"] == "scratch"][[*PAIR_KEYS, "mean"]].rename(
        columns={"mean": "scratch"}
    )
    table = table.merge(scratch, on=PAIR_KEYS, how="left").merge(
        teacher_accuracy(rows), on=["dataset", "teacher"], how="left"
    )
    table["delta_scratch"] = table["mean"] - table["scratch"]
    gap = table["teacher_acc"] - table["scratch"]
    table["gap_closed"] = np.where(gap > 0, table["delta_scratch"] / gap.where(gap > 0), np.nan)
    table["rank"] = table.groupby(PAIR_KEYS)["mean"].rank(ascending=False, method="min").astype(int)
    table = table.sort_values([*PAIR_KEYS, "rank", "method"]).reset_index(drop=True)
    table = table[
        [
            *PAIR_KEYS,
            "method",
            "n",
            "mean",
            "std",
            "delta_scratch",
            "gap_closed",
            "rank",
            "teacher_acc",
        ]
    ]
    overall = (
        table.groupby("method", as_index=False)
        .agg(
            pairs=("rank", "size"),
            avg_rank=("rank", "mean"),
            mean_delta_scratch=("delta_scratch", "mean"),
        )
        .sort_values(["avg_rank", "method"])
        .reset_index(drop=True)
    )
    return Leaderboard(table, overall)
