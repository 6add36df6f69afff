"""One trial in-process: the row it returns, and failures that become `failed` rows."""

from __future__ import annotations

import dataclasses

import torch

from kdbench.methods import METHODS, Method, Needs
from kdbench.results import COLUMNS
from kdbench.training.trial import RunInfo, run_student, run_teacher
from tests.conftest import small_plan

INFO = RunInfo(run_id="r", suite="t")


def test_teacher_then_student_rows(synthetic):
    plan = small_plan()
    teacher = run_teacher(plan.teachers[0], synthetic, INFO)
    assert teacher.row["status"] == "ok" and teacher.weights
    assert teacher.row["phase"] == "teacher" and teacher.row["student"] is None
    assert 0 <= teacher.row["test_acc"] <= 1
    kd = next(s for s in plan.finals if s.label == "kd")
    out = run_student(kd, synthetic, INFO, teacher.weights)
    row = out.row
    assert set(row) <= set(COLUMNS)
    assert row["status"] == "ok" and row["method"] == "kd" and row["phase"] == "final"
    for col in ("val_acc", "test_acc", "test_top5", "teacher_test_acc", "agreement"):
        assert 0 <= row[col] <= 1, col
    assert row["teacher_test_acc"] == teacher.row["test_acc"]
    assert row["epoch_reported"] == 2 and len(out.curve) == 2
    assert row["images_seen"] == 2 * len(synthetic.train_y)
    assert row["student_params"] == 1030 and row["peak_mem_mb"] > 0
    assert row["started_at"] <= row["finished_at"] and row["device"] == "cpu"


def test_same_spec_same_result(synthetic):
    spec = small_plan().finals[0]  # scratch, seed 0
    a = run_student(spec, synthetic, INFO).row
    b = run_student(spec, synthetic, INFO).row
    assert a["test_acc"] == b["test_acc"] and a["val_acc"] == b["val_acc"]


def test_a_diverging_trial_becomes_a_failed_row(synthetic):
    plan = small_plan(budget={"epochs": 2, "lr": 1.0e30})
    out = run_student(plan.finals[0], synthetic, INFO)
    assert out.row["status"] == "failed"
    assert out.row["error"].startswith("TrialDiverged: loss became nan")
    assert out.row.get("test_acc") is None


class BadShapes(Method):
    """A broken user method: its loss multiplies tensors of incompatible shapes."""

    name = "bad_shapes"
    needs = Needs(teacher=False)

    def terms(self, step):
        return {"oops": (step.student.logits @ torch.ones(3, 3)).sum()}


def test_a_raising_method_becomes_a_failed_row_with_the_reason(synthetic, monkeypatch):
    monkeypatch.setitem(METHODS._entries, "bad_shapes", BadShapes)
    spec = dataclasses.replace(small_plan().finals[0], method="bad_shapes", label="bad_shapes")
    row = run_student(spec, synthetic, INFO).row
    assert row["status"] == "failed"
    assert "RuntimeError" in row["error"] and "shapes" in row["error"] and "\n" not in row["error"]


def test_a_student_whose_teacher_failed_fails_with_that_reason(synthetic):
    kd = next(s for s in small_plan().finals if s.label == "kd")
    row = run_student(kd, synthetic, INFO, None).row
    assert row["status"] == "failed" and "teacher cnn_small" in row["error"]


def test_a_checkpoint_that_does_not_fit_the_architecture_fails_clearly(synthetic, tmp_path):
    from kdbench.models import build_model

    ckpt = tmp_path / "t.pt"
    torch.save(build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8)).state_dict(), ckpt)
    plan = small_plan(
        pairs=[{"teacher": {"arch": "cnn_small", "checkpoint": str(ckpt)}, "student": "cnn_tiny"}]
    )
    from kdbench.training.weights import read_checkpoint

    row = run_teacher(plan.teachers[0], synthetic, INFO, read_checkpoint(str(ckpt))).row
    assert row["status"] == "failed" and "does not fit cnn_small" in row["error"]


def test_a_users_checkpoint_is_evaluated_not_trained(synthetic, tmp_path):
    plan = small_plan()
    trained = run_teacher(plan.teachers[0], synthetic, INFO)
    ckpt = tmp_path / "mine.pt"
    from kdbench.training.weights import load_weights

    torch.save({"state_dict": load_weights(trained.weights)}, ckpt)
    from kdbench.training.weights import read_checkpoint

    plan2 = small_plan(
        pairs=[{"teacher": {"arch": "cnn_small", "checkpoint": str(ckpt)}, "student": "cnn_tiny"}]
    )
    row = run_teacher(plan2.teachers[0], synthetic, INFO, read_checkpoint(str(ckpt))).row
    assert row["status"] == "ok" and row["images_seen"] == 0 and row["epochs"] == 0
    assert row["test_acc"] == trained.row["test_acc"]
    assert (
        plan2.teachers[0].checkpoint_sha256
        and plan2.teachers[0].trial_id != plan.teachers[0].trial_id
    )


def test_peak_memory_is_the_trials_own_not_the_workers_lifetime():
    import torch

    from kdbench.training.trial import PeakMemory

    big = torch.ones(1024 * 2**18)  # 1 GiB of float32, touched
    del big  # an earlier trial's peak, long gone
    with PeakMemory(torch.device("cpu")) as small:
        x = torch.ones(64 * 2**18)  # 64 MiB
        del x
    with PeakMemory(torch.device("cpu")) as large:
        x = torch.ones(512 * 2**18)  # 512 MiB
        del x
    # each block sees its own allocation on top of the same base, not the 1 GiB before it
    # (the worker's lifetime peak would give both the same figure)
    assert 400 < large.mb - small.mb < 512, (small.mb, large.mb)
