"""Expansion of a suite into cells, teachers, what methods need made first, studies and
finals."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kdbench.data import dataset_info
from kdbench.methods import Method, method_class
from kdbench.methods.registry import resolve_hparams
from kdbench.plan.space import search_space
from kdbench.plan.specs import (
    Cell,
    PrerequisiteSpec,
    StudentSpec,
    TeacherSpec,
    TrialSpec,
)
from kdbench.results.schema import Phase
from kdbench.spec import MethodEntry, Suite, TeacherRef, digest


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


def prerequisite_specs(
    suite: Suite, cell: Cell, hparams: tuple[tuple[str, Any], ...], refit: bool
) -> list[PrerequisiteSpec]:
    """What a trial of ``cell`` with ``hparams`` needs made first, as its method declares
    (``Method.prerequisites``; none for most): each a trial at seeds 0 … n−1, trained on
    train+val with ``refit``. The suite's budget does not enter: the recipe is the method's."""
    cls = method_class(cell.method.name)
    if cls.prerequisites.__func__ is Method.prerequisites.__func__:  # type: ignore[attr-defined]
        return []  # declares none: the data set's files need not be looked at
    info = dataset_info(cell.dataset, suite.data.root)
    return [
        PrerequisiteSpec(
            refit=refit,
            phase=p.kind,
            dataset=cell.dataset,
            teacher=TeacherRef(p.network),
            seed=seed,
            epochs=p.budget.epochs,
            budget=p.budget,
            data=suite.data,
            resources=suite.resources.trial,
            hparams=p.recipe,
            maker=cell.method.name,
        )
        for p in cls.prerequisites(dict(hparams), tuple(info.input_shape))
        for seed in range(p.seeds)
    ]


def prerequisites_of(
    suite: Suite, cell: Cell, hparams: tuple[tuple[str, Any], ...], refit: bool
) -> tuple[tuple[str, str], ...]:
    """(kind, trial id) of each of ``prerequisite_specs``."""
    return tuple((p.phase, p.trial_id) for p in prerequisite_specs(suite, cell, hparams, refit))


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
    phase: Phase,
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
        prerequisites=prerequisites_of(suite, cell, hparams, refit),
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
    """Teachers (one per data set × teacher × seed, or per checkpoint), what methods declare
    they need made first (``PrerequisiteSpec``, planned with the teachers), studies and
    finals.

    A cell is tuned when ``tuning.trials > 0`` and its method has something to search;
    otherwise its final trials run the defaults with the suite's ``params``. With
    ``data.refit: train+val`` a trained teacher comes twice where a study needs it: on
    `train` for the tuning trials (whose validation images it must not have seen) and on
    train+val for the finals.
    """
    hashes: dict[str, str] = {}
    teachers: dict[tuple[str, TeacherRef, bool], TeacherSpec] = {}

    def teacher(dataset: str, ref: TeacherRef, for_finals: bool) -> TeacherSpec:
        key = (dataset, ref, for_finals and suite.data.refits and ref.checkpoint is None)
        if key not in teachers:
            sha = None
            if ref.digest:  # a library's pretrained weights: the hash it publishes
                sha = ref.digest
            elif ref.checkpoint:
                sha = hashes.setdefault(ref.checkpoint, file_sha256(ref.checkpoint))
            teachers[key] = teacher_spec(suite, dataset, ref, sha, refit=key[2])
        return teachers[key]

    all_cells = cells(suite)
    finals: list[StudentSpec] = []
    studies: list[StudyPlan] = []
    prerequisites: dict[str, PrerequisiteSpec] = {}
    for cell in all_cells:
        hp = resolve_hparams(cell.method)
        space = search_space(cell.method) if suite.tuning.trials > 0 else {}
        for refit in {suite.data.refits, False} if space else {suite.data.refits}:
            prerequisites.update(
                (p.trial_id, p) for p in prerequisite_specs(suite, cell, hp, refit)
            )
        if space:  # the tuning teacher first: tuning starts first
            tuning_teacher = teacher(cell.dataset, cell.pair.teacher, False)
        final_teacher = teacher(cell.dataset, cell.pair.teacher, True)
        if space:
            name = study_name(cell.key, study_identity(suite, cell, tuning_teacher))
            studies.append(
                StudyPlan(cell, name, space, suite.tuning.trials, tuning_teacher, final_teacher)
            )
        else:
            finals += [final_spec(suite, cell, final_teacher, seed, hp) for seed in suite.seeds]
    return Plan(
        suite=suite,
        cells=tuple(all_cells),
        teachers=tuple(teachers.values()) + tuple(prerequisites.values()),
        finals=tuple(finals),
        studies=tuple(studies),
    )


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def study_name(cell_key: str, identity: dict[str, Any]) -> str:
    """A study's name: the cell's key and a hash of what makes its trials comparable."""
    return f"{cell_key}@{digest(identity, 8)}"


def implied_entries(entries: Sequence[MethodEntry]) -> list[MethodEntry]:
    """The entries a suite's own entries bring with them, as their methods declare
    (``Method.baselines``), after the suite's own: each distinct hook is asked once, with
    every entry so far."""
    added: list[MethodEntry] = []
    asked: list[object] = []
    for entry in entries:
        hook = method_class(entry.name).baselines
        if hook.__func__ in asked:  # type: ignore[attr-defined]
            continue
        asked.append(hook.__func__)  # type: ignore[attr-defined]
        added += hook([*entries, *added])
    return added
