"""dd_sre2l: images recovered from a teacher's BatchNorm statistics (Yin et al. 2023)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdbench.errors import SuiteError
from kdbench.methods import MethodContext, dd_sre2l, method_class
from kdbench.methods.dd_sre2l import BNStatistics
from kdbench.models import build_model
from kdbench.validation import parse_suite

CPU = torch.device("cpu")
REFUSAL = "the teacher has no BatchNorm layers"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and far faster on cores shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def by_hand(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> float:
    """‖σ²_batch − var‖₂ + ‖μ_batch − mean‖₂ over images and pixels, biased variance."""
    mu = x.mean(axis=(0, 2, 3))
    sigma2 = ((x - mu[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
    return float(np.sqrt(((sigma2 - var) ** 2).sum()) + np.sqrt(((mu - mean) ** 2).sum()))


def hand_built_bn(mean: list[float], var: list[float]) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(len(mean)).eval()
    bn.running_mean.copy_(torch.tensor(mean))
    bn.running_var.copy_(torch.tensor(var))
    return bn


def test_the_hook_is_the_l2_distance_of_each_groups_statistics_to_the_running_ones():
    mean, var = [0.5, -1.0, 2.0], [1.0, 4.0, 0.25]
    bn = hand_built_bn(mean, var)
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 + 1
    m, v, xs = np.array(mean), np.array(var), x.double().numpy()
    with BNStatistics(bn) as whole:
        bn(x)
        assert whole.loss().tolist() == pytest.approx([by_hand(xs, m, v)], rel=1e-5)
    # per group (a recover batch each): images 0-1 and 2-4, each over its own images only
    with BNStatistics(bn, torch.tensor([0, 0, 1, 1, 1])) as grouped:
        bn(x)
        got = grouped.loss()
    assert got.tolist() == pytest.approx([by_hand(xs[:2], m, v), by_hand(xs[2:], m, v)], rel=1e-5)
    assert not bn._forward_hooks


def test_layers_are_summed_with_the_first_multiplied():
    first, second = hand_built_bn([0.0, 1.0], [1.0, 2.0]), hand_built_bn([3.0, -2.0], [0.5, 1.0])
    net = nn.Sequential(first, nn.Conv2d(2, 2, 1), second)
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    with BNStatistics(net) as stats:
        net(x)
        total = stats.loss(10.0)
        net(x)
        plain = stats.loss(1.0)
    d1 = by_hand(x.numpy(), np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    d2 = plain.item() - d1
    assert d2 > 0
    assert total.item() == pytest.approx(10 * d1 + d2, rel=1e-5)
    with pytest.raises(RuntimeError, match="no BatchNorm layer ran"):  # a read clears it
        stats.loss()


@pytest.fixture(scope="module")
def teacher(synthetic):
    """A tiny BN network whose running statistics are those of real images, as a trained
    teacher's are (one pass in train mode with momentum 1)."""
    torch.manual_seed(0)
    net = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        net.train()(synthetic.normalize(synthetic.train_x))
    return net.eval()


def make(synthetic, teacher, **hp):
    """ipc 2, 10 iterations; r_bn 1 (the Tiny ImageNet reference's): at CIFAR's 0.01 the
    cross-entropy outweighs a tiny network's three BN layers."""
    cls = method_class("dd_sre2l")
    params = cls.complete({**cls.defaults(), "ipc": 2, "iterations": 10, "r_bn": 1.0, **hp})
    return cls(params, MethodContext.for_data(None, teacher, synthetic, CPU))  # type: ignore[arg-type]


def bn_loss_of(teacher, images, synthetic, ipc):
    """The summed per-recover-batch BN loss of a set (class-major: image i is ipc index i % ipc)."""
    groups = torch.arange(len(images)) % ipc
    with BNStatistics(teacher, groups) as stats, torch.no_grad():
        teacher(synthetic.normalize(images))
        return stats.loss(10.0).sum().item()


