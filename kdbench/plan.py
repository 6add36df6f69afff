"""Expansion of a suite into cells and trials.

A trial's id is derived from everything that determines its result (data set and split
settings, teacher, student, method, hyperparameters, training budget, seed, phase), so a
rerun on the same results directory recognises finished work, and a changed setting makes a
new trial rather than silently reusing an old row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from kdbench.suite import (
    Budget,
    DataConfig,
    MethodEntry,
    Pair,
    Resources,
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


@dataclass(frozen=True, kw_only=True)
class TrialSpec:
    """What every trial has: everything a worker needs to run it, nothing looked up elsewhere.

    Two kinds, each with its own entry point (``run_teacher``, ``run_student``):
    ``TeacherSpec`` (train or load a teacher) and ``StudentSpec`` (a tuning or final trial of
    a cell). Both answer the same questions (``student``, ``method``, ``label``, ``hparams``,
    ``teacher_id``, ``number``, ``checkpoint_sha256``), a teacher with constants, so that
    rows and ids are built one way.
    """

    phase: str  # teacher | tune | final
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
                "val_fraction": self.data.val_fraction,
                "augment": self.data.augment,
                # only when set, so that the trials of suites written before it keep their ids
                **({"train": "train+val"} if self.refit else {}),
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
        digest = hashlib.sha256(canonical_json(self.identity()).encode()).hexdigest()[:12]
        parts = [self.phase, self.dataset, self.teacher.arch]
        if self.student:
            parts += [self.student, self.label]
        if self.number is not None:
            parts.append(f"n{self.number}")
        if self.number is None or self.phase == "confirm":
            parts.append(f"s{self.seed}")
        return slug("-".join(parts)) + "-" + digest


@dataclass(frozen=True, kw_only=True)
class TeacherSpec(TrialSpec):
    """A teacher: trained once per (data set, architecture, seed), or loaded from the user's
    checkpoint (then ``epochs`` is 0), and shared by every student trial that names it. Its
    row says ``teacher`` in the ``method`` column and has no student."""

    phase: str = "teacher"
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
class ExpertSpec(TeacherSpec):
    """An expert trajectory (dd_mtt's): a network trained on the real training split by the
    method's recipe (``hparams``), its parameters kept after every epoch. Trained once per
    (data set, network, recipe, expert seed) and shared by every trial that names it, as a
    teacher is: it runs first, its trajectory is cached under its trial id, and its row says
    ``expert`` in the ``phase`` and ``method`` columns, with the expert's own accuracies."""

    phase: str = "expert"
    hparams: tuple[tuple[str, Any], ...] = ()  # type: ignore[misc]
    """The recipe (``kdbench.methods.experts.ExpertRecipe``'s fields)."""

    method: ClassVar[str] = "expert"
    label: ClassVar[str] = "expert"


EXPERT_NET = "convnet_sized"
"""The ``teacher`` column of an expert's row: the ConvNet its recipe sizes (width and depth in
its ``hparams``)."""


def expert_specs(
    suite: Suite, cell: Cell, hparams: tuple[tuple[str, Any], ...], refit: bool
) -> list[ExpertSpec]:
    """The expert trajectories a trial of ``cell`` with ``hparams`` learns from (none unless
    its method declares ``expert_recipe``): seeds 0 … n−1, trained on train+val with
    ``refit``. The suite's budget does not enter: the recipe is the method's."""
    from kdbench.data import dataset_info
    from kdbench.methods import method_class

    cls = method_class(cell.method.name)
    recipe_of = getattr(cls, "expert_recipe", None)
    if recipe_of is None:
        return []
    hp = dict(hparams)
    info = dataset_info(cell.dataset, suite.data.root)
    recipe = recipe_of(hp, tuple(info.input_shape))
    fields = tuple(sorted(recipe.identity().items()))
    budget = Budget(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        optimizer="sgd",
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    return [
        ExpertSpec(
            refit=refit,
            dataset=cell.dataset,
            teacher=TeacherRef(EXPERT_NET),
            seed=seed,
            epochs=recipe.epochs,
            budget=budget,
            data=suite.data,
            resources=suite.resources.trial,
            hparams=fields,
        )
        for seed in range(cls.expert_count(hp))
    ]


def expert_ids(
    suite: Suite, cell: Cell, hparams: tuple[tuple[str, Any], ...], refit: bool
) -> tuple[str, ...]:
    return tuple(e.trial_id for e in expert_specs(suite, cell, hparams, refit))


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
    experts: tuple[str, ...] = ()
    """The trial ids of the expert trajectories its method learns from (dd_mtt); not part of
    its identity, which its hyperparameters and data set already fix."""

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
        from kdbench.methods import method_class

        return self.phase == "final" or method_class(self.method).uses_teacher(dict(self.hparams))


def slug(text: str) -> str:
    """A name fit for a file: ``+`` spelled out, anything else odd made ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("+", "_plus_"))


@dataclass(frozen=True)
class StudyPlan:
    """A tuned cell: its study's name, search space and budget, and its teachers."""

    cell: Cell
    name: str
    space: dict[str, Any]
    budget: int
    teacher: TeacherSpec
    """The teacher its tuning (and confirm) trials distil from: trained on `train` alone."""
    final_teacher: TeacherSpec
    """The teacher its finals distil from: ``teacher``, or with ``data.refit`` the one
    trained on train+val."""


@dataclass(frozen=True)
class Plan:
    suite: Suite
    cells: tuple[Cell, ...]
    teachers: tuple[TeacherSpec, ...]
    finals: tuple[StudentSpec, ...]
    """Final trials whose hyperparameters are known now (cells that are not tuned)."""
    studies: tuple[StudyPlan, ...] = ()
    """Tuned cells: their final trials follow from their studies' best trials."""

    @property
    def trials(self) -> tuple[TrialSpec, ...]:
        """The trials known before tuning: teachers and the untuned cells' finals."""
        return self.teachers + self.finals

    def counts(self) -> dict[str, int]:
        seeds = len(self.suite.seeds)
        counts = {
            "teacher": len(self.teachers),
            "tune": sum(s.budget for s in self.studies),
            "final": len(self.finals) + seeds * len(self.studies),
        }
        if self.suite.tuning.confirm:
            counts["confirm"] = sum(confirm_count(self.suite, s.budget) for s in self.studies)
        return counts

    def representative(self) -> list[TrialSpec]:
        """Every trial the plan will run, tuned cells' at their default hyperparameters (for costs)."""
        out = list(self.trials)
        for s in self.studies:
            hp = resolve_hparams(s.cell.method)
            out += [tune_spec(self.suite, s.cell, s.teacher, n, hp) for n in range(s.budget)]
            out += representative_confirms(self.suite, s, hp)
            out += [
                final_spec(self.suite, s.cell, s.final_teacher, seed, hp)
                for seed in self.suite.seeds
            ]
        return out


def confirm_count(suite: Suite, complete: int) -> int:
    """Confirm trials of a study with ``complete`` complete trials, at most: its ``top`` and
    the reference setting."""
    c = suite.tuning.confirm
    return min(c.top + 1, complete) * c.seeds if c else 0


def representative_confirms(
    suite: Suite, study: StudyPlan, hp: tuple[tuple[str, Any], ...]
) -> list[StudentSpec]:
    """A study's confirm trials at ``hp``, as many as it may run (for costs)."""
    settings = confirm_count(suite, study.budget) // max(len(suite.tuning_seeds) - 1, 1)
    return [
        confirm_spec(suite, study.cell, study.teacher, n, seed, hp)
        for n in range(settings)
        for seed in suite.tuning_seeds[1:]
    ]


def cells(suite: Suite) -> list[Cell]:
    return [
        Cell(d, p, m)
        for d in suite.datasets
        for p in suite.pairs
        for m in suite.methods
        if m.runs_on(p)
    ]


def resolve_hparams(
    entry: MethodEntry, overrides: dict[str, Any] | None = None
) -> tuple[tuple[str, Any], ...]:
    """The method's defaults, then the suite's fixed ``params``, then tuned values."""
    from kdbench.methods import method_class

    cls = method_class(entry.name)
    hp = cls.defaults()
    hp.update(dict(entry.params))
    hp.update(overrides or {})
    return tuple(sorted(cls.complete(hp).items()))


def teacher_spec(
    suite: Suite,
    dataset: str,
    ref: TeacherRef,
    checkpoint_sha256: str | None,
    *,
    refit: bool = False,
) -> TeacherSpec:
    """A teacher's spec; ``refit``: trained on train+val (never for a checkpoint's)."""
    return TeacherSpec(
        refit=refit,
        dataset=dataset,
        teacher=ref,
        seed=suite.teacher.seed,
        epochs=0 if ref.checkpoint else suite.teacher.epochs,
        budget=suite.budget,
        data=suite.data,
        resources=suite.resources.teacher,
        checkpoint_sha256=checkpoint_sha256,
    )


def _student_spec(
    phase: str,
    suite: Suite,
    cell: Cell,
    teacher: TeacherSpec,
    seed: int,
    hparams: tuple[tuple[str, Any], ...],
    number: int | None = None,
) -> StudentSpec:
    refit = phase == "final" and suite.data.refits
    return StudentSpec(
        refit=refit,
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
        resources=suite.resources.trial,
        teacher_id=teacher.trial_id,
        number=number,
        experts=expert_ids(suite, cell, hparams, refit),
    )


def final_spec(
    suite: Suite, cell: Cell, teacher: TeacherSpec, seed: int, hparams: tuple[tuple[str, Any], ...]
) -> StudentSpec:
    """A final trial: the cell's chosen hyperparameters at one of the suite's seeds."""
    return _student_spec("final", suite, cell, teacher, seed, hparams)


def confirm_spec(
    suite: Suite,
    cell: Cell,
    teacher: TeacherSpec,
    number: int,
    seed: int,
    hparams: tuple[tuple[str, Any], ...],
) -> StudentSpec:
    """Tuning trial ``number``'s setting again, at a further tuning seed: scored on `val`."""
    return _student_spec("confirm", suite, cell, teacher, seed, hparams, number)


def tune_spec(
    suite: Suite,
    cell: Cell,
    teacher: TeacherSpec,
    number: int,
    hparams: tuple[tuple[str, Any], ...],
) -> StudentSpec:
    """Trial ``number`` of a cell's study: scored on `val` only, at the tuning seed."""
    return _student_spec("tune", suite, cell, teacher, suite.tuning.seed, hparams, number)


def study_identity(suite: Suite, cell: Cell, teacher: TeacherSpec) -> dict[str, Any]:
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
    """Teachers (one per data set × teacher × seed, or per checkpoint), expert trajectories
    (``ExpertSpec``, where a method learns from them), studies and finals.

    A cell is tuned when ``tuning.trials > 0`` and its method has something to search;
    otherwise its final trials run the defaults with the suite's ``params``. With
    ``data.refit: train+val`` a trained teacher comes twice where a study needs it: on
    `train` for the tuning trials (whose validation images it must not have seen) and on
    train+val for the finals.
    """
    from kdbench.tuning.space import search_space
    from kdbench.tuning.studies import study_name

    hashes: dict[str, str] = {}
    teachers: dict[tuple[str, TeacherRef, bool], TeacherSpec] = {}

    def teacher(dataset: str, ref: TeacherRef, for_finals: bool) -> TeacherSpec:
        key = (dataset, ref, for_finals and suite.data.refits and ref.checkpoint is None)
        if key not in teachers:
            sha = None
            if ref.checkpoint:
                sha = hashes.setdefault(ref.checkpoint, file_sha256(ref.checkpoint))
            teachers[key] = teacher_spec(suite, dataset, ref, sha, refit=key[2])
        return teachers[key]

    all_cells = cells(suite)
    finals: list[StudentSpec] = []
    studies: list[StudyPlan] = []
    experts: dict[str, ExpertSpec] = {}
    for cell in all_cells:
        hp = resolve_hparams(cell.method)
        tuned = suite.tuning.trials > 0 and bool(search_space(cell.method))
        for refit in {suite.data.refits, False} if tuned else {suite.data.refits}:
            experts.update((e.trial_id, e) for e in expert_specs(suite, cell, hp, refit))
        space = search_space(cell.method) if suite.tuning.trials > 0 else {}
        if space:  # the tuning teacher first: tuning starts first
            tuning_teacher = teacher(cell.dataset, cell.pair.teacher, False)
        final_teacher = teacher(cell.dataset, cell.pair.teacher, True)
        if space:
            name = study_name(cell.key, study_identity(suite, cell, tuning_teacher))
            studies.append(
                StudyPlan(cell, name, space, suite.tuning.trials, tuning_teacher, final_teacher)
            )
        else:
            hp = resolve_hparams(cell.method)
            finals += [final_spec(suite, cell, final_teacher, seed, hp) for seed in suite.seeds]
    return Plan(
        suite=suite,
        cells=tuple(all_cells),
        teachers=tuple(teachers.values()) + tuple(experts.values()),
        finals=tuple(finals),
        studies=tuple(studies),
    )


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
