"""The Ray tasks: thin wrappers that run a trial where Ray places it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray

from kdbench.data import DataBundle
from kdbench.plan import StudentSpec, TeacherSpec, TrialSpec
from kdbench.results.layout import ArtifactKey
from kdbench.training.trial import RunInfo, TrialOutcome, run_student, run_teacher
from kdbench.tuning.broker import Reporter

# A node that dies mid-trial is retried elsewhere (system failures); an exception inside the
# trial is not retried: the trial turns it into a `failed` row.
SYSTEM_RETRIES = 3


@ray.remote(num_returns=2, max_retries=SYSTEM_RETRIES, retry_exceptions=False)
def teacher_task(
    spec: TeacherSpec, data: DataBundle, info: RunInfo, checkpoint: bytes | None
) -> tuple[TrialOutcome, bytes | None]:
    """Returns the outcome and, separately, the weights: students depend on the weights alone."""
    outcome = run_teacher(spec, data, info, checkpoint)
    weights, outcome.weights = outcome.weights, None
    return outcome, weights


@dataclass(frozen=True)
class StudentTrial:
    """One trial of a ``student_task``: its teacher's weights are the task's ``teachers``
    argument at index ``teacher``."""

    spec: StudentSpec
    teacher: int | None = None
    reporter: Reporter | None = None
    reused: Mapping[ArtifactKey, bytes] = field(default_factory=dict)
    """What earlier trials made under the method's ``reusable`` keys."""
    prerequisites: tuple[int, ...] = ()
    """What its method needed made first (dd_mtt's expert trajectories): indices into the
    task's ``teachers`` arguments, in the order of ``spec.prerequisites``; they reach the
    method with ``reused``, under ``ArtifactKey(kind, trial id)``."""

    def reused_with(self, teachers: tuple[bytes | None, ...]) -> Mapping[ArtifactKey, bytes]:
        if not self.prerequisites:
            return self.reused
        out = dict(self.reused)
        for (kind, tid), i in zip(self.spec.prerequisites, self.prerequisites, strict=True):
            if teachers[i] is not None:  # a failed prerequisite's result is missing
                out[ArtifactKey(kind, tid)] = teachers[i]
        return out


@ray.remote(max_retries=SYSTEM_RETRIES, retry_exceptions=False)
def student_task(
    trials: list[StudentTrial], data: DataBundle, info: RunInfo, *teachers: bytes | None
) -> list[TrialOutcome]:
    """Tune or final trials, one after another: one trial, or several short ones, so that Ray's
    cost of a task is paid once for all of them. A tune trial reports each epoch and returns
    early when pruned. The teachers' weights are top-level arguments: Ray holds the task until
    they exist and fetches them before it starts."""
    return [
        run_student(
            t.spec,
            data,
            info,
            None if t.teacher is None else teachers[t.teacher],
            t.reporter,
            t.reused_with(teachers),
        )
        for t in trials
    ]


def options(spec: TrialSpec) -> dict[str, Any]:
    """What the trial holds while it runs: Ray places it on a node that has all of it."""
    r = spec.resources
    opts: dict[str, Any] = {"num_cpus": r.cpus, "num_gpus": r.gpus, "name": spec.trial_id}
    if r.custom:
        opts["resources"] = dict(r.custom)
    if r.accelerator_type:
        opts["accelerator_type"] = r.accelerator_type
    return opts
