"""Renderers: a Leaderboard in, text out. Formatting happens here and only here.

The rich formats (Markdown, HTML, LaTeX) mark the best value of each score column per pair;
CSV and JSON keep raw numbers for further analysis.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterator

import pandas as pd

from kdbench.results.leaderboard import PAIR_KEYS, Leaderboard, best_rows
from kdbench.results.metrics import COST_METRICS, METRICS, OVERALL_METRICS, Metric

FORMATS = ("markdown", "csv", "html", "latex", "json")

# What the per-pair tables show, in order; mean and std are drawn together.
PAIR_SHOWN = (
    "mean",
    "ci95",
    "n",
    "delta_scratch",
    "gap_closed",
    "rank",
    "p_vs_kd",
    "published",
    "delta_published",
)


def missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt(value: object, metric: Metric) -> str:
    if missing(value):
        return "–"
    v = float(value) * (100 if metric.percent else 1)  # type: ignore[arg-type]
    if metric.digits == 0:
        return f"{v:,.0f}"
    return f"{v:+.{metric.digits}f}" if metric.signed else f"{v:.{metric.digits}f}"


def pair_title(dataset: str, teacher: str, student: str, teacher_acc: float | None) -> str:
    title = f"{dataset}: {teacher} → {student}"
    if not missing(teacher_acc):
        title += f" (teacher {fmt(teacher_acc, METRICS['mean'])}%)"
    return title


def _cells(row: pd.Series, best: dict[str, bool], mark: Callable[[str], str]) -> list[str]:
    out = [str(row["method"])]
    for col in PAIR_SHOWN:
        m = METRICS[col]
        text = fmt(row[col], m)
        if col == "mean":
            text += f" ± {fmt(row['std'], METRICS['std'])}"
        if col == "p_vs_kd" and row.get("significant") is True:
            text += "*"
        out.append(mark(text) if best.get(col) else text)
    return out


def _pair_groups(board: Leaderboard) -> Iterator[tuple[str, pd.DataFrame, list[dict[str, bool]]]]:
    """(title, group, per-row {column: is best}) for each pair."""
    for (dataset, teacher, student), group in board.pairs.groupby(PAIR_KEYS, sort=False):
        flags = {
            c: best_rows(group, c, bool(METRICS[c].higher_is_better))
            for c in PAIR_SHOWN
            if METRICS[c].higher_is_better is not None
        }
        per_row = [{c: bool(flags[c].loc[i]) for c in flags} for i in group.index]
        yield pair_title(dataset, teacher, student, group["teacher_acc"].iloc[0]), group, per_row


def _headers() -> list[str]:
    return ["method", *(METRICS[c].label for c in PAIR_SHOWN)]


def _simple_rows(
    frame: pd.DataFrame, metrics: tuple[Metric, ...], keys: list[str]
) -> list[list[str]]:
    return [
        [str(r[k]) for k in keys] + [fmt(r[m.column], m) for m in metrics]
        for _, r in frame.iterrows()
    ]


# ----------------------------------------------------------------------------- Markdown


def _md_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] * left + ["---:"] * (len(header) - left)) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(board: Leaderboard) -> str:
    if board.pairs.empty:
        return "No finished final trials yet: nothing to rank.\n"
    out = []
    for title, group, best in _pair_groups(board):
        rows = [
            _cells(r, b, lambda t: f"**{t}**")
            for (_, r), b in zip(group.iterrows(), best, strict=True)
        ]
        out.append(f"### {title}\n\n" + _md_table(_headers(), rows))
    out.append(
        "### Overall\n\n"
        + _md_table(
            ["method", *(m.label for m in OVERALL_METRICS)],
            _simple_rows(board.overall, OVERALL_METRICS, ["method"]),
        )
    )
    out.append(
        "### Cost\n\n"
        + _md_table(
            ["data set", "teacher", "student", "method", *(m.label for m in COST_METRICS)],
            _simple_rows(board.cost, COST_METRICS, [*PAIR_KEYS, "method"]),
            left=4,
        )
    )
    return "\n\n".join(out) + "\n\n" + FOOTNOTE + "\n"


FOOTNOTE = (
    "Bold: the best value of a column in its pair. p vs kd: Welch's t-test against kd's "
    "seeds (* p < 0.05). 95% CI ±: half-width of the confidence interval of the mean."
)


# ----------------------------------------------------------------------------- CSV / JSON


def csv(board: Leaderboard) -> str:
    return board.pairs.to_csv(index=False)


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def json_text(board: Leaderboard) -> str:
    return (
        json.dumps(
            {
                "pairs": _records(board.pairs),
                "overall": _records(board.overall),
                "cost": _records(board.cost),
            },
            indent=2,
        )
        + "\n"
    )


# ----------------------------------------------------------------------------- HTML


def _html_table(header: list[str], rows: list[list[str]], classes: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_tables(board: Leaderboard) -> dict[str, str]:
    """Each pair's table, the overall table and the cost table, as HTML fragments."""
    out: dict[str, str] = {}
    for title, group, best in _pair_groups(board):
        rows = [
            [
                html.escape(c) if i == 0 else c
                for i, c in enumerate(
                    _cells(r, b, lambda t: f'<strong class="best">{html.escape(t)}</strong>')
                )
            ]
            for (_, r), b in zip(group.iterrows(), best, strict=True)
        ]
        out[title] = _html_table(_headers(), rows, "pair")
    out["Overall"] = _html_table(
        ["method", *(m.label for m in OVERALL_METRICS)],
        _simple_rows(board.overall, OVERALL_METRICS, ["method"]),
    )
    out["Cost"] = _html_table(
        ["data set", "teacher", "student", "method", *(m.label for m in COST_METRICS)],
        _simple_rows(board.cost, COST_METRICS, [*PAIR_KEYS, "method"]),
    )
    return out


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;color:#1b1b1b;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4}
strong.best{color:#0b5d1e}
h2{margin-top:2.5rem;border-bottom:2px solid #333}
.note{color:#555;font-size:.9rem}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figcaption{font-size:.85rem;color:#444}
"""


def html_page(board: Leaderboard, title: str = "kdbench leaderboard") -> str:
    sections = "".join(
        f"<h2>{html.escape(t)}</h2>{table}" for t, table in html_tables(board).items()
    )
    if board.pairs.empty:
        sections = "<p>No finished final trials yet: nothing to rank.</p>"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{sections}"
        f'<p class="note">{html.escape(FOOTNOTE)}</p></body></html>\n'
    )


# ----------------------------------------------------------------------------- LaTeX


def _tex(text: str) -> str:
    return (
        text.replace("\\", r"\textbackslash{}")
        .replace("&", r"\&")
        .replace("%", r"\%")
        .replace("_", r"\_")
        .replace("#", r"\#")
        .replace("±", r"$\pm$")
        .replace("→", r"$\to$")
        .replace("Δ", r"$\Delta$")
        .replace("–", "--")
    )


def latex(board: Leaderboard) -> str:
    """booktabs tables, one per pair, best values in bold: ready for ``\\usepackage{booktabs}``."""
    if board.pairs.empty:
        return "% No finished final trials yet: nothing to rank.\n"
    out = ["% kdbench leaderboard; needs \\usepackage{booktabs}"]
    for title, group, best in _pair_groups(board):
        rows = [
            " & ".join(
                _tex(c).replace("\x01", "\\textbf{").replace("\x02", "}")
                for c in _cells(r, b, lambda t: f"\x01{t}\x02")
            )
            for (_, r), b in zip(group.iterrows(), best, strict=True)
        ]
        header = " & ".join(_tex(h) for h in _headers())
        out.append(
            "\n".join(
                [
                    "\\begin{table}[t]",
                    "\\centering",
                    f"\\caption{{{_tex(title)}}}",
                    "\\begin{tabular}{l" + "r" * len(PAIR_SHOWN) + "}",
                    "\\toprule",
                    header + " \\\\",
                    "\\midrule",
                    *(r + " \\\\" for r in rows),
                    "\\bottomrule",
                    "\\end{tabular}",
                    "\\end{table}",
                ]
            )
        )
    return "\n\n".join(out) + "\n"


def render(board: Leaderboard, fmt_name: str) -> str:
    return {"markdown": markdown, "csv": csv, "html": html_page, "latex": latex, "json": json_text}[
        fmt_name
    ](board)
