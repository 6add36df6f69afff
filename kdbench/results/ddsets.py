"""What marks a row as dataset distillation, and which of its settings two rows must share to
be scored against each other (DD-Ranking's IOR and HLR, ``results.ddranking``; the baselines
a dataset-distillation entry brings, ``methods.synthetic``). No pandas, no torch: a method
file and the leaderboard both read it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SYNTHETIC = "_artifacts/synthetic/"
"""Where a dd row's ``artifact`` (its set) lies: what marks a row as dataset distillation."""


def evaluation(hp: Mapping[str, Any]) -> dict[str, Any]:
    """A dd trial's evaluation settings from its hyperparameters, absent optional switches at
    their defaults; the soft-label weights only where the labels are soft. Two rows are scored
    against each other only when these agree."""
    out = {
        "ipc": int(hp["ipc"]),
        "train_epochs": int(hp.get("train_epochs") or 0),
        "labels": hp.get("labels", "hard"),
        "dsa": bool(hp.get("dsa", False)),
    }
    if out["labels"] == "soft":
        out.update(T=float(hp["T"]), alpha=float(hp["alpha"]), gamma=float(hp["gamma"]))
    return out


def set_method(artifact: object) -> str | None:
    """The dd method that made a row's set (``dd_random``...), None for another row."""
    if not isinstance(artifact, str) or not artifact.startswith(SYNTHETIC):
        return None
    return artifact[len(SYNTHETIC) :].split("-", 1)[0]
