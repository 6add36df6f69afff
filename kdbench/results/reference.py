"""Published numbers, shipped as package data (``kdbench/reference/*.csv``; the repository's
``results/reference/`` links there)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from kdbench.shipped import reference_dir

COLUMNS = ["dataset", "teacher", "student", "method", "ipc", "test_acc", "source"]


def load_reference(directory: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every published number: one row per (dataset, teacher, student, method, ipc)."""
    folder = Path(directory) if directory else reference_dir()
    frames = [pd.read_csv(p) for p in sorted(folder.glob("*.csv"))] if folder else []
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True)[COLUMNS]
    out["ipc"] = pd.to_numeric(out["ipc"], errors="coerce")
    return out
