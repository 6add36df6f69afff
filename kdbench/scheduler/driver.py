"""The driver: plans a suite, runs what is not finished as Ray tasks, writes every row.

Workers write nothing: the data set and each teacher's weights go to them by Ray reference,
and their rows, curves and weights come back to the driver, which alone touches the results
directory (through ``ResultWriter``). So a cluster needs no storage shared between the driver
and the workers. Results at a URI are written through a local mirror
(``kdbench.results.remote``).

The parts: ``work.remaining`` says what is left; ``core.Scheduler`` decides what goes out
next; ``executor.RayExecutor`` submits and collects; ``tuning.tuner.Tuner`` asks, tells and
chooses the finals; ``results.writer.ResultWriter`` writes. This module wires them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdbench import provenance
from kdbench.plan import Plan, TeacherSpec, TrialSpec, expand
from kdbench.results import store
from kdbench.results.files import RunLock
from kdbench.results.layout import Layout
from kdbench.results.remote import Mirror, is_uri
from kdbench.results.writer import ResultWriter
from kdbench.scheduler.progress import Progress
from kdbench.scheduler.work import Pending, Workload, is_pending, remaining
from kdbench.spec import Suite
from kdbench.training.trial import RunInfo, TrialOutcome
from kdbench.tuning.studies import StudyBook
from kdbench.tuning.tuner import Tuner, book_args
from kdbench.validation import missing_weights

if TYPE_CHECKING:
    from kdbench.results.mlflow import LiveLogger


@dataclass
class RunSummary:
    run_id: str
    results_dir: Path
    planned: int
    skipped: int
    ran: int = 0
    failed: int = 0
    tasks: int = 0
    """Ray tasks the trials went out in (fewer than trials when short ones shared a task)."""
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def default_results_dir(suite: Suite) -> Path:
    return Path("results") / suite.name


TuneRows = dict[str, tuple[str, "float | None", "int | None"]]


def tuning_rows(results_dir: Path) -> tuple[TuneRows, TuneRows]:
    """The tune and the confirm rows already written, in one read: (status, val_acc,
    epoch_reported) by trial id."""
    rows = store.read_table(
        results_dir,
        columns=["trial_id", "phase", "status", "val_acc", "epoch_reported"],
        filter=store.ds.field("phase").isin(["tune", "confirm"]),
    ).to_pylist()
    by: dict[str, TuneRows] = {"tune": {}, "confirm": {}}
    for r in rows:
        by[r["phase"]][r["trial_id"]] = (r["status"], r["val_acc"], r["epoch_reported"])
    return by["tune"], by["confirm"]


class Driver:
    def __init__(
        self,
        plan: Plan,
        results_dir: Path,
        *,
        retry_failed: bool = False,
        progress: Progress | None = None,
        live: bool | None = None,
        mirror: Mirror | None = None,
        mlflow: LiveLogger | None = None,
    ) -> None:
        self.plan = plan
        self.mlflow = mlflow
        """Logs each row to MLflow as it is written (``run_suite(mlflow=URI)``)."""
        self.suite = plan.suite
        self.results_dir = results_dir
        self.layout = Layout(results_dir)
        self.mirror = mirror
        """When the results live at a URI: ``results_dir`` is its local mirror."""
        self.retry_failed = retry_failed
        self.live = live
        self.progress = progress
        self.run_id = new_run_id()
        self.info = RunInfo(run_id=self.run_id, suite=self.suite.name, git_sha=provenance.git_sha())
        self.finished: dict[str, str] = {}
        self._book_args: tuple[Any, ...] | None = None

    @property
    def book_args(self) -> tuple[Any, ...]:
        """The study book's arguments (the driver's book and the study actor's): made once,
        as sizing each study's validation split may read a data set's folder."""
        if self._book_args is None:
            self._book_args = book_args(self.plan, str(self.results_dir))
        return self._book_args

    def run(self, address: str | None = None) -> RunSummary:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(self.results_dir):
            if self.mirror is not None:
                self.mirror.pull()
            tuner, work = self._left()
            summary = RunSummary(self.run_id, self.results_dir, work.expected, len(self.finished))
            if not work.queue and not work.active:
                return summary
            import ray

            from kdbench.scheduler.cluster import check_feasible, cluster_slots, init_ray

            started_ray = init_ray(address)
            try:
                check_feasible(self.suite.resources)
                self._execute(work, tuner, summary, cluster_slots(self.suite.resources))
            finally:
                if self.mirror is not None:
                    self.mirror.sync()  # also after an error: what was written goes up
                if started_ray:
                    ray.shutdown()
        return summary

    def _left(self) -> tuple[Tuner | None, Workload]:
        """What is left; the study book lives in the driver (asks, tells and choices are local
        calls, and a finished run needs no Ray at all)."""
        self.finished = store.finished_trials(self.results_dir)
        tuner = None
        if self.plan.studies:
            book = StudyBook(*self.book_args)
            tuner = Tuner(self.plan, book, *tuning_rows(self.results_dir))
        work = remaining(
            self.plan,
            self.finished,
            tuner,
            retry_failed=self.retry_failed,
            teacher_cached=lambda tid: self.layout.teacher_weights(tid).exists(),
        )
        return tuner, work

    def _execute(
        self, work: Workload, tuner: Tuner | None, summary: RunSummary, slots: float
    ) -> None:
        from kdbench.scheduler.core import Scheduler, drive
        from kdbench.scheduler.executor import RayExecutor

        t0 = time.monotonic()
        on_trial = self.mlflow.trial if self.mlflow is not None else None
        writer = ResultWriter(self.layout, self.run_id, mirror=self.mirror, on_trial=on_trial)
        executor = RayExecutor(self.suite, self.info, writer, self.book_args)

        def wanted(spec: TrialSpec) -> bool:
            return is_pending(self.finished.get(spec.trial_id), self.retry_failed)

        scheduler = Scheduler(work, tuner, slots, wanted=wanted)
        progress = self.progress
        if progress is None:
            progress = Progress(work.expected, live=self.live, slots=slots)
        else:
            progress.begin(work.expected, slots)

        def record(p: Pending, outcome: TrialOutcome) -> None:
            if isinstance(p.spec, TeacherSpec):
                executor.keep_teacher(p.spec, outcome)
            writer.trial(outcome.row, outcome.curve, outcome.artifacts)
            summary.ran += 1
            summary.failed += outcome.row["status"] == "failed"
            summary.rows.append(outcome.row)
            progress.total = max(progress.total, progress.done + 1 + scheduler.running)
            progress.finished(outcome.row)

        try:
            drive(
                scheduler,
                executor,
                record,
                # while the first trials run: listing the packages takes a moment
                started=lambda: writer.record_run(self.suite),
                tick=lambda: progress.set_running(int(min(scheduler.runnable, slots))),
            )
            writer.finish()  # one file per run; the lock is still held
        except BaseException as exc:  # an error, Ctrl-C or SIGTERM: what was written stays
            executor.cancel(list(scheduler.inflight))
            if self.mlflow is not None:
                self.mlflow.close(exc)  # its parent run FAILED or KILLED
            raise
        finally:
            writer.close()  # the lock is released only after a fold in flight
            executor.close()
        progress.close()
        summary.tasks = executor.tasks
        summary.seconds = time.monotonic() - t0


def run_suite(
    suite: Suite,
    results_dir: str | Path | None = None,
    *,
    address: str | None = None,
    retry_failed: bool = False,
    live: bool | None = None,
    progress: Progress | None = None,
    mlflow: str | None = None,
) -> RunSummary:
    """Run (or resume) a suite; finished trials in ``results_dir`` (a directory, or a URI such
    as ``s3://bucket/prefix``) are skipped. ``mlflow``: a tracking URI each row is logged to
    as it is written, and the whole directory exported to at the end (see
    ``kdbench.results.mlflow``); the tracking server failing never stops the run."""
    missing_weights(suite)  # offline: one line naming the file and its folder, before anything
    mirror = None
    if results_dir is not None and is_uri(str(results_dir)):
        mirror = Mirror(str(results_dir))
        root = mirror.local  # pulled under the run's lock
    else:
        root = Path(results_dir) if results_dir else default_results_dir(suite)
        root.mkdir(parents=True, exist_ok=True)
    driver = Driver(
        expand(suite), root, retry_failed=retry_failed, progress=progress, live=live, mirror=mirror
    )
    if mlflow:
        from kdbench.results.mlflow import LiveLogger

        # mlflow missing or a tracking URI it cannot use: a KdbenchError before anything runs
        driver.mlflow = LiveLogger(mlflow, suite, driver.run_id, root)
    summary = driver.run(address)
    if driver.mlflow is not None:
        driver.mlflow.catch_up(results_dir or root)
    return summary
