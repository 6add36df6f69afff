"""``kdbench report``: one self-contained HTML file (no network, no JavaScript) with the
leaderboard tables, per-pair bar charts with error bars, the critical-difference diagram of
the methods' average ranks (Friedman and Nemenyi), accuracy against cost, the sensitivity of
each tuned method to its hyperparameters, and dataset-distillation images.

What the rows hold is untrusted (results directories are shared): every value is escaped on
its way into the page, and only artifacts inside the results directory are embedded.
"""

from __future__ import annotations

import base64
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench._version import __version__
from kdbench.errors import KdbenchError
from kdbench.results import store
from kdbench.results.charts import Bar, Point, bar_chart, cd_diagram, scatter
from kdbench.results.layout import Layout
from kdbench.results.leaderboard import PAIR_KEYS, Friedman, Leaderboard, leaderboard
from kdbench.results.reference import load_reference
from kdbench.results.render import (
    FOOTNOTE,
    FRIEDMAN_TITLE,
    STYLE,
    escape_html,
    html_tables,
    one_line,
    pair_title,
)
from kdbench.results.runs import run_records


def _runs(results_dir: Path) -> list[dict]:
    return [
        {
            "run_id": record.run_id,
            "started_at": record.started_at,
            "git_sha": (record.run_json or {}).get("git_sha"),
            "source": (record.run_json or {}).get("source"),
        }
        for record in run_records(Layout(results_dir))
    ]


def _pair_chart(group: pd.DataFrame, key: tuple[str, str, str]) -> str:
    bars = [
        Bar(
            r.method,
            100 * r.mean,
            100 * r.std if pd.notna(r.std) else math.nan,
            100 * r.published if pd.notna(r.published) else math.nan,
        )
        for r in group.itertuples()
    ]
    lines = []
    t_acc = group["teacher_acc"].iloc[0]
    if pd.notna(t_acc):
        lines.append(("teacher", 100 * t_acc))
    return bar_chart(
        bars, title=f"test accuracy, {pair_title(*key, None)}", ylabel="test acc (%)", lines=lines
    )


def _cost_chart(board: Leaderboard) -> str:
    merged = board.pairs.merge(board.cost, on=[*PAIR_KEYS, "method"], how="inner")
    points = [
        Point(
            r.cpu_hours,
            100 * r.mean,
            f"{r.method} on {r.dataset} {r.teacher}→{r.student}: {100 * r.mean:.2f}%, "
            f"{r.cpu_hours:.4f} CPU-h",
            series=f"{r.dataset} {r.teacher}→{r.student}",
        )
        for r in merged.itertuples()
        if r.cpu_hours > 0
    ]
    return scatter(
        points,
        title="accuracy against cost",
        xlabel="CPU-hours (tuning + final)",
        ylabel="test acc (%)",
        log_x=True,
        names=len(points) <= 12,
    )


def _blocks(f: Friedman) -> str:
    if f.blocks == "seeds" and f.pair is not None:
        return f"the {f.n} seeds of the only pair, {pair_title(*f.pair, None)}"
    return f"{f.n} pairs"


def _cd_figure(f: Friedman) -> str:
    """The critical-difference diagram and a caption that says what its blocks were."""
    svg = cd_diagram(
        f.methods,
        f.avg_ranks,
        cd=f.cd,
        cliques=f.cliques,
        title=f"critical difference diagram: average ranks over {_blocks(f)}",
    )
    caption = (
        f"Each method at its average rank (1 = best) over {_blocks(f)}"
        + (
            ", taken as blocks: a seed's final trials share the student's initialisation and "
            "data order, so the methods' runs on one seed are paired. This says how "
            "consistently the methods rank on this pair, not how they fare on others"
            if f.blocks == "seeds"
            else ", the blocks"
        )
        + f". Bar: Nemenyi's critical difference at α = {f.alpha:g} (CD = {f.cd:.2f}); thick "
        "lines join methods whose average ranks differ by less than CD, which the test does "
        f"not tell apart. Friedman χ² = {f.statistic:.2f}, p = {f.p:.3g}"
        + ("." if f.significant else ": equal ranks not rejected, so no difference is significant.")
    )
    return f"<figure>{svg}<figcaption>{escape_html(caption)}</figcaption></figure>"


