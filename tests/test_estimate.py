"""The cost estimate of `--dry-run`: what it counts, measured on this machine."""

from __future__ import annotations

import pytest

from kdbench.data import dataset_info
from kdbench.scheduler.estimate import _eval_seconds, estimate
from tests.conftest import small_plan


def plan_of(**over):
    setting = {"budget": {"epochs": 4}, "teacher": {"epochs": 4}, "tuning": {"trials": 1}}
    return small_plan(**{"datasets": ["digits"], **setting, **over})


def test_evaluation_is_counted_and_a_final_scores_test_after_every_epoch():
    plan = plan_of()
    specs = plan.representative()
    tune = next(s for s in specs if s.phase == "tune" and s.label == "kd")
    final = next(s for s in specs if s.phase == "final" and s.label == "kd")
    info = dataset_info("digits")
    # a final's validated epochs each score val and test, a tuning trial's val alone
    assert _eval_seconds(final, 3.0, 10, 4, info.val) == pytest.approx(
        4 * (info.val + info.test) * 3.0 / 10 / 3
    )
    assert _eval_seconds(tune, 3.0, 10, 4, info.val) == pytest.approx(4 * info.val * 3.0 / 10 / 3)
    # 300 epochs on a synthetic set under a 4-epoch budget validate 4 times, not 300
    assert _eval_seconds(final, 3.0, 10, 300, info.val) == _eval_seconds(
        final, 3.0, 10, 4, info.val
    )
    est = estimate(plan, [tune, final], cpus_available=1)
    assert 0 < est.eval_seconds < est.cpu_seconds


def test_refit_trials_are_costed_on_train_and_val():
    plain = plan_of(tuning={"trials": 0})
    refit = plan_of(tuning={"trials": 0}, data={"refit": "train+val"})
    a = estimate(plain, list(plain.finals), cpus_available=1)
    b = estimate(refit, list(refit.finals), cpus_available=1)
    assert a.images == 2 * 4 * 1078 and b.images == 2 * 4 * (1078 + 359)


def test_the_probe_runs_at_the_trials_precision():
    plan = plan_of(budget={"epochs": 4, "precision": "bf16"}, tuning={"trials": 0})
    est = estimate(plan, list(plan.finals), cpus_available=1)
    assert est.cpu_seconds > 0 and est.trials == {"final": 2}


def test_gpu_hours_come_from_recorded_rates_at_the_suites_packing(tmp_path):
    from kdbench.scheduler.estimate import DeviceRates, gpu_hours, training_flops

    path = tmp_path / "rates.json"
    assert DeviceRates.load(path) is None  # nothing recorded
    DeviceRates("NVIDIA H100", "2026-12-06", {1: 100_000.0, 4: 250_000.0}).save(path)
    rates = DeviceRates.load(path)
    assert rates is not None and rates.device == "NVIDIA H100"
    plan = plan_of(tuning={"trials": 0}, resources={"gpus_per_trial": 0.25})
    specs = list(plan.finals)
    flops = training_flops(specs)
    # 2 finals × 4 epochs × 1,078 images; kd reads the teacher (cnn_small), scratch does not
    assert flops > 0
    hours, k = gpu_hours(specs, rates)
    assert k == 4 and hours == pytest.approx(flops / 250_000e9 / 3600)
    # a packing never measured takes the nearest one that was
    assert rates.at(3) == (4, 250_000.0) and rates.at(1) == (1, 100_000.0)
    path.write_text("{not json")
    assert DeviceRates.load(path) is None


def test_training_flops_count_the_teacher_only_where_the_method_reads_it():
    from kdbench.models import build_model, count_macs
    from kdbench.scheduler.estimate import training_flops

    plan = plan_of(tuning={"trials": 0})
    scratch = next(s for s in plan.finals if s.method == "scratch")
    kd = next(s for s in plan.finals if s.method == "kd")
    student = count_macs(build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8)), (1, 8, 8))
    teacher = count_macs(build_model("cnn_small", num_classes=10, input_shape=(1, 8, 8)), (1, 8, 8))
    images = 4 * 1078
    assert training_flops([scratch]) == 2.0 * images * 3 * student
    assert training_flops([kd]) == 2.0 * images * (3 * student + teacher)
