"""The leaderboard's numbers on a hand-made DataFrame, checked against hand computation."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from kdbench.results.leaderboard import leaderboard
from kdbench.results.render import csv, markdown


def final(method, seed, acc, teacher="t", student="s", dataset="d", status="ok"):
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
        },
        final("scratch", 0, 0.80),
        final("scratch", 1, 0.82),
        final("scratch", 2, 0.84),
        final("kd", 0, 0.86),
        final("kd", 1, 0.88),
        final("kd", 2, 0.87),
        final("kd", 3, None, status="failed"),  # failed rows do not count
        {**final("kd", 9, 0.10), "phase": "tune"},  # nor do tune rows
        # a second pair where scratch wins
        final("scratch", 0, 0.70, student="s2"),
        final("kd", 0, 0.60, student="s2"),
    ]
    return pd.DataFrame(data)


def test_per_pair_statistics_by_hand(rows):
    board = leaderboard(rows)
    p = board.pairs.set_index(["student", "method"])
    kd = p.loc[("s", "kd")]
    assert kd["n"] == 3
    assert kd["mean"] == pytest.approx(0.87)
    assert kd["std"] == pytest.approx(0.01)  # sample std of .86 .88 .87
    assert kd["delta_scratch"] == pytest.approx(0.87 - 0.82)
    assert kd["gap_closed"] == pytest.approx((0.87 - 0.82) / (0.95 - 0.82))
    assert kd["rank"] == 1 and p.loc[("s", "scratch")]["rank"] == 2
    assert p.loc[("s", "scratch")]["delta_scratch"] == 0
    assert p.loc[("s", "kd")]["teacher_acc"] == pytest.approx(0.95)
    assert math.isnan(p.loc[("s2", "kd")]["std"])  # one seed: no spread
    assert p.loc[("s2", "kd")]["rank"] == 2


def test_overall_average_rank(rows):
    overall = leaderboard(rows).overall.set_index("method")
    assert overall.loc["kd", "avg_rank"] == pytest.approx(1.5)
    assert overall.loc["scratch", "avg_rank"] == pytest.approx(1.5)
    assert overall.loc["kd", "pairs"] == 2
    assert overall.loc["kd", "mean_delta_scratch"] == pytest.approx(
        ((0.87 - 0.82) + (0.60 - 0.70)) / 2
    )


def test_renderers_format_but_keep_numbers_out_of_the_table(rows):
    board = leaderboard(rows)
    md = markdown(board)
    assert "### d: t → s (teacher 95.00%)" in md
    assert "| kd | 87.00 ± 1.00 | 3 | +5.00 | 38.46 | 1 |" in md
    text = csv(board)
    assert text.splitlines()[0].startswith("dataset,teacher,student,method,n,mean,std")
    assert board.pairs["mean"].dtype == "float64"


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
        ]
    )
    assert "nothing to rank" in markdown(leaderboard(empty))