def _sensitivity(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(caption, svg): validation accuracy against each searched hyperparameter."""
    tune = rows[(rows["phase"] == "tune") & rows["val_acc"].notna()]
    out = []
    for (dataset, teacher, student, method), group in tune.groupby([*PAIR_KEYS, "method"]):
        for col in sorted(c for c in group.columns if c.startswith("hp_")):
            values = pd.to_numeric(group[col], errors="coerce")
            if values.nunique() < 2:
                continue
            positive = (values > 0).all()
            log_x = bool(positive and values.max() / values.min() > 20)
            points = [
                Point(
                    float(v),
                    100 * acc,
                    f"{col[3:]}={v:.4g}: {100 * acc:.2f}% ({status})",
                    hollow=status != "ok",
                )
                for v, acc, status in zip(values, group["val_acc"], group["status"], strict=True)
            ]
            caption = f"{method} on {dataset} {teacher}→{student}: val acc against {col[3:]}"
            out.append(
                (
                    caption,
                    scatter(
                        points, title=caption, xlabel=col[3:], ylabel="val acc (%)", log_x=log_x
                    ),
                )
            )
    return out


def _image_grids(rows: pd.DataFrame, results_dir: Path) -> list[tuple[str, str]]:
    """(caption, PNG data URI) for every artifact holding images (synthetic sets)."""
    out = []
    with_artifact = rows[rows["artifact"].notna() & (rows["phase"] == "final")]
    for r in with_artifact.drop_duplicates("artifact").itertuples():
        blob = _artifact_blob(r, results_dir)
        if blob is None:
            continue
        try:
            uri, count = _grid_uri(blob)
        except Exception as exc:  # a tensor of the wrong shape or kind, from a shared directory
            warnings.warn(
                f"trial {one_line(r.trial_id)}: artifact {one_line(r.artifact)} holds no images "
                f"to draw ({one_line(exc)}); not embedded",
                stacklevel=2,
            )
            continue
        out.append((f"{r.method} on {r.dataset} ({count} images, seed {r.seed})", uri))
    return out


def _artifact_blob(r: Any, results_dir: Path) -> dict | None:
    """What a row's artifact holds when it is a dict with ``images``; refused, with a
    warning, when its path leads outside the results directory."""
    import torch

    try:
        path = Layout(results_dir).artifact(r.artifact)
    except KdbenchError:
        warnings.warn(
            f"trial {one_line(r.trial_id)}: artifact {one_line(r.artifact)} is outside the "
            f"results directory {results_dir}; not read",
            stacklevel=3,
        )
        return None
    if path.suffix != ".pt" or not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(blob, dict) or not isinstance(blob.get("images"), torch.Tensor):
        return None
    return blob


def _grid_uri(blob: dict) -> tuple[str, int]:
    """A synthetic set's images as one PNG grid (a row per class), as a data URI."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    images = blob["images"].float()
    labels = blob.get("labels")
    if isinstance(labels, torch.Tensor) and len(labels) == len(images):
        order = torch.argsort(labels, stable=True)
        images = images[order]
        per_class = int(torch.bincount(labels).max())
    else:
        per_class = 10
    grid = make_grid(images, nrow=max(per_class, 1), normalize=True, scale_each=True, padding=1)
    array = (grid.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
    img = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
    scale = max(1, 256 // max(img.size))
    img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), len(images)


def build_report(results_dir: str | os.PathLike[str]) -> str:
    root = Path(results_dir)
    rows = store.load(root)
    board = leaderboard(rows, load_reference())
    runs = _runs(root)
    suites = ", ".join(sorted(rows["suite"].dropna().unique())) or root.name
    title = f"kdbench report: {suites}"
    parts = [f"<h1>{escape_html(title)}</h1>"]
    counts = rows.groupby(["phase", "status"]).size() if len(rows) else pd.Series(dtype=int)
    summary = ", ".join(f"{n} {phase} {status}" for (phase, status), n in counts.items())
    parts.append(
        f'<p class="note">{len(rows)} result rows ({escape_html(summary)}) in '
        f"{escape_html(str(root))}; {len(runs)} runs; kdbench {__version__}.</p>"
    )
    tables = html_tables(board)
    if board.pairs.empty:
        parts.append("<p>No finished final trials yet: nothing to rank.</p>")
    for key, group in board.pairs.groupby(PAIR_KEYS, sort=False):
        t_title = pair_title(*key, group["teacher_acc"].iloc[0])
        parts.append(
            f"<h2>{escape_html(t_title)}</h2>{tables[t_title]}"
            f"<figure>{_pair_chart(group, key)}<figcaption>Mean test accuracy over the final "
            "seeds, ± one standard deviation; dashed: the teacher; ◇: the published number."
            "</figcaption></figure>"
        )
    if not board.pairs.empty:
        parts.append(f"<h2>Overall</h2>{tables['Overall']}")
    if board.friedman is not None:
        parts.append(
            f"<h2>{escape_html(FRIEDMAN_TITLE)}</h2>{_cd_figure(board.friedman)}"
            f"{tables[FRIEDMAN_TITLE]}"
        )
    parts.append(f"<h2>Cost</h2>{tables['Cost']}")
    if not board.pairs.empty:
        parts.append(
            f"<figure>{_cost_chart(board)}<figcaption>Each point is a method on a pair: its "
            "mean test accuracy against the CPU-hours its tuning and final trials took."
            "</figcaption></figure>"
        )
    sens = _sensitivity(rows)
    if sens:
        parts.append(
            '<h2>Hyperparameter sensitivity</h2><p class="note">Every tuning trial: '
            "validation accuracy against each searched hyperparameter; hollow points "
            "were pruned or failed.</p>"
        )
        parts += [
            f"<figure>{svg}<figcaption>{escape_html(c)}</figcaption></figure>" for c, svg in sens
        ]
    grids = _image_grids(rows, root)
    if grids:
        parts.append("<h2>Dataset distillation: synthetic sets</h2>")
        parts += [
            f'<figure><img alt="{escape_html(c)}" src="{uri}"><figcaption>{escape_html(c)}'
            "</figcaption></figure>"
            for c, uri in grids
        ]
    if runs:
        run_rows = "".join(
            f"<tr><td>{escape_html(str(r['run_id']))}</td><td>{escape_html(str(r['started_at']))}"
            f"</td><td>{escape_html(str(r['git_sha']))}</td><td>{escape_html(str(r['source']))}"
            "</td></tr>"
            for r in runs
        )
        parts.append(
            "<h2>Runs</h2><table><thead><tr><th>run</th><th>started</th><th>git</th>"
            f"<th>suite file</th></tr></thead><tbody>{run_rows}</tbody></table>"
        )
    parts.append(f'<p class="note">{escape_html(FOOTNOTE)}</p>')
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape_html(title)}'
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_report(results_dir: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(results_dir))
    return out
