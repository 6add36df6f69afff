"""Renderers: a Leaderboard in, text out. Formatting happens here and only here."""

from __future__ import annotations

import math

import pandas as pd

from kdbench.results.leaderboard import PAIR_KEYS, Leaderboard
from kdbench.results.metrics import METRICS, Metric

FORMATS = ("markdown", "csv")


def fmt(value: object, metric: Metric) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    v = float(value) * (100 if metric.percent else 1)  # type: ignore[arg-type]
    if metric.digits == 0:
        return f"{v:.0f}"
    return f"{v:+.{metric.digits}f}" if metric.signed else f"{v:.{metric.digits}f}"


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(board: Leaderboard) -> str:
    if board.pairs.empty:
        return "No finished final trials yet: nothing to rank.\n"
    out = []
    m = METRICS
    for (dataset, teacher, student), group in board.pairs.groupby(PAIR_KEYS, sort=False):
        t_acc = group["teacher_acc"].iloc[0]
        title = f"### {dataset}: {teacher} → {student}"
        if not pd.isna(t_acc):
            title += f" (teacher {fmt(t_acc, m['mean'])}%)"
        rows = [
            [
                r.method,
                f"{fmt(r.mean, m['mean'])} ± {fmt(r.std, m['std'])}",
                fmt(r.n, m["n"]),
                fmt(r.delta_scratch, m["delta_scratch"]),
                fmt(r.gap_closed, m["gap_closed"]),
                fmt(r.rank, m["rank"]),
            ]
            for r in group.itertuples()
        ]
        out.append(
            title
            + "\n\n"
            + _md_table(
                ["method", "test acc (%)", "n", "Δ scratch", "gap closed (%)", "rank"],
                rows,
                ["l", "r", "r", "r", "r", "r"],
            )
        )
    rows = [
        [
            r.method,
            fmt(r.avg_rank, m["avg_rank"]),
            fmt(r.pairs, m["pairs"]),
            fmt(r.mean_delta_scratch, m["mean_delta_scratch"]),
        ]
        for r in board.overall.itertuples()
    ]
    out.append(
        "### Overall\n\n"
        + _md_table(["method", "avg rank", "pairs", "mean Δ scratch"], rows, ["l", "r", "r", "r"])
    )
    return "\n\n".join(out) + "\n"


def csv(board: Leaderboard) -> str:
    return board.pairs.to_csv(index=False)


def render(board: Leaderboard, fmt_name: str) -> str:
    return {"markdown": markdown, "csv": csv}[fmt_name](board)
