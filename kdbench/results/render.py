"""Renderers: a Leaderboard in, text out. Formatting happens here and only here.

The rich formats (Markdown, HTML, LaTeX) mark the best value of each score column per pair,
and with a † the methods the pair's best cannot be told apart from (``tied_with_best``); they
add the Friedman test of the average ranks. CSV and JSON keep raw numbers for further
analysis (JSON with the Friedman test under ``friedman``).

Names in the tables (method, data set, teacher, student) come from result rows, which anyone
who shares the results directory can write: every one is escaped for its format on its way
out (``escape_html``, ``escape_markdown``, ``escape_latex``), and loses its control
characters (a newline would break a table's row, a terminal escape would reach the terminal).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import pandas as pd

from kdbench.results.leaderboard import BOOTSTRAP, PAIR_KEYS, Friedman, Leaderboard, best_rows
from kdbench.results.metrics import COST_METRICS, METRICS, OVERALL_METRICS, Metric

# What the per-pair tables show, in order; mean and std are drawn together, and so are
# rank_lo and rank_hi.
PAIR_SHOWN = (
    "mean",
    "ci95",
    "n",
    "delta_scratch",
    "gap_closed",
    "rank",
    "rank_lo",
    "p_best",
    "p_vs_best",
    "p_vs_kd",
    "best_epoch_gain",
    "published",
    "delta_published",
)
DD_SHOWN = ("ior", "hlr", "dd_score")
"""Shown, before ``published``, in a pair that has dataset-distillation rows (DD-Ranking)."""
TIED = "†"
"""After the name of a method the pair's best cannot be told apart from."""


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_MARKDOWN = re.compile(r"([\\`*<>\[\]|&~#])")
_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "→": r"$\to$",
    "Δ": r"$\Delta$",
    "–": "--",
    "−": "$-$",
    "†": r"$^\dagger$",
    "χ": r"$\chi$",
    "²": r"\textsuperscript{2}",
    "α": r"$\alpha$",
    "≥": r"$\geq$",
}


def one_line(value: object) -> str:
    """A value as text on one line: control characters (newlines, escapes) become spaces."""
    return _CONTROL.sub(" ", str(value))


def escape_html(value: object) -> str:
    """Text for HTML and SVG, in an element or a quoted attribute."""
    return html.escape(one_line(value), quote=True)


def escape_markdown(value: object) -> str:
    """Text for a Markdown heading or table cell: no markup, links, HTML or column breaks."""
    return _MARKDOWN.sub(r"\\\1", one_line(value))


def escape_latex(value: object) -> str:
    """Text for LaTeX's text mode: every special character typeset as itself."""
    return "".join(_LATEX.get(c, c) for c in one_line(value))


@dataclass(frozen=True)
class _Style:
    """How a format writes its cells: a value from the rows, its own text, a best value."""

    value: Callable[[object], str]
    text: Callable[[str], str]
    best: Callable[[str], str]


MARKDOWN = _Style(escape_markdown, str, lambda t: f"**{t}**")
HTML = _Style(escape_html, escape_html, lambda t: f'<strong class="best">{t}</strong>')
LATEX = _Style(escape_latex, escape_latex, lambda t: f"\\textbf{{{t}}}")


def tied(row: pd.Series) -> bool:
    """Marked †: tied with the pair's best, not being it (the best has no p vs itself)."""
    flag = row.get("tied_with_best")
    return not missing(flag) and bool(flag) and not missing(row.get("p_vs_best"))


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


def shown(group: pd.DataFrame) -> tuple[str, ...]:
    """The columns of a pair's table: DD-Ranking's where the pair has a score."""
    if not any(c in group and group[c].notna().any() for c in DD_SHOWN):
        return PAIR_SHOWN
    at = PAIR_SHOWN.index("published")
    return (*PAIR_SHOWN[:at], *DD_SHOWN, *PAIR_SHOWN[at:])


def _cells(
    row: pd.Series, best: dict[str, bool], style: _Style, columns: tuple[str, ...]
) -> list[str]:
    out = [style.value(row["method"]) + (style.text(f" {TIED}") if tied(row) else "")]
    for col in columns:
        m = METRICS[col]
        text = fmt(row[col], m)
        if col == "mean":
            text += f" ± {fmt(row['std'], METRICS['std'])}"
        if col == "rank_lo" and not missing(row[col]):
            text += f"–{fmt(row['rank_hi'], METRICS['rank_hi'])}"
        if col == "p_vs_kd" and row.get("significant") is True:
            text += "*"
        text = style.text(text)
        out.append(style.best(text) if best.get(col) else text)
    return out


