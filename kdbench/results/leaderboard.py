"""The leaderboard: pure functions, result rows in, tables out. Values stay numbers.

Per (dataset, teacher → student), one row per method over the `final` rows that finished:

- ``mean``, ``std`` (sample), ``n`` and ``ci95``: the half-width of the 95% confidence
  interval of the mean, t(0.975, n − 1) · std / √n;
- ``delta_scratch`` and ``gap_closed`` = (method − scratch) / (teacher − scratch);
- ``rank`` by mean (1 = best; ties share the better rank);
- ``p_vs_kd``: Welch's t-test of the method's seeds against ``kd``'s (two-sided; needs two
  seeds on each side), ``significant`` when p < 0.05;
- ``published`` and ``delta_published`` where a published number matches the row.

Overall, per method: average rank, ``win_rate`` (head-to-head comparisons won against every
other method of the same pair, ties counting half), ``wins`` (pairs ranked first), and the
mean Δ scratch. Cost, per pair and method: tuning and final trials, CPU- and GPU-hours
(train_seconds × the resources held, all phases), seconds per trial, student size and
training images seen per final trial.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

PAIR_KEYS = ["dataset", "teacher", "student"]
PAIR_COLUMNS = [
    *PAIR_KEYS,
    "method",
    "n",
    "mean",
    "std",
    "ci95",
    "delta_scratch",
    "gap_closed",
    "rank",
    "p_vs_kd",
    "significant",
    "teacher_acc",
    "ipc",
    "published",
    "delta_published",
    "published_source",
]
OVERALL_COLUMNS = ["method", "pairs", "avg_rank", "win_rate", "wins", "mean_delta_scratch"]
COST_COLUMNS = [
    *PAIR_KEYS,
    "method",
    "tune_trials",
    "final_trials",
    "cpu_hours",
    "gpu_hours",
    "seconds_per_trial",
    "student_params",
    "images_seen",
]
BASELINE = "kd"
"""The method every other is tested against (Welch's t-test)."""


@dataclass(frozen=True)
class Leaderboard:
    pairs: pd.DataFrame
    overall: pd.DataFrame
    cost: pd.DataFrame


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


def ci95(std: float, n: int) -> float:
    return float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else np.nan


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or len(b) < 2:
        return np.nan
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _ipc(hparams: object) -> float:
    """A cell's ``ipc`` (dataset distillation), from one of its rows' hyperparameters (none
    where a row's ``hparams`` is not a JSON object: rows are untrusted)."""
    try:
        hp = json.loads(hparams) if isinstance(hparams, str) and hparams else {}
    except ValueError:
        hp = {}
    value = hp.get("ipc") if isinstance(hp, dict) else None
    return float(value) if isinstance(value, (int, float)) else np.nan


def _per_pair(final: pd.DataFrame) -> pd.DataFrame:
    out = []
    for keys, group in final.groupby([*PAIR_KEYS, "method"], sort=False):
        acc = group["test_acc"].to_numpy(dtype=float)
        n = len(acc)
        std = float(np.std(acc, ddof=1)) if n > 1 else np.nan
        out.append(
            dict(
                zip([*PAIR_KEYS, "method"], keys, strict=True),
                n=n,
                mean=float(acc.mean()),
                std=std,
                ci95=ci95(std, n),
                ipc=_ipc(group["hparams"].iloc[0]) if "hparams" in group else np.nan,
                _acc=acc,
            )
        )
    return pd.DataFrame(out)


def _published(table: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    table = table.assign(published=np.nan, published_source=None)
    if reference is None or reference.empty:
        return table
    ref = reference.copy()
    kd_like = ref[ref["teacher"].notna()].drop(columns=["ipc"])
    merged = table.merge(
        kd_like.rename(columns={"test_acc": "_p1", "source": "_s1"}),
        on=[*PAIR_KEYS, "method"],
        how="left",
    )
    dd = ref[ref["teacher"].isna()].drop(columns=["teacher"])
    # A suite runs one dd_* method at several ipc under labels such as ``dd_dm_ipc10``: the
    # published row is the method's whose name the label extends, at the row's ipc.
    merged["_ref_method"] = merged["method"].map(lambda m: _published_name(m, set(dd["method"])))
    merged = merged.merge(
        dd.rename(columns={"test_acc": "_p2", "source": "_s2", "method": "_ref_method"}),
        on=["dataset", "student", "_ref_method", "ipc"],
        how="left",
    ).drop(columns=["_ref_method"])
    merged["published"] = merged["_p1"].fillna(merged["_p2"])
    merged["published_source"] = merged["_s1"].fillna(merged["_s2"])
    return merged.drop(columns=["_p1", "_p2", "_s1", "_s2"])


def _published_name(label: str, names: set[str]) -> str:
    """``label`` if it is a published method's name, else the longest such name it extends
    (``dd_dm_ipc10`` → ``dd_dm``; ``dd_dm+x`` is not one)."""
    if label in names:
        return label
    extended = [n for n in names if label.startswith(n) and label[len(n)] in "_@-:"]
    return max(extended, key=len) if extended else label


def _head_to_head(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: comparisons won against the other methods of the same pair (ties half)."""
    won: dict[str, float] = {}
    played: dict[str, int] = {}
    for _, group in table.groupby(PAIR_KEYS):
        means = dict(zip(group["method"], group["mean"], strict=True))
        for m, v in means.items():
            for other, w in means.items():
                if other != m:
                    played[m] = played.get(m, 0) + 1
                    won[m] = won.get(m, 0.0) + (1.0 if v > w else 0.5 if v == w else 0.0)
    return pd.DataFrame({"method": list(played), "win_rate": [won[m] / played[m] for m in played]})


def cost_table(rows: pd.DataFrame) -> pd.DataFrame:
    students = rows[rows["phase"].isin(["tune", "final"])].copy()
    if students.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    secs = students["train_seconds"].fillna(0.0)
    students["_cpu_h"] = secs * students["cpus"].fillna(0.0) / 3600.0
    students["_gpu_h"] = secs * students["gpus"].fillna(0.0) / 3600.0
    students["_final_images"] = students["images_seen"].where(students["phase"] == "final")
    g = students.groupby([*PAIR_KEYS, "method"], as_index=False)
    out = g.agg(
        tune_trials=("phase", lambda s: int((s == "tune").sum())),
        final_trials=("phase", lambda s: int((s == "final").sum())),
        cpu_hours=("_cpu_h", "sum"),
        gpu_hours=("_gpu_h", "sum"),
        seconds_per_trial=("train_seconds", "mean"),
        student_params=("student_params", "max"),
        images_seen=("_final_images", "mean"),
    )
    return out[COST_COLUMNS].sort_values([*PAIR_KEYS, "method"]).reset_index(drop=True)


def leaderboard(rows: pd.DataFrame, reference: pd.DataFrame | None = None) -> Leaderboard:
    final = rows[(rows["phase"] == "final") & (rows["status"] == "ok") & rows["test_acc"].notna()]
    if final.empty:
        return Leaderboard(
            pd.DataFrame(columns=PAIR_COLUMNS),
            pd.DataFrame(columns=OVERALL_COLUMNS),
            cost_table(rows),
        )
    table = _per_pair(final)
    scratch = table[table["method"] == "scratch"][[*PAIR_KEYS, "mean"]].rename(
        columns={"mean": "scratch"}
    )
    base = table[table["method"] == BASELINE][[*PAIR_KEYS, "_acc"]].rename(
        columns={"_acc": "_base"}
    )
    table = (
        table.merge(scratch, on=PAIR_KEYS, how="left")
        .merge(base, on=PAIR_KEYS, how="left")
        .merge(teacher_accuracy(rows), on=["dataset", "teacher"], how="left")
    )
    table["delta_scratch"] = table["mean"] - table["scratch"]
    gap = table["teacher_acc"] - table["scratch"]
    table["gap_closed"] = np.where(gap > 0, table["delta_scratch"] / gap.where(gap > 0), np.nan)
    table["rank"] = table.groupby(PAIR_KEYS)["mean"].rank(ascending=False, method="min").astype(int)
    table["p_vs_kd"] = [
        np.nan if m == BASELINE or not isinstance(b, np.ndarray) else welch_p(a, b)
        for m, a, b in zip(table["method"], table["_acc"], table["_base"], strict=True)
    ]
    table["significant"] = table["p_vs_kd"] < 0.05
    table = _published(table, reference)
    table["delta_published"] = table["mean"] - table["published"]
    table = table.sort_values([*PAIR_KEYS, "rank", "method"]).reset_index(drop=True)[PAIR_COLUMNS]

    wins = table[table["rank"] == 1].groupby("method").size().rename("wins")
    overall = (
        table.groupby("method", as_index=False)
        .agg(
            pairs=("rank", "size"),
            avg_rank=("rank", "mean"),
            mean_delta_scratch=("delta_scratch", "mean"),
        )
        .merge(_head_to_head(table), on="method", how="left")
        .merge(wins, left_on="method", right_index=True, how="left")
    )
    overall["wins"] = overall["wins"].fillna(0).astype(int)
    overall = overall.sort_values(["avg_rank", "method"]).reset_index(drop=True)[OVERALL_COLUMNS]
    return Leaderboard(table, overall, cost_table(rows))


def best_rows(group: pd.DataFrame, column: str, higher_is_better: bool) -> pd.Series:
    """Which rows of a pair's table hold the best value of ``column``."""
    values = pd.to_numeric(group[column], errors="coerce")
    if values.notna().sum() < 2:
        return pd.Series(False, index=group.index)
    target = values.max() if higher_is_better else values.min()
    return values == target
