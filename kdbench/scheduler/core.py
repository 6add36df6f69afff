"""The scheduling decisions of a run, with no Ray in them: what goes out next, and when.

- **Admission**: at most ``cap`` tasks in flight that hold a slot (two per slot of the
  scarcest resource, so a slot whose trial ends takes the next at once); trials in flight
  that wait for a teacher still training hold no slot, and at most ``cap`` of them wait (more
  would ask a study's whole budget of samplers that have seen no result yet).
- **Batching**: once a cell's trials are known to be short (the median of its last ones
  under ``BATCH_S``), several of them go to one task, about ``BATCH_S`` together, so the
  executor's cost of a task is paid once for all of them; never a teacher, a trial that waits
  for its teacher, or one whose batch died.
- **The tail**: a batch is at most the trials left divided by the tasks in flight, so the run
  does not end with one slot working through a batch while the others idle.
- **Rotation**: new tuning trials are asked round robin over the studies still asking.
- **Settling**: a study that is done hands its finals to the queue.

``drive`` runs the loop over any ``Executor`` (``RayExecutor`` in a run, a fake in tests).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kdbench.plan import StudentSpec, TeacherSpec, TrialSpec
from kdbench.scheduler.work import Pending, Workload
from kdbench.tuning.tuner import Tuner

BATCH_S = 2.0
"""Student trials shorter than this go out several to a task, about this long together: the
executor's pause between one task and the next on a worker is then a small share of the
work (see benchmarks/README.md)."""
MAX_BATCH = 16


class Executor(Protocol):
    """Runs tasks somewhere and hands back their outcomes."""

    def submit(self, batch: Sequence[Pending]) -> Any:
        """Start one task for ``batch``; returns a handle."""
        ...

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        """(handle, outcomes) of the tasks that ended: a list of ``TrialOutcome`` (one per
        trial of the batch), or the exception for a task that could not run."""
        ...

    def failed(self, spec: TrialSpec, exc: BaseException) -> Any:
        """The outcome of a trial whose task could not run (a ``failed`` row)."""
        ...


@dataclass
class TrialTimes:
    """Wall seconds of each cell's latest trials: how many fit in a batch."""

    seen: dict[tuple[str, ...], deque[float]] = field(default_factory=dict)

    @staticmethod
    def cell(spec: StudentSpec) -> tuple[str, ...]:
        return (spec.dataset, spec.teacher.arch, spec.student, spec.label)

    def add(self, spec: StudentSpec, seconds: float) -> None:
        self.seen.setdefault(self.cell(spec), deque(maxlen=16)).append(seconds)

    def typical(self, spec: StudentSpec) -> float | None:
        """The cell's median so far; None until two of its trials are known."""
        seen = self.seen.get(self.cell(spec))
        return statistics.median(seen) if seen and len(seen) >= 2 else None


@dataclass
class Teachers:
    """Teachers in training, and the trials in flight that wait for each."""

    running: set[str] = field(default_factory=set)
    waiting: dict[str, int] = field(default_factory=dict)

    def waits(self, spec: TrialSpec) -> bool:
        """Whether a student trial would wait for a teacher (or another trial its method
        needs first) still in training."""
        return self.waits_for(spec) is not None

    def waits_for(self, spec: TrialSpec) -> str | None:
        """The first teacher or prerequisite still in training that a student trial waits for."""
        if not isinstance(spec, StudentSpec):
            return None
        needed = ((spec.teacher_id,) if spec.wants_teacher else ()) + spec.prerequisite_ids
        return next((t for t in needed if t in self.running), None)

    @property
    def waiting_total(self) -> int:
        return sum(self.waiting.values())


