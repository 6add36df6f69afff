"""``kdbench export DIR --mlflow URI``: a results directory's rows into MLflow, a parent run
per suite run and a child run per trial."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from kdbench.results.mlflow.client import Exporter
from kdbench.results.mlflow.experiment import Experiment
from kdbench.results.mlflow.mapping import ms
from kdbench.results.mlflow.reading import directory_runs, latest_rows, read_curve
from kdbench.results.runs import RunRecord


@dataclass
class ExportSummary:
    """What an export did: child (trial) runs and parent (suite run) runs, by what happened."""

    tracking_uri: str
    experiments: list[str] = field(default_factory=list)
    created: int = 0
    """Trial runs created."""
    replaced: int = 0
    """Trial runs created for a trial written again (the old run deleted)."""
    existing: int = 0
    """Trial runs already there."""
    parents_created: int = 0
    parents_existing: int = 0

    @property
    def runs_created(self) -> int:
        return self.created + self.replaced + self.parents_created

    @property
    def runs_existing(self) -> int:
        return self.existing + self.parents_existing

    def line(self) -> str:
        """``MLflow URI, experiment 'kdbench/x': 8 runs created (1 suite run, 7 trials), 0
        already there``."""
        where = ", ".join(f"'{e}'" for e in self.experiments) or "none (no rows)"
        trials = self.created + self.replaced
        replaced = f", {self.replaced} replacing older runs" if self.replaced else ""
        return (
            f"MLflow {self.tracking_uri}, experiment {where}: {plural(self.runs_created, 'run')} "
            f"created ({plural(self.parents_created, 'suite run')}, {plural(trials, 'trial')}"
            f"{replaced}), {self.runs_existing} already there"
        )


def plural(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def export(
    results_dir: str | os.PathLike[str],
    tracking_uri: str,
    *,
    experiment: str | None = None,
    finish: str | None = None,
) -> ExportSummary:
    """Export a results directory (or URI) to the MLflow tracking store at ``tracking_uri``.

    ``experiment``: the experiment's name (default ``kdbench/<suite name>``, one per suite the
    directory holds). ``finish``: a run id whose parent run is marked finished (the end of a
    ``kdbench run --mlflow``). Raises a one-line KdbenchError when mlflow is missing or the
    tracking store cannot be used.
    """
    layout, rows = latest_rows(results_dir)
    runs = directory_runs(layout) | {str(r["run_id"]) for r in rows if r.get("run_id")}
    exporter = Exporter(tracking_uri)
    summary = ExportSummary(tracking_uri)
    by_experiment: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = experiment or f"kdbench/{row.get('suite') or 'unknown'}"
        by_experiment.setdefault(name, []).append(row)
    with exporter.errors():
        for name, exp_rows in by_experiment.items():
            summary.experiments.append(name)
            target = Experiment.open(exporter, name)
            by_run: dict[str, list[dict[str, Any]]] = {}
            for row in exp_rows:
                by_run.setdefault(str(row.get("run_id") or "unknown"), []).append(row)
            for run_id, run_rows in sorted(by_run.items()):
                record = RunRecord.read(layout, run_id, run_rows[0].get("suite"))
                end = max((ms(r.get("finished_at")) or 0 for r in run_rows), default=0) or None
                parent, created = target.parent(record, end)
                if created:
                    summary.parents_created += 1
                else:
                    summary.parents_existing += 1
                for row in run_rows:
                    what = target.trial(parent, row, read_curve(layout, row), runs)
                    setattr(summary, what, getattr(summary, what) + 1)
                if not created:
                    target.update_parent(run_id, end, finish=run_id == finish)
    return summary
