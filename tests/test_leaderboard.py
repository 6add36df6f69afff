"""The leaderboard's numbers on hand-made DataFrames, checked against hand computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdbench.results.leaderboard import leaderboard
from kdbench.results.reference import load_reference
from kdbench.results.render import csv, html_page, json_text, latex, markdown


def final(method, seed, acc, teacher="t", student="s", dataset="d", status="ok", **extra):
    return {
        "phase": "final",
        "status": status,
        "dataset": dataset,
        "teacher": teacher,
        "student": student,
        "method": method,
        "seed": seed,
        "test_acc": acc,
        "teacher_test_acc": 0.95,
        "hparams": "{}",
        "train_seconds": 36.0,
        "cpus": 1.0,
        "gpus": 0.0,
        "student_params": 1000,
        "images_seen": 500,
        **extra,
    }


@pytest.fixture
def rows():
    data = [
        {
            "phase": "teacher",
            "status": "ok",
            "dataset": "d",
            "teacher": "t",
            "student": None,
            "method": "teacher",
            "seed": 0,
            "test_acc": 0.95,
            "teacher_test_acc": None,
            "hparams": "{}",
            "train_seconds": 100.0,
            "cpus": 1.0,
            "gpus": 0.0,
        },
        final("scratch", 0, 0.80),
        final("scratch", 1, 0.82),
        final("scratch", 2, 0.84),
        final("kd", 0, 0.86),
        final("kd", 1, 0.88),
        final("kd", 2, 0.87),
        final("kd", 3, None, status="failed"),  # failed rows do not count
        {**final("kd", 9, 0.10), "phase": "tune", "test_acc": None, "train_seconds": 72.0},
        # a second pair where scratch wins
        final("scratch", 0, 0.70, student="s2"),
        final("kd", 0, 0.60, student="s2"),
    ]
    return pd.DataFrame(data)


def test_per_pair_statistics_by_hand(rows):
    p = leaderboard(rows).pairs.set_index(["student", "method"])
    kd = p.loc[("s", "kd")]
    assert kd["n"] == 3
    assert kd["mean"] == pytest.approx(0.87)
    assert kd["std"] == pytest.approx(0.01)  # sample std of .86 .88 .87
    assert kd["ci95"] == pytest.approx(
        4.302653 * 0.01 / math.sqrt(3), rel=1e-5
    )  # t(.975, 2) = 4.3027
    assert kd["delta_scratch"] == pytest.approx(0.87 - 0.82)
    assert kd["gap_closed"] == pytest.approx((0.87 - 0.82) / (0.95 - 0.82))
    assert kd["rank"] == 1 and p.loc[("s", "scratch")]["rank"] == 2
    assert p.loc[("s", "scratch")]["delta_scratch"] == 0
    assert kd["teacher_acc"] == pytest.approx(0.95)
    assert math.isnan(p.loc[("s2", "kd")]["std"]) and math.isnan(p.loc[("s2", "kd")]["ci95"])
    assert p.loc[("s2", "kd")]["rank"] == 2


def test_welch_t_test_against_kd_by_hand(rows):
    p = leaderboard(rows).pairs.set_index(["student", "method"])
    # scratch 0.80 0.82 0.84 (std 0.02) against kd 0.86 0.88 0.87 (std 0.01)
    va, vb = 0.02**2 / 3, 0.01**2 / 3  # sample variances over n
    t = (0.82 - 0.87) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)  # Welch–Satterthwaite
    expected = 2 * stats.t.sf(abs(t), df)
    assert p.loc[("s", "scratch")]["p_vs_kd"] == pytest.approx(expected, rel=1e-6)
    # t = -3.873, df = 2.94 by hand: p = 0.0316
    assert expected == pytest.approx(0.0316, abs=5e-4) and p.loc[("s", "scratch")]["significant"]
    assert math.isnan(p.loc[("s", "kd")]["p_vs_kd"])
    assert math.isnan(p.loc[("s2", "scratch")]["p_vs_kd"])  # one seed each: no test


def test_overall_average_rank_and_win_rate(rows):
    overall = leaderboard(rows).overall.set_index("method")
    assert overall.loc["kd", "avg_rank"] == pytest.approx(1.5)
    assert overall.loc["kd", "pairs"] == 2 and overall.loc["kd", "wins"] == 1
    assert overall.loc["kd", "win_rate"] == pytest.approx(0.5)
    assert overall.loc["kd", "mean_delta_scratch"] == pytest.approx(
        ((0.87 - 0.82) + (0.60 - 0.70)) / 2
    )
    three = pd.DataFrame([final("scratch", 0, 0.8), final("kd", 0, 0.9), final("fitnet", 0, 0.9)])
    o = leaderboard(three).overall.set_index("method")
    assert o.loc["kd", "win_rate"] == pytest.approx(0.75)  # beat scratch, tied fitnet
    assert o.loc["scratch", "win_rate"] == 0


def test_cost_counts_every_phase_and_the_resources_held(rows):
    cost = leaderboard(rows).cost.set_index(["student", "method"])
    kd = cost.loc[("s", "kd")]
    assert kd["tune_trials"] == 1 and kd["final_trials"] == 4
    assert kd["cpu_hours"] == pytest.approx((72 + 4 * 36) / 3600)
    assert kd["tune_cpu_hours"] == pytest.approx(72 / 3600)
    assert kd["tune_pruned"] == kd["tune_failed"] == kd["confirm_trials"] == 0
    assert kd["gpu_hours"] == 0 and kd["images_seen"] == 500 and kd["student_params"] == 1000


def test_published_numbers_join_where_the_row_matches():
    data = [
        final("kd", s, 0.75 + s / 100, dataset="cifar100", teacher="resnet56", student="resnet20")
        for s in range(3)
    ]
    data += [
        final(
            "dd_dm",
            0,
            0.50,
            dataset="cifar10",
            teacher="convnet3",
            student="convnet3",
            hparams=json.dumps({"ipc": 10}),
        )
    ]
    p = leaderboard(pd.DataFrame(data), load_reference()).pairs.set_index("method")
    assert p.loc["kd", "published"] == pytest.approx(0.7066)
    assert p.loc["kd", "delta_published"] == pytest.approx(0.76 - 0.7066)
    assert "RepDistiller" in p.loc["kd", "published_source"]
    assert p.loc["dd_dm", "published"] == pytest.approx(0.489) and p.loc["dd_dm", "ipc"] == 10


def test_a_labelled_dd_cell_finds_its_methods_published_number_at_its_ipc():
    def dd(label, ipc):
        return final(
            label,
            0,
            0.5,
            dataset="cifar10",
            teacher="convnet3",
            student="convnet3",
            hparams=json.dumps({"ipc": ipc}),
        )

    rows = pd.DataFrame([dd("dd_dm_ipc1", 1), dd("dd_dm_ipc50", 50), dd("dd_dmx", 10)])
    p = leaderboard(rows, load_reference()).pairs.set_index("method")
    assert p.loc["dd_dm_ipc1", "published"] == pytest.approx(0.260)
    assert p.loc["dd_dm_ipc50", "published"] == pytest.approx(0.630)
    assert np.isnan(p.loc["dd_dmx", "published"])  # not a label of dd_dm


def test_renderers_mark_the_best_and_keep_numbers_raw(rows):
    board = leaderboard(rows)
    md = markdown(board)
    assert "### d: t → s (teacher 95.00%)" in md
    assert (
        "| kd | **87.00 ± 1.00** | 2.48 | 3 | **+5.00** | **38.46** | **1** | 1–1 | 100.0 | – | – "
        "| – |" in md
    )
    # scratch differs from kd (the best) after Holm's adjustment (one comparison): no †
    assert (
        "| scratch | 82.00 ± 2.00 | 4.97 | 3 | +0.00 | 0.00 | 2 | 2–2 | 0.0 | 0.032 | 0.032* |"
        in md
    )
    assert "| d | t | s | kd | 1 | 0 | 0 | 0 | 4 | 0.0200 | 0.0000 | 0.0600 |" in md  # cost
    # one seed per method: no bootstrap to trust, so no rank interval and no P(best)
    assert "| scratch | **70.00 ± –** | – | 1 | **+0.00** | **0.00** | **1** | – | – |" in md
    header = csv(board).splitlines()[0]
    assert header.startswith("dataset,teacher,student,method,n,mean,std,ci95")
    for column in (
        "rank_lo",
        "rank_hi",
        "p_best",
        "p_vs_best",
        "tied_with_best",
        "best_epoch_gain",
    ):
        assert f",{column}," in header
    data = json.loads(json_text(board))
    assert {"pairs", "overall", "cost"} <= set(data) and data["pairs"][0]["mean"] == pytest.approx(
        0.87
    )
    assert data["pairs"][0]["p_best"] == 1.0 and data["cost"][0]["tune_cpu_hours"] == 0.02
    page = html_page(board)
    assert (
        page.startswith("<!DOCTYPE html>") and '<strong class="best">87.00 ± 1.00</strong>' in page
    )
    tex = latex(board)
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\textbf{87.00 $\\pm$ 1.00}" in tex and "t $\\to$ s" in tex


def test_empty_results_say_so():
    empty = pd.DataFrame(
        columns=[
            "phase",
            "status",
            "dataset",
            "teacher",
            "student",
            "method",
            "seed",
            "test_acc",
            "teacher_test_acc",
            "hparams",
            "train_seconds",
            "cpus",
            "gpus",
            "student_params",
            "images_seen",
        ]
    )
    assert "nothing to rank" in markdown(leaderboard(empty))


def test_the_published_reference_data_parses_cleanly():
    ref = load_reference()
    # RepDistiller's two tables, the leaders', DD's (CIFAR and Tiny-ImageNet), ImageNet's
    assert len(ref) == 192 + 145 + 65 + 12 + 20
    keys = ["dataset", "teacher", "student", "method", "ipc"]
    assert not ref[keys].astype(str).duplicated().any()  # a second match would double a row
    assert ref["test_acc"].dtype == "float64" and ref["test_acc"].between(0.0, 1.0).all()
    assert ref["source"].notna().all() and set(ref["method"]) >= {"kd", "crd+kd", "dd_dm"}
    dd = ref[ref["teacher"].isna()]
    assert set(dd["ipc"]) == {1, 10, 50}
    assert set(dd["student"]) == {"convnet3", "convnet4", "resnet18"}  # resnet18: SRe2L's


def test_every_published_row_names_a_model_and_method_kdbench_has():
    """A distillation number that names a model or method kdbench lacks could never sit beside
    a measured one; the leaders' ``_ls`` rows are a method with ``logit_std`` on."""
    from kdbench.methods import method_class
    from kdbench.models import MODELS

    ref = load_reference()
    models = set(ref["teacher"].dropna()) | set(ref["student"])
    for name in models:  # a registered name, or one of a family (torchvision:resnet34)
        MODELS.get(name)
    # (dataset distillation's rows include DSA's, a method still to come)
    for label in set(ref.loc[ref["teacher"].notna(), "method"]) - {"teacher", "scratch"}:
        name = label.removesuffix("_ls")
        cls = method_class(name)
        if name != label:
            assert "logit_std" in {h.name for h in cls.hparams}, label
    assert {"ab", "ft", "fsp", "reviewkd", "mlkd", "ctkd", "dkd", "dist"} <= set(ref["method"])
