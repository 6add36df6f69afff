"""The plan: a suite expanded into cells and trial specs, each with its id.

``specs`` says what a trial is (``TeacherSpec``, ``PrerequisiteSpec``, ``StudentSpec``) and derives
its id; ``expand`` turns a suite into a ``Plan`` (teachers, what methods need first, studies,
finals); ``space`` gives a cell's search space as Optuna distributions.
"""

from __future__ import annotations

from kdbench.methods.registry import resolve_hparams
from kdbench.plan.expand import (
    Plan,
    StudyPlan,
    cells,
    confirm_count,
    confirm_spec,
    expand,
    file_sha256,
    final_spec,
    implied_entries,
    prerequisite_specs,
    prerequisites_of,
    representative_confirms,
    study_identity,
    study_name,
    teacher_spec,
    tune_spec,
)
from kdbench.plan.space import contains, search_space
from kdbench.plan.specs import (
    Cell,
    PrerequisiteSpec,
    StudentSpec,
    TeacherSpec,
    TrialSpec,
)
from kdbench.spec import PROTOCOL_VERSION, slug

__all__ = [
    "PROTOCOL_VERSION",
    "Cell",
    "Plan",
    "PrerequisiteSpec",
    "StudentSpec",
    "StudyPlan",
    "TeacherSpec",
    "TrialSpec",
    "cells",
    "confirm_count",
    "confirm_spec",
    "contains",
    "expand",
    "file_sha256",
    "final_spec",
    "implied_entries",
    "prerequisite_specs",
    "prerequisites_of",
    "representative_confirms",
    "resolve_hparams",
    "search_space",
    "slug",
    "study_identity",
    "study_name",
    "teacher_spec",
    "tune_spec",
]
