"""The scheduling decisions, without Ray: a fake executor runs tasks instantly, a fake study
book counts trials. Every decision the driver makes is checked here in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from kdbench.plan import StudentSpec, TeacherSpec, expand
from kdbench.scheduler.core import BATCH_S, MAX_BATCH, Scheduler, drive
from kdbench.scheduler.work import Pending, planned_specs, remaining
from kdbench.tuning.tuner import Tuner
from kdbench.validation import parse_suite


def plan_of(methods=("kd", "at"), trials=4, seeds=(0, 1), **extra):
    raw = {
        "name": "sched",
        "datasets": ["digits"],
        "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
        "methods": list(methods),
        "seeds": list(seeds),
        "budget": {"epochs": 2},
        "tuning": {"trials": trials, "seed": 1000},
        **extra,
    }
    return expand(parse_suite(raw))


@dataclass
class FakeBook:
    """The study book's counting, without Optuna: every ask is granted up to the budget."""

    budgets: dict[str, int]
    finished: dict[str, int] = field(default_factory=dict)
    running: dict[str, set[int]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    told: list[tuple[str, int, str]] = field(default_factory=list)
    left_running: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)

    def __post_init__(self):
        for n in self.budgets:
            self.finished.setdefault(n, 0)
            self.running.setdefault(n, {num for num, _ in self.left_running.get(n, [])})

    def interrupted(self, name):
        return self.left_running.pop(name, [])

    def counts(self, name):
        return self.finished[name], len(self.running[name])

    def can_ask(self, name):
        return self.finished[name] + len(self.running[name]) < self.budgets[name]

    def done(self, name):
        return not self.can_ask(name) and not self.running[name]

    def done_of(self, names):
        return [n for n in names if self.done(n)]

    def best(self, name):
        return ({}, 0.9)

    def ask_next(self, names):
        for name in names:
            if self.can_ask(name):
                number = self.finished[name] + len(self.running[name])
                self.running[name].add(number)
                self.asked.append(name)
                return name, number, {}
        return None

    def tell(self, name, number, status, value, epoch=None):
        self.told.append((name, number, status))
        if number in self.running[name]:
            self.running[name].discard(number)
            self.finished[name] += 1


@dataclass
class Outcome:
    row: dict[str, Any]
    seconds: float


class FakeExecutor:
    """Runs each task at once; ``seconds(spec)`` says how long each trial lasted; a task whose
    trials include one in ``dies`` could not run (as Ray says after its retries)."""

    def __init__(self, seconds=lambda spec: 5.0, dies=()):
        self.seconds = seconds
        self.dies = set(dies)
        self.tasks: list[list[Pending]] = []
        self.peak_runnable = 0
        self.scheduler: Scheduler | None = None

    def submit(self, batch):
        self.tasks.append(list(batch))
        if self.scheduler is not None:  # how many hold a slot, this one included
            self.peak_runnable = max(self.peak_runnable, self.scheduler.runnable + 1)
        return len(self.tasks) - 1

    def wait(self, handles, timeout):
        handle = min(handles)  # the oldest task ends first
        batch = self.tasks[handle]
        if any(p.spec.trial_id in self.dies for p in batch):
            return [(handle, RuntimeError("worker died"))]
        return [(handle, [self.outcome(p.spec) for p in batch])]

    def outcome(self, spec, status="ok"):
        return Outcome(
            {"trial_id": spec.trial_id, "status": status, "val_acc": 0.5}, self.seconds(spec)
        )

    def failed(self, spec, exc):
        return Outcome({"trial_id": spec.trial_id, "status": "failed", "error": str(exc)}, 0.0)


def run(plan, executor, *, slots=2.0, book=None, finished=None):
    book = book or FakeBook({s.name: s.budget for s in plan.studies})
    tuner = Tuner(plan, book)
    finished = finished or {}
    work = remaining(plan, finished, tuner)
    scheduler = Scheduler(work, tuner, slots, wanted=lambda s: s.trial_id not in finished)
    executor.scheduler = scheduler
    rows = []
    drive(scheduler, executor, lambda p, o: rows.append((p, o)), poll_s=0)
    return rows, book


