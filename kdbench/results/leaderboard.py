"""The leaderboard: pure functions, result rows in, tables out. Values stay numbers.

Per (dataset, teacher → student), one row per method over the `final` rows that finished:

- ``mean``, ``std`` (sample), ``n`` and ``ci95``: the half-width of the 95% confidence
  interval of the mean, t(0.975, n − 1) · std / √n;
- ``delta_scratch`` and ``gap_closed`` = (method − scratch) / (teacher − scratch);
- ``rank`` by mean (1 = best; ties share the better rank);
- ``rank_lo``, ``rank_hi`` and ``p_best``: how sure that rank is. Each of ``BOOTSTRAP``
  replicates resamples every method's seeds with replacement and ranks the methods by their
  resampled means; ``rank_lo``/``rank_hi`` are the 2.5% and 97.5% quantiles of the method's
  rank (the nearest ranks outside, so the interval never understates), ``p_best`` the share
  of replicates in which it ranks first (methods tied first share the replicate), summing
  to 1 over a pair. Seeded, so the same rows always give the same numbers; missing in a
  pair where a method has a single seed (nothing to resample: it would look certain);
- ``p_vs_best``: Welch's t-test of the method's seeds against those of the pair's best
  method (by mean), Holm-adjusted over the pair's comparisons; ``tied_with_best`` for the
  best and every method whose adjusted p is ≥ 0.05 (False where it cannot be tested: a
  side with one seed);
- ``p_vs_kd``: Welch's t-test of the method's seeds against ``kd``'s (two-sided; needs two
  seeds on each side), ``significant`` when p < 0.05, unadjusted;
- ``best_epoch_gain``: the mean over the seeds of ``best_test_acc − test_acc``, what
  reporting each seed's best epoch instead of its last would add (NaN for results that do
  not record ``best_test_acc``). Every number above is the last epoch's: the best epoch is
  chosen on the test split, so it is only shown as the inflation it would bring;
- ``ior``, ``hlr`` and ``dd_score`` for dataset-distillation rows: DD-Ranking's improvement
  over a random real subset evaluated the same way, hard-label recovery (scratch minus the
  set's hard-label accuracy) and their combination (``kdbench.results.ddranking``);
- ``published`` and ``delta_published`` where a published number matches the row.

Overall, per method: average rank, ``win_rate`` (head-to-head comparisons won against every
other method of the same pair, ties counting half), ``wins`` (pairs ranked first), the mean
Δ scratch and the mean ``best_epoch_gain``. ``Leaderboard.friedman``: Friedman's test of the
methods' average ranks across pairs, with Nemenyi's critical difference (see ``Friedman``).

Cost, per pair and method: tuning trials (``tune`` and ``confirm`` rows, whatever their
status), of which ``tune_pruned``, ``tune_failed`` and ``confirm_trials`` (reruns of a
study's best settings on more tuning seeds); final trials; the CPU- and GPU-hours of
tuning alone (``tune_cpu_hours``, ``tune_gpu_hours``) and of every phase (``cpu_hours``,
``gpu_hours``): train_seconds × the resources held. With seconds per trial, student size
and training images seen per final trial: what a reader needs to see that every method had
the same chances.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from kdbench.results import ddranking
from kdbench.results.metrics import COST_COLUMNS, OVERALL_COLUMNS, PAIR_COLUMNS, PAIR_KEYS
from kdbench.results.schema import TUNING_PHASES

BASELINE = "kd"
"""The method every other is tested against (Welch's t-test)."""
"""The phases that spend a method's tuning budget: the search, and the reruns of its best
settings on more tuning seeds."""
ALPHA = 0.05
"""The level of every test here: ``significant``, ``tied_with_best``, Friedman's and the CD."""
BOOTSTRAP = 2000
"""Replicates of the rank bootstrap: the 2.5% and 97.5% quantiles then rest on 50 replicates
each, and P(best) is within ±0.011 (one standard error at most) of its limit."""
BOOTSTRAP_SEED = 2006
"""The bootstrap's generator seed, the same for every pair: a pair's numbers depend on its
own rows only, not on which other pairs the results hold or in which order rows came."""


@dataclass(frozen=True)
class Friedman:
    """Friedman's test that the methods rank alike, and Nemenyi's critical difference
    (Demšar 2006, JMLR 7:1–30), over ``n`` blocks and ``k`` methods.

    A block is a pair (``blocks == "pairs"``): the largest set of pairs that share at least
    three methods, compared on those methods. When the results hold a single pair, its seeds
    are the blocks instead (``blocks == "seeds"``, ``pair`` names it): a seed's final trials
    share the student's initialisation and data order, so the methods' runs on one seed are
    paired. Seed blocks say how consistently one pair's methods rank, not how they generalise.
    """

    blocks: str
    """``"pairs"`` or ``"seeds"``."""
    block_labels: tuple[str, ...]
    """Each block: ``dataset: teacher → student``, or ``seed 3``."""
    pair: tuple[str, str, str] | None
    """The pair whose seeds are the blocks (``blocks == "seeds"``), else None."""
    n: int
    k: int
    methods: tuple[str, ...]
    """Best average rank first."""
    avg_ranks: tuple[float, ...]
    """Per method in ``methods``: its rank in each block (1 = best, ties averaged), averaged."""
    statistic: float
    """Friedman's χ² = 12N / (k(k + 1)) · (Σ R² − k(k + 1)² / 4), as in Demšar's eq. (1)."""
    p: float
    """χ² with k − 1 degrees of freedom."""
    cd: float
    """q_α · √(k(k + 1) / (6N)), q_α the studentized range quantile (infinite df) over √2."""
    cliques: tuple[tuple[str, ...], ...]
    """The maximal runs of methods (by average rank) whose average ranks differ by less than
    ``cd``: the groups Nemenyi's test cannot tell apart, joined in the CD diagram."""
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        """Friedman rejects equal ranks: the only case in which Nemenyi's post-hoc applies."""
        return bool(self.p < self.alpha)


@dataclass(frozen=True)
class Leaderboard:
    pairs: pd.DataFrame
    overall: pd.DataFrame
    cost: pd.DataFrame
    friedman: Friedman | None = None
    """None where no three methods share two blocks."""


def teacher_accuracy(rows: pd.DataFrame) -> pd.DataFrame:
    """dataset, teacher -> teacher_acc: what the standing final rows record of the teacher
    they distilled from, else the teacher rows' test accuracy. (With ``data.refit`` a data set
    has two teachers of one architecture, the tuning trials' and the finals'; the finals'
    is the one to compare with.)"""
    ok = rows[rows["status"] == "ok"]
    own = (
        ok[ok["phase"] == "teacher"]
        .groupby(["dataset", "teacher"], as_index=False)["test_acc"]
        .mean()
    )
    finals = current_finals(rows)
    seen = (
        finals[finals["status"] == "ok"]
        .groupby(["dataset", "teacher"], as_index=False)["teacher_test_acc"]
        .mean()
    )
    merged = seen.merge(own, on=["dataset", "teacher"], how="outer")
    merged["teacher_acc"] = merged["teacher_test_acc"].fillna(merged["test_acc"])
    return merged[["dataset", "teacher", "teacher_acc"]]


def ci95(std: float, n: int) -> float:
    return float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else np.nan


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or len(b) < 2:
        return np.nan
    # Constant seeds, tested by their range: a mean of equal floats can differ from them in
    # the last bit, and a t-test on that rounding noise is a test of nothing.
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    with warnings.catch_warnings():
        # One constant side (e.g. scratch equal over seeds) makes scipy warn of precision loss
        # in its variance; Welch's test is still defined, with that side's variance zero.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
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


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN: not in the family).

    The i-th smallest of m is multiplied by m − i + 1, then made monotone (no adjusted p
    below a smaller raw p's) and capped at 1: rejecting where the adjusted p < α keeps the
    chance of any false rejection in the family below α, whatever the tests' dependence.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


def _best_epoch_gain(group: pd.DataFrame) -> float:
    """Mean over the seeds that record both of best_test_acc − test_acc; NaN where none do
    (results written before ``best_test_acc`` existed)."""
    if "best_test_acc" not in group:
        return np.nan
    gain = pd.to_numeric(group["best_test_acc"], errors="coerce") - group["test_acc"].astype(float)
    return float(gain.mean()) if gain.notna().any() else np.nan


def _per_pair(final: pd.DataFrame) -> pd.DataFrame:
    out = []
    for keys, group in final.groupby([*PAIR_KEYS, "method"], sort=False):
        acc = group["test_acc"].to_numpy(dtype=float)
        n = len(acc)
        std = float(np.std(acc, ddof=1)) if n > 1 else np.nan
        seeds = group["seed"].to_numpy() if "seed" in group else np.arange(n)
        out.append(
            dict(
                zip([*PAIR_KEYS, "method"], keys, strict=True),
                n=n,
                mean=float(acc.mean()),
                std=std,
                ci95=ci95(std, n),
                best_epoch_gain=_best_epoch_gain(group),
                ipc=_ipc(group["hparams"].iloc[0]) if "hparams" in group else np.nan,
                _acc=acc,
                _seeds=seeds,
            )
        )
    return pd.DataFrame(out)


def bootstrap_ranks(
    samples: dict[str, np.ndarray], replicates: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> pd.DataFrame:
    """method -> rank_lo, rank_hi, p_best: the methods ranked (1 = best, ties sharing the
    better rank) in each of ``replicates`` resamplings of every method's seeds.

    Methods draw in the order of their names, each from its accuracies sorted, so the result
    depends on the values alone, not on the order rows were read in. Resampled means equal
    to 12 decimals count as tied: float noise in a sum is no win.
    """
    methods = sorted(samples)
    rng = np.random.default_rng(seed)
    means = np.empty((replicates, len(methods)))
    for j, m in enumerate(methods):
        acc = np.sort(np.asarray(samples[m], dtype=float))
        means[:, j] = acc[rng.integers(0, len(acc), size=(replicates, len(acc)))].mean(axis=1)
    means = np.round(means, 12)
    ranks = 1 + (means[:, None, :] > means[:, :, None]).sum(axis=2)
    first = ranks == 1
    share = first / first.sum(axis=1, keepdims=True)
    return pd.DataFrame(
        {
            "method": methods,
            "rank_lo": np.quantile(ranks, 0.025, axis=0, method="lower").astype(int),
            "rank_hi": np.quantile(ranks, 0.975, axis=0, method="higher").astype(int),
            "p_best": share.mean(axis=0),
        }
    )


def _rank_confidence(table: pd.DataFrame) -> pd.DataFrame:
    """The pair table with rank_lo, rank_hi, p_best, p_vs_best and tied_with_best."""
    parts = []
    for _, group in table.groupby(PAIR_KEYS, sort=False):
        # A single seed has no spread to resample: its method would look certain of its rank.
        if (group["n"] >= 2).all():
            boot = bootstrap_ranks(dict(zip(group["method"], group["_acc"], strict=True)))
            group = group.merge(boot, on="method", how="left")
        else:
            group = group.reset_index(drop=True).assign(rank_lo=pd.NA, rank_hi=pd.NA, p_best=np.nan)
        # The best by mean; among equal means, the first by name, as the tables list them.
        best = group.sort_values(["mean", "method"], ascending=[False, True]).index[0]
        top = group.loc[best, "_acc"]
        raw = np.array(
            [
                np.nan if i == best else welch_p(a, top)
                for i, a in zip(group.index, group["_acc"], strict=True)
            ]
        )
        group["p_vs_best"] = holm(raw)
        group["tied_with_best"] = (group.index == best) | (group["p_vs_best"] >= ALPHA)
        parts.append(group)
    out = pd.concat(parts, ignore_index=True)
    out[["rank_lo", "rank_hi"]] = out[["rank_lo", "rank_hi"]].astype("Int64")
    return out


def nemenyi_q(k: int, alpha: float = ALPHA) -> float:
    """Nemenyi's q_α for k methods: the studentized range quantile at 1 − α, infinite
    degrees of freedom, over √2 (Demšar 2006, Table 5a: 2.728 for k = 5 at α = 0.05)."""
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2))


