"""Small SVG charts for the report: no plotting library, no network, no JavaScript.

Labels and titles come from result rows (untrusted): every one goes through ``escape_html``,
which suits SVG inline in HTML and standalone SVG alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kdbench.results.render import escape_html

W, H = 520, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 24, 70
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _ticks(lo: float, hi: float, cap: float | None) -> list[float]:
    """Nice ticks covering [lo, hi]; none above ``cap`` (100 for percentages) when hi ≤ cap."""
    ticks = _nice_ticks(lo, hi)
    if cap is not None and hi <= cap + 1e-9 and ticks[-1] > cap:
        ticks = [t for t in ticks if t < cap] + [cap]
    return ticks


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        hi = lo + 1.0
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for mult in (1, 2, 2.5, 5, 10):
        if (hi - lo) / (step * mult) <= n:
            step *= mult
            break
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(math.ceil((hi - start) / step) + 1)]


def _svg(body: str, title: str, width: float = W, height: float = H) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}" role="img" aria-label="{escape_html(title)}">'
        f"<title>{escape_html(title)}</title>"
        f'<rect width="{width:g}" height="{height:g}" fill="white"/>{body}</svg>'
    )


def _axis(y_ticks: list[float], y: Callable[[float], float], label: str, fmt: str = "{:g}") -> str:
    out = [
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#333"/>',
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#333"/>',
    ]
    for t in y_ticks:
        yy = y(t)
        out.append(
            f'<line x1="{LEFT - 4}" y1="{yy:.1f}" x2="{W - RIGHT}" y2="{yy:.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">'
            f"{fmt.format(t)}</text>"
        )
    out.append(
        f'<text x="14" y="{(TOP + H - BOTTOM) / 2:.0f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2:.0f})">{escape_html(label)}</text>'
    )
    return "".join(out)


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    error: float = float("nan")
    reference: float = float("nan")
    """A published value, drawn as a diamond."""


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    ylabel: str,
    lines: Sequence[tuple[str, float]] = (),
    cap: float | None = 100.0,
) -> str:
    """Bars with ± error bars; horizontal reference lines (e.g. teacher, scratch)."""
    # Values come from rows: one that is not finite has no height to draw.
    bars = [b for b in bars if math.isfinite(b.value)]
    lines = [(name, v) for name, v in lines if math.isfinite(v)]
    if not bars:
        return _svg(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text>', title)
    values = [b.value for b in bars] + [
        b.value - (b.error if math.isfinite(b.error) else 0) for b in bars
    ]
    values += [b.value + (b.error if math.isfinite(b.error) else 0) for b in bars]
    values += [v for _, v in lines] + [b.reference for b in bars if math.isfinite(b.reference)]
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.15, 1e-3)
    ticks = _ticks(lo - pad, min(hi + pad, cap) if cap is not None and hi <= cap else hi + pad, cap)
    y0, y1 = ticks[0], ticks[-1]

    def y(v: float) -> float:
        return TOP + (H - BOTTOM - TOP) * (1 - (v - y0) / (y1 - y0))

    slot = (W - LEFT - RIGHT) / max(len(bars), 1)
    out = [_axis(ticks, y, ylabel)]
    for i, b in enumerate(bars):
        x = LEFT + slot * i + slot * 0.2
        w = slot * 0.6
        color = PALETTE[i % len(PALETTE)]
        out.append(
            f'<rect x="{x:.1f}" y="{y(b.value):.1f}" width="{w:.1f}" '
            f'height="{max(y(y0) - y(b.value), 0):.1f}" fill="{color}" opacity="0.85">'
            f"<title>{escape_html(b.label)}: {b.value:.4g}</title></rect>"
        )
        cx = x + w / 2
        if math.isfinite(b.error) and b.error > 0:
            top, bot = y(b.value + b.error), y(b.value - b.error)
            out.append(
                f'<line x1="{cx:.1f}" y1="{top:.1f}" x2="{cx:.1f}" y2="{bot:.1f}" stroke="#111"/>'
                f'<line x1="{cx - 6:.1f}" y1="{top:.1f}" x2="{cx + 6:.1f}" y2="{top:.1f}" stroke="#111"/>'
                f'<line x1="{cx - 6:.1f}" y1="{bot:.1f}" x2="{cx + 6:.1f}" y2="{bot:.1f}" stroke="#111"/>'
            )
        if math.isfinite(b.reference):
            ry = y(b.reference)
            out.append(
                f'<path d="M{cx:.1f} {ry - 6:.1f} L{cx + 6:.1f} {ry:.1f} L{cx:.1f} {ry + 6:.1f} '
                f'L{cx - 6:.1f} {ry:.1f} Z" fill="white" stroke="#111">'
                f"<title>published: {b.reference:.4g}</title></path>"
            )
        out.append(
            f'<text x="{cx:.1f}" y="{H - BOTTOM + 14}" font-size="11" text-anchor="end" '
            f'transform="rotate(-35 {cx:.1f} {H - BOTTOM + 14})">{escape_html(b.label)}</text>'
        )
    for name, v in lines:
        out.append(
            f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{W - RIGHT}" y2="{y(v):.1f}" stroke="#444" '
            f'stroke-dasharray="5 4"/><text x="{W - RIGHT - 2}" y="{y(v) - 4:.1f}" font-size="11" '
            f'text-anchor="end">{escape_html(name)}</text>'
        )
    return _svg("".join(out), title)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    series: str = ""
    hollow: bool = False


def scatter(
    points: Sequence[Point],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    cap: float | None = 100.0,
    names: bool = False,
) -> str:
    """Points coloured by series; hollow points for, e.g., pruned trials."""
    pts = [
        p for p in points if math.isfinite(p.x) and math.isfinite(p.y) and (p.x > 0 or not log_x)
    ]
    if not pts:
        return _svg(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text>', title)
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    xs, ys = [tx(p.x) for p in pts], [p.y for p in pts]
    xpad = max((max(xs) - min(xs)) * 0.08, 1e-3)
    ypad = max((max(ys) - min(ys)) * 0.1, 1e-3)
    x0, x1 = min(xs) - xpad, max(xs) + xpad
    top = min(max(ys) + ypad, cap) if cap is not None and max(ys) <= cap else max(ys) + ypad
    yt = _ticks(min(ys) - ypad, top, cap)
    y0, y1 = yt[0], yt[-1]

    def X(v: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * (v - x0) / (x1 - x0)

    def Y(v: float) -> float:
        return TOP + (H - BOTTOM - TOP) * (1 - (v - y0) / (y1 - y0))

    out = [_axis(yt, Y, ylabel)]
    for t in _nice_ticks(x0, x1):
        if x0 <= t <= x1:
            label = f"{10**t:.3g}" if log_x else f"{t:g}"
            out.append(
                f'<text x="{X(t):.1f}" y="{H - BOTTOM + 16}" font-size="11" '
                f'text-anchor="middle">{label}</text>'
            )
    out.append(
        f'<text x="{(LEFT + W - RIGHT) / 2:.0f}" y="{H - BOTTOM + 36}" font-size="12" '
        f'text-anchor="middle">{escape_html(xlabel)}{" (log)" if log_x else ""}</text>'
    )
    series = sorted({p.series for p in pts})
    for p in pts:
        color = PALETTE[series.index(p.series) % len(PALETTE)]
        fill = "white" if p.hollow else color
        out.append(
            f'<circle cx="{X(tx(p.x)):.1f}" cy="{Y(p.y):.1f}" r="5" fill="{fill}" stroke="{color}" '
            f'stroke-width="2"><title>{escape_html(p.label)}</title></circle>'
        )
        if names:
            out.append(
                f'<text x="{X(tx(p.x)) + 7:.1f}" y="{Y(p.y) - 6:.1f}" font-size="10">'
                f"{escape_html(p.label.split(' on ')[0])}</text>"
            )
    for i, s in enumerate(series if len(series) > 1 or series[0] else []):
        color = PALETTE[i % len(PALETTE)]
        out.append(
            f'<circle cx="{LEFT + 10 + 110 * (i % 4)}" cy="{H - 14 - 14 * (i // 4)}" r="5" '
            f'fill="{color}"/><text x="{LEFT + 18 + 110 * (i % 4)}" y="{H - 10 - 14 * (i // 4)}" '
            f'font-size="11">{escape_html(s)}</text>'
        )
    return _svg("".join(out), title)


CD_W = 640
CD_LABEL = 200
"""Room either side of the rank axis for the methods' names."""
CD_NAME = 20
"""Characters of a name drawn; the whole name is in its tooltip."""