def test_recovery_moves_noise_towards_the_teachers_statistics_deterministically(synthetic, teacher):
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    noise = make(synthetic, teacher, iterations=1, lr_img=1e-12).synthesize(
        synthetic, seed=0, device=CPU
    )
    made = make(synthetic, teacher).synthesize(synthetic, seed=0, device=CPU)
    assert made.images.shape == (20, 1, 8, 8) and made.images.dtype == torch.float32
    assert torch.equal(made.labels, torch.arange(10).repeat_interleave(2))
    assert made.iterations == 10
    # stored scale: the clipping keeps the images those of [0, 1] pixels
    assert made.images.min() >= -1e-6 and made.images.max() <= 1 + 1e-6
    before = bn_loss_of(teacher, noise.images, synthetic, 2)
    after = bn_loss_of(teacher, made.images, synthetic, 2)
    assert after < 0.5 * before
    assert made.meta["last_bn_loss"] < made.meta["first_bn_loss"]
    again = make(synthetic, teacher).synthesize(synthetic, seed=0, device=CPU)
    assert torch.equal(made.images, again.images)
    other = make(synthetic, teacher, iterations=1, lr_img=1e-12).synthesize(
        synthetic, seed=1, device=CPU
    )
    assert not torch.equal(noise.images, other.images)
    # the teacher is left as it was: no hooks, its statistics and its mode
    assert not any(m._forward_hooks for m in teacher.modules())
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training


def test_the_groups_are_independent_of_how_many_share_a_forward_pass(
    synthetic, teacher, monkeypatch
):
    """Each recover batch (here one per ipc index) has its own statistics and gradient: one
    pass for all of them or one each gives the same set."""
    together = make(synthetic, teacher, iterations=3).synthesize(synthetic, seed=0, device=CPU)
    monkeypatch.setattr(dd_sre2l, "PASS_IMAGES", 10)  # one group of 10 classes per pass
    apart = make(synthetic, teacher, iterations=3).synthesize(synthetic, seed=0, device=CPU)
    assert torch.allclose(together.images, apart.images, atol=1e-5)
    assert together.meta["last_bn_loss"] == pytest.approx(apart.meta["last_bn_loss"], rel=1e-5)


def test_the_hooks_are_removed_and_the_mode_restored_on_an_error(synthetic):
    bn = nn.BatchNorm2d(1)
    broken = nn.Sequential(bn, nn.Flatten(), nn.Linear(3, 10)).train()  # 64 inputs, not 3
    with pytest.raises(RuntimeError):
        make(synthetic, broken).synthesize(synthetic, seed=0, device=CPU)
    assert not bn._forward_hooks and broken.training


def test_a_teacher_without_batchnorm_is_refused(synthetic):
    cls = method_class("dd_sre2l")
    with torch.device("meta"):
        convnet = build_model("convnet3", num_classes=10, input_shape=(1, 8, 8))
        cnn = build_model("cnn_small", num_classes=10, input_shape=(1, 8, 8))
    assert cls.pairing_models(cnn, convnet, cls.defaults()).startswith(REFUSAL)
    assert cls.pairing_models(convnet, cnn, cls.defaults()) is None
    real_convnet = build_model("convnet3", num_classes=10, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=REFUSAL):
        make(synthetic, real_convnet).synthesize(synthetic, seed=0, device=CPU)
    raw = {
        "name": "s",
        "datasets": ["synthetic"],
        "pairs": [{"teacher": "convnet3", "student": "cnn_tiny"}],
        "methods": ["dd_sre2l"],
        "seeds": [0],
        "tuning": {"trials": 0},
    }
    with pytest.raises(SuiteError, match=f"convnet3 → cnn_tiny on synthetic: {REFUSAL}"):
        parse_suite(raw)
    raw["pairs"] = [{"teacher": "cnn_small", "student": "cnn_tiny"}]
    labels = {m.label for m in parse_suite(raw).methods}
    assert {"dd_sre2l", "dd_sre2l_hard"} <= labels  # soft by default: its hard twin is added