def test_every_trial_runs_once_and_tuning_trials_are_told():
    plan = plan_of()
    rows, book = run(plan, FakeExecutor())
    ids = [p.spec.trial_id for p, _ in rows]
    assert len(ids) == len(set(ids))
    counts = plan.counts()
    assert len(rows) == sum(counts.values()) == 1 + 2 * 4 + 3 * 2  # scratch has no study
    assert sorted(n for n, _, _ in book.told) == sorted(book.asked)
    assert all(status == "ok" for _, _, status in book.told)


def test_the_teacher_goes_first_and_waiting_students_hold_no_slot():
    plan = plan_of()
    ex = FakeExecutor()
    work = remaining(plan, {}, Tuner(plan, FakeBook({s.name: s.budget for s in plan.studies})))
    sched = Scheduler(work, Tuner(plan, FakeBook({s.name: s.budget for s in plan.studies})), 1.0)
    assert isinstance(work.queue[0].spec, TeacherSpec)
    sent = []
    while (batch := sched.next_task()) is not None:
        handle = ex.submit(batch)
        sched.submitted(handle, batch)
        sent.append(batch)
    # cap = 2 per slot: the teacher and one more hold slots; trials that wait for the teacher
    # hold none, and no more than cap of them wait
    assert isinstance(sent[0][0].spec, TeacherSpec)
    waiting = [b for b in sent[1:] if sched.teachers.waits(b[0].spec)]
    assert sched.teachers.waiting_total == len(waiting) == sched.cap
    assert sched.runnable <= sched.cap
    assert all(len(b) == 1 for b in sent)  # a trial that waits for its teacher goes alone


