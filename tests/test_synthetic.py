"""Dataset distillation (dd_*): the sets each method makes, its losses, and the trial around it."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from kdbench.data.synthetic_set import SyntheticSet
from kdbench.methods import MethodContext, method_class
from kdbench.methods.dd_dc import gradient_distance, loops
from kdbench.methods.dd_herding import herding
from kdbench.methods.synthetic import synthetic_epochs
from kdbench.models import build_model
from kdbench.models.convnet import matching_size
from kdbench.plan import expand
from kdbench.training.trial import RunInfo, run_student, run_teacher
from kdbench.validation import parse_suite

DD = ["dd_random", "dd_herding", "dd_dm", "dd_dc"]
FAST = {"dd_dm": {"iterations": 2, "net_width": 8}, "dd_dc": {"iterations": 1, "net_width": 8}}


def make(name, data, *, ipc=3, teacher=None, **hp):
    cls = method_class(name)
    params = {**cls.defaults(), **FAST.get(name, {}), "ipc": ipc, **hp}
    ctx = MethodContext.for_data(None, teacher, data, torch.device("cpu"))  # type: ignore[arg-type]
    return cls(params, ctx)


@pytest.fixture(scope="module")
def teacher(synthetic):
    return build_model("cnn_small", num_classes=10, input_shape=(1, 8, 8)).eval()


@pytest.mark.parametrize("name", DD)
def test_each_method_makes_ipc_images_per_class_the_same_for_a_seed(name, synthetic, teacher):
    made = make(name, synthetic, teacher=teacher).synthesize(
        synthetic, seed=1, device=torch.device("cpu")
    )
    assert made.images.shape == (30, 1, 8, 8) and made.images.dtype == torch.float32
    assert torch.equal(made.labels, torch.arange(10).repeat_interleave(3))
    assert torch.isfinite(made.images).all()
    again = make(name, synthetic, teacher=teacher).synthesize(
        synthetic, seed=1, device=torch.device("cpu")
    )
    assert torch.equal(made.images, again.images)
    blob = SyntheticSet.from_bytes(made.to_bytes())
    assert torch.equal(blob.images, made.images) and blob.iterations == made.iterations


def _as_stored(x):
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


@pytest.mark.parametrize("name", ["dd_random", "dd_herding"])
def test_subset_methods_pick_distinct_real_training_images_of_each_class(name, synthetic, teacher):
    made = make(name, synthetic, ipc=4, teacher=teacher).synthesize(
        synthetic, seed=0, device=torch.device("cpu")
    )
    picked = torch.tensor(made.meta["indices"])
    assert picked.unique().numel() == 40
    assert torch.equal(synthetic.train_y[picked], made.labels)
    assert torch.equal(_as_stored(synthetic.train_x[picked]), made.images)


def test_random_subsets_differ_between_seeds(synthetic):
    a = make("dd_random", synthetic).synthesize(synthetic, seed=0, device=torch.device("cpu"))
    b = make("dd_random", synthetic).synthesize(synthetic, seed=1, device=torch.device("cpu"))
    assert a.meta["indices"] != b.meta["indices"]


@pytest.mark.parametrize("name", ["dd_dm", "dd_dc"])
def test_learned_methods_start_from_real_images_and_move_them(name, synthetic):
    made = make(name, synthetic).synthesize(synthetic, seed=0, device=torch.device("cpu"))
    start = make("dd_random", synthetic).synthesize(synthetic, seed=0, device=torch.device("cpu"))
    moved = (made.images - start.images).abs().amax(dim=(1, 2, 3))
    assert made.iterations == FAST[name]["iterations"]
    assert (moved > 0).all()  # every image was learned
    assert moved.max() < 10  # from its real starting image: not an unrelated one


def test_an_ipc_larger_than_a_class_is_refused_naming_the_class(synthetic):
    with pytest.raises(ValueError, match=r"ipc=1000 needs 1000 training images of class 0"):
        make("dd_random", synthetic, ipc=1000).synthesize(synthetic, seed=0, device="cpu")


def test_the_time_budget_stops_synthesis_after_the_last_iteration_that_fits(synthetic):
    method = make("dd_dm", synthetic, iterations=10**6, time_budget_s=1.0)
    t0 = time.perf_counter()
    made = method.synthesize(synthetic, seed=0, device=torch.device("cpu"))
    assert time.perf_counter() - t0 < 1.5
    assert 1 <= made.iterations < 10**6 and made.seconds <= 1.0 + 0.25


def test_gradient_distance_is_one_minus_cosine_per_output_channel():
    rng = np.random.default_rng(0)
    conv_s, conv_r = rng.normal(size=(2, 4, 3, 3, 3)), rng.normal(size=(2, 4, 3, 3, 3))
    lin_s, lin_r = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 5, 6))
    bias = rng.normal(size=(2, 4))

    expected = 0.0
    for a, b in [(conv_s[0], conv_r[0]), (lin_s[0], lin_r[0])]:
        for i in range(a.shape[0]):
            u, v = a[i].ravel(), b[i].ravel()
            expected += 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-6)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    got = gradient_distance(
        [t(conv_s[0]), t(bias[0]), t(lin_s[0])], [t(conv_r[0]), t(bias[1]), t(lin_r[0])]
    )
    assert got.item() == pytest.approx(expected, rel=1e-9)  # biases are left out
    same = gradient_distance([t(conv_s[0])], [t(3 * conv_s[0])])
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_herding_matches_a_brute_force_greedy_search():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(12, 4))
    mu = f.mean(axis=0)
    chosen: list[int] = []
    for k in range(1, 6):
        rest = [i for i in range(12) if i not in chosen]
        dist = [np.sum((mu - (f[chosen].sum(axis=0) + f[i]) / k) ** 2) for i in rest]
        chosen.append(rest[int(np.argmin(dist))])
    assert herding(torch.tensor(f), 5) == chosen


def test_schedules_follow_the_reference_and_the_suites_budget():
    assert [loops(n) for n in (1, 10, 50)] == [(1, 1), (10, 50), (50, 10)]
    assert loops(5) == (5, 100)
    # 30 epochs of 1,078 images in batches of 64 = 510 steps = 255 epochs of 100 images
    assert synthetic_epochs(30, 1078, 100, 64) == 255
    assert synthetic_epochs(30, 1078, 10, 64) == 510
    assert matching_size((3, 32, 32), 0, 0) == (128, 3)  # the reference on 28-32 px images
    assert matching_size((1, 28, 28), 0, 0) == (128, 3)
    assert matching_size((1, 8, 8), 0, 0) == (64, 2)  # last normalised map 4×4, not 2×2
    assert matching_size((1, 8, 8), 32, 3) == (32, 3)


def dd_plan(methods, students=("cnn_tiny",), seeds=(0,)):
    raw = {
        "name": "dd",
        "datasets": ["synthetic"],
        "pairs": [{"teacher": "cnn_small", "student": s} for s in students],
        "methods": methods,
        "seeds": list(seeds),
        "budget": {"epochs": 2, "batch_size": 32},
        "teacher": {"epochs": 2},
        "tuning": {"trials": 0},
    }
    return expand(parse_suite(raw))


def test_a_dd_trial_trains_the_student_on_the_set_alone_and_returns_it(synthetic):
    plan = dd_plan([{"name": "dd_dm", "params": {"ipc": 2, "iterations": 2, "net_width": 8}}])
    teacher = run_teacher(plan.teachers[0], synthetic, RunInfo("r", "dd"))
    spec = next(s for s in plan.finals if s.method == "dd_dm")
    out = run_student(spec, synthetic, RunInfo("r", "dd"), teacher.weights)
    row = out.row
    assert row["status"] == "ok", row.get("error")
    n_syn = 20
    epochs = synthetic_epochs(2, len(synthetic.train_y), n_syn, 32)
    assert row["epochs"] == row["epoch_reported"] == epochs
    assert row["images_seen"] == epochs * n_syn  # the synthetic images, not the data set
    (key,) = method_class("dd_dm").reusable(spec)
    assert row["artifact"] == f"_artifacts/synthetic/{key.name}.pt" == key.relative
    assert key in out.artifacts
    made = SyntheticSet.from_bytes(out.artifacts[key])
    assert made.images.shape == (n_syn, 1, 8, 8) and made.meta["method"] == "dd_dm"
    assert {a.relative for a in out.artifacts} == {
        key.relative,
        f"_artifacts/students/{spec.trial_id}.pt",
    }
    assert 0 <= row["test_acc"] <= 1 and row["teacher_test_acc"] is not None
    # validated about as often as a full-data trial (every epochs // 2 epochs, and the last)
    validated = [c for c in out.curve if not math.isnan(c["val_acc"])]
    assert 2 <= len(validated) <= 3

    # given the set it made, the same trial reuses it and sends nothing back to cache
    again = run_student(
        spec,
        synthetic,
        RunInfo("r", "dd"),
        teacher.weights,
        reused={key: out.artifacts[key]},
    )
    assert key not in again.artifacts
    assert again.row["test_acc"] == row["test_acc"]


def test_the_synthetic_key_ignores_the_student_and_phase_but_not_what_makes_the_set():
    plan = dd_plan(
        ["dd_random", {"name": "dd_dm", "params": {"ipc": 2}}, "dd_herding"],
        students=("cnn_tiny", "cnn_small"),
        seeds=(0, 1),
    )
    written = ("dd_random", "dd_dm", "dd_herding")  # not the baselines the suite adds
    finals = [s for s in plan.finals if s.label in written]
    keys = {(s.method, s.seed, s.student): set_key(s) for s in finals}
    assert keys[("dd_random", 0, "cnn_tiny")] == keys[("dd_random", 0, "cnn_small")]
    assert keys[("dd_random", 0, "cnn_tiny")] != keys[("dd_random", 1, "cnn_tiny")]
    assert keys[("dd_random", 0, "cnn_tiny")] != keys[("dd_dm", 0, "cnn_tiny")]
    assert len(set(keys.values())) == 3 * 2  # method × seed
    longer = dd_plan([{"name": "dd_random", "params": {"train_epochs": 300}}])
    spec = next(s for s in longer.finals if s.label == "dd_random")
    assert set_key(spec) == keys[("dd_random", 0, "cnn_tiny")]  # same set, longer training


def set_key(spec):
    (key,) = method_class(spec.method).reusable(spec)
    return key
