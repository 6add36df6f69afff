"""The protocol's guarantees: tuning seeds never double as final seeds, refit on the whole
training split, seed-confirmed selection, and best-versus-last epoch reporting.

Planning and scheduling run without Ray here (a study book that scores each setting, an
executor that runs tasks at once); one run goes through real Ray end to end."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from kdbench.errors import SuiteError
from kdbench.plan import expand
from kdbench.results import store
from kdbench.scheduler.core import Scheduler, drive
from kdbench.scheduler.work import planned_specs, remaining
from kdbench.spec import TUNING_SEED
from kdbench.training.trial import RunInfo, run_student, run_teacher
from kdbench.tuning.studies import select
from kdbench.tuning.tuner import Tuner
from kdbench.validation import parse_suite
from tests.conftest import write_suite


def raw_suite(**over):
    raw = {
        "name": "proto",
        "datasets": ["digits"],
        "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
        "methods": ["kd"],
        "seeds": [0, 1, 2],
        "budget": {"epochs": 2},
        "teacher": {"epochs": 2},
    }
    raw.update(over)
    return raw


# --------------------------------------------------------------------------- tuning seeds


def test_a_tuning_seed_among_the_final_seeds_is_refused_in_one_line(tmp_path):
    path = write_suite(
        tmp_path,
        "name: s\ndatasets: [digits]\npairs: [{teacher: cnn_wide, student: cnn_tiny}]\n"
        "methods: [kd]\nseeds: [0, 1, 2]\ntuning: {trials: 4, seed: 1}\n",
    )
    from kdbench.validation import load_suite

    with pytest.raises(SuiteError) as err:
        load_suite(path)
    text = str(err.value)
    assert text.startswith(f"{path}: tuning.seed: 1 is also a final seed (seeds[1])")
    assert "double as a final trial" in text and str(TUNING_SEED) in text and "\n" not in text


def test_confirmation_seeds_count_as_tuning_seeds():
    with pytest.raises(SuiteError, match=r"tuning seeds 5 to 7 .* include seeds\[1\] = 7"):
        parse_suite(
            raw_suite(seeds=[0, 7], tuning={"trials": 4, "seed": 5, "confirm": {"seeds": 2}})
        )
    # no tuning at all: the tuning seed is never used, so it may be anything
    assert parse_suite(raw_suite(tuning={"trials": 0, "seed": 0})).tuning.seed == 0


def test_the_default_tuning_seed_lies_outside_the_seeds_and_tune_trials_use_it():
    suite = parse_suite(raw_suite(tuning={"trials": 3, "confirm": {"top": 2, "seeds": 2}}))
    assert suite.tuning.seed == TUNING_SEED and suite.tuning_seeds == (
        TUNING_SEED,
        TUNING_SEED + 1,
        TUNING_SEED + 2,
    )
    plan = expand(suite)
    tuned = [s for s in plan.representative() if s.phase in ("tune", "confirm")]
    finals = [s for s in plan.representative() if s.phase == "final"]
    assert {s.seed for s in tuned} == set(suite.tuning_seeds)
    assert {s.seed for s in finals} == {0, 1, 2}
    assert not {s.trial_id for s in tuned} & {s.trial_id for s in finals}


def test_val_fraction_zero_needs_no_tuning():
    with pytest.raises(SuiteError, match=r"data\.val_fraction: 0 leaves no validation split"):
        parse_suite(raw_suite(datasets=["synthetic"], data={"val_fraction": 0}))
    suite = parse_suite(
        raw_suite(datasets=["synthetic"], data={"val_fraction": 0}, tuning={"trials": 0})
    )
    assert suite.data.val_fraction == 0


# --------------------------------------------------------------------------- refit


def test_refit_bundle_trains_on_train_and_val_and_keeps_the_statistics(digits):
    refit = digits.refit()
    assert len(refit.train_y) == len(digits.train_y) + len(digits.val_y) == 1078 + 359
    assert len(refit.val_y) == 0 and torch.equal(refit.test_y, digits.test_y)
    assert refit.mean == digits.mean and refit.std == digits.std
    assert torch.equal(refit.train_x[len(digits.train_y) :], digits.val_x)


def test_refit_plan_tunes_with_a_train_teacher_and_finals_use_a_train_val_one():
    plan = expand(parse_suite(raw_suite(methods=["kd"], data={"refit": "train+val"})))
    teachers = {t.refit: t for t in plan.teachers}
    assert set(teachers) == {False, True} and len(plan.teachers) == 2
    (study,) = plan.studies
    assert study.teacher is teachers[False] and study.final_teacher is teachers[True]
    spec = plan.representative()
    tune = [s for s in spec if s.phase == "tune"]
    finals = [s for s in spec if s.phase == "final"]
    assert tune and all(not s.refit and s.teacher_id == teachers[False].trial_id for s in tune)
    assert finals and all(s.refit and s.teacher_id == teachers[True].trial_id for s in finals)
    # scratch's finals are not tuned: they refit too, on the same teacher
    assert all(s.refit for s in plan.finals)


def test_refit_without_tuning_trains_one_teacher_and_changes_only_refit_ids():
    base = expand(parse_suite(raw_suite(tuning={"trials": 0})))
    refit = expand(parse_suite(raw_suite(tuning={"trials": 0}, data={"refit": "train+val"})))
    assert len(refit.teachers) == 1 and refit.teachers[0].refit
    assert {s.trial_id for s in base.trials}.isdisjoint({s.trial_id for s in refit.trials})
    assert "train" not in base.finals[0].identity()["data"]  # old suites keep their ids


def test_refit_teacher_and_final_train_on_every_training_image(digits):
    plan = expand(parse_suite(raw_suite(tuning={"trials": 0}, data={"refit": "train+val"})))
    data = digits.refit()
    teacher = run_teacher(plan.teachers[0], data, RunInfo("r", "proto"))
    assert teacher.row["status"] == "ok" and math.isnan(teacher.row["val_acc"])
    assert teacher.row["images_seen"] == 2 * (1078 + 359)
    final = run_student(plan.finals[0], data, RunInfo("r", "proto"), teacher.weights).row
    assert final["status"] == "ok" and 0 < final["test_acc"] <= 1
    assert math.isnan(final["val_acc"])  # no `val` left to score: not the training images


def test_the_dry_run_says_what_each_trial_trains_on(tmp_path):
    from kdbench.cli import _splits

    plan = expand(parse_suite(raw_suite(datasets=["cifar100"], data={"refit": "train+val"})))
    assert _splits(plan, "cifar100") == (
        "tuning trials train on 45,000 and validate on 5,000; teachers and finals train on "
        "50,000 (train+val: data.refit); test 10,000 images"
    )


# --------------------------------------------------------------------------- confirmation


@dataclass
class ScoringBook:
    """A study book whose trial ``n`` has params {"T": n} and validation accuracy
    ``values[n]``; every ask is granted up to the budget."""

    budget: int
    values: list[float]
    name: str = ""
    asked: int = 0
    running: set[int] = field(default_factory=set)
    finished: int = 0
    chosen: list = field(default_factory=list)

    def interrupted(self, name):
        return []

    def counts(self, name):
        return self.finished, len(self.running)

    def done(self, name):
        return self.asked >= self.budget and not self.running

    def done_of(self, names):
        return [n for n in names if self.done(n)]

    def complete(self, name):
        return [(n, {"T": float(n + 1)}, self.values[n]) for n in range(self.finished)]

    def best(self, name, confirmed=None):
        trials = self.complete(name)
        seeds = 1
        if confirmed is not None:
            trials = [(n, p, confirmed[n][0]) for n, p, _ in trials if n in confirmed]
            seeds = min(c for _, c in confirmed.values())
        got = select(trials, None, None, seeds)
        self.chosen.append(got)
        return got[1], got[2]

    def ask_next(self, names):
        if self.asked >= self.budget:
            return None
        self.asked += 1
        self.running.add(self.asked - 1)
        return names[0], self.asked - 1, {"T": float(self.asked)}

    def tell(self, name, number, status, value, epoch=None):
        self.running.discard(number)
        self.finished += 1


class InstantExecutor:
    """Runs each task at once; a confirm trial scores ``confirm_val(spec)``."""

    def __init__(self, confirm_val):
        self.confirm_val = confirm_val
        self.order: list = []

    def submit(self, batch):
        self.order.append(list(batch))
        return len(self.order) - 1

    def wait(self, handles, timeout):
        h = min(handles)
        return [(h, [Outcome(self.row(p.spec)) for p in self.order[h]])]

    def row(self, spec):
        val = self.confirm_val(spec) if spec.phase == "confirm" else 0.5
        return {"trial_id": spec.trial_id, "status": "ok", "val_acc": val}

    def failed(self, spec, exc):
        return Outcome({"trial_id": spec.trial_id, "status": "failed"})


@dataclass
class Outcome:
    row: dict
    seconds: float = 1.0


def run_confirmed(
    values, confirm_val, top=2, seeds=2, finished=None, confirm_rows=None, methods=("kd",)
):
    plan = expand(
        parse_suite(
            raw_suite(
                tuning={"trials": len(values), "confirm": {"top": top, "seeds": seeds}},
                methods=list(methods),
            )
        )
    )
    (_study,) = plan.studies
    book = ScoringBook(len(values), values)
    tuner = Tuner(plan, book, confirm_rows=confirm_rows)
    finished = finished or {}
    work = remaining(plan, finished, tuner)
    scheduler = Scheduler(work, tuner, 2.0, wanted=lambda s: s.trial_id not in finished)
    executor = InstantExecutor(confirm_val)
    drive(scheduler, executor, lambda p, o: None, poll_s=0)
    return plan, tuner, book, [p.spec for batch in executor.order for p in batch]


def test_confirmation_reruns_the_best_settings_and_selects_by_their_mean():
    # trial 2 validated best on its seed (0.99) but confirms at 0.90; trial 0 holds at 0.96
    values = [0.96, 0.80, 0.99, 0.85]
    plan, _tuner, _book, ran = run_confirmed(
        values, lambda s: {0: 0.96, 2: 0.90}[s.number], top=2, seeds=2
    )
    confirms = [s for s in ran if s.phase == "confirm"]
    assert sorted((s.number, s.seed) for s in confirms) == [
        (0, TUNING_SEED + 1),
        (0, TUNING_SEED + 2),
        (2, TUNING_SEED + 1),
        (2, TUNING_SEED + 2),
    ]
    assert all(dict(s.hparams)["T"] == s.number + 1 for s in confirms)
    finals = [s for s in ran if s.phase == "final" and s.label == "kd"]
    # trial 2's mean: (0.99 + 0.90 + 0.90) / 3 = 0.93 < trial 0's 0.96
    assert {dict(s.hparams)["T"] for s in finals} == {1.0} and len(finals) == 3
    # every confirm trial went out before any final of the cell
    last_confirm = max(i for i, s in enumerate(ran) if s.phase == "confirm")
    assert all(i > last_confirm for i, s in enumerate(ran) if s in finals)
    assert plan.counts()["confirm"] == 6  # at most: the top 2 and the reference, 2 seeds each


def test_the_reference_setting_is_confirmed_even_outside_the_top():
    # T alone is searched, so the reference (kd's defaults) is {"T": 4.0}: trial 3 here
    kd = {"name": "kd", "params": {"alpha": 0.9, "gamma": 0.1}}
    *_, ran = run_confirmed([0.96, 0.80, 0.99, 0.85], lambda s: 0.9, methods=[kd])
    confirmed = {s.number for s in ran if s.phase == "confirm"}
    assert confirmed == {0, 2, 3}


def test_without_a_contradiction_confirmation_keeps_the_single_seed_pick():
    values = [0.96, 0.80, 0.99, 0.85]
    *_, ran = run_confirmed(values, lambda s: 0.98)
    finals = [s for s in ran if s.phase == "final" and s.label == "kd"]
    assert {dict(s.hparams)["T"] for s in finals} == {3.0}


def test_confirm_rows_of_an_earlier_run_are_not_run_again():
    values = [0.96, 0.80, 0.99, 0.85]
    _plan, _tuner, _book, first = run_confirmed(values, lambda s: {0: 0.96, 2: 0.90}[s.number])
    confirms = [s for s in first if s.phase == "confirm"]
    rows = {s.trial_id: ("ok", {0: 0.96, 2: 0.90}[s.number], None) for s in confirms}
    *_, again = run_confirmed(
        values,
        lambda s: pytest.fail("a confirm trial ran twice"),
        finished={s.trial_id: "ok" for s in first if s.phase != "final"},
        confirm_rows=rows,
    )
    assert not [s for s in again if s.phase == "confirm"]
    finals = [s for s in again if s.phase == "final" and s.label == "kd"]
    assert {dict(s.hparams)["T"] for s in finals} == {1.0}


def test_select_over_seeds_narrows_the_standard_error():
    trials = [(0, {"T": 4.0}, 0.95), (1, {"T": 8.0}, 0.958)]
    # on one seed of 359 images the reference (0.95) stands within one standard error
    assert select(trials, {"T": 4.0}, 359)[0] == 0
    # as a mean over 10 seeds the error is smaller than the gap: the better one is chosen
    chosen = select(trials, {"T": 4.0}, 359, seeds=10)
    assert chosen[0] == 1 and "over 10 tuning seeds" in chosen[3]


def test_planned_specs_of_a_confirmed_study_count_its_confirms():
    plan = expand(parse_suite(raw_suite(tuning={"trials": 4, "confirm": {"top": 3, "seeds": 2}})))
    book = ScoringBook(4, [0.9] * 4)
    tuner = Tuner(plan, book)
    work = remaining(plan, {}, tuner)
    phases = [s.phase for s in planned_specs(work, tuner)]
    # at most the top 3 and the reference: all 4 trials, at 2 seeds each
    assert phases.count("confirm") == 8 and phases.count("tune") == 4


# --------------------------------------------------------------------------- best vs last


def test_final_rows_report_the_best_epoch_beside_the_last(digits):
    plan = expand(parse_suite(raw_suite(budget={"epochs": 6}, tuning={"trials": 0})))
    out = run_student(plan.finals[0], digits, RunInfo("r", "proto"))
    row, curve = out.row, out.curve
    assert [c["epoch"] for c in curve] == list(range(1, 7))
    scored = [c["test_acc"] for c in curve]
    assert not any(math.isnan(v) for v in scored) and scored[-1] == row["test_acc"]
    assert row["best_test_acc"] == max(scored) >= row["test_acc"]
    assert row["best_epoch"] == scored.index(max(scored)) + 1


def test_tuning_trials_never_score_the_test_split(digits):
    plan = expand(parse_suite(raw_suite(tuning={"trials": 2})))
    (_study,) = plan.studies
    spec = next(s for s in plan.representative() if s.phase == "tune")
    teacher = run_teacher(plan.teachers[0], digits, RunInfo("r", "proto"))
    out = run_student(spec, digits, RunInfo("r", "proto"), teacher.weights)
    assert "best_test_acc" not in out.row and "test_acc" not in out.row
    assert all(math.isnan(c["test_acc"]) for c in out.curve)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_refit_confirmed_run_end_to_end(tmp_path, ray_local):
    from kdbench.scheduler.driver import run_suite

    suite = parse_suite(
        raw_suite(
            methods=["kd"],
            seeds=[0, 1],
            data={"refit": "train+val"},
            tuning={"trials": 3, "confirm": {"top": 2, "seeds": 1}, "pruner": "none"},
        )
    )
    summary = run_suite(suite, tmp_path / "r", live=False)
    assert summary.failed == 0
    rows = store.load(tmp_path / "r")
    by = {p: g for p, g in rows.groupby("phase")}
    assert len(by["teacher"]) == 2 and sorted(by["teacher"]["images_seen"]) == [
        2 * 1078,
        2 * (1078 + 359),
    ]
    assert set(by["tune"]["seed"]) == {TUNING_SEED} and len(by["tune"]) == 3
    # the top 2, and the reference (the first trial: kd's defaults) if it is not among them
    assert set(by["confirm"]["seed"]) == {TUNING_SEED + 1} and 2 <= len(by["confirm"]) <= 3
    defaults = '{"T": 4.0, "alpha": 0.9, "gamma": 0.1}'
    assert defaults in set(by["confirm"]["hparams"])
    assert by["confirm"]["val_acc"].between(0, 1).all()
    finals = by["final"]
    assert set(finals["seed"]) == {0, 1} and len(finals) == 4  # kd and scratch
    assert finals["val_acc"].isna().all()
    assert (finals["best_test_acc"] >= finals["test_acc"]).all()
    assert (finals["images_seen"] == 2 * (1078 + 359)).all()
    # a second run finds everything done
    again = run_suite(suite, tmp_path / "r", live=False)
    assert again.ran == 0


def test_the_leaderboard_takes_each_cells_newest_finals_and_their_teacher():
    from kdbench.results.leaderboard import leaderboard

    def final(seed, acc, when, hp, teacher_acc=0.99):
        return {
            "phase": "final",
            "status": "ok",
            "dataset": "digits",
            "teacher": "cnn_wide",
            "student": "cnn_tiny",
            "method": "kd",
            "seed": seed,
            "test_acc": acc,
            "teacher_test_acc": teacher_acc,
            "hparams": hp,
            "finished_at": when,
        }

    rows = store.to_table(
        [final(s, 0.90, f"2026-01-0{s + 1}", '{"T": 4}', 0.95) for s in range(3)]
        + [final(s, 0.96, f"2026-02-0{s + 1}", '{"T": 8}') for s in range(3)]
        # the tuning trials' teacher (refit: trained on train alone) scored lower
        + [{**final(0, 0.97, "2026-01-01", "{}"), "phase": "teacher", "method": "teacher"}]
    ).to_pandas()
    board = leaderboard(rows)
    (kd,) = board.pairs.itertuples()
    assert kd.n == 3 and kd.mean == pytest.approx(0.96) and kd.teacher_acc == pytest.approx(0.99)
