"""The Ray executor: puts the run's inputs in Ray's object store, submits tasks, collects them.

It holds what the tasks share: each data set once (by reference), each teacher's weights
(the training task's result, then re-put from the driver's node once it is kept, so that a
node leaving the cluster does not take them along), the study actor that tuning trials
report their epochs to (started with the first trial that reports), and what earlier trials
made that a trial may reuse (read from the results directory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import ray

from kdbench import provenance
from kdbench.data import load_dataset
from kdbench.methods import method_class
from kdbench.plan import StudentSpec, TeacherSpec, TrialSpec
from kdbench.results.layout import Layout
from kdbench.results.writer import ResultWriter
from kdbench.scheduler.tasks import StudentTrial, options, student_task, teacher_task
from kdbench.scheduler.work import Pending
from kdbench.spec import Suite
from kdbench.training.trial import RunInfo, TrialOutcome, describe_error, failed_row
from kdbench.training.weights import read_checkpoint
from kdbench.tuning.broker import Reporter, start_broker


class RayExecutor:
    def __init__(
        self, suite: Suite, info: RunInfo, writer: ResultWriter, book_args: tuple[Any, ...]
    ) -> None:
        self.suite = suite
        self.info = info
        self.writer = writer
        self.layout: Layout = writer.layout
        self.book_args = book_args
        self.data_refs: dict[tuple[str, bool], Any] = {}
        self.bundles: dict[str, Any] = {}
        """Data sets as loaded, each read once whichever of its forms the trials need."""
        self.weights: dict[str, Any] = {}
        """Teacher trial id -> its weights in the object store (None inside when it failed)."""
        self.teacher_tasks: set[Any] = set()
        self.broker: Any = None
        self.tasks = 0
        """Tasks submitted (fewer than trials when short ones share a task)."""

    # -- submitting
    def submit(self, batch: Sequence[Pending]) -> Any:
        self.tasks += 1
        spec = batch[0].spec
        if isinstance(spec, TeacherSpec):
            return self._submit_teacher(spec)
        return self._submit_students(batch)

    def _submit_teacher(self, spec: TeacherSpec) -> Any:
        t = spec.teacher
        ckpt = read_checkpoint(t.checkpoint, digest=t.digest) if t.checkpoint else None
        ref, self.weights[spec.trial_id] = teacher_task.options(**options(spec)).remote(
            spec, self.data(spec.dataset, spec.refit), self.info, ckpt
        )
        self.teacher_tasks.add(ref)
        return ref

    def _submit_students(self, batch: Sequence[Pending]) -> Any:
        teachers: list[Any] = []
        index: dict[str, int] = {}
        trials = []

        def arg(tid: str) -> int:
            """The task's argument that holds a teacher's weights (or a prerequisite's result)."""
            if tid not in index:
                index[tid] = len(teachers)
                teachers.append(self.teacher_weights(tid))
            return index[tid]

        for p in batch:
            spec = p.spec
            assert isinstance(spec, StudentSpec)
            at = arg(spec.teacher_id) if spec.wants_teacher else None
            needed = tuple(arg(t) for t in spec.prerequisite_ids)
            trials.append(
                StudentTrial(spec, at, self._reporter(p), self._reused(spec), prerequisites=needed)
            )
        first = batch[0].spec
        name = first.trial_id + (f" +{len(batch) - 1}" if len(batch) > 1 else "")
        return student_task.options(**{**options(first), "name": name}).remote(
            trials, self.data(first.dataset, first.refit), self.info, *teachers
        )

    def data(self, name: str, refit: bool = False) -> Any:
        """A data set in the object store, once per run: as split, or refit (`val` folded
        into `train`) for the trials that train on train+val."""
        key = (name, refit)
        if key not in self.data_refs:
            d = self.suite.data
            bundle = self.bundles.get(name) or load_dataset(
                name, root=d.root, val_fraction=d.val_fraction
            )
            if self.suite.data.refits:  # its other form will be wanted too
                self.bundles[name] = bundle
            self.data_refs[key] = ray.put(bundle.refit() if refit else bundle)
        return self.data_refs[key]

    def teacher_weights(self, teacher_id: str) -> Any:
        """A teacher's weights: in training, kept by this run, or cached by an earlier one."""
        if teacher_id not in self.weights:
            path = self.layout.teacher_weights(teacher_id)
            self.weights[teacher_id] = ray.put(path.read_bytes() if path.exists() else None)
        return self.weights[teacher_id]

    def _reused(self, spec: StudentSpec) -> dict[Any, bytes]:
        """What earlier trials made that this one's method may reuse (a synthetic set)."""
        out = {}
        for key in method_class(spec.method).reusable(spec):
            path = self.layout.artifact(key)
            if path.exists():
                out[key] = path.read_bytes()
        return out

    def _reporter(self, p: Pending) -> Reporter | None:
        """A tuning trial's line to its study's pruner. A trial of one epoch has nothing to
        report: its last epoch's accuracy goes with the driver's tell."""
        if not p.study or p.spec.epochs <= 1:
            return None
        if self.broker is None:
            # Its own book on the same storage, which it only reads and adds epochs to.
            self.broker = start_broker(*self.book_args)
        return Reporter(self.broker, p.study, p.spec.number)

    # -- collecting
    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                got = ray.get(ref)
            except ray.exceptions.RayError as exc:
                out.append((ref, exc))
                continue
            out.append((ref, [got] if ref in self.teacher_tasks else got))
            self.teacher_tasks.discard(ref)
        return out

    def failed(self, spec: TrialSpec, exc: BaseException) -> TrialOutcome:
        """The outcome of a trial whose task could not run at all (Ray's error)."""
        cause = getattr(exc, "cause", None) or exc
        now = provenance.now()
        return TrialOutcome(
            failed_row(spec, self.info, describe_error(cause), started_at=now, finished_at=now)
        )

    def keep_teacher(self, spec: TeacherSpec, outcome: TrialOutcome) -> None:
        """Cache a finished teacher's weights and hand them out from the driver's node from now
        on: the node that trained the teacher may leave the cluster, and with it its copy (Ray
        would then train the teacher again to rebuild it)."""
        blob = ray.get(self.weights[spec.trial_id]) if outcome.row["status"] == "ok" else None
        if blob is not None:
            self.writer.teacher_weights(spec.trial_id, blob)
        self.weights[spec.trial_id] = ray.put(blob)

    def cancel(self, handles: list[Any]) -> None:
        """Stop tasks whose outcomes will not be collected (the run is ending on an error or a
        signal): on a cluster that outlives the driver they would go on using its slots."""
        for ref in handles:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.broker is not None:
            ray.kill(self.broker)