def _cliques(methods: list[str], ranks: list[float], cd: float) -> tuple[tuple[str, ...], ...]:
    """Maximal runs (methods sorted by average rank) spanning less than ``cd``, of two or more."""
    out: list[tuple[int, int]] = []
    for i in range(len(methods)):
        j = i
        while j + 1 < len(methods) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in out):
            out.append((i, j))
    return tuple(tuple(methods[a : b + 1]) for a, b in out)


def _pair_label(key: tuple) -> str:
    return f"{key[0]}: {key[1]} → {key[2]}"


def _pair_blocks(table: pd.DataFrame) -> tuple[list[str], pd.DataFrame] | None:
    """(block labels, blocks × methods of mean accuracy) over the largest set of pairs that
    share at least three methods (then the most methods); None where no two pairs do.

    Candidates: the methods every pair holds, and each pair's own methods with every pair
    holding them all. Pairs missing one of a candidate's methods are left out of it, rather
    than the method out of every pair.
    """
    wide = table.pivot_table(index=PAIR_KEYS, columns="method", values="mean", aggfunc="mean")
    held = wide.notna()
    candidates = {frozenset(held.columns[held.all(axis=0)])}
    candidates |= {frozenset(held.columns[row]) for _, row in held.iterrows()}
    scored = [
        (int(held[sorted(c)].all(axis=1).sum()), len(c), sorted(c))
        for c in candidates
        if len(c) >= 3
    ]
    scored = [s for s in scored if s[0] >= 2]
    if not scored:
        return None
    # Most pairs, then most methods, then the first names: the same choice on every run.
    cols = min(scored, key=lambda s: (-s[0], -s[1], s[2]))[2]
    blocks = wide[held[cols].all(axis=1)][cols]
    return [_pair_label(k) for k in blocks.index], blocks


