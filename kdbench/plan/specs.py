"""The trials a plan holds: what each one is, and its id.

A trial's id is derived from everything that determines its result (data set and split
settings, teacher, student, method, hyperparameters, training budget, seed, phase), so a
rerun on the same results directory recognises finished work, and a changed setting makes a
new trial rather than silently reusing an old row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from kdbench.methods import method_class
from kdbench.results.schema import Phase
from kdbench.spec import (
    PROTOCOL_VERSION,
    Budget,
    DataConfig,
    MethodEntry,
    Pair,
    Resources,
    TeacherRef,
    budget_identity,
    digest,
    slug,
    split_identity,
)


@dataclass(frozen=True)
class Cell:
    """One (dataset, teacher, student, method) combination of a suite."""

    dataset: str
    pair: Pair
    method: MethodEntry

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.pair.teacher.arch}->{self.pair.student}/{self.method.label}"


@dataclass(frozen=True, kw_only=True)
class TrialSpec:
    """What every trial has: everything a worker needs to run it, nothing looked up elsewhere.

    Three kinds, each run by ``run_teacher`` or ``run_student``: ``TeacherSpec`` (train or
    load a teacher), ``PrerequisiteSpec`` (a teacher-like trial that makes what a method
    declared it needs first) and ``StudentSpec`` (a ``tune``, ``confirm`` or ``final`` trial of a cell). All answer the
    same questions (``student``, ``method``, ``label``, ``hparams``, ``teacher_id``,
    ``number``, ``checkpoint_sha256``), a teacher with constants, so that rows and ids are
    built one way. ``phase`` is one of the five of ``results.schema.Phase``.
    """

    phase: Phase
    dataset: str
    teacher: TeacherRef
    seed: int
    epochs: int
    budget: Budget
    data: DataConfig
    resources: Resources = field(default_factory=Resources)
    """What the trial holds while it runs (not part of its identity)."""
    refit: bool = False
    """Trains on the whole official training split, `val` included (``data.refit``): a
    final trial, or a finals' teacher, once tuning is done."""

    # Answered by each kind, as fields or as constants.
    student: ClassVar[str | None]
    method: ClassVar[str]
    label: ClassVar[str]
    hparams: ClassVar[tuple[tuple[str, Any], ...]]
    teacher_id: ClassVar[str | None]
    number: ClassVar[int | None]
    checkpoint_sha256: ClassVar[str | None]

    def identity(self) -> dict[str, Any]:
        """What determines the result; resources and the suite's name do not."""
        return {
            "protocol": PROTOCOL_VERSION,
            "phase": self.phase,
            "dataset": self.dataset,
            "data": {
                **split_identity(self.data.val_fraction, self.refit),
                "augment": self.data.augment,
            },
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
        parts = [self.phase, self.dataset, self.teacher.arch]
        if self.student:
            parts += [self.student, self.label]
        if self.number is not None:
            parts.append(f"n{self.number}")
        if self.number is None or self.phase == "confirm":
            parts.append(f"s{self.seed}")
        return slug("-".join(parts)) + "-" + digest(self.identity(), 12)


@dataclass(frozen=True, kw_only=True)
class TeacherSpec(TrialSpec):
    """A teacher: trained once per (data set, architecture, seed), or loaded from the user's
    checkpoint (then ``epochs`` is 0), and shared by every student trial that names it. Its
    row says ``teacher`` in the ``method`` column and has no student."""

    phase: Phase = "teacher"
    checkpoint_sha256: str | None = None  # type: ignore[misc]
    """Loaded from a checkpoint: the file's content hash (part of the id)."""

    student: ClassVar[None] = None
    method: ClassVar[str] = "teacher"
    label: ClassVar[str] = "teacher"
    hparams: ClassVar[tuple[tuple[str, Any], ...]] = ()
    teacher_id: ClassVar[None] = None
    number: ClassVar[None] = None
    trains_method: ClassVar[str] = "scratch"
    """The method its training follows: labels alone."""

    @property
    def trains(self) -> str:
        """The architecture the trial trains."""
        return self.teacher.arch


@dataclass(frozen=True, kw_only=True)
class PrerequisiteSpec(TeacherSpec):
    """What a method declares must exist before its trials run (``methods.base.Prerequisite``,
    dd_mtt's expert trajectories): a trial planned like a teacher, once per (data set,
    network, recipe, seed), shared by every trial that names it. It runs first, its result is
    cached under its trial id, and its row says its ``kind`` in the ``phase`` and ``method``
    columns, with its own accuracies."""

    phase: Phase
    """Its kind, as the method declared it (``expert``)."""
    hparams: tuple[tuple[str, Any], ...] = ()  # type: ignore[misc]
    """Its recipe, as the method declared it."""
    maker: str = ""
    """The method that declared it, asked on the worker for its recipe object; not part of
    its identity (two methods that declare the same recipe share the trial)."""

    @property  # type: ignore[override]
    def method(self) -> str:
        """Its kind, as the ``method`` column (and its identity) says."""
        return self.phase

    @property  # type: ignore[override]
    def label(self) -> str:
        return self.phase


@dataclass(frozen=True, kw_only=True)
class StudentSpec(TrialSpec):
    """A trial of one cell, a student trained by a method: ``tune`` (a study's trial, at
    the tuning seed), ``confirm`` (a done study's best setting again, at a further tuning
    seed) or ``final`` (the selected setting at one of the suite's seeds, scored on test)."""

    student: str  # type: ignore[misc]
    method: str  # type: ignore[misc]
    """Registry name (``A+B`` for combinations)."""
    label: str  # type: ignore[misc]
    """The ``method`` column: the entry's label."""
    hparams: tuple[tuple[str, Any], ...]  # type: ignore[misc]
    teacher_id: str  # type: ignore[misc]
    """The trial id of the teacher this trial distils from (its weights come with the task)."""
    number: int | None = None  # type: ignore[misc]
    """Tune trials: the Optuna trial number; confirm trials: the number of the trial they
    rerun."""
    prerequisites: tuple[tuple[str, str], ...] = ()
    """(kind, trial id) of what its method declared must exist first (dd_mtt's expert
    trajectories); not part of its identity, which its hyperparameters and data set already
    fix."""

    @property
    def prerequisite_ids(self) -> tuple[str, ...]:
        return tuple(tid for _, tid in self.prerequisites)

    checkpoint_sha256: ClassVar[None] = None

    @property
    def trains(self) -> str:
        """The architecture the trial trains."""
        return self.student

    @property
    def trains_method(self) -> str:
        return self.method

    @cached_property
    def wants_teacher(self) -> bool:
        """Whether the trial gets its teacher's weights: a final trial always does (its row
        reports agreement with the teacher), a tuning or confirm trial when its method uses
        them."""
        return self.phase == "final" or method_class(self.method).uses_teacher(dict(self.hparams))
