"""dd_mtt (matching training trajectories) and its expert trajectories."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import vector_to_parameters

from kdbench.data.synthetic_set import SyntheticSet
from kdbench.methods import MethodContext, method_class
from kdbench.methods.dd_mtt import (
    REFERENCE,
    SMALL_IMAGES,
    Settings,
    matching_loss,
    reference_settings,
    unroll,
)
from kdbench.methods.synthetic import matching_net
from kdbench.methods.trajectories import ExpertRecipe, Trajectory
from kdbench.models.convnet import ConvNet, matching_size
from kdbench.plan import PrerequisiteSpec, expand
from kdbench.results.layout import ArtifactKey
from kdbench.training.loop import accuracy, predict
from kdbench.training.trajectory import train_trajectory
from kdbench.training.trial import RunInfo, run_student, run_teacher
from kdbench.validation import parse_suite

CPU = torch.device("cpu")
TINY = ExpertRecipe(width=8, depth=2, epochs=3)
FAST = {
    "ipc": 2,
    "net_width": 8,
    "experts": 2,
    "expert_epochs_trained": 3,
    "max_start_epoch": 1,
    "expert_epochs": 2,
    "syn_steps": 3,
    "iterations": 3,
    "lr_img": 100.0,
}


@pytest.fixture(scope="module")
def experts(synthetic):
    return [train_trajectory(synthetic, TINY, seed=s, device=CPU) for s in range(2)]


def make(data, **hp):
    cls = method_class("dd_mtt")
    ctx = MethodContext.for_data(None, None, data, CPU)  # type: ignore[arg-type]
    return cls({**cls.defaults(), **FAST, **hp}, ctx)


# -- experts ----------------------------------------------------------------------------------


def test_a_trajectory_holds_the_start_and_every_epoch_the_same_for_a_seed(synthetic, experts):
    traj = experts[0]
    n_params = sum(p.numel() for p in matching_net(synthetic, 8, 2, CPU).parameters())
    assert len(traj.params) == TINY.epochs + 1 and traj.epochs == TINY.epochs
    assert all(p.shape == (n_params,) and p.dtype == torch.float32 for p in traj.params)
    steps = zip(traj.params, traj.params[1:], strict=False)
    assert all(not torch.equal(a, b) for a, b in steps)  # every epoch trains
    again = train_trajectory(synthetic, TINY, seed=0, device=CPU)
    assert all(torch.equal(a, b) for a, b in zip(traj.params, again.params, strict=True))
    assert not torch.equal(experts[1].params[0], traj.params[0])  # another seed, another start
    # the scores are the last epoch's parameters'
    net = matching_net(synthetic, 8, 2, CPU)
    vector_to_parameters(traj.params[-1], net.parameters())
    assert traj.val_acc == accuracy(predict(net, synthetic, synthetic.val_x), synthetic.val_y)
    assert traj.test_acc == accuracy(predict(net, synthetic, synthetic.test_x), synthetic.test_y)
    assert traj.seconds > 0


def test_a_trajectory_survives_its_bytes_loaded_weights_only(experts):
    traj = experts[0]
    back = Trajectory.from_bytes(traj.to_bytes())  # torch.load(weights_only=True) inside
    assert len(back.params) == len(traj.params)
    assert all(torch.equal(a, b) for a, b in zip(back.params, traj.params, strict=True))
    assert (back.seconds, back.val_acc, back.test_acc) == (
        traj.seconds,
        traj.val_acc,
        traj.test_acc,
    )


def test_the_recipe_is_buffer_py_on_the_matching_network_and_its_identity_rebuilds_it():
    cls = method_class("dd_mtt")
    hp = cls.defaults()
    recipe = cls.expert_recipe(hp, (3, 32, 32))
    assert (recipe.width, recipe.depth) == matching_size((3, 32, 32), 0, 0) == (128, 3)
    assert (recipe.epochs, recipe.lr, recipe.batch_size) == (50, 0.01, 256)
    assert (recipe.momentum, recipe.weight_decay, recipe.dsa) == (0.0, 0.0, True)
    assert ExpertRecipe(**recipe.identity()) == recipe  # what an expert trial is built from
    small = cls.expert_recipe({**hp, "expert_epochs_trained": 30, "dsa": False}, (1, 8, 8))
    assert (small.width, small.depth, small.epochs, small.dsa) == (64, 2, 30, False)
    assert cls.expert_count(hp) == 10


def test_start_and_target_epochs_beyond_the_trajectory_are_refused_naming_the_three():
    cls = method_class("dd_mtt")
    hp = {**cls.defaults(), "max_start_epoch": 45, "expert_epochs": 10}
    msg = r"max_start_epoch \(45\) \+ expert_epochs \(10\) .* expert_epochs_trained \(50\)"
    with pytest.raises(ValueError, match=msg):
        cls.expert_recipe(hp, (3, 32, 32))
    # left to the table: CIFAR-10's ipc 50 row starts up to epoch 40 and looks 2 ahead
    short = {**cls.defaults(), "ipc": 50, "expert_epochs_trained": 30}
    with pytest.raises(ValueError, match=r"max_start_epoch \(40\) \+ expert_epochs \(2\)"):
        cls.settings(short, "cifar10", (3, 32, 32))


# -- the table --------------------------------------------------------------------------------


def test_the_reference_table_has_the_readme_values_and_states_its_fallbacks():
    # README.md's own command for CIFAR-100 at ipc 1 (--syn_steps=20 --expert_epochs=3
    # --max_start_epoch=20 --zca --lr_img=1000 --lr_lr=1e-05 --lr_teacher=0.01)
    assert REFERENCE[("cifar100", 1)] == Settings(20, 3, 20, 1000.0, 1e-5, 0.01, zca=True)
    # CIFAR-10 at ipc 1: 50 steps, 2 expert epochs, start before epoch 2, ZCA
    assert REFERENCE[("cifar10", 1)] == Settings(50, 2, 2, 100.0, 1e-7, 0.01, zca=True)
    assert REFERENCE[("cifar100", 50)].batch_syn == 125
    assert reference_settings("cifar10", 20, 32) == (REFERENCE[("cifar10", 10)], "cifar10 ipc 10")
    assert reference_settings("cifar10", 30, 32)[1] == "cifar10 ipc 10"  # a tie: the smaller
    assert reference_settings("mnist", 50, 28) == (REFERENCE[("cifar10", 50)], "cifar10 ipc 50")
    assert reference_settings("digits", 10, 8)[0] == SMALL_IMAGES[10]


def test_a_setting_given_overrides_the_table_and_the_rest_follow_it():
    cls = method_class("dd_mtt")
    s = cls.settings({**cls.defaults(), "syn_steps": 7, "lr_img": 5.0}, "cifar10", (3, 32, 32))
    ref = REFERENCE[("cifar10", 10)]
    assert (s["syn_steps"], s["lr_img"]) == (7, 5.0)
    assert (s["expert_epochs"], s["max_start_epoch"], s["lr_lr"], s["lr_teacher"]) == (
        ref.expert_epochs,
        ref.max_start_epoch,
        ref.lr_lr,
        ref.lr_teacher,
    )


# -- the unroll and its loss ------------------------------------------------------------------


def _by_hand(w, b, x, y, lr, steps):
    """Full-batch SGD on softmax regression, the gradient written out: (p − onehot)ᵀx / n."""
    onehot = np.eye(w.shape[0])[y]
    for _ in range(steps):
        z = x @ w.T + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w, b = w - lr * (p - onehot).T @ x / len(y), b - lr * (p - onehot).mean(axis=0)
    return np.concatenate([w.ravel(), b])


def test_the_loss_of_an_unroll_is_the_normalised_distance_computed_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 2))  # four images of 2 channels × 1 × 1 pixel
    y = np.array([0, 1, 1, 0])
    w0, b0 = rng.normal(size=(2, 2)), rng.normal(size=2)
    target = rng.normal(size=6)
    lr, steps = 0.3, 3
    start = np.concatenate([w0.ravel(), b0])

    def loss_by_hand(x, lr):
        end = _by_hand(w0, b0, x, y, lr, steps)
        return ((end - target) ** 2).sum() / ((start - target) ** 2).sum()

    # A ConvNet of depth 0 (width = channels) is its linear classifier on the flat image.
    net = ConvNet(num_classes=2, input_shape=(2, 1, 1), width=2, depth=0).double()
    images = torch.tensor(x).view(4, 2, 1, 1).requires_grad_(True)
    syn_lr = torch.tensor(lr, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(start)
    end = unroll(
        net,
        t,
        images,
        torch.tensor(y),
        syn_lr,
        steps=steps,
        batch=4,
        gen=torch.Generator().manual_seed(0),
    )
    loss = matching_loss(end, t, torch.tensor(target))
    assert loss.item() == pytest.approx(loss_by_hand(x, lr), rel=1e-10)

    # differentiable through every step: in the step size and in the pixels
    loss.backward()
    h = 1e-6
    d_lr = (loss_by_hand(x, lr + h) - loss_by_hand(x, lr - h)) / (2 * h)
    assert syn_lr.grad.item() == pytest.approx(d_lr, rel=1e-5)
    bump = np.zeros_like(x)
    bump[2, 1] = h
    d_px = (loss_by_hand(x + bump, lr) - loss_by_hand(x - bump, lr)) / (2 * h)
    assert images.grad[2, 1, 0, 0].item() == pytest.approx(d_px, rel=1e-5)


# -- the synthesis ----------------------------------------------------------------------------


def test_synthesis_moves_every_image_and_learns_the_step_size(synthetic, experts):
    method = make(synthetic)
    method.trajectories = list(experts)
    made = method.synthesize(synthetic, seed=0, device=CPU)
    start = method_class("dd_random")(
        {"ipc": 2}, MethodContext.for_data(None, None, synthetic, CPU)
    ).synthesize(synthetic, seed=0, device=CPU)
    assert made.images.shape == (20, 1, 8, 8) and torch.equal(made.labels, start.labels)
    moved = (made.images - start.images).abs().amax(dim=(1, 2, 3))
    assert (moved > 0).all() and moved.max() < 10  # learned from its real starting image
    assert made.iterations == 3 and made.meta["syn_lr"] != 0.01
    assert np.isfinite(made.meta["last_loss"]) and made.meta["settings"]["syn_steps"] == 3
    again = make(synthetic)
    again.trajectories = list(experts)
    assert torch.equal(again.synthesize(synthetic, seed=0, device=CPU).images, made.images)


def test_the_measured_graph_grows_with_the_unrolled_steps(synthetic, experts):
    mb = []
    for steps in (2, 6):
        method = make(synthetic, syn_steps=steps, iterations=1)
        method.trajectories = list(experts)
        mb.append(method.synthesize(synthetic, seed=0, device=CPU).meta["graph_mb"])
    assert mb[0] > 0 and 2.0 < mb[1] / mb[0] < 3.5  # about proportional to the steps


def test_synthesis_refuses_without_its_experts(synthetic, experts):
    method = make(synthetic)
    method.trajectories = experts[:1]
    with pytest.raises(RuntimeError, match=r"needs 2 expert trajectories and was given 1"):
        method.synthesize(synthetic, seed=0, device=CPU)


def test_the_time_budget_stops_the_synthesis(synthetic, experts):
    method = make(synthetic, iterations=10**6, time_budget_s=1.0)
    method.trajectories = list(experts)
    made = method.synthesize(synthetic, seed=0, device=CPU)
    # stopped by the budget long before its iterations ran out (not a speed test: a busy
    # machine only gets fewer of them)
    assert 1 <= made.iterations < 10**6 and made.seconds < 10


def test_a_trial_learns_from_its_planned_experts_in_any_order(synthetic):
    raw = {
        "name": "mtt",
        "datasets": ["synthetic"],
        "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
        "methods": [{"name": "dd_mtt", "params": FAST}],
        "seeds": [0],
        "budget": {"epochs": 1, "batch_size": 32},
        "teacher": {"epochs": 1},
        "tuning": {"trials": 0},
    }
    plan = expand(parse_suite(raw))
    info = RunInfo("r", "mtt")
    specs = [t for t in plan.teachers if isinstance(t, PrerequisiteSpec)]
    assert len(specs) == 2 and [s.seed for s in specs] == [0, 1]
    assert {(s.phase, s.method, s.teacher.arch) for s in specs} == {
        ("expert", "expert", "convnet_sized")
    }
    reused = {}
    for s in specs:
        out = run_teacher(s, synthetic, info)
        assert out.row["status"] == "ok", out.row.get("error")
        reused[ArtifactKey("expert", s.trial_id)] = out.weights
    spec = next(s for s in plan.finals if s.method == "dd_mtt")
    assert set(spec.prerequisites) == {("expert", s.trial_id) for s in specs}
    sets = []
    for order in (reused, dict(reversed(list(reused.items())))):
        out = run_student(spec, synthetic, info, reused=order)
        assert out.row["status"] == "ok", out.row.get("error")
        (key,) = method_class("dd_mtt").reusable(spec)
        sets.append(SyntheticSet.from_bytes(out.artifacts[key]))
    assert torch.equal(sets[0].images, sets[1].images)
    assert sets[0].meta["experts"] == 2 and sets[0].iterations == 3