def _seed_blocks(table: pd.DataFrame) -> tuple[list[str], pd.DataFrame] | None:
    """(labels, seeds × methods of test accuracy) of the single pair, over the seeds every
    method has (a seed's rows repeated are averaged)."""
    long = pd.DataFrame(
        [
            {"method": m, "seed": s, "acc": a}
            for m, seeds, accs in zip(table["method"], table["_seeds"], table["_acc"], strict=True)
            for s, a in zip(seeds, accs, strict=True)
        ]
    )
    wide = long.pivot_table(index="seed", columns="method", values="acc", aggfunc="mean")
    wide = wide.dropna(axis=0)
    if wide.shape[1] < 3 or len(wide) < 2:
        return None
    return [f"seed {s}" for s in wide.index], wide


def friedman_test(table: pd.DataFrame) -> Friedman | None:
    """Friedman's test and Nemenyi's CD over a pair table (with ``_acc`` and ``_seeds``)."""
    pairs = table[PAIR_KEYS].drop_duplicates()
    pair = None
    if len(pairs) == 1:
        pair = tuple(pairs.iloc[0])
        found = _seed_blocks(table)
    else:
        found = _pair_blocks(table)
    if found is None:
        return None
    labels, blocks = found
    n, k = blocks.shape
    ranks = np.apply_along_axis(stats.rankdata, 1, -blocks.to_numpy(dtype=float))
    avg = ranks.mean(axis=0)
    statistic = 12 * n / (k * (k + 1)) * (np.sum(avg**2) - k * (k + 1) ** 2 / 4)
    order = sorted(range(k), key=lambda j: (avg[j], blocks.columns[j]))
    methods = [str(blocks.columns[j]) for j in order]
    sorted_ranks = [float(avg[j]) for j in order]
    cd = nemenyi_q(k) * np.sqrt(k * (k + 1) / (6 * n))
    return Friedman(
        blocks="seeds" if pair is not None else "pairs",
        block_labels=tuple(labels),
        pair=pair,
        n=int(n),
        k=int(k),
        methods=tuple(methods),
        avg_ranks=tuple(sorted_ranks),
        statistic=float(statistic),
        p=float(stats.chi2.sf(statistic, k - 1)),
        cd=float(cd),
        cliques=_cliques(methods, sorted_ranks, cd),
    )