def _pair_groups(
    board: Leaderboard,
) -> Iterator[tuple[str, pd.DataFrame, list[dict[str, bool]], tuple[str, ...]]]:
    """(title, group, per-row {column: is best}, the columns shown) for each pair."""
    for (dataset, teacher, student), group in board.pairs.groupby(PAIR_KEYS, sort=False):
        columns = shown(group)
        flags = {
            c: best_rows(group, c, bool(METRICS[c].higher_is_better))
            for c in columns
            if METRICS[c].higher_is_better is not None
        }
        per_row = [{c: bool(flags[c].loc[i]) for c in flags} for i in group.index]
        title = pair_title(dataset, teacher, student, group["teacher_acc"].iloc[0])
        yield title, group, per_row, columns


def _headers(columns: tuple[str, ...]) -> list[str]:
    return ["method", *(METRICS[c].label for c in columns)]


def _simple_rows(
    frame: pd.DataFrame, metrics: tuple[Metric, ...], keys: list[str], style: _Style
) -> list[list[str]]:
    return [
        [style.value(r[k]) for k in keys] + [style.text(fmt(r[m.column], m)) for m in metrics]
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
    for title, group, best, cols in _pair_groups(board):
        rows = [
            _cells(r, b, MARKDOWN, cols) for (_, r), b in zip(group.iterrows(), best, strict=True)
        ]
        out.append(f"### {escape_markdown(title)}\n\n" + _md_table(_headers(cols), rows))
    out.append(
        "### Overall\n\n"
        + _md_table(
            ["method", *(m.label for m in OVERALL_METRICS)],
            _simple_rows(board.overall, OVERALL_METRICS, ["method"], MARKDOWN),
        )
    )
    if board.friedman is not None:
        f = board.friedman
        out.append(
            f"### {FRIEDMAN_TITLE}\n\n{friedman_summary(f, MARKDOWN)}\n\n"
            + _md_table(["method", "average rank"], _friedman_rows(f, MARKDOWN))
        )
    out.append(
        "### Cost\n\n"
        + _md_table(
            ["data set", "teacher", "student", "method", *(m.label for m in COST_METRICS)],
            _simple_rows(board.cost, COST_METRICS, [*PAIR_KEYS, "method"], MARKDOWN),
            left=4,
        )
    )
    return "\n\n".join(out) + "\n\n" + FOOTNOTE + "\n"


FOOTNOTE = (
    "Bold: the best value of a column in its pair. Every accuracy is the last epoch's. "
    "p vs kd: Welch's t-test against kd's seeds (* p < 0.05). "
    "p vs best: Welch's t-test against the pair's best method, Holm-adjusted over the pair; "
    f"{TIED}: not significantly different from the best (adjusted p ≥ 0.05). "
    f"rank 95%: the 2.5–97.5% range of the method's rank over {BOOTSTRAP:,} bootstrap "
    "resamples of every method's seeds; P(best): the share of resamples it ranks first in. "
    "best − last: mean over the seeds of the best epoch's test accuracy minus the last's, "
    "what reporting the best epoch would add. IOR (dataset distillation): the set's accuracy "
    "minus a random real subset's of the same ipc evaluated the same way; HLR: scratch on "
    "the whole data minus the set's hard-label accuracy; LRS: DD-Ranking's score of the two, "
    "(e^α − e^−1)/(e − e^−1) with α = IOR/2 − HLR/2. "
    "95% CI ±: half-width of the confidence "
    "interval of the mean."
)
FRIEDMAN_TITLE = "Average ranks: Friedman test and Nemenyi critical difference"


def friedman_summary(f: Friedman, style: _Style) -> str:
    """What the test compared and found, in one line of the style's text (names escaped)."""
    if f.blocks == "seeds" and f.pair is not None:
        over = (
            style.text(f"Friedman test over the N = {f.n} seeds of the only pair, ")
            + style.value(pair_title(*f.pair, None))
            + style.text(
                ", as blocks (a seed's final trials share the student's initialisation and "
                f"data order), and k = {f.k} methods: "
            )
        )
    else:
        over = (
            style.text(f"Friedman test over N = {f.n} pairs as blocks (")
            + style.text(", ").join(style.value(b) for b in f.block_labels)
            + style.text(f") and k = {f.k} methods, those every one of them holds: ")
        )
    found = style.text(
        f"χ² = {f.statistic:.2f}, p = {f.p:.3g}; Nemenyi's critical difference at α = "
        f"{f.alpha:g}: CD = {f.cd:.2f}. "
    )
    if not f.significant:
        found += style.text(
            f"Friedman does not reject that the methods rank alike (p ≥ {f.alpha:g}): no two "
            "differ significantly, whatever their distance. "
        )
    if f.cliques:
        groups = "; ".join(", ".join(style.value(m) for m in c) for c in f.cliques)
        found += (
            style.text("Average ranks within CD of each other (not significantly different): ")
            + groups
            + style.text(".")
        )
    else:
        found += style.text("Every two average ranks are at least CD apart.")
    return over + found


def _friedman_rows(f: Friedman, style: _Style) -> list[list[str]]:
    return [
        [style.value(m), style.text(f"{r:.2f}")]
        for m, r in zip(f.methods, f.avg_ranks, strict=True)
    ]


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
                "friedman": None if board.friedman is None else asdict(board.friedman),
            },
            indent=2,
        )
        + "\n"
    )


