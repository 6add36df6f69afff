"""How a distilled set is evaluated and scored: soft labels, DSA while training on the set, the
baselines every dd entry gets (random subsets, hard-label twins) and DD-Ranking's IOR and HLR."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kdbench.methods import method_class
from kdbench.plan import expand
from kdbench.results.ddsets import evaluation
from kdbench.results.leaderboard import leaderboard
from kdbench.training.trial import RunInfo, run_student, run_teacher
from tests.conftest import small_suite


def dd_suite(methods, **extra):
    return small_suite(name="dd", methods=methods, budget={"epochs": 2, "batch_size": 32}, **extra)


def entries(suite):
    return {m.label: (m.name, dict(m.params), m.pairs) for m in suite.methods}


def test_every_dd_entry_gets_a_random_subset_evaluated_the_same_way():
    suite = dd_suite(
        [
            {"name": "dd_herding", "label": "herd", "params": {"ipc": 3, "train_epochs": 20}},
            {"name": "dd_herding", "label": "herd5", "params": {"ipc": 5, "dsa": True}},
        ]
    )
    got = entries(suite)
    assert got["dd_random_ipc3"] == ("dd_random", {"ipc": 3, "train_epochs": 20}, ())
    assert got["dd_random_ipc5_dsa"] == ("dd_random", {"ipc": 5, "dsa": True}, ())
    assert len(got) == 5  # scratch, the two entries, their two baselines
    # the suite's own random subset, evaluated alike, is the baseline: none is added
    suite = dd_suite(
        [
            {"name": "dd_random", "label": "mine", "params": {"ipc": 3}},
            {"name": "dd_herding", "params": {"ipc": 3}},
        ]
    )
    assert set(entries(suite)) == {"scratch", "mine", "dd_herding"}


def test_a_soft_labelled_entry_gets_its_hard_label_twin_and_a_soft_random_baseline():
    suite = dd_suite([{"name": "dd_herding", "label": "h", "params": {"ipc": 3, "labels": "soft"}}])
    got = entries(suite)
    assert got["h_hard"] == ("dd_herding", {"ipc": 3}, ())
    name, params, _ = got["dd_random_ipc3_soft"]
    assert name == "dd_random"
    assert params == {"ipc": 3, "labels": "soft", "T": 4.0, "alpha": 1.0, "gamma": 0.0}
    assert "dd_random_ipc3" in got  # the twin's own baseline
    # the soft entry's trials carry the soft-label weights, at their defaults
    plan = expand(suite)
    soft = next(s for s in plan.finals if s.label == "h")
    assert {"labels": "soft", "T": 4.0, "alpha": 1.0, "gamma": 0.0}.items() <= dict(
        soft.hparams
    ).items()
    hard = next(s for s in plan.finals if s.label == "h_hard")
    assert "labels" not in dict(hard.hparams)  # as a hard-label entry written by hand
    # soft and hard labels evaluate the same set: one key, made once
    cls = method_class("dd_herding")
    assert cls.reusable(soft) == cls.reusable(hard)


def test_baselines_run_on_the_pairs_of_the_entries_they_serve():
    raw_pairs = [
        {"teacher": "cnn_small", "student": "cnn_tiny"},
        {"teacher": "cnn_small", "student": "cnn_wide"},
    ]
    suite = dd_suite(
        [{"name": "dd_herding", "params": {"ipc": 2}, "pairs": ["cnn_small->cnn_wide"]}],
        pairs=raw_pairs,
    )
    assert entries(suite)["dd_random_ipc2"][2] == ("cnn_small->cnn_wide",)


def test_a_label_taken_by_the_suite_is_not_reused_for_a_baseline():
    suite = dd_suite(
        [
            {"name": "dd_random", "label": "dd_random_ipc3", "params": {"ipc": 3, "dsa": True}},
            {"name": "dd_herding", "params": {"ipc": 3}},
        ]
    )
    got = entries(suite)
    assert got["dd_random_ipc3"][1] == {"ipc": 3, "dsa": True}  # the suite's, untouched
    assert got["dd_random_ipc3_auto"] == ("dd_random", {"ipc": 3}, ())


def test_soft_labels_train_the_student_on_the_teachers_outputs(synthetic):
    suite = dd_suite(
        [{"name": "dd_random", "label": "soft", "params": {"ipc": 2, "labels": "soft"}}]
    )
    plan = expand(suite)
    teacher = run_teacher(plan.teachers[0], synthetic, RunInfo("r", "dd"))
    by_label = {s.label: s for s in plan.finals}
    soft = run_student(by_label["soft"], synthetic, RunInfo("r", "dd"), teacher.weights)
    hard = run_student(by_label["soft_hard"], synthetic, RunInfo("r", "dd"), teacher.weights)
    assert soft.row["status"] == hard.row["status"] == "ok", soft.row.get("error")
    assert "loss_kd" in soft.curve[0] and "loss_ce" not in soft.curve[0]
    assert "loss_ce" in hard.curve[0] and "loss_kd" not in hard.curve[0]
    assert soft.row["artifact"] == hard.row["artifact"]  # the same set
    # a tuning trial of a soft-labelled entry asks for the teacher's weights
    assert by_label["soft"].wants_teacher
    assert method_class("dd_random").uses_teacher({"labels": "soft"})
    assert not method_class("dd_random").uses_teacher({})


def test_dsa_augments_every_batch_of_the_students_training_on_the_set(synthetic):
    cls = method_class("dd_random")
    ctx = None
    on = cls(cls.complete({**cls.defaults(), "dsa": True}), ctx)  # type: ignore[arg-type]
    off = cls(cls.complete(cls.defaults()), ctx)  # type: ignore[arg-type]
    assert off.augmentation() is None
    x = torch.randn(16, 1, 8, 8)
    aug = on.augmentation()
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)


def frame(rows):
    base = {"teacher": "t", "student": "s", "dataset": "d", "phase": "final", "status": "ok"}
    base.update(teacher_test_acc=0.99, train_seconds=1.0, cpus=1.0, gpus=0.0)
    base.update(student_params=100, images_seen=100)
    return pd.DataFrame([{**base, **r} for r in rows])


def dd_row(method, label, seed, acc, set_name, **hp):
    return {
        "method": label,
        "seed": seed,
        "test_acc": acc,
        "hparams": json.dumps(hp),
        "artifact": f"_artifacts/synthetic/{method}-d-{set_name}{seed}.pt",
    }


def test_ior_and_hlr_follow_their_definitions():
    soft = {"ipc": 10, "labels": "soft", "T": 4.0, "alpha": 1.0, "gamma": 0.0}
    rows = []
    for seed in (0, 1):
        rows += [
            {"method": "scratch", "seed": seed, "test_acc": 0.98, "hparams": "{}"},
            dd_row("dd_random", "rnd", seed, 0.90, "r", ipc=10),
            dd_row("dd_random", "rnd_soft", seed, 0.94, "r", **soft),
            dd_row("dd_dm", "dm", seed, 0.93 + seed / 100, "m", ipc=10),
            dd_row("dd_dm", "dm_soft", seed, 0.96, "m", **soft),
            dd_row("dd_dm", "dm_other", seed, 0.92, "x", ipc=10, dsa=True),  # no baseline
        ]
    table = leaderboard(frame(rows)).pairs.set_index("method")
    assert table.loc["dm", "ior"] == pytest.approx(0.935 - 0.90)
    assert table.loc["dm", "hlr"] == pytest.approx(0.98 - 0.935)
    alpha = 0.5 * 0.035 - 0.5 * 0.045
    lrs = (np.exp(alpha) - np.exp(-1)) / (np.e - np.exp(-1))
    assert table.loc["dm", "dd_score"] == pytest.approx(lrs)
    zero = (1 - np.exp(-1)) / (np.e - np.exp(-1))  # the score of α = 0
    assert table.loc["rnd", "dd_score"] < zero  # random: IOR 0, HLR > 0
    # soft labels: against the soft random subset; HLR from the same sets' hard labels
    assert table.loc["dm_soft", "ior"] == pytest.approx(0.96 - 0.94)
    assert table.loc["dm_soft", "hlr"] == pytest.approx(0.98 - 0.935)
    assert table.loc["rnd", "ior"] == 0.0
    assert np.isnan(table.loc["dm_other", "ior"])  # evaluated with DSA: no random baseline
    assert np.isnan(table.loc["scratch", "ior"]) and np.isnan(table.loc["scratch", "hlr"])


def test_evaluation_settings_ignore_what_hard_labels_do_not_use():
    assert evaluation({"ipc": 10, "T": 8.0}) == evaluation({"ipc": 10})
    assert evaluation({"ipc": 10, "labels": "soft", "T": 4.0, "alpha": 1.0, "gamma": 0.0}) != (
        evaluation({"ipc": 10, "labels": "soft", "T": 8.0, "alpha": 1.0, "gamma": 0.0})
    )