def with_published(table: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    """``table`` (dataset, teacher, student, method, ipc) with the matching published number
    and its source (``published``, ``published_source``; NaN and None where none matches)."""
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
    """Per pair and method, every trial the method ran and what it held: the tuning budget
    (tune and confirm rows, whatever their fate) beside the final trials, so unequal chances
    show."""
    students = rows[rows["phase"].isin([*TUNING_PHASES, "final"])].copy()
    if students.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    secs = students["train_seconds"].fillna(0.0)
    tuning = students["phase"].isin(TUNING_PHASES)
    students["_cpu_h"] = secs * students["cpus"].fillna(0.0) / 3600.0
    students["_gpu_h"] = secs * students["gpus"].fillna(0.0) / 3600.0
    students["_tune_cpu_h"] = students["_cpu_h"].where(tuning, 0.0)
    students["_tune_gpu_h"] = students["_gpu_h"].where(tuning, 0.0)
    students["_tune"] = tuning
    students["_pruned"] = tuning & (students["status"] == "pruned")
    students["_failed"] = tuning & (students["status"] == "failed")
    students["_confirm"] = students["phase"] == "confirm"
    students["_final"] = students["phase"] == "final"
    students["_final_images"] = students["images_seen"].where(students["_final"])
    g = students.groupby([*PAIR_KEYS, "method"], as_index=False)
    out = g.agg(
        tune_trials=("_tune", "sum"),
        tune_pruned=("_pruned", "sum"),
        tune_failed=("_failed", "sum"),
        confirm_trials=("_confirm", "sum"),
        final_trials=("_final", "sum"),
        tune_cpu_hours=("_tune_cpu_h", "sum"),
        tune_gpu_hours=("_tune_gpu_h", "sum"),
        cpu_hours=("_cpu_h", "sum"),
        gpu_hours=("_gpu_h", "sum"),
        seconds_per_trial=("train_seconds", "mean"),
        student_params=("student_params", "max"),
        images_seen=("_final_images", "mean"),
    )
    counts = ["tune_trials", "tune_pruned", "tune_failed", "confirm_trials", "final_trials"]
    out[counts] = out[counts].astype(int)
    return out[COST_COLUMNS].sort_values([*PAIR_KEYS, "method"]).reset_index(drop=True)


def current_finals(rows: pd.DataFrame) -> pd.DataFrame:
    """The final rows that stand: per cell and seed, the one that finished last. A suite
    changed and run again into the same directory (a new selection once ``tuning.confirm`` is
    on, a new budget) writes new finals beside the old ones; the cell's numbers are the new
    ones, and the old rows stay in the directory for anyone who asks for them."""
    final = rows[rows["phase"] == "final"]
    if final.empty:
        return final
    if "finished_at" in final:  # else (a frame built by hand) the later row is the newer
        final = final.iloc[final["finished_at"].fillna("").to_numpy().argsort(kind="stable")]
    newest = final.drop_duplicates([*PAIR_KEYS, "method", "seed"], keep="last")
    return newest.sort_index()


def leaderboard(rows: pd.DataFrame, reference: pd.DataFrame | None = None) -> Leaderboard:
    final = current_finals(rows)
    final = final[(final["status"] == "ok") & final["test_acc"].notna()]
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
    table["significant"] = table["p_vs_kd"] < ALPHA
    table = ddranking.scores(
        table.merge(ddranking.describe(final), on=[*PAIR_KEYS, "method"], how="left")
    )
    table = _rank_confidence(table)
    friedman = friedman_test(table)
    table = with_published(table, reference)
    table["delta_published"] = table["mean"] - table["published"]
    table = table.sort_values([*PAIR_KEYS, "rank", "method"]).reset_index(drop=True)[PAIR_COLUMNS]

    wins = table[table["rank"] == 1].groupby("method").size().rename("wins")
    overall = (
        table.groupby("method", as_index=False)
        .agg(
            pairs=("rank", "size"),
            avg_rank=("rank", "mean"),
            mean_delta_scratch=("delta_scratch", "mean"),
            mean_best_epoch_gain=("best_epoch_gain", "mean"),
        )
        .merge(_head_to_head(table), on="method", how="left")
        .merge(wins, left_on="method", right_index=True, how="left")
    )
    overall["wins"] = overall["wins"].fillna(0).astype(int)
    overall = overall.sort_values(["avg_rank", "method"]).reset_index(drop=True)[OVERALL_COLUMNS]
    return Leaderboard(table, overall, cost_table(rows), friedman)


def best_rows(group: pd.DataFrame, column: str, higher_is_better: bool) -> pd.Series:
    """Which rows of a pair's table hold the best value of ``column``."""
    values = pd.to_numeric(group[column], errors="coerce")
    if values.notna().sum() < 2:
        return pd.Series(False, index=group.index)
    target = values.max() if higher_is_better else values.min()
    return values == target
