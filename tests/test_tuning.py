"""Tuning: search spaces, selection, studies' budgets and resume, pruning, no early test."""

from __future__ import annotations

import dataclasses
import time

import optuna
import torch
from optuna.distributions import FloatDistribution

from kdbench.plan import expand, resolve_hparams, search_space, tune_spec
from kdbench.spec import TuningConfig
from kdbench.training.trial import RunInfo, run_student, run_teacher
from kdbench.tuning.studies import StudyBook, StudySpec, journal_path, select
from tests.conftest import small_suite

INFO = RunInfo(run_id="r", suite="t")


def suite(**over):
    return small_suite(**{"budget": {"epochs": 3}, "tuning": {"trials": 4}, **over})


def test_search_space_follows_the_method_params_and_overrides():
    s = suite(methods=[{"name": "kd", "params": {"gamma": 0.5}, "search": {"T": [2, 8]}}])
    space = search_space(s.methods[1])
    assert set(space) == {"alpha", "T"}  # gamma is fixed
    assert space["T"] == FloatDistribution(2.0, 8.0)
    assert space["alpha"] == FloatDistribution(0.0, 1.0)
    assert search_space(s.methods[0]) == {}  # scratch: nothing to tune


def test_only_cells_with_something_to_search_get_a_study():
    plan = expand(
        suite(
            methods=[
                "kd",
                {"name": "kd", "label": "kd_paper", "params": {"T": 4, "alpha": 0.9, "gamma": 0.1}},
            ]
        )
    )
    assert [s.cell.method.label for s in plan.studies] == ["kd"]
    assert plan.counts() == {"teacher": 1, "tune": 4, "final": 3}
    untuned = expand(suite(tuning={"trials": 0}))
    assert untuned.studies == () and len(untuned.finals) == 2


def test_selection_keeps_the_reference_unless_the_best_is_clearly_better():
    trials = [(0, {"T": 4.0}, 0.950), (1, {"T": 9.0}, 0.960), (2, {"T": 2.0}, 0.940)]
    # one standard error at 0.96 on 359 images is 1.03 points: 0.95 is within it
    assert select(trials, {"T": 4.0}, 359)[:3] == (0, {"T": 4.0}, 0.950)
    # on 10,000 images it is 0.2 points: the best wins
    assert select(trials, {"T": 4.0}, 10_000)[:3] == (1, {"T": 9.0}, 0.960)
    assert select(trials, None, 359)[0] == 1
    assert (
        select([(0, {"T": 1.0}, 0.9), (1, {"T": 2.0}, 0.9)], None, 100)[0] == 0
    )  # earliest on a tie
    assert select([], {"T": 4.0}, 359) is None


def spec(name="c@1", budget=4, **kw):
    return StudySpec(
        name,
        {"T": FloatDistribution(1, 20, log=True)},
        budget=budget,
        epochs=5,
        timeout_s=kw.pop("timeout_s", None),
        tuning=TuningConfig(trials=budget),
        **kw,
    )


def test_the_reference_setting_is_the_first_trial(tmp_path):
    book = StudyBook(str(tmp_path), None, [spec(start={"T": 4.0})])
    assert book.ask("c@1") == (0, {"T": 4.0})
    assert book.ask("c@1")[1] != {"T": 4.0}


