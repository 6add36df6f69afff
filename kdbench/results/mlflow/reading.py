"""What an export reads of a results directory: its rows, each row's per-epoch curve, and
each suite run's ``_runs/<run_id>/`` record."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.results.layout import RUNS, Layout
from kdbench.results.mlflow.mapping import ms


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


@dataclass
class RunRecord:
    """What a parent run shows of a suite run: its ``_runs/<run_id>/`` record."""

    run_id: str
    suite: str
    sha256: str | None = None
    yaml_text: str | None = None
    run_json: dict[str, Any] | None = None
    started_ms: int | None = None

    @classmethod
    def read(cls, layout: Layout, run_id: str, suite: str | None) -> RunRecord:
        record = cls(run_id, suite or "unknown")
        run_dir = layout.run_dir(run_id)
        if not layout.inside(run_dir) or not run_dir.is_dir():  # a run id comes from a row
            return record
        record.yaml_text = _text(run_dir / "suite.yaml")
        record.sha256 = (_text(run_dir / "suite.sha256") or "").strip() or None
        try:
            run_json = json.loads(_text(run_dir / "run.json") or "null")
        except ValueError:
            run_json = None
        if isinstance(run_json, dict):
            record.run_json = run_json
            record.started_ms = ms(run_json.get("started_at"))
        return record

    @classmethod
    def of_suite(cls, suite: Any, run_id: str) -> RunRecord:
        """A running suite's record, as ``ResultWriter.record_run`` writes it."""
        import yaml

        from kdbench import provenance  # torch: only when a run logs live

        return cls(
            run_id,
            suite.name,
            sha256=suite.sha256(),
            yaml_text=yaml.safe_dump(suite.to_dict(), sort_keys=False),
            started_ms=ms(provenance.now()),
        )


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


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