def test_admission_never_passes_two_tasks_per_slot():
    plan = plan_of(trials=8)
    for slots in (1.0, 2.0, 3.5):
        ex = FakeExecutor()
        run(plan, ex, slots=slots)
        assert ex.peak_runnable <= 2 * int(-(-slots // 1))


def test_short_trials_share_a_task_once_two_of_their_cell_are_known():
    plan = plan_of(methods=("kd",), trials=30, seeds=(0, 1, 2))
    ex = FakeExecutor(seconds=lambda spec: 0.3)
    rows, _ = run(plan, ex)
    sizes = [len(t) for t in ex.tasks]
    assert max(sizes) > 1 and max(sizes) <= min(MAX_BATCH, int(BATCH_S / 0.3))
    assert len(rows) == sum(sizes) == sum(plan.counts().values())
    # the first two trials of each cell go alone: nothing is known of them yet
    kd_tasks = [
        t for t in ex.tasks if isinstance(t[0].spec, StudentSpec) and t[0].spec.label == "kd"
    ]
    assert [len(t) for t in kd_tasks[:2]] == [1, 1]
    # a batch holds one cell's shape: one data set and one set of resources
    for t in ex.tasks:
        assert len({(p.spec.dataset, p.spec.resources) for p in t}) == 1


def test_long_trials_and_teachers_always_go_alone():
    plan = plan_of(trials=6)
    ex = FakeExecutor(seconds=lambda spec: BATCH_S)
    run(plan, ex)
    assert all(len(t) == 1 for t in ex.tasks)


def test_the_tail_is_spread_over_the_tasks_in_flight():
    plan = plan_of(methods=("kd",), trials=20, seeds=(0,))
    ex = FakeExecutor(seconds=lambda spec: 0.01)  # 200 would fit in 2 s: MAX_BATCH binds
    _rows, _ = run(plan, ex, slots=2.0)
    # toward the end a batch is at most the trials left over the tasks in flight (cap 4)
    last = ex.tasks[-1]
    assert len(last) <= 2
    assert max(len(t) for t in ex.tasks) <= MAX_BATCH


def test_new_tuning_trials_rotate_over_the_studies():
    plan = plan_of(methods=("kd", "at", "fitnet"), trials=3)
    _rows, book = run(plan, FakeExecutor(seconds=lambda spec: 5.0), slots=1.0)
    names = [s.name for s in plan.studies]
    assert book.asked[:3] == names  # one of each before any second
    assert book.asked.count(names[0]) == book.asked.count(names[2]) == 3


def test_a_dead_batch_reruns_each_trial_alone_and_only_the_culprit_fails():
    plan = plan_of(methods=("kd",), trials=12, seeds=(0,))
    probe = FakeExecutor(seconds=lambda spec: 0.2)
    run(plan, probe)
    batched = next(t for t in probe.tasks if len(t) > 1)
    culprit = batched[1].spec.trial_id
    ex = FakeExecutor(seconds=lambda spec: 0.2, dies={culprit})
    rows, _ = run(plan, ex)
    status = {p.spec.trial_id: o.row["status"] for p, o in rows}
    assert status[culprit] == "failed"
    assert sum(s == "failed" for s in status.values()) == 1
    assert len(status) == len(rows)  # every trial exactly one outcome
    died = next(i for i, t in enumerate(ex.tasks) if culprit in {p.spec.trial_id for p in t})
    members = {p.spec.trial_id for p in ex.tasks[died]}
    assert len(members) > 1
    rerun = [t for t in ex.tasks[died + 1 :] if members & {p.spec.trial_id for p in t}]
    assert len(rerun) == len(members) and all(len(t) == 1 for t in rerun)


def test_finished_trials_are_skipped_and_done_studies_hand_over_their_finals():
    plan = plan_of()
    first, book = run(plan, FakeExecutor())
    finished = {p.spec.trial_id: "ok" for p, _ in first}
    done = FakeBook({s.name: s.budget for s in plan.studies}, finished=dict(book.finished))
    again, _ = run(plan, FakeExecutor(), book=done, finished=finished)
    assert again == []


def test_remaining_reruns_a_teacher_whose_weights_are_gone_and_resumes_interrupted_trials():
    plan = plan_of(methods=("kd",), trials=4)
    study = plan.studies[0]
    teacher = plan.teachers[0]
    book = FakeBook(
        {study.name: 4}, finished={study.name: 1}, left_running={study.name: [(1, {}), (2, {})]}
    )
    tuner = Tuner(plan, book)
    told_from_row = tuner.spec(study.name, 2, {})
    tuner.tune_rows = {told_from_row.trial_id: ("ok", 0.7, 2)}
    finished = {teacher.trial_id: "ok"}
    work = remaining(plan, finished, tuner, teacher_cached=lambda tid: False)
    specs = [p.spec for p in work.queue]
    assert specs[0] == teacher  # its row is there but its weights are not, and a trial needs them
    resumed = [p for p in work.queue if p.study]
    assert [p.spec.number for p in resumed] == [1]  # trial 2 was told from its row instead
    assert book.told == [(study.name, 2, "ok")]
    assert work.active == [study.name]
    # 1 resumed + 1 left to ask (budget 4: 2 finished, 1 running) + 2 finals, + teacher + scratch
    assert work.expected == len(work.queue) + tuner.left(study.name)
    assert len(planned_specs(work, tuner)) == len(work.queue) + 1 + len(plan.suite.seeds)


def test_remaining_skips_a_cached_teacher_and_retries_failed_rows_only_when_asked():
    plan = plan_of(methods=("kd",), trials=0)
    scratch = plan.finals[0]
    finished = {plan.teachers[0].trial_id: "ok", scratch.trial_id: "failed"}
    plain = remaining(plan, finished, None)
    assert scratch not in [p.spec for p in plain.queue]
    assert plan.teachers[0] not in [p.spec for p in plain.queue]
    retry = remaining(plan, finished, None, retry_failed=True)
    assert scratch in [p.spec for p in retry.queue]


@pytest.mark.parametrize("slots", [1.0, 2.0])
def test_a_task_that_could_not_run_alone_is_a_failed_row(slots):
    plan = plan_of(methods=("kd",), trials=0, seeds=(0,))
    scratch = plan.finals[0]
    rows, _ = run(plan, FakeExecutor(dies={scratch.trial_id}), slots=slots)
    status = {p.spec.trial_id: o.row["status"] for p, o in rows}
    assert status[scratch.trial_id] == "failed"
    assert sum(s == "failed" for s in status.values()) == 1