# ----------------------------------------------------------------------------- HTML


def _html_table(
    header: list[str],
    rows: list[list[str]],
    classes: str = "",
    row_classes: list[str] | None = None,
) -> str:
    """``rows``: cells already HTML; ``row_classes``: one (ours, not from rows) per row."""
    head = "".join(f"<th>{escape_html(h)}</th>" for h in header)
    kinds = row_classes or [""] * len(rows)
    body = "".join(
        (f'<tr class="{k}">' if k else "<tr>") + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
        for r, k in zip(rows, kinds, strict=True)
    )
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_friedman(f: Friedman) -> str:
    """The Friedman test's summary and the average ranks, as an HTML fragment."""
    return f'<p class="note">{friedman_summary(f, HTML)}</p>' + _html_table(
        ["method", "average rank"], _friedman_rows(f, HTML)
    )


def html_tables(board: Leaderboard) -> dict[str, str]:
    """Each pair's table, the overall table and the cost table, as HTML fragments (keyed by
    their titles as text: escape a title on its way into HTML)."""
    out: dict[str, str] = {}
    for title, group, best, cols in _pair_groups(board):
        rows = [_cells(r, b, HTML, cols) for (_, r), b in zip(group.iterrows(), best, strict=True)]
        kinds = ["tied" if tied(r) else "" for _, r in group.iterrows()]
        out[title] = _html_table(_headers(cols), rows, "pair", kinds)
    out["Overall"] = _html_table(
        ["method", *(m.label for m in OVERALL_METRICS)],
        _simple_rows(board.overall, OVERALL_METRICS, ["method"], HTML),
    )
    if board.friedman is not None:
        out[FRIEDMAN_TITLE] = html_friedman(board.friedman)
    out["Cost"] = _html_table(
        ["data set", "teacher", "student", "method", *(m.label for m in COST_METRICS)],
        _simple_rows(board.cost, COST_METRICS, [*PAIR_KEYS, "method"], HTML),
    )
    return out


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;color:#1b1b1b;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4}
strong.best{color:#0b5d1e}
tr.tied td:first-child{font-style:italic}
table.pair td{white-space:nowrap}
h2{margin-top:2.5rem;border-bottom:2px solid #333}
.note{color:#555;font-size:.9rem}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figcaption{font-size:.85rem;color:#444}
"""


def html_page(board: Leaderboard, title: str = "kdbench leaderboard") -> str:
    sections = "".join(
        f"<h2>{escape_html(t)}</h2>{table}" for t, table in html_tables(board).items()
    )
    if board.pairs.empty:
        sections = "<p>No finished final trials yet: nothing to rank.</p>"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape_html(title)}'
        f"</title><style>{STYLE}</style></head><body><h1>{escape_html(title)}</h1>{sections}"
        f'<p class="note">{escape_html(FOOTNOTE)}</p></body></html>\n'
    )


# ----------------------------------------------------------------------------- LaTeX


def latex(board: Leaderboard) -> str:
    """booktabs tables, one per pair, best values in bold: ready for ``\\usepackage{booktabs}``."""
    if board.pairs.empty:
        return "% No finished final trials yet: nothing to rank.\n"
    out = ["% kdbench leaderboard; needs \\usepackage{booktabs}"]
    for title, group, best, cols in _pair_groups(board):
        rows = [
            " & ".join(_cells(r, b, LATEX, cols))
            for (_, r), b in zip(group.iterrows(), best, strict=True)
        ]
        header = " & ".join(escape_latex(h) for h in _headers(cols))
        out.append(
            "\n".join(
                [
                    "\\begin{table}[t]",
                    "\\centering",
                    f"\\caption{{{escape_latex(title)}}}",
                    "\\begin{tabular}{l" + "r" * len(cols) + "}",
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
    if board.friedman is not None:
        out.append(
            f"\\paragraph{{{escape_latex(FRIEDMAN_TITLE)}.}} {friedman_summary(board.friedman, LATEX)}"
        )
    out.append(escape_latex(FOOTNOTE))
    return "\n\n".join(out) + "\n"


def render(board: Leaderboard, fmt_name: str) -> str:
    renderers = {
        "markdown": markdown,
        "csv": csv,
        "html": html_page,
        "latex": latex,
        "json": json_text,
    }
    return renderers[fmt_name](board)
