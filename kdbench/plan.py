"""Expansion of a suite into cells and trials.

A trial's id is derived from everything that determines its result (data set and split
settings, teacher, student, method, hyperparameters, training budget, seed, phase), so a
rerun on the same results directory recognises finished work, and a changed setting makes a
new trial rather than silently reusing an old row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from kdbench.suite import Budget, DataConfig, MethodEntry, Pair, Suite, TeacherRef, canonical_json

PROTOCOL_VERSION = 1
"""Bumped when the training protocol changes what a trial computes: old ids stop matching."""


@dataclass(frozen=True)
class Cell:
    """One (dataset, teacher, student, method) combination of a suite."""

    dataset: str
    pair: Pair
    method: MethodEntry

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.pair.teacher.arch}->{self.pair.student}/{self.method.label}"


@dataclass(frozen=True)
class TrialSpec:
    """Everything a worker needs to run one trial; nothing it needs is looked up elsewhere."""

    phase: str  # teacher | tune | final
    dataset: str
    teacher: TeacherRef
    student: str | None
    method: str
    """Registry name (``A+B`` for combinations); ``teacher`` on teacher trials."""
    label: str
    """The ``method`` column: the entry's label."""
    hparams: tuple[tuple[str, Any], ...]
    seed: int
    epochs: int
    budget: Budget
    data: DataConfig
    cpus: float = 1
    gpus: float = 0
    teacher_id: str | None = None
    """The trial id of the teacher this trial distils from (its weights come with the task)."""
    checkpoint_sha256: str | None = None
    """On teacher trials loaded from a checkpoint: the file's content hash (part of the id)."""
    number: int | None = None
    """Tune trials: the Optuna trial number."""

    def identity(self) -> dict[str, Any]:
        """What determines the result; resources and the suite's name do not."""
        return {
            "protocol": PROTOCOL_VERSION,
            "phase": self.phase,
            "dataset": self.dataset,
            "data": {"val_fraction": self.data.val_fraction, "augment": self.data.augment},
            "teacher": self.teacher.arch,
            "teacher_id": self.teacher_id,
            "checkpoint_sha256": self.checkpoint_sha256,
            "student": self.student,
            "method": self.method,
            "hparams": dict(self.hparams),
            "seed": self.seed,
            "epochs": self.epochs,
            "budget": {k: v for k, v in _plain(self.budget).items() if k != "epochs"},
            "number": self.number,
        }

    @cached_property
    def trial_id(self) -> str:
        digest = hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()[:12]
        parts = [self.phase, self.dataset, self.teacher.arch]
        if self.student:
            parts += [self.student, self.label]
        parts.append(f"s{self.seed}" if self.number is None else f"n{self.number}")
        return _slug("-".join(parts)) + "-" + digest


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("+", "_plus_"))


def _plain(budget: Budget) -> dict[str, Any]:
    return {
        "epochs": budget.epochs,
        "batch_size": budget.batch_size,
        "optimizer": budget.optimizer,
        "lr": budget.lr,
        "momentum": budget.momentum,
        "weight_decay": budget.weight_decay,
        "schedule": budget.schedule.to_yaml(),
    }


@dataclass(frozen=True)
class Plan:
    suite: Suite
    cells: tuple[Cell, ...]
    teachers: tuple[TrialSpec, ...]
    finals: tuple[TrialSpec, ...]

    @property
    def trials(self) -> tuple[TrialSpec, ...]:
        return self.teachers + self.finals


def cells(suite: Suite) -> list[Cell]:
    return [Cell(d, p, m) for d in suite.datasets for p in suite.pairs for m in suite.methods]


def resolve_hparams(
    entry: MethodEntry, overrides: dict[str, Any] | None = None
) -> tuple[tuple[str, Any], ...]:
    """The method's defaults, then the suite's fixed ``params``, then tuned values."""
    from kdbench.methods import method_class

    hp = method_class(entry.name).defaults()
    hp.update(dict(entry.params))
    hp.update(overrides or {})
    return tuple(sorted(hp.items()))


def teacher_spec(
    suite: Suite, dataset: str, ref: TeacherRef, checkpoint_sha256: str | None
) -> TrialSpec:
    return TrialSpec(
        phase="teacher",
        dataset=dataset,
        teacher=ref,
        student=None,
        method="teacher",
        label="teacher",
        hparams=(),
        seed=suite.teacher.seed,
        epochs=0 if ref.checkpoint else suite.teacher.epochs,
        budget=suite.budget,
        data=suite.data,
        cpus=suite.resources.teacher.cpus,
        gpus=suite.resources.teacher.gpus,
        checkpoint_sha256=checkpoint_sha256,
    )


def final_spec(
    suite: Suite, cell: Cell, teacher: TrialSpec, seed: int, hparams: tuple[tuple[str, Any], ...]
) -> TrialSpec:
    return TrialSpec(
        phase="final",
        dataset=cell.dataset,
        teacher=cell.pair.teacher,
        student=cell.pair.student,
        method=cell.method.name,
        label=cell.method.label,
        hparams=hparams,
        seed=seed,
        epochs=suite.budget.epochs,
        budget=suite.budget,
        data=suite.data,
        cpus=suite.resources.cpus_per_trial,
        gpus=suite.resources.gpus_per_trial,
        teacher_id=teacher.trial_id,
    )


def expand(suite: Suite) -> Plan:
    """Teachers (one per data set × teacher × seed, or per checkpoint) and final trials.

    The final trials here use the defaults with the suite's ``params``; the tuner replaces
    them with each cell's best hyperparameters.
    """
    hashes: dict[str, str] = {}
    teachers: dict[tuple[str, TeacherRef], TrialSpec] = {}
    for d in suite.datasets:
        for p in suite.pairs:
            key = (d, p.teacher)
            if key not in teachers:
                sha = None
                if p.teacher.checkpoint:
                    sha = hashes.setdefault(p.teacher.checkpoint, file_sha256(p.teacher.checkpoint))
                teachers[key] = teacher_spec(suite, d, p.teacher, sha)
    all_cells = cells(suite)
    finals = [
        final_spec(
            suite,
            cell,
            teachers[(cell.dataset, cell.pair.teacher)],
            seed,
            resolve_hparams(cell.method),
        )
        for cell in all_cells
        for seed in suite.seeds
    ]
    return Plan(
        suite=suite, cells=tuple(all_cells), teachers=tuple(teachers.values()), finals=tuple(finals)
    )


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
