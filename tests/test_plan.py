"""Expansion into cells and trials, and trial ids derived from what determines a result."""

from __future__ import annotations

from kdbench.plan import expand
from kdbench.validation import parse_suite


def suite(**over):
    raw = {
        "name": "t",
        "datasets": ["digits", "synthetic"],
        "pairs": [
            {"teacher": "cnn_wide", "student": "cnn_tiny"},
            {"teacher": "cnn_wide", "student": "cnn_small"},
        ],
        "methods": ["kd", {"name": "kd", "label": "kd_t8", "params": {"T": 8}}],
        "seeds": [0, 1, 2],
        "tuning": {"trials": 0},
    }
    raw.update(over)
    return parse_suite(raw)


def test_matrix_expansion():
    plan = expand(suite())
    assert len(plan.cells) == 2 * 2 * 3  # scratch added to every pair
    assert len(plan.teachers) == 2  # one per (dataset, teacher arch): shared by both pairs
    assert len(plan.finals) == 12 * 3
    assert {c.method.label for c in plan.cells} == {"scratch", "kd", "kd_t8"}
    kd8 = next(s for s in plan.finals if s.label == "kd_t8")
    assert dict(kd8.hparams) == {"T": 8.0, "alpha": 0.9, "gamma": 0.1}
    assert all(s.teacher_id in {t.trial_id for t in plan.teachers} for s in plan.finals)


def test_trial_ids_are_unique_readable_and_stable():
    a, b = expand(suite()), expand(suite())
    ids = [t.trial_id for t in a.trials]
    assert len(set(ids)) == len(ids)
    assert ids == [t.trial_id for t in b.trials]
    assert any(i.startswith("final-digits-cnn_wide-cnn_tiny-kd_t8-s2-") for i in ids)


def test_ids_follow_what_changes_results_and_ignore_what_does_not():
    base = {t.trial_id for t in expand(suite()).trials}
    more_cpus = {t.trial_id for t in expand(suite(resources={"cpus_per_trial": 2})).trials}
    renamed = {t.trial_id for t in expand(suite(name="other")).trials}
    # compiled or eager, the same arithmetic: a rerun with compile on skips finished trials
    compiled = {t.trial_id for t in expand(suite(budget={"compile": "default"})).trials}
    assert base == more_cpus == renamed == compiled
    a, b = expand(suite()), expand(suite(budget={"epochs": 31}))
    assert not ({s.trial_id for s in a.finals} & {s.trial_id for s in b.finals})
    # the students train longer; the teachers (teacher.epochs) are the same and stay cached
    assert [t.trial_id for t in a.teachers] == [t.trial_id for t in b.teachers]


def test_changing_the_teacher_recipe_changes_every_student_id():
    a = expand(suite())
    b = expand(suite(teacher={"epochs": 5}))
    assert not ({s.trial_id for s in a.finals} & {s.trial_id for s in b.finals})
