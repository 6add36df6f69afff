"""Published numbers, kept as data in the project's ``results/reference/*.csv``."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

COLUMNS = ["dataset", "teacher", "student", "method", "ipc", "test_acc", "source"]


def reference_dir() -> Path | None:
    """$KDBENCH_REFERENCE, else ``results/reference`` of the checkout kdbench runs from."""
    env = os.environ.get("KDBENCH_REFERENCE")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "results" / "reference"
    return here if here.is_dir() else None


def load_reference(directory: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every published number: one row per (dataset, teacher, student, method, ipc)."""
    folder = Path(directory) if directory else reference_dir()
    frames = [pd.read_csv(p) for p in sorted(folder.glob("*.csv"))] if folder else []
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True)[COLUMNS]
    out["ipc"] = pd.to_numeric(out["ipc"], errors="coerce")
    return out
