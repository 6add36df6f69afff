"""The Ray tasks: thin wrappers that run a trial where Ray places it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

from kdbench.data import DataBundle
from kdbench.plan import TrialSpec
from kdbench.training.trial import RunInfo, TrialOutcome, run_trial
from kdbench.tuning.broker import Reporter

# A node that dies mid-trial is retried elsewhere (system failures); an exception inside the
# trial is not retried: run_trial turns it into a `failed` row.
SYSTEM_RETRIES = 3


@ray.remote(num_returns=2, max_retries=SYSTEM_RETRIES, retry_exceptions=False)
def teacher_task(
    spec: TrialSpec, data: DataBundle, info: RunInfo, checkpoint: bytes | None
) -> tuple[TrialOutcome, bytes | None]:
    """Returns the outcome and, separately, the weights: students depend on the weights alone."""
    outcome = run_trial(spec, data, info, checkpoint)
    weights, outcome.weights = outcome.weights, None
    return outcome, weights


@dataclass(frozen=True)
class StudentTrial:
    """One trial of a ``student_task``: its teacher's weights are the task's ``teachers``
    argument at index ``teacher``."""

    spec: TrialSpec
    teacher: int | None = None
    reporter: Reporter | None = None
    synthetic: bytes | None = None


@ray.remote(max_retries=SYSTEM_RETRIES, retry_exceptions=False)
def student_task(
    trials: list[StudentTrial], data: DataBundle, info: RunInfo, *teachers: bytes | None
) -> list[TrialOutcome]:
    """Tune or final trials, one after another: one trial, or several short ones, so that Ray's
    cost of a task (milliseconds) is paid once for all of them. A tune trial reports each epoch
    and returns early when pruned. The teachers' weights are top-level arguments: Ray holds the
    task until they exist and fetches them before it starts."""
    return [
        run_trial(
            t.spec,
            data,
            info,
            None if t.teacher is None else teachers[t.teacher],
            t.reporter,
            t.synthetic,
        )
        for t in trials
    ]


def options(spec: TrialSpec) -> dict[str, Any]:
    """What the trial holds while it runs: Ray places it on a node that has all of it."""
    opts: dict[str, Any] = {"num_cpus": spec.cpus, "num_gpus": spec.gpus, "name": spec.trial_id}
    if spec.custom:
        opts["resources"] = dict(spec.custom)
    if spec.accelerator_type:
        opts["accelerator_type"] = spec.accelerator_type
    return opts