class Scheduler:
    """The queue of a run and every decision on it; the executor only submits and collects."""

    def __init__(
        self,
        work: Workload,
        tuner: Tuner | None,
        slots: float,
        *,
        wanted: Callable[[TrialSpec], bool] = lambda spec: True,
    ) -> None:
        self.work = work
        self.tuner = tuner
        self.wanted = wanted
        """Whether a final trial is still to run (the driver skips those with a row)."""
        self.slots = slots
        self.cap = 2 * math.ceil(slots)
        self.inflight: dict[Any, list[Pending]] = {}
        self.times = TrialTimes()
        self.teachers = Teachers()
        self.turn = 0
        """Where the round robin over the studies goes on."""

    # -- admission
    @property
    def runnable(self) -> int:
        """Tasks in flight that hold a slot (those waiting for a teacher do not)."""
        return len(self.inflight) - self.teachers.waiting_total

    def room(self) -> bool:
        return self.runnable < self.cap and self.teachers.waiting_total < self.cap

    # -- what goes out
    def next_task(self) -> list[Pending] | None:
        """The next task's trials, or None when there is no room or nothing to run now."""
        if not self.room():
            return None
        first = self._next_trial()
        if first is None:
            return None
        batch = [first]
        total = self._typical(first)
        most = min(MAX_BATCH, math.ceil((self.trials_left() + 1) / self.cap))
        while total is not None and total < BATCH_S and len(batch) < most:
            more = self._next_trial()
            if more is None:
                break
            t = self._typical(more)
            if t is None or total + t > BATCH_S or not self._same_shape(more, first):
                self.work.queue.appendleft(more)  # the first of the next task
                break
            batch.append(more)
            total += t
        return batch

    def _typical(self, p: Pending) -> float | None:
        """A batchable trial's expected seconds (None: it goes alone)."""
        if isinstance(p.spec, TeacherSpec) or p.alone or self.teachers.waits(p.spec):
            return None
        return self.times.typical(p.spec)

    @staticmethod
    def _same_shape(a: Pending, b: Pending) -> bool:
        """Trials of one task share its data set (with `val` or refit on it) and what the task
        holds."""
        return (a.spec.dataset, a.spec.refit, a.spec.resources) == (
            b.spec.dataset,
            b.spec.refit,
            b.spec.resources,
        )

    def _next_trial(self) -> Pending | None:
        """The queue's next trial, else a new tuning trial (round robin over the studies)."""
        if self.work.queue:
            return self.work.queue.popleft()
        active = self.work.active
        if not active or self.tuner is None:
            return None
        start = self.turn % len(active)
        order = active[start:] + active[:start]
        got = self.tuner.ask(order)
        if got is None:  # no study may ask now (only a finishing trial frees one)
            return None
        name, spec = got
        self.turn = start + order.index(name) + 1
        return Pending(spec, name)

    def trials_left(self) -> int:
        """Trials still to submit: the queue's, the studies' and their finals."""
        left = len(self.work.queue)
        if self.tuner is not None:
            left += sum(self.tuner.left(name) for name in self.work.active)
            left += len(self.work.confirming) * len(self.tuner.suite.seeds)
        return left

    # -- what comes back
    def submitted(self, handle: Any, batch: list[Pending]) -> None:
        self.inflight[handle] = batch
        for p in batch:
            if isinstance(p.spec, TeacherSpec):
                self.teachers.running.add(p.spec.trial_id)
            elif tid := self.teachers.waits_for(p.spec):  # only a trial alone waits
                self.teachers.waiting[tid] = self.teachers.waiting.get(tid, 0) + 1

    def completed(self, handle: Any) -> list[Pending]:
        return self.inflight.pop(handle)

    def finished(self, p: Pending, seconds: float) -> None:
        """A trial's outcome is in (its files and row are the caller's)."""
        if isinstance(p.spec, TeacherSpec):
            self.teachers.running.discard(p.spec.trial_id)
            self.teachers.waiting.pop(p.spec.trial_id, None)
        else:
            self.times.add(p.spec, seconds)

    def requeue_alone(self, batch: list[Pending]) -> None:
        """A batch whose task died: each of its trials again in a task of its own, so that
        only the one at fault fails."""
        for p in reversed(batch):
            p.alone = True
            self.work.queue.appendleft(p)

    def settle(self) -> None:
        """Studies that are done hand their confirm trials, or their finals, to the queue;
        confirmed studies hand over their finals."""
        if self.tuner is None:
            return
        work = self.work
        for name in self.tuner.done_of(list(work.active)) if work.active else ():
            work.active.remove(name)
            confirms = [s for s in self.tuner.confirms(name) if self.wanted(s)]
            if confirms:
                work.queue.extend(Pending(s) for s in confirms)
                work.confirming.append(name)
            else:
                self._finals(name)
        for name in [n for n in work.confirming if self.tuner.confirmed(n)]:
            work.confirming.remove(name)
            self._finals(name)

    def _finals(self, name: str) -> None:
        assert self.tuner is not None
        self.work.queue.extend(Pending(s) for s in self.tuner.finals(name) if self.wanted(s))

    @property
    def running(self) -> int:
        return sum(len(b) for b in self.inflight.values())


Record = Callable[[Pending, Any], None]


def drive(
    scheduler: Scheduler,
    executor: Executor,
    record: Record,
    *,
    started: Callable[[], None] = lambda: None,
    tick: Callable[[], None] = lambda: None,
    poll_s: float = 0.5,
) -> None:
    """Submit what may go out, collect what ended, until nothing is left.

    ``record(pending, outcome)``: a trial's outcome (its files and row are the caller's; a
    tuning trial's study is told once ``record`` returns); ``started``: once, after the first tasks went out; ``tick``: after each wait,
    before its outcomes are collected.
    """
    first = True
    while True:
        scheduler.settle()
        while (batch := scheduler.next_task()) is not None:
            scheduler.submitted(executor.submit(batch), batch)
        if first:
            started()
            first = False
        if not scheduler.inflight:
            return
        ended = executor.wait(list(scheduler.inflight), poll_s)
        tick()
        for handle, outcomes in ended:
            _collect(scheduler, executor, record, scheduler.completed(handle), outcomes)


def _collect(
    scheduler: Scheduler, executor: Executor, record: Record, batch: list[Pending], got: Any
) -> None:
    if isinstance(got, BaseException):
        if len(batch) > 1:  # its node or its memory died after retries: find the culprit
            scheduler.requeue_alone(batch)
            return
        got = [executor.failed(batch[0].spec, got)]  # a task that could not run: a failed row
    for p, outcome in zip(batch, got, strict=True):
        scheduler.finished(p, outcome.seconds)
        record(p, outcome)  # its files and row first: a driver killed now tells from the row
        if scheduler.tuner is not None:
            if p.study:
                scheduler.tuner.tell(p.study, p.spec, outcome.row)
            elif p.spec.phase == "confirm":
                scheduler.tuner.record(p.spec, outcome.row)
