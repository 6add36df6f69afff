"""Metric metadata, declared once: what each leaderboard column means and how it reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    column: str
    label: str
    higher_is_better: bool | None = True
    """``None``: a count or a description, not a score."""
    percent: bool = False
    """Stored as a fraction in [0, 1], shown ×100."""
    signed: bool = False
    digits: int = 2


PAIR_METRICS: tuple[Metric, ...] = (
    Metric("mean", "test acc (%)", percent=True),
    Metric("std", "± std", higher_is_better=False, percent=True),
    Metric("n", "n", higher_is_better=None, digits=0),
    Metric("delta_scratch", "Δ scratch", percent=True, signed=True),
    Metric("gap_closed", "gap closed (%)", percent=True),
    Metric("rank", "rank", higher_is_better=False, digits=0),
)

OVERALL_METRICS: tuple[Metric, ...] = (
    Metric("avg_rank", "avg rank", higher_is_better=False),
    Metric("pairs", "pairs", higher_is_better=None, digits=0),
    Metric("mean_delta_scratch", "mean Δ scratch", percent=True, signed=True),
)

METRICS = {m.column: m for m in PAIR_METRICS + OVERALL_METRICS}
