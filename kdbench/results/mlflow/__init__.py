"""Result rows into MLflow: ``kdbench export DIR --mlflow URI``, and ``kdbench run --mlflow URI``.

What goes where, in the experiment ``kdbench/<suite name>`` (or the one named):

- one **parent run per suite run** (per ``run_id``: every ``kdbench run`` that trained
  something, a resume or a ``--retry-failed`` included), named ``<suite> <run_id>``: tags
  ``kdbench.suite``, ``kdbench.suite_sha256``, ``kdbench.run_id``; params: the resolved suite's
  settings (``budget.epochs``, ``tuning.trials``, ...); artifacts: ``suite.yaml`` and
  ``run.json`` from ``_runs/<run_id>/``;
- one **child run per trial** (nested: tag ``mlflow.parentRunId``), named by its trial id:
  params: the trial's hyperparameters and its dataset, teacher, student, method, seed;
  metrics: every numeric column of the row that is set (``test_acc``, ``val_acc``,
  ``best_test_acc``, ``teacher_test_acc``, ``train_seconds``, ...), and its per-epoch curve
  as ``epoch/<name>`` histories (``epoch/val_acc``, ``epoch/train_loss``, ...) at step =
  epoch; tags ``kdbench.trial_id``, ``kdbench.run_id``, ``kdbench.cell``, ``kdbench.phase``,
  ``kdbench.status``, ``kdbench.seed``, ``kdbench.error`` (also the run's description) and
  the row's provenance; the run's times are the row's ``started_at`` and ``finished_at``, its
  status FINISHED (ok), FAILED (failed) or KILLED (pruned).

The modules: ``exporting`` (``export``), ``live`` (``LiveLogger``), ``experiment`` (the runs
of one experiment, found again: why exporting twice creates nothing), ``client`` (mlflow
imported, the store reached), ``probe`` (a server reached once), ``reading`` (the results
directory) and ``mapping`` (a row's tags, params and metrics). Importing this package brings
in none of mlflow, pyarrow, pandas or torch: they come when an export or a run needs them.
"""

from __future__ import annotations

from kdbench.results.mlflow.client import INSTALL_HINT, Exporter
from kdbench.results.mlflow.experiment import Experiment
from kdbench.results.mlflow.exporting import ExportSummary, export
from kdbench.results.mlflow.live import LiveLogger
from kdbench.results.mlflow.probe import Unreachable

__all__ = [
    "INSTALL_HINT",
    "Experiment",
    "ExportSummary",
    "Exporter",
    "LiveLogger",
    "Unreachable",
    "export",
]
