"""The driver: plans a suite, runs what is not finished as Ray tasks, writes every row.

Workers write nothing: the data set and each teacher's weights go to them by Ray reference,
and their rows, curves and weights come back to the driver, which alone touches the results
directory. So a cluster needs no storage shared between the driver and the workers.
"""

from __future__ import annotations

import io
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import torch
import yaml

from kdbench import provenance
from kdbench.errors import KdbenchError
from kdbench.plan import Plan, TrialSpec, expand
from kdbench.results import store
from kdbench.scheduler.progress import Progress
from kdbench.suite import Suite
from kdbench.training.trial import RunInfo, TrialOutcome, describe_error, failed_row

CACHE = "_cache"
RUNS = "_runs"


@dataclass
class RunSummary:
    run_id: str
    results_dir: Path
    planned: int
    skipped: int
    ran: int = 0
    failed: int = 0
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def default_results_dir(suite: Suite) -> Path:
    return Path("results") / suite.name


def teacher_cache_path(results_dir: Path, teacher_id: str) -> Path:
    return results_dir / CACHE / "teachers" / f"{teacher_id}.pt"


def record_run(results_dir: Path, run_id: str, suite: Suite) -> Path:
    """_runs/<run_id>/: the resolved suite, its hash, and every installed package's version."""
    run_dir = results_dir / RUNS / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(suite.to_dict(), sort_keys=False))
    (run_dir / "suite.sha256").write_text(suite.sha256() + "\n")
    store.write_json_atomic(
        {
            "source": suite.source,
            "git_sha": provenance.git_sha(),
            "started_at": provenance.now(),
            "host": provenance.host(),
            "packages": provenance.package_versions(),
        },
        run_dir / "run.json",
    )
    return run_dir


def write_curve(run_dir: Path, trial_id: str, curve: list[dict[str, Any]]) -> None:
    if not curve:
        return
    table = pa.Table.from_pandas(
        pd.DataFrame(curve).assign(trial_id=trial_id), preserve_index=False
    )
    store.write_atomic(table, run_dir / "curves" / f"{trial_id}.parquet")


