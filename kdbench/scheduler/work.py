"""What is left to run: computed once, by ``remaining``, for the driver and for ``--dry-run``.

Given the plan, the rows already written and the studies' state, the work left is: teachers
not finished (or whose cached weights are gone while a student still needs them), final
trials not finished, tuning trials a killed driver left running, the confirm trials of
studies that are done (``tuning.confirm``), the finals of studies that are done (and
confirmed), and the studies still asking. No Ray, no files: the caller reads both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kdbench.plan import Plan, TrialSpec, resolve_hparams
from kdbench.tuning.tuner import Tuner


@dataclass
class Pending:
    """A trial ready to go out."""

    spec: TrialSpec
    study: str | None = None
    """The study a tuning trial belongs to (its outcome is told to it)."""
    alone: bool = False
    """Run in a task of its own (its batch's task died: only the culprit should fail)."""


@dataclass
class Workload:
    queue: deque[Pending] = field(default_factory=deque)
    """Trials known now, teachers first."""
    active: list[str] = field(default_factory=list)
    """Studies still asking for trials (their finals follow when they are done)."""
    confirming: list[str] = field(default_factory=list)
    """Done studies whose confirm trials are out (their finals follow when all are in)."""
    expected: int = 0
    """Trials this run expects to finish (an upper bound: a study may stop early on time)."""


def is_pending(status: str | None, retry_failed: bool) -> bool:
    """A trial runs when it has no row, or a failed one and ``--retry-failed`` was given."""
    return status is None or (retry_failed and status == "failed")


def remaining(
    plan: Plan,
    finished: dict[str, str],
    tuner: Tuner | None,
    *,
    retry_failed: bool = False,
    teacher_cached: Callable[[str], bool] = lambda teacher_id: True,
) -> Workload:
    """The work left of ``plan``; ``finished``: trial id -> status of the rows written."""

    def pending(spec: TrialSpec) -> bool:
        return is_pending(finished.get(spec.trial_id), retry_failed)

    queue = [Pending(s) for s in plan.finals if pending(s)]
    active: list[str] = []
    confirming: list[str] = []
    expected = 0
    for name in tuner.names if tuner else ():
        resumed = tuner.resume(name)
        queue += [Pending(s, name) for s in resumed]  # counted with the queue below
        if not tuner.done(name):
            active.append(name)
            expected += tuner.left(name)
            continue
        confirms = [s for s in tuner.confirms(name) if pending(s)]
        for s in confirms:
            tuner.forget(s)
        if confirms:
            queue += [Pending(s) for s in confirms]
            confirming.append(name)
            expected += len(plan.suite.seeds)
        else:
            queue += [Pending(s) for s in tuner.finals(name) if pending(s)]
    wanted = {p.spec.teacher_id for p in queue}
    wanted |= {t for p in queue for t in getattr(p.spec, "prerequisite_ids", ())}
    if tuner:
        wanted |= {t for name in active + confirming for t in tuner.teachers_of(name)}
    teachers = [
        Pending(t)
        for t in plan.teachers
        if pending(t)
        or (
            t.trial_id in wanted
            and finished.get(t.trial_id) == "ok"
            and not teacher_cached(t.trial_id)
        )
    ]
    work = deque(teachers + queue)
    return Workload(queue=work, active=active, confirming=confirming, expected=expected + len(work))


def planned_specs(work: Workload, tuner: Tuner | None) -> list[TrialSpec]:
    """Every trial the workload will run: the queue's, each active study's trials yet to
    ask, confirm trials and finals, and the confirming studies' finals, at the method's
    defaults (what they will be is not known yet)."""
    out = [p.spec for p in work.queue]
    for name in work.active:
        assert tuner is not None
        out += tuner.representative(name)
    for name in work.confirming:
        assert tuner is not None
        out += tuner.final_specs(name, resolve_hparams(tuner.studies[name].cell.method))
    return out
