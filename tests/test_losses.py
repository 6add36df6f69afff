"""Every loss against its formula, computed here independently (plain Python and NumPy loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdbench.methods.at import at_loss
from kdbench.methods.base import MethodContext
from kdbench.methods.crd import CRD, OtherClassSampler, nce_loss
from kdbench.methods.dkd import dkd_terms
from kdbench.methods.fitnet import Regressor
from kdbench.methods.pkt import pkt_loss
from kdbench.methods.pseudo_label import labeled_mask
from kdbench.methods.rkd import angle_loss, distance_loss
from kdbench.methods.sp import sp_loss
from kdbench.models import build_model

rng = np.random.default_rng(0)


def t(a):
    return torch.tensor(a, dtype=torch.float64)


def softmax(v, T=1.0):
    e = np.exp(np.asarray(v) / T - np.max(np.asarray(v) / T))
    return e / e.sum()


def test_attention_transfer_with_a_spatial_mismatch():
    fs = rng.normal(size=(2, 3, 4, 4))  # student block: 4×4
    ft = rng.normal(size=(2, 5, 2, 2))  # teacher block: 2×2, other channels
    pooled = fs.reshape(2, 3, 2, 2, 2, 2).mean(
        axis=(3, 5)
    )  # 2×2 average pooling of the *feature map*

    def amap(f):
        a = (f**2).mean(axis=1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    expected = ((amap(pooled) - amap(ft)) ** 2).mean()
    same = ((amap(fs[:, :, :2, :2]) - amap(ft)) ** 2).mean()
    got = at_loss([t(fs)], [t(ft)]).item()
    assert got == pytest.approx(expected, rel=1e-9) and got != pytest.approx(same)
    # two blocks sum; the deepest are paired when the counts differ
    two = at_loss([t(ft), t(fs)], [t(rng.normal(size=(2, 1, 3, 3))), t(ft), t(fs)]).item()
    assert two == pytest.approx(at_loss([t(ft)], [t(ft)]).item() + at_loss([t(fs)], [t(fs)]).item())


@pytest.mark.parametrize("s_hw,t_hw", [(4, 4), (4, 2), (2, 4), (8, 4)])
def test_fitnet_regressor_maps_any_student_map_onto_the_teachers(s_hw, t_hw):
    reg = Regressor(torch.Size([2, 3, s_hw, s_hw]), torch.Size([2, 7, t_hw, t_hw]))
    out = reg(torch.randn(2, 3, s_hw, s_hw))
    assert out.shape == (2, 7, t_hw, t_hw)
    assert (out >= 0).all()  # ends in ReLU
    if s_hw == t_hw:
        assert reg.body[0].kernel_size == (1, 1)


def test_dkd_decouples_kd_into_target_and_non_target_terms():
    s, tt, y, T = (
        [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]],
        [[2.0, 1.0, 0.0], [1.0, 0.5, 2.5]],
        [0, 2],
        4.0,
    )
    tckd = nckd = 0.0
    for si, ti, yi in zip(s, tt, y, strict=True):
        ps, pt = softmax(si, T), softmax(ti, T)
        bs, bt = np.array([ps[yi], 1 - ps[yi]]), np.array([pt[yi], 1 - pt[yi]])
        tckd += (bt * np.log(bt / bs)).sum()
        others = [j for j in range(3) if j != yi]
        qs, qt = softmax([si[j] for j in others], T), softmax([ti[j] for j in others], T)
        nckd += (qt * np.log(qt / qs)).sum()
    got_t, got_n = dkd_terms(t(s), t(tt), torch.tensor(y), T)
    assert got_t.item() == pytest.approx(tckd / 2 * T * T, rel=1e-6)
    assert got_n.item() == pytest.approx(nckd / 2 * T * T, rel=1e-6)


def test_pkt_is_the_kl_of_batch_similarity_distributions():
    s, tt, eps = rng.normal(size=(4, 3)), rng.normal(size=(4, 5)), 1e-7

    def dist(e):
        e = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
        k = (e @ e.T + 1) / 2
        return k / k.sum(axis=1, keepdims=True)

    ps, pt = dist(s), dist(tt)
    expected = (pt * np.log((pt + eps) / (ps + eps))).mean()
    assert pkt_loss(t(s), t(tt)).item() == pytest.approx(expected, rel=1e-9)


def test_sp_compares_row_normalised_gram_matrices():
    fs, ft = rng.normal(size=(3, 2, 2, 2)), rng.normal(size=(3, 4, 1, 1))

    def gram(f):
        f = f.reshape(len(f), -1)
        g = f @ f.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    expected = ((gram(ft) - gram(fs)) ** 2).sum() / 9
    assert sp_loss(t(fs), t(ft)).item() == pytest.approx(expected, rel=1e-9)


def smooth_l1(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b))
    return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()


def test_rkd_distance_and_angle_terms():
    s, tt = rng.normal(size=(4, 3)), rng.normal(size=(4, 6))

    def dists(e):
        d = np.array([[np.linalg.norm(a - b) for b in e] for a in e])
        return d / d[d > 0].mean()

    def angs(e):
        out = []
        for i in range(len(e)):
            for j in range(len(e)):
                for k in range(len(e)):
                    u, v = e[j] - e[i], e[k] - e[i]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    out.append(0.0 if nu == 0 or nv == 0 else u @ v / (nu * nv))
        return np.array(out)

    assert distance_loss(t(s), t(tt)).item() == pytest.approx(
        smooth_l1(dists(s), dists(tt)), rel=1e-6
    )
    assert angle_loss(t(s), t(tt)).item() == pytest.approx(smooth_l1(angs(s), angs(tt)), rel=1e-6)


def test_crd_nce_loss_by_hand():
    scores = np.array([[0.5, 0.1, 0.2], [0.9, 0.3, 0.05]])  # column 0: the positive
    n, k = 10, 2
    m_pn = k / n
    expected = 0.0
    for row in scores:
        expected -= math.log(row[0] / (row[0] + m_pn + 1e-7))
        expected -= sum(math.log(m_pn / (v + m_pn + 1e-7)) for v in row[1:])
    assert nce_loss(t(scores), n).item() == pytest.approx(expected / 2, rel=1e-9)


def test_crd_negatives_come_from_other_classes_and_k_adapts():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    sampler = OtherClassSampler(labels)
    neg = sampler(torch.arange(6), 50, torch.Generator().manual_seed(0))
    assert (labels[neg] != labels[:, None]).all()
    many = sampler(torch.arange(6), 3000, torch.Generator().manual_seed(1))
    for i in range(6):  # every sample of another class is drawn, about equally often
        others = [j for j in range(6) if labels[j] != labels[i]]
        counts = torch.bincount(many[i], minlength=6)[others].float()
        assert counts.min() > 0.8 * 3000 / len(others) and counts.sum() == 3000
    assert sampler.max_negatives() == 3  # class 0 has only 3 samples of other classes
    student = build_model("cnn_tiny", num_classes=3, input_shape=(1, 8, 8))
    teacher = build_model("cnn_small", num_classes=3, input_shape=(1, 8, 8))
    ctx = MethodContext(
        student=student,
        teacher=teacher,
        num_classes=3,
        n_train=6,
        input_shape=(1, 8, 8),
        train_labels=labels,
    )
    crd = CRD(CRD.defaults(), ctx)
    assert crd.k == 2 and crd.memory_s.shape == (
        6,
        128,
    )  # a third of 6, under 3 of other classes and crd.memory_t.shape == (6, 128)
    queue = CRD({**CRD.defaults(), "memory": "queue", "nce_k": 4}, ctx)
    assert queue.memory_s.shape == (4, 128)


def test_crd_memory_moves_by_momentum_and_z_is_fixed_on_the_first_batch():
    from kdbench.methods.base import Step

    labels = torch.arange(20) % 4
    student = build_model("cnn_tiny", num_classes=4, input_shape=(1, 8, 8))
    teacher = build_model("cnn_small", num_classes=4, input_shape=(1, 8, 8)).eval()
    ctx = MethodContext(
        student=student,
        teacher=teacher,
        num_classes=4,
        n_train=20,
        input_shape=(1, 8, 8),
        train_labels=labels,
    )
    crd = CRD({**CRD.defaults(), "nce_k": 8}, ctx)
    idx = torch.tensor([0, 5, 10])
    x = torch.randn(3, 1, 8, 8)
    before = crd.memory_s[idx].clone()
    with torch.no_grad():
        t_out = teacher.forward_features(x)
    s_out = student.forward_features(x)
    crd.terms(Step(x=x, y=labels[idx], student=s_out, teacher=t_out, index=idx))
    z = crd.z.clone()
    assert (z > 0).all()
    v_s = torch.nn.functional.normalize(crd.embed_s(s_out.embedding), dim=1).detach()
    expected = torch.nn.functional.normalize(before * 0.5 + v_s * 0.5, dim=1)
    assert torch.allclose(crd.memory_s[idx], expected, atol=1e-6)
    crd.terms(
        Step(x=x, y=labels[idx], student=student.forward_features(x), teacher=t_out, index=idx)
    )
    assert torch.equal(crd.z, z)


@pytest.mark.parametrize("memory", ["bank", "queue"])
def test_crd_memory_written_in_place_matches_the_update_over_trained_steps(memory):
    """The two alternating memories (``CRD._write``) hold, after each step, the previous
    memory with this step's rows; a graph whose memory was overwritten refuses backward."""
    import torch.nn.functional as F

    from kdbench.methods.base import Step

    labels = torch.arange(40) % 4
    student = build_model("cnn_tiny", num_classes=4, input_shape=(1, 8, 8))
    teacher = build_model("cnn_small", num_classes=4, input_shape=(1, 8, 8)).eval()
    ctx = MethodContext(
        student=student,
        teacher=teacher,
        num_classes=4,
        n_train=40,
        input_shape=(1, 8, 8),
        train_labels=labels,
    )
    crd = CRD({**CRD.defaults(), "memory": memory, "nce_k": 12}, ctx)
    opt = torch.optim.SGD(list(student.parameters()) + list(crd.parameters()), lr=0.1)
    x = torch.randn(40, 1, 8, 8)
    gen = torch.Generator().manual_seed(0)

    def step(idx):
        with torch.no_grad():
            t_out = teacher.forward_features(x[idx])
        s_out = student.forward_features(x[idx])
        loss = crd.terms(Step(x=x[idx], y=labels[idx], student=s_out, teacher=t_out, index=idx))
        with torch.no_grad():
            v_s = F.normalize(crd.embed_s(s_out.embedding), dim=1)
            v = torch.stack([v_s, F.normalize(crd.embed_t(t_out.embedding), dim=1)])
        return loss["crd"], v

    for i in range(5):
        idx = torch.randperm(40, generator=gen)[:8]
        before = crd.memory.clone()
        loss, v = step(idx)
        expected = before.clone()
        if memory == "bank":
            expected[:, idx] = F.normalize(before[:, idx] * 0.5 + v * 0.5, dim=2)
        else:
            expected[:, (8 * i + torch.arange(8)) % 12] = v
        assert torch.allclose(crd.memory, expected, atol=1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, _ = step(torch.arange(8))
    step(torch.arange(8, 16))
    step(torch.arange(16, 24))  # overwrites the memory the first of these three read
    with pytest.raises(RuntimeError, match="inplace"):
        first.backward()


def test_pseudo_labels_only_where_the_teacher_is_confident():
    from kdbench.methods.base import Step
    from kdbench.methods.pseudo_label import PseudoLabel
    from kdbench.models.base import ModelOutput

    s = t([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    teacher = t([[10.0, 0.0, 0.0], [0.0, 0.5, 0.4], [0.0, 0.0, 9.0]])  # rows 0 and 2 confident
    y = torch.tensor([1, 1, 1])
    method = PseudoLabel(PseudoLabel.defaults(), None)  # type: ignore[arg-type]
    terms = method.loss(
        Step(x=s, y=y, student=ModelOutput(s), teacher=ModelOutput(teacher), index=torch.arange(3))
    )
    ce0 = -math.log(softmax([2.0, 0, 0])[0])
    ce2 = -math.log(softmax([0, 0, 3.0])[2])
    assert terms["pseudo"].item() == pytest.approx((ce0 + ce2) / 3, rel=1e-9)
    assert terms["ce"].item() == 0.0
    share = labeled_mask(torch.arange(10_000), 0.3).float().mean().item()
    assert share == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize("size,scale", [(32, 1.0), (8, 1 / 16)])
def test_attention_transfer_means_the_same_beta_at_any_resolution(size, scale):
    from kdbench.methods.at import AT
    from kdbench.methods.base import Step
    from kdbench.models.base import ModelOutput

    ctx = MethodContext(
        student=None,
        teacher=None,
        num_classes=10,
        n_train=1,  # type: ignore[arg-type]
        input_shape=(3, size, size),
    )
    fs, ft = [t(rng.normal(size=(2, 3, 4, 4)))], [t(rng.normal(size=(2, 5, 4, 4)))]
    method = AT(AT.defaults(), ctx)
    terms = method.terms(
        Step(x=None, y=None, student=ModelOutput(None, fs), teacher=ModelOutput(None, ft))
    )  # type: ignore[arg-type]
    assert terms["at"].item() == pytest.approx(1000 * scale * at_loss(fs, ft).item(), rel=1e-9)
