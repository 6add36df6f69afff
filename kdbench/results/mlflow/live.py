"""``kdbench run --mlflow URI``: each trial logged as its row is written, in a thread of the
driver, and the whole directory exported again at the run's end."""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError, one_line
from kdbench.results.layout import Layout
from kdbench.results.mlflow.client import Exporter
from kdbench.results.mlflow.experiment import Experiment
from kdbench.results.mlflow.exporting import ExportSummary, export, plural
from kdbench.results.mlflow.mapping import short
from kdbench.results.mlflow.probe import Unreachable
from kdbench.results.mlflow.reading import directory_runs
from kdbench.results.runs import RunRecord


@dataclass(frozen=True)
class _Row:
    """A row written, and its curve: to log as a trial."""

    row: dict[str, Any]
    curve: list[dict[str, Any]]


@dataclass(frozen=True)
class _Close:
    """The end of the rows: the thread stops. ``status`` (FAILED or KILLED: the run failed
    or was stopped) marks the parent run so; without it the parent is left as it is, for the
    run's catch-up export to finish."""

    status: str | None = None


class LiveLogger:
    """Logs each trial of a running suite to MLflow as its row is written.

    Made before the run starts: a missing mlflow or a store that cannot be used (an unknown
    scheme, a refused login) stops the run before anything trains; an unreachable server is
    warned of and the run goes on. Rows are logged in a thread of the driver (one
    ``log_batch`` per trial), so a slow server never holds a trial back; the first failure
    is warned of once and logging stops for the rest of the run. ``catch_up`` (the run's end)
    exports the whole directory again, idempotently: whatever was missed goes in then.
    """

    def __init__(
        self, tracking_uri: str, suite: Any, run_id: str, results_dir: str | os.PathLike[str]
    ) -> None:
        self.uri = tracking_uri
        self.record = RunRecord.of_suite(suite, run_id)
        self.layout = Layout(Path(results_dir))
        self.experiment_name = f"kdbench/{suite.name}"
        self._queue: queue.Queue[_Row | _Close] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.failed: str | None = None
        self.logged = 0
        try:
            self.exporter: Exporter | None = Exporter(tracking_uri)
            with self.exporter.errors():
                self.experiment: Experiment | None = Experiment.open(
                    self.exporter, self.experiment_name
                )
        except Unreachable as exc:  # the run goes on; its end tries again
            self.exporter = self.experiment = None
            self._fail(str(exc))

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            print(
                f"kdbench: warning: {one_line(reason)}; the run goes on without logging to "
                "MLflow, and its end tries to export every row again",
                file=sys.stderr,
            )
        self._stopped.set()

    def trial(self, row: Mapping[str, Any], curve: Iterable[Mapping[str, Any]] = ()) -> None:
        """A row was written (``ResultWriter``'s callback): queue it. Never raises."""
        if self._stopped.is_set() or self.experiment is None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="kdbench-mlflow", daemon=True)
            self._thread.start()
        self._queue.put(_Row(dict(row), [dict(e) for e in curve]))

    def _work(self) -> None:
        assert self.experiment is not None
        parent, runs = None, {self.record.run_id}
        while True:
            message = self._queue.get()
            if self._stopped.is_set():
                return
            try:
                if isinstance(message, _Close):
                    if parent is not None and message.status is not None:
                        self.experiment.close_parent(parent, message.status)
                    return
                if parent is None:  # the directory is there now (a URI's mirror: pulled)
                    runs |= directory_runs(self.layout)
                    parent, _ = self.experiment.parent(self.record)
                self.experiment.trial(parent, message.row, message.curve, runs)
                self.logged += 1
            except Exception as exc:
                self._fail(f"MLflow {self.uri}: logging a trial failed ({short(exc)})")
                return

    def close(self, error: BaseException | None = None, timeout: float = 60.0) -> None:
        """Wait for the rows queued; with ``error`` (the run failed or was interrupted),
        mark its parent run FAILED or KILLED and wait less."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if error is not None:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self._queue.put(_Close(status))
            timeout = min(timeout, 5.0)
        else:
            self._queue.put(_Close())
        thread.join(timeout)
        self._stopped.set()

    def catch_up(self, shown: str | os.PathLike[str] | None = None) -> ExportSummary | None:
        """The run's end: export the whole directory (what was logged is found again) and mark
        this run's parent FINISHED; a failure is a warning, and the run's result stands.
        ``shown``: the results location as the user gave it (a URI, not its mirror)."""
        self.close()
        try:
            summary = export(self.layout.root, self.uri, finish=self.record.run_id)
        except KdbenchError as exc:
            print(
                f"kdbench: warning: {one_line(str(exc))}; export later with: kdbench export "
                f"{shown or self.layout.root} --mlflow {self.uri}",
                file=sys.stderr,
            )
            return None
        where = ", ".join(f"'{e}'" for e in summary.experiments) or "none (no rows)"
        print(
            f"MLflow {self.uri}, experiment {where}: {plural(self.logged, 'trial')} logged as "
            f"{'they' if self.logged != 1 else 'it'} finished; at the end "
            f"{summary.runs_created} runs created, {summary.runs_existing} already there",
            file=sys.stderr,
        )
        return summary