def cd_diagram(
    methods: Sequence[str],
    avg_ranks: Sequence[float],
    *,
    cd: float,
    cliques: Sequence[Sequence[str]],
    title: str,
) -> str:
    """Demšar's critical-difference diagram: an axis of ranks 1..k (1, the best, on the
    left), each method on a line down from its average rank to its name (the better half
    to the left, the worse to the right, so no two lines cross), the CD as a bar above the
    axis, and a thick line under the methods of each clique, whose average ranks lie within
    CD of each other: those Nemenyi's test does not tell apart."""
    pairs = sorted(
        ((float(r), str(m)) for m, r in zip(methods, avg_ranks, strict=True) if math.isfinite(r)),
        key=lambda p: (p[0], p[1]),
    )
    k = len(pairs)
    if k < 2 or not math.isfinite(cd):
        return _svg(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text>', title)
    x0, x1 = CD_LABEL, CD_W - CD_LABEL
    lo, hi = 1.0, float(max(k, math.ceil(pairs[-1][0])))

    def X(rank: float) -> float:
        return x0 + (x1 - x0) * (min(max(rank, lo), hi) - lo) / (hi - lo)

    axis, bar, clique0, step, row = 64, 24, 78, 7, 18
    first = clique0 + step * len(cliques) + 14
    left = pairs[: (k + 1) // 2]
    right = pairs[(k + 1) // 2 :]
    height = first + row * max(len(left), len(right)) + 8
    out = [f'<line x1="{x0}" y1="{axis}" x2="{x1}" y2="{axis}" stroke="#333"/>']
    for t in range(1, int(hi) + 1):
        out.append(
            f'<line x1="{X(t):.1f}" y1="{axis - 5}" x2="{X(t):.1f}" y2="{axis}" stroke="#333"/>'
            f'<text x="{X(t):.1f}" y="{axis - 9}" font-size="11" text-anchor="middle">{t}</text>'
        )
    end = X(1 + cd)
    out.append(
        f'<line x1="{X(1):.1f}" y1="{bar}" x2="{end:.1f}" y2="{bar}" stroke="#111" stroke-width="2"/>'
        f'<line x1="{X(1):.1f}" y1="{bar - 5}" x2="{X(1):.1f}" y2="{bar + 5}" stroke="#111"/>'
        f'<line x1="{end:.1f}" y1="{bar - 5}" x2="{end:.1f}" y2="{bar + 5}" stroke="#111"/>'
        f'<text x="{(X(1) + end) / 2:.1f}" y="{bar - 8}" font-size="11" text-anchor="middle">'
        f"CD = {cd:.2f}</text>"
    )
    where = {m: r for r, m in pairs}
    for i, clique in enumerate(cliques):
        ranks = [where[m] for m in clique if m in where]
        if len(ranks) < 2:
            continue
        y = clique0 + step * i
        names = escape_html(", ".join(clique))
        out.append(
            f'<line x1="{X(min(ranks)) - 3:.1f}" y1="{y}" x2="{X(max(ranks)) + 3:.1f}" y2="{y}" '
            f'stroke="#111" stroke-width="4" stroke-linecap="round">'
            f"<title>not significantly different: {names}</title></line>"
        )
    for side, items in (("left", left), ("right", right[::-1])):
        for i, (rank, name) in enumerate(items):
            y = first + row * i
            x = X(rank)
            edge = x0 - 10 if side == "left" else x1 + 10
            shown = name if len(name) <= CD_NAME else name[: CD_NAME - 1] + "…"
            anchor, tx = ("end", edge - 4) if side == "left" else ("start", edge + 4)
            out.append(
                f'<line x1="{x:.1f}" y1="{axis}" x2="{x:.1f}" y2="{y}" stroke="#555"/>'
                f'<line x1="{x:.1f}" y1="{y}" x2="{edge:.1f}" y2="{y}" stroke="#555"/>'
                f'<circle cx="{x:.1f}" cy="{axis}" r="3" fill="#111"/>'
                f'<text x="{tx:.1f}" y="{y + 4}" font-size="12" text-anchor="{anchor}">'
                f"<title>{escape_html(name)}: average rank {rank:.2f}</title>"
                f"{escape_html(shown)} ({rank:.2f})</text>"
            )
    return _svg("".join(out), title, CD_W, height)
