"""What an export reads of a results directory: its rows, each row's per-epoch curve, and
each suite run's ``_runs/<run_id>/`` record."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdbench.results.layout import RUNS, Layout


def latest_rows(results_dir: str | os.PathLike[str]) -> tuple[Layout, list[dict[str, Any]]]:
    """A results directory (a URI: its local copy, pulled now) and its rows, one per trial:
    the one that finished last."""
    # pyarrow and pandas: only when exporting
    from kdbench.results import store
    from kdbench.results.remote import is_uri, pulled

    root = pulled(str(results_dir)) if is_uri(str(results_dir)) else Path(results_dir)
    table = store.read_table(root)  # a missing or unreadable directory: one line
    frame = store.latest(table.to_pandas())  # one row per trial: the one that finished last
    return Layout(root), table.take(frame.index.to_numpy()).to_pylist()


def directory_runs(layout: Layout) -> set[str]:
    """The ids of every run a results directory has had (its ``_runs/`` folders)."""
    runs = layout.root / RUNS
    return {p.name for p in runs.iterdir() if p.is_dir()} if runs.is_dir() else set()


def read_curve(layout: Layout, row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A row's per-epoch curve (none when its run wrote none, as for failed trials)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_id, trial_id = row.get("run_id"), row.get("trial_id")
    if not run_id or not trial_id:
        return []
    path = layout.curve(run_id, trial_id)
    if not layout.inside(path) or not path.is_file():
        return []
    try:
        return pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException):
        return []
