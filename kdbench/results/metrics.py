"""Metric metadata, declared once: what each leaderboard column means and how it reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    column: str
    label: str
    higher_is_better: bool | None = True
    """``None``: a count or a description, not a score (never marked best)."""
    percent: bool = False
    """Stored as a fraction in [0, 1] (or a difference of fractions), shown ×100."""
    signed: bool = False
    digits: int = 2
    unit: str = ""


PAIR_METRICS: tuple[Metric, ...] = (
    Metric("n", "n", higher_is_better=None, digits=0),
    Metric("mean", "test acc (%)", percent=True, unit="%"),
    Metric("std", "std", higher_is_better=None, percent=True),
    Metric("ci95", "95% CI ±", higher_is_better=None, percent=True),
    Metric("delta_scratch", "Δ scratch", percent=True, signed=True),
    Metric("gap_closed", "gap closed (%)", percent=True),
    Metric("rank", "rank", higher_is_better=False, digits=0),
    Metric("rank_lo", "rank 95%", higher_is_better=None, digits=0),
    Metric("rank_hi", "rank 95% (high)", higher_is_better=None, digits=0),
    Metric("p_best", "P(best) (%)", higher_is_better=None, percent=True, digits=1),
    Metric("p_vs_best", "p vs best", higher_is_better=None, digits=3),
    Metric("tied_with_best", "tied with best", higher_is_better=None),
    Metric("p_vs_kd", "p vs kd", higher_is_better=None, digits=3),
    Metric("significant", "significant vs kd", higher_is_better=None),
    # Not a score: the inflation best-epoch reporting would bring, never the result.
    Metric("best_epoch_gain", "best − last", higher_is_better=None, percent=True, signed=True),
    Metric("teacher_acc", "teacher acc (%)", higher_is_better=None, percent=True),
    Metric("ipc", "ipc", higher_is_better=None, digits=0),
    Metric("ior", "IOR", percent=True, signed=True),
    Metric("hlr", "HLR", higher_is_better=False, percent=True, signed=True),
    Metric("dd_score", "LRS", digits=3),
    Metric("published", "published (%)", higher_is_better=None, percent=True),
    Metric("delta_published", "Δ published", higher_is_better=None, percent=True, signed=True),
    Metric("published_source", "published source", higher_is_better=None),
)
"""The per-pair table's columns after the pair and the method, in order."""

OVERALL_METRICS: tuple[Metric, ...] = (
    Metric("pairs", "pairs", higher_is_better=None, digits=0),
    Metric("avg_rank", "avg rank", higher_is_better=False),
    Metric("win_rate", "win rate (%)", percent=True),
    Metric("wins", "pairs won", digits=0),
    Metric("mean_delta_scratch", "mean Δ scratch", percent=True, signed=True),
    Metric(
        "mean_best_epoch_gain", "mean best − last", higher_is_better=None, percent=True, signed=True
    ),
)

COST_METRICS: tuple[Metric, ...] = (
    # The tuning budget is not a score: what matters is that it is the same for every method.
    Metric("tune_trials", "tune trials", higher_is_better=None, digits=0),
    Metric("tune_pruned", "tune pruned", higher_is_better=None, digits=0),
    Metric("tune_failed", "tune failed", higher_is_better=None, digits=0),
    Metric("confirm_trials", "confirm reruns", higher_is_better=None, digits=0),
    Metric("final_trials", "final trials", higher_is_better=None, digits=0),
    Metric("tune_cpu_hours", "tune CPU-hours", higher_is_better=None, digits=4),
    Metric("tune_gpu_hours", "tune GPU-hours", higher_is_better=None, digits=4),
    Metric("cpu_hours", "CPU-hours", higher_is_better=False, digits=4),
    Metric("gpu_hours", "GPU-hours", higher_is_better=False, digits=4),
    Metric("seconds_per_trial", "s / trial", higher_is_better=False, digits=1),
    Metric("student_params", "student params", higher_is_better=None, digits=0),
    Metric("images_seen", "images seen / trial", higher_is_better=None, digits=0),
)

METRICS = {m.column: m for m in PAIR_METRICS + OVERALL_METRICS + COST_METRICS}

PAIR_KEYS = ["dataset", "teacher", "student"]
PAIR_COLUMNS = [*PAIR_KEYS, "method", *(m.column for m in PAIR_METRICS)]
OVERALL_COLUMNS = ["method", *(m.column for m in OVERALL_METRICS)]
COST_COLUMNS = [*PAIR_KEYS, "method", *(m.column for m in COST_METRICS)]
