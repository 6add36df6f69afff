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

from kdbench.suite import (
    Budget,
    DataConfig,
    MethodEntry,
    Pair,
    Suite,
    TeacherRef,
    budget_identity,
    canonical_json,
)

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
    custom: tuple[tuple[str, float], ...] = ()
    """Ray custom resources held (``resources.custom``)."""
    accelerator_type: str | None = None
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
            "budget": budget_identity(self.budget),
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

    @cached_property
    def synthetic_key(self) -> str:
        """The content key of a ``dd_*`` trial's synthetic set: what determines the set alone.

        The student, its training (budget, ``train_epochs``) and the phase do not enter, so a rerun, a final
        trial with a tuning trial's values, or another student of the same teacher reuse it.
        The teacher enters, as its trial id, only for a method that uses it (herding).
        """
        from kdbench.methods import method_class

        cls = method_class(self.method)
        uses_teacher = cls.needs.teacher
        training = cls.training_hparams
        identity = {
            "protocol": PROTOCOL_VERSION,
            "dataset": self.dataset,
            "val_fraction": self.data.val_fraction,
            "teacher_id": self.teacher_id if uses_teacher else None,
            "method": self.method,
            "hparams": {k: v for k, v in self.hparams if k not in training},
            "seed": self.seed,
        }
        digest = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]
        return _slug(f"{self.method}-{self.dataset}") + "-" + digest


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("+", "_plus_"))


@dataclass(frozen=True)
class StudyPlan:
    """A tuned cell: its study's name, search space and budget, and its teacher."""

    cell: Cell
    name: str
    space: dict[str, Any]
    budget: int
    teacher: TrialSpec


@dataclass(frozen=True)
class Plan:
    suite: Suite
    cells: tuple[Cell, ...]
    teachers: tuple[TrialSpec, ...]
    finals: tuple[TrialSpec, ...]
    """Final trials whose hyperparameters are known now (cells that are not tuned)."""
    studies: tuple[StudyPlan, ...] = ()
    """Tuned cells: their final trials follow from their studies' best trials."""

    @property
    def trials(self) -> tuple[TrialSpec, ...]:
        """The trials known before tuning: teachers and the untuned cells' finals."""
        return self.teachers + self.finals

    def counts(self) -> dict[str, int]:
        seeds = len(self.suite.seeds)
        return {
            "teacher": len(self.teachers),
            "tune": sum(s.budget for s in self.studies),
            "final": len(self.finals) + seeds * len(self.studies),
        }

    def representative(self) -> list[TrialSpec]:
        """Every trial the plan will run, tuned cells' at their default hyperparameters (for costs)."""
        out = list(self.trials)
        for s in self.studies:
            hp = resolve_hparams(s.cell.method)
            out += [tune_spec(self.suite, s.cell, s.teacher, n, hp) for n in range(s.budget)]
            out += [
                final_spec(self.suite, s.cell, s.teacher, seed, hp) for seed in self.suite.seeds
            ]
        return out


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
        custom=suite.resources.teacher.custom,
        accelerator_type=suite.resources.teacher.accelerator_type,
        checkpoint_sha256=checkpoint_sha256,
    )


def _student_spec(
    phase: str,
    suite: Suite,
    cell: Cell,
    teacher: TrialSpec,
    seed: int,
    hparams: tuple[tuple[str, Any], ...],
    number: int | None = None,
) -> TrialSpec:
    return TrialSpec(
        phase=phase,
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
        cpus=suite.resources.trial.cpus,
        gpus=suite.resources.trial.gpus,
        custom=suite.resources.trial.custom,
        accelerator_type=suite.resources.trial.accelerator_type,
        teacher_id=teacher.trial_id,
        number=number,
    )


def final_spec(
    suite: Suite, cell: Cell, teacher: TrialSpec, seed: int, hparams: tuple[tuple[str, Any], ...]
) -> TrialSpec:
    """A final trial: the cell's chosen hyperparameters at one of the suite's seeds."""
    return _student_spec("final", suite, cell, teacher, seed, hparams)


def tune_spec(
    suite: Suite, cell: Cell, teacher: TrialSpec, number: int, hparams: tuple[tuple[str, Any], ...]
) -> TrialSpec:
    """Trial ``number`` of a cell's study: scored on `val` only, at the tuning seed."""
    return _student_spec("tune", suite, cell, teacher, suite.tuning.seed, hparams, number)


def study_identity(suite: Suite, cell: Cell, teacher: TrialSpec) -> dict[str, Any]:
    """What makes two tuning trials comparable: a study holds only such trials."""
    probe = tune_spec(suite, cell, teacher, 0, resolve_hparams(cell.method))
    ident = {k: v for k, v in probe.identity().items() if k not in ("hparams", "number", "phase")}
    ident.update(
        method_params=dict(cell.method.params),
        search={k: repr(v) for k, v in cell.method.search},
        tuning={"seed": suite.tuning.seed, "pruner": suite.tuning.pruner},
    )
    return ident


def expand(suite: Suite) -> Plan:
    """Teachers (one per data set × teacher × seed, or per checkpoint), studies and finals.

    A cell is tuned when ``tuning.trials > 0`` and its method has something to search;
    otherwise its final trials run the defaults with the suite's ``params``.
    """
    from kdbench.tuning.space import search_space
    from kdbench.tuning.studies import study_name

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
    finals: list[TrialSpec] = []
    studies: list[StudyPlan] = []
    for cell in all_cells:
        teacher = teachers[(cell.dataset, cell.pair.teacher)]
        space = search_space(cell.method) if suite.tuning.trials > 0 else {}
        if space:
            name = study_name(cell.key, study_identity(suite, cell, teacher))
            studies.append(StudyPlan(cell, name, space, suite.tuning.trials, teacher))
        else:
            hp = resolve_hparams(cell.method)
            finals += [final_spec(suite, cell, teacher, seed, hp) for seed in suite.seeds]
    return Plan(
        suite=suite,
        cells=tuple(all_cells),
        teachers=tuple(teachers.values()),
        finals=tuple(finals),
        studies=tuple(studies),
    )


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