def test_a_study_stops_at_its_budget_and_resumes_interrupted_trials(tmp_path):
    book = StudyBook(str(tmp_path), None, [spec(budget=3)])
    n0, _ = book.ask("c@1")
    book.tell("c@1", n0, "ok", 0.8)
    n1, p1 = book.ask("c@1")  # the driver dies while this one runs
    resumed = StudyBook(str(tmp_path), None, [spec(budget=3)])
    assert resumed.interrupted("c@1") == [(n1, p1)]
    assert resumed.interrupted("c@1") == []  # handed out once
    assert resumed.counts("c@1") == (1, 1)
    n2, _ = resumed.ask("c@1")
    assert not resumed.can_ask("c@1")  # 1 finished + 2 running = the budget
    resumed.tell("c@1", n1, "pruned", None)
    resumed.tell("c@1", n2, "failed", None)
    assert resumed.done("c@1") and resumed.counts("c@1") == (3, 0)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal_path(tmp_path)))
    )
    study = optuna.load_study(study_name="c@1", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL"]


def test_time_and_suite_totals_stop_asking(tmp_path):
    book = StudyBook(str(tmp_path), None, [spec(timeout_s=0.05)])
    book.ask("c@1")
    time.sleep(0.1)
    assert not book.can_ask("c@1")
    totals = StudyBook(str(tmp_path / "b"), None, [spec("a@1"), spec("b@1")], total_trials=3)
    totals.ask("a@1"), totals.ask("a@1"), totals.ask("b@1")
    assert not totals.can_ask("a@1") and not totals.can_ask("b@1")


def test_a_journal_torn_by_a_killed_writer_is_repaired(tmp_path):
    book = StudyBook(str(tmp_path), None, [spec()])
    book.tell("c@1", book.ask("c@1")[0], "ok", 0.5)
    path = journal_path(tmp_path)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "par')  # cut mid-line
    (path.parent / (path.name + ".lock")).write_text("stale")
    again = StudyBook(str(tmp_path), None, [spec()])
    again.tell("c@1", again.ask("c@1")[0], "ok", 0.6)
    assert StudyBook(str(tmp_path), None, [spec()]).counts("c@1") == (2, 0)


class TestSplitGuard:
    """A data set whose test split raises when touched: tuning must never look at it."""

    @staticmethod
    def guarded(bundle):
        class Guarded(type(bundle)):
            armed = False

            def __getattribute__(self, name):
                if name in ("test_x", "test_y") and super().__getattribute__("armed"):
                    raise AssertionError(f"the test split was read ({name})")
                return super().__getattribute__(name)

        fields = {f.name: getattr(bundle, f.name) for f in dataclasses.fields(bundle)}
        guarded = Guarded(**fields)
        guarded.armed = True
        return guarded

    def test_tune_trials_never_read_the_test_split(self, synthetic):
        plan = expand(suite())
        teacher = run_teacher(plan.teachers[0], synthetic, INFO)
        study = plan.studies[0]
        tspec = tune_spec(
            plan.suite, study.cell, study.teacher, 0, resolve_hparams(study.cell.method)
        )
        row = run_student(tspec, self.guarded(synthetic), INFO, teacher.weights).row
        assert row["status"] == "ok", row.get("error")
        assert (
            row.get("test_acc") is None
            and row.get("agreement") is None
            and 0 <= row["val_acc"] <= 1
        )
        final = plan.finals[0]
        failed = run_student(final, self.guarded(synthetic), INFO, teacher.weights).row
        assert "the test split was read" in failed["error"]  # the guard is real


def test_val_and_test_never_overlap():
    from kdbench.data.base import carve_val

    x = torch.arange(200, dtype=torch.float32).view(200, 1, 1, 1)
    y = torch.arange(200) % 4
    b = carve_val(
        "t", x[:150], y[:150], x[150:], y[150:], val_fraction=0.2, num_classes=4, augment=None
    )  # type: ignore[arg-type]
    ids = {s: set(getattr(b, f"{s}_x").flatten().tolist()) for s in ("train", "val", "test")}
    assert len(ids["val"]) == 30 and len(ids["train"]) == 120
    assert (
        not (ids["val"] & ids["test"])
        and not (ids["val"] & ids["train"])
        and not (ids["train"] & ids["test"])
    )


def test_a_reporter_that_says_stop_prunes_the_trial(synthetic):
    plan = expand(suite(budget={"epochs": 5}))
    study = plan.studies[0]
    tspec = tune_spec(plan.suite, study.cell, study.teacher, 0, resolve_hparams(study.cell.method))
    teacher = run_teacher(plan.teachers[0], synthetic, INFO)
    seen = []
    row = run_student(
        tspec,
        synthetic,
        INFO,
        teacher.weights,
        reporter=lambda epoch, acc: seen.append(epoch) or epoch == 2,
    ).row
    assert seen == [1, 2]
    assert row["status"] == "pruned" and row["epoch_reported"] == 2 and row["epochs"] == 5
    assert row["images_seen"] == 2 * len(synthetic.train_y)