def read_checkpoint(path: str) -> bytes:
    """A user's teacher checkpoint, loaded safely (weights only) and normalised to a state dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KdbenchError(
            f"{path}: not a loadable weights-only checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KdbenchError(f"{path}: expected a state dict (parameter name -> tensor)")
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Driver:
    def __init__(
        self,
        plan: Plan,
        results_dir: Path,
        *,
        retry_failed: bool = False,
        progress: Progress | None = None,
        live: bool | None = None,
    ) -> None:
        self.plan = plan
        self.suite = plan.suite
        self.results_dir = results_dir
        self.retry_failed = retry_failed
        self.live = live
        self.progress = progress
        self.run_id = new_run_id()
        self.info = RunInfo(run_id=self.run_id, suite=self.suite.name, git_sha=provenance.git_sha())

    def todo(self, finished: dict[str, str]) -> list[TrialSpec]:
        def pending(spec: TrialSpec) -> bool:
            status = finished.get(spec.trial_id)
            return status is None or (self.retry_failed and status == "failed")

        students = [s for s in self.plan.finals if pending(s)]
        wanted = {s.teacher_id for s in students}
        teachers = [
            t
            for t in self.plan.teachers
            if pending(t)
            or (
                t.trial_id in wanted
                and finished.get(t.trial_id) == "ok"
                and not teacher_cache_path(self.results_dir, t.trial_id).exists()
            )
        ]
        return teachers + students

    def run(self, address: str | None = None) -> RunSummary:
        finished = store.finished_trials(self.results_dir)
        todo = self.todo(finished)
        summary = RunSummary(
            run_id=self.run_id,
            results_dir=self.results_dir,
            planned=len(self.plan.trials),
            skipped=len(self.plan.trials) - len(todo),
        )
        if not todo:
            return summary
        import ray

        from kdbench.scheduler.cluster import cluster_cpus, init_ray

        started_ray = init_ray(address)
        try:
            self._execute(
                todo, summary, cluster_cpus() / max(self.suite.resources.cpus_per_trial, 1e-9)
            )
        finally:
            if started_ray:
                ray.shutdown()
        return summary

    def _execute(self, todo: list[TrialSpec], summary: RunSummary, slots: float) -> None:
        import ray

        from kdbench.data import load_dataset
        from kdbench.scheduler.tasks import options, student_task, teacher_task

        t0 = time.monotonic()
        run_dir = record_run(self.results_dir, self.run_id, self.suite)
        progress = self.progress or Progress(len(todo), live=self.live, slots=slots)
        data_refs = {
            d: ray.put(
                load_dataset(
                    d, root=self.suite.data.root, val_fraction=self.suite.data.val_fraction
                )
            )
            for d in sorted({s.dataset for s in todo})
        }

        pending: dict[Any, TrialSpec] = {}
        weights: dict[str, Any] = {}
        teachers_running: set[str] = set()
        for spec in todo:
            if spec.phase != "teacher":
                continue
            ckpt = read_checkpoint(spec.teacher.checkpoint) if spec.teacher.checkpoint else None
            outcome_ref, weights_ref = teacher_task.options(**options(spec)).remote(
                spec, data_refs[spec.dataset], self.info, ckpt
            )
            pending[outcome_ref] = spec
            weights[spec.trial_id] = weights_ref
            teachers_running.add(spec.trial_id)
        for spec in todo:
            if spec.phase == "teacher":
                continue
            assert spec.teacher_id is not None
            if spec.teacher_id not in weights:
                weights[spec.teacher_id] = self._cached_teacher(spec.teacher_id)
            ref = student_task.options(**options(spec)).remote(
                spec, data_refs[spec.dataset], self.info, weights[spec.teacher_id]
            )
            pending[ref] = spec

        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            blocked = sum(1 for s in pending.values() if s.teacher_id in teachers_running)
            progress.set_running(int(min(len(pending) - blocked, slots)))
            for ref in ready:
                spec = pending.pop(ref)
                outcome = self._collect(ref, spec)
                if spec.phase == "teacher":
                    teachers_running.discard(spec.trial_id)
                    self._cache_teacher(spec, outcome, weights[spec.trial_id])
                store.write_trial(self.results_dir, outcome.row)
                write_curve(run_dir, spec.trial_id, outcome.curve)
                summary.ran += 1
                summary.failed += outcome.row["status"] == "failed"
                summary.rows.append(outcome.row)
                progress.finished(outcome.row)
        progress.close()
        summary.seconds = time.monotonic() - t0

    def _collect(self, ref: Any, spec: TrialSpec) -> TrialOutcome:
        """The task's outcome; a task that could not run at all still becomes a `failed` row."""
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            return TrialOutcome(
                failed_row(
                    spec,
                    self.info,
                    describe_error(cause),
                    started_at=provenance.now(),
                    finished_at=provenance.now(),
                )
            )

    def _cache_teacher(self, spec: TrialSpec, outcome: TrialOutcome, weights_ref: Any) -> None:
        if outcome.row["status"] != "ok":
            return
        import ray

        blob = ray.get(weights_ref)
        if blob is not None:
            path = teacher_cache_path(self.results_dir, spec.trial_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name("." + path.name + ".tmp")
            tmp.write_bytes(blob)
            tmp.replace(path)

    def _cached_teacher(self, teacher_id: str) -> Any:
        """A finished teacher's weights from the cache (None when its trial failed)."""
        import ray

        path = teacher_cache_path(self.results_dir, teacher_id)
        return ray.put(path.read_bytes() if path.exists() else None)


def run_suite(
    suite: Suite,
    results_dir: str | Path | None = None,
    *,
    address: str | None = None,
    retry_failed: bool = False,
    live: bool | None = None,
) -> RunSummary:
    """Run (or resume) a suite; finished trials in ``results_dir`` are skipped."""
    plan = expand(suite)
    if suite.tuning.trials > 0:
        raise KdbenchError(
            f"{suite.source}: tuning.trials: {suite.tuning.trials} asks for tuning, which this "
            "version of kdbench does not do yet; set tuning.trials: 0 to run the methods' "
            "defaults (with params)"
        )
    root = Path(results_dir) if results_dir else default_results_dir(suite)
    root.mkdir(parents=True, exist_ok=True)
    return Driver(plan, root, retry_failed=retry_failed, live=live).run(address)
