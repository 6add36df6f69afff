"""How sure a ranking is: the rank bootstrap, Holm against the best, Friedman and Nemenyi's
critical difference, best-epoch inflation and the tuning budget, checked against the formulas."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdbench.results import store
from kdbench.results.leaderboard import holm, leaderboard, nemenyi_q
from kdbench.results.render import html_page, json_text, latex, markdown
from kdbench.results.report import build_report
from tests.test_leaderboard import final
from tests.test_results import row

# One pair: a is best; b is a shifted by half a point (not told apart); c and d are worse.
SEEDS = {
    "a": [0.90, 0.91, 0.92, 0.93],
    "b": [0.895, 0.905, 0.915, 0.925],
    "c": [0.86, 0.88, 0.87, 0.89],
    "d": [0.80, 0.82, 0.81, 0.79],
}


def _rows(seeds: dict[str, list[float]], **extra) -> list[dict]:
    return [final(m, s, acc, **extra) for m, accs in seeds.items() for s, acc in enumerate(accs)]


def _pairs(rows: list[dict]) -> pd.DataFrame:
    return leaderboard(pd.DataFrame(rows)).pairs.set_index(["student", "method"])


# ----------------------------------------------------------------------------- Holm vs best


def test_holm_step_down_by_hand():
    # sorted: .01 (x3 = .03), .03 (x2 = .06), .04 (x1 = .04, raised to .06: monotone)
    assert np.allclose(holm(np.array([0.01, 0.04, 0.03, np.nan]))[:3], [0.03, 0.06, 0.06])
    assert math.isnan(holm(np.array([0.01, 0.04, 0.03, np.nan]))[3])  # not in the family
    assert list(holm(np.array([0.5, 0.6]))) == [1.0, 1.0]  # capped at 1


def test_p_vs_best_is_welch_against_the_best_holm_adjusted():
    p = _pairs(_rows(SEEDS)).loc["s"]
    raw = {m: stats.ttest_ind(SEEDS[m], SEEDS["a"], equal_var=False).pvalue for m in "bcd"}
    order = sorted(raw, key=raw.get)
    expected, running = {}, 0.0
    for i, m in enumerate(order):  # Holm: the i-th smallest of m = 3 times (3 - i), monotone
        running = max(running, min(1.0, (3 - i) * raw[m]))
        expected[m] = running
    for m in "bcd":
        assert p.loc[m, "p_vs_best"] == pytest.approx(expected[m], rel=1e-9)
    assert math.isnan(p.loc["a", "p_vs_best"])
    assert expected["b"] >= 0.05 and expected["c"] < 0.05 and expected["d"] < 0.05
    assert p["tied_with_best"].to_dict() == {"a": True, "b": True, "c": False, "d": False}
    # the unadjusted test against kd stays as it was (no kd here: nothing to test)
    assert p["p_vs_kd"].isna().all() and "significant" in p


def test_a_method_with_one_seed_cannot_be_tested_against_the_best():
    p = _pairs(_rows({**SEEDS, "e": [0.85]})).loc["s"]
    assert math.isnan(p.loc["e", "p_vs_best"]) and not p.loc["e", "tied_with_best"]
    assert p.loc["b", "tied_with_best"] and not p.loc["c", "tied_with_best"]
    # one seed: no spread to resample, so the pair shows no bootstrap
    assert p["p_best"].isna().all() and p["rank_lo"].isna().all()
    # a best with one seed: nothing can be told apart from it, nor tied with it
    p = _pairs(_rows({**SEEDS, "e": [0.99]})).loc["s"]
    assert p["p_vs_best"].isna().all() and p["tied_with_best"].sum() == 1
    assert p.loc["e", "tied_with_best"]


def test_methods_with_the_same_seeds_are_tied():
    same = {"x": [0.80, 0.82, 0.84], "y": [0.84, 0.80, 0.82], "z": [0.70, 0.71, 0.72]}
    p = _pairs(_rows(same)).loc["s"]
    assert p.loc["y", "p_vs_best"] == 1.0 and p["tied_with_best"].to_dict() == {
        "x": True,
        "y": True,
        "z": False,
    }
    assert p.loc["x", "p_best"] == pytest.approx(0.5, abs=0.05)
    assert p.loc["x", "p_best"] + p.loc["y", "p_best"] == pytest.approx(1.0)
    assert (p.loc["x", "rank_lo"], p.loc["x", "rank_hi"]) == (1, 2)
    assert (p.loc["z", "rank_lo"], p.loc["z", "rank_hi"]) == (3, 3)


# ----------------------------------------------------------------------------- bootstrap


def test_p_best_sums_to_one_in_every_pair():
    rows = _rows(SEEDS) + _rows({"a": [0.7, 0.72], "b": [0.72, 0.7], "c": [0.6, 0.8]}, student="s2")
    rows += _rows({"a": [0.7, 0.7], "b": [0.7, 0.7], "c": [0.6, 0.6]}, student="s3")
    p = _pairs(rows)
    assert p.groupby(level="student")["p_best"].sum().tolist() == pytest.approx([1.0, 1.0, 1.0])
    # a and b always tie first on s3: they share every replicate's first place
    assert p.loc[("s3", "a"), "p_best"] == p.loc[("s3", "b"), "p_best"] == 0.5
    assert p.loc[("s3", "c"), "p_best"] == 0
    # on s2 they hold the same values: alike, up to the resampling
    assert p.loc[("s2", "a"), "p_best"] == pytest.approx(p.loc[("s2", "b"), "p_best"], abs=0.06)


def test_a_dominant_method_is_surely_first():
    dominant = {**SEEDS, "top": [0.99, 0.985, 0.995, 0.99]}
    p = _pairs(_rows(dominant)).loc["s"]
    assert p.loc["top", "p_best"] == 1.0
    assert (p.loc["top", "rank_lo"], p.loc["top", "rank_hi"]) == (1, 1)
    assert p.loc["d", "rank_lo"] == p.loc["d", "rank_hi"] == 5
    assert str(p["rank_lo"].dtype) == "Int64"  # ranks, as integers


def test_the_bootstrap_is_deterministic_whatever_the_row_order_and_other_pairs():
    rows = _rows(SEEDS)
    cols = ["rank_lo", "rank_hi", "p_best"]
    first = _pairs(rows)[cols]
    assert first.equals(_pairs(rows)[cols])
    shuffled = pd.DataFrame(rows).sample(frac=1, random_state=3).to_dict("records")
    assert first.equals(_pairs(shuffled)[cols].loc[first.index])
    other = rows + _rows({"a": [0.5, 0.6], "b": [0.55, 0.65], "c": [0.5, 0.52]}, student="s2")
    assert first.equals(_pairs(other)[cols].loc[first.index])
    # not degenerate: a and b really are uncertain
    assert 0 < first.loc[("s", "b"), "p_best"] < first.loc[("s", "a"), "p_best"] < 1


# ----------------------------------------------------------------------------- Friedman


def test_nemenyi_q_matches_demsars_table():
    assert nemenyi_q(5) == pytest.approx(2.728, abs=5e-4)
    assert nemenyi_q(4) == pytest.approx(2.569, abs=5e-4)
    assert nemenyi_q(2) == pytest.approx(1.960, abs=5e-4)


def test_friedman_and_cd_over_pairs_by_hand():
    table = {  # pair: a, b, c, d (one seed each: the pair's mean)
        "s1": [0.9, 0.8, 0.7, 0.6],
        "s2": [0.9, 0.7, 0.8, 0.6],
        "s3": [0.8, 0.9, 0.7, 0.6],
        "s4": [0.9, 0.8, 0.6, 0.7],
    }
    rows = [
        final(m, 0, acc, student=s)
        for s, accs in table.items()
        for m, acc in zip("abcd", accs, strict=True)
    ]
    f = leaderboard(pd.DataFrame(rows)).friedman
    assert f is not None and f.blocks == "pairs" and f.pair is None
    assert (f.n, f.k) == (4, 4)
    assert f.block_labels == tuple(f"d: t → {s}" for s in table)
    # ranks per pair: a 1 1 2 1, b 2 3 1 2, c 3 2 3 4, d 4 4 4 3
    assert f.methods == ("a", "b", "c", "d")
    assert f.avg_ranks == pytest.approx((1.25, 2.0, 3.0, 3.75))
    r = np.array([1.25, 2.0, 3.0, 3.75])
    chi2 = 12 * 4 / (4 * 5) * (np.sum(r**2) - 4 * 5**2 / 4)
    assert chi2 == pytest.approx(8.7) and f.statistic == pytest.approx(chi2)
    assert f.p == pytest.approx(stats.chi2.sf(8.7, 3))
    scipy_stat = stats.friedmanchisquare(*np.array(list(table.values())).T).statistic
    assert f.statistic == pytest.approx(scipy_stat)  # no ties: scipy agrees
    cd = stats.studentized_range.ppf(0.95, 4, np.inf) / np.sqrt(2) * np.sqrt(4 * 5 / (6 * 4))
    assert f.cd == pytest.approx(cd) and f.cd == pytest.approx(2.569 * math.sqrt(20 / 24), 1e-3)
    # a..c span 1.75 < CD, a..d 2.5 > CD; b..d span 1.75
    assert f.cliques == (("a", "b", "c"), ("b", "c", "d"))
    assert f.significant


def test_a_single_pair_ranks_over_its_seeds_present_for_every_method():
    rows = _rows({"x": [0.90, 0.85, 0.88, 0.80], "y": [0.90, 0.86, 0.87], "z": [0.80, 0.84, 0.86]})
    f = leaderboard(pd.DataFrame(rows)).friedman
    assert f is not None and f.blocks == "seeds" and f.pair == ("d", "t", "s")
    assert f.block_labels == ("seed 0", "seed 1", "seed 2")  # y and z have no seed 3
    # seed 0: x, y tie (1.5 each), z 3; seed 1: y 1, x 2, z 3; seed 2: x 1, y 2, z 3
    assert f.methods == ("x", "y", "z") and f.avg_ranks == pytest.approx((1.5, 1.5, 3.0))
    assert f.statistic == pytest.approx(12 * 3 / (3 * 4) * (1.5**2 * 2 + 9 - 3 * 16 / 4))
    assert f.cd == pytest.approx(nemenyi_q(3) * math.sqrt(3 * 4 / (6 * 3)))
    data = json.loads(json_text(leaderboard(pd.DataFrame(rows))))["friedman"]
    assert data["blocks"] == "seeds" and data["n"] == 3 and data["pair"] == ["d", "t", "s"]
    md = markdown(leaderboard(pd.DataFrame(rows)))
    assert "N = 3 seeds of the only pair, d: t → s, as blocks" in md


def test_pair_blocks_leave_out_pairs_short_of_the_shared_methods():
    rows = [
        final(m, 0, 0.5 + i / 10, student=s) for s in ("s1", "s2") for i, m in enumerate("abcd")
    ]
    rows += [final(m, 0, 0.5 + i / 10, student="s3") for i, m in enumerate("ab")]
    f = leaderboard(pd.DataFrame(rows)).friedman
    assert (f.n, f.k, f.blocks) == (2, 4, "pairs") and f.block_labels == ("d: t → s1", "d: t → s2")
    apart = [final(m, 0, 0.5, student="s1") for m in "abc"]
    apart += [final(m, 0, 0.5, student="s2") for m in "abd"]
    assert leaderboard(pd.DataFrame(apart)).friedman is None  # no 3 methods in 2 pairs


# ----------------------------------------------------------------------------- best epoch


def test_best_epoch_gain_from_the_best_and_last_columns():
    rows = [
        final("kd", 0, 0.80, best_test_acc=0.83),
        final("kd", 1, 0.82, best_test_acc=0.82),
        final("scratch", 0, 0.70, best_test_acc=0.75),
        final("scratch", 1, 0.72, best_test_acc=None),  # not recorded: left out
        final("kd", 0, 0.60, best_test_acc=0.61, student="s2"),
    ]
    board = leaderboard(pd.DataFrame(rows))
    p = board.pairs.set_index(["student", "method"])
    assert p.loc[("s", "kd"), "best_epoch_gain"] == pytest.approx(0.015)
    assert p.loc[("s", "scratch"), "best_epoch_gain"] == pytest.approx(0.05)
    assert p.loc[("s", "kd"), "mean"] == pytest.approx(0.81)  # the result stays the last epoch
    overall = board.overall.set_index("method")
    assert overall.loc["kd", "mean_best_epoch_gain"] == pytest.approx((0.015 + 0.01) / 2)
    assert "| kd | **81.00 ± 1.41** |" in markdown(board)
    assert "| +1.50 |" in markdown(board)


@pytest.mark.parametrize("column", ["absent", "all null"])
def test_results_without_best_epochs_still_render(column):
    extra = {} if column == "absent" else {"best_test_acc": None}
    board = leaderboard(pd.DataFrame(_rows(SEEDS, **extra)))
    assert board.pairs["best_epoch_gain"].isna().all()
    assert board.overall["mean_best_epoch_gain"].isna().all()
    md = markdown(board)
    header = next(line for line in md.splitlines() if line.startswith("| method | test acc"))
    at = header.split(" | ").index("best − last")
    a_row = next(line for line in md.splitlines() if line.startswith("| a |"))
    assert a_row.split(" | ")[at] == "–"
    assert json.loads(json_text(board))["pairs"][0]["best_epoch_gain"] is None


# ----------------------------------------------------------------------------- cost


def test_cost_counts_the_tuning_budget_with_its_pruned_failed_and_confirm_trials():
    hw = {"train_seconds": 360.0, "cpus": 2.0, "gpus": 0.5}
    rows = [
        final("kd", 9, None, phase="tune", **hw),
        final("kd", 9, None, phase="tune", **hw),
        final("kd", 9, None, phase="tune", status="pruned", **hw),
        final("kd", 9, None, phase="tune", status="failed", train_seconds=None),
        final("kd", 7, None, phase="confirm", **hw),
        final("kd", 8, None, phase="confirm", status="failed", **hw),
        *(final("kd", s, 0.8) for s in range(3)),
        *(final("scratch", s, 0.7) for s in range(3)),
        final("scratch", 9, None, phase="tune", status="pruned"),
    ]
    board = leaderboard(pd.DataFrame(rows))
    kd = board.cost.set_index("method").loc["kd"]
    assert kd["tune_trials"] == 6 and kd["confirm_trials"] == 2 and kd["final_trials"] == 3
    assert kd["tune_pruned"] == 1 and kd["tune_failed"] == 2
    assert kd["tune_cpu_hours"] == pytest.approx(5 * 360 * 2 / 3600)
    assert kd["tune_gpu_hours"] == pytest.approx(5 * 360 * 0.5 / 3600)
    assert kd["cpu_hours"] == pytest.approx(5 * 360 * 2 / 3600 + 3 * 36 / 3600)
    scratch = board.cost.set_index("method").loc["scratch"]
    assert (scratch["tune_trials"], scratch["tune_pruned"], scratch["confirm_trials"]) == (1, 1, 0)
    md = markdown(board)
    assert "| tune trials | tune pruned | tune failed | confirm reruns | final trials |" in md
    assert "| d | t | s | kd | 6 | 1 | 2 | 2 | 3 | 1.0000 | 0.2500 |" in md
    page = html_page(board)
    assert "<th>confirm reruns</th>" in page and "<td>0.2500</td>" in page


# ----------------------------------------------------------------------------- renderers


def test_renderers_mark_the_methods_tied_with_the_best_and_say_what_it_means():
    board = leaderboard(pd.DataFrame(_rows(SEEDS)))
    md = markdown(board)
    assert "| b † |" in md and "| a |" in md and "| c |" in md  # not the best itself
    assert "†: not significantly different from the best" in md
    page = html_page(board)
    assert '<tr class="tied"><td>b †</td>' in page and page.count('class="tied"') == 1
    assert "†: not significantly different" in page
    tex = latex(board)
    assert "b $^\\dagger$ &" in tex and "Friedman" in tex and "$\\chi$\\textsuperscript{2}" in tex


def test_the_report_draws_the_cd_diagram_with_escaped_names(tmp_path):
    odd = 'a<b>&"c'
    for i, (method, base) in enumerate((("scratch", 0.80), ("kd", 0.85), (odd, 0.9))):
        for seed in range(3):
            acc = base + seed / 100
            store.write_trial(tmp_path, row(f"f{i}{seed}", method=method, seed=seed, test_acc=acc))
    page = build_report(tmp_path)
    svg = re.search(r'<svg[^>]*aria-label="critical difference diagram[^"]*".*?</svg>', page, re.S)
    assert svg is not None
    assert "over the 3 seeds of the only pair, digits: cnn_wide → cnn_tiny" in svg.group(0)
    assert "a&lt;b&gt;&amp;&quot;c (1.00)" in svg.group(0) and odd not in page
    assert "kd (2.00)" in svg.group(0) and "CD = " in svg.group(0)
    caption = page[svg.end() :].split("</figcaption>")[0]
    assert "taken as blocks" in caption and "seed" in caption
