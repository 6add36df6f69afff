"""MLKD, CTKD, TTM and WTTM against their formulas, recomputed here independently in float64
NumPy; CTKD's gradient reversal and curriculum; MLKD's strong view; real optimiser steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdbench.methods import MethodContext, Step, method_class
from kdbench.methods.ctkd import curriculum
from kdbench.methods.mlkd import mlkd_terms, strong_view
from kdbench.models import build_model
from kdbench.models.base import ModelOutput
from tests.formulas import softmax, zscore
from tests.test_methods import train_one_step

REL = 1e-10
rng = np.random.default_rng(11)
B, C = 8, 6
S = rng.normal(scale=2.0, size=(B, C))
TT = rng.normal(scale=3.0, size=(B, C))
S2 = rng.normal(scale=2.0, size=(B, C))
TT2 = rng.normal(scale=3.0, size=(B, C))
Y = [int(v) for v in rng.integers(0, C, size=B)]


def t64(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def zrows(a):
    return np.stack([zscore(r) for r in a])


def ref_ce(s, y):
    return float(np.mean([-np.log(softmax(si)[yi]) for si, yi in zip(s, y, strict=True)]))


def ref_kd(s, tt, T):
    total = 0.0
    for si, ti in zip(s, tt, strict=True):
        ps, pt = softmax(si, T), softmax(ti, T)
        total += float((pt * np.log(pt / ps)).sum())
    return total / len(s) * T * T


def ref_ttm(s, tt, T, weighted=False):
    total = 0.0
    for si, ti in zip(s, tt, strict=True):
        powered = softmax(ti) ** (1.0 / T)
        u = powered.sum()
        q = powered / u
        kl = float((q * (np.log(q) - np.log(softmax(si)))).sum())
        total += u * kl if weighted else kl
    return total / len(s)


def ref_cc(s, tt, T):
    ps = np.stack([softmax(r, T) for r in s])
    pt = np.stack([softmax(r, T) for r in tt])
    return float(((pt.T @ pt - ps.T @ ps) ** 2).sum() / s.shape[1])


def ref_bc(s, tt, T):
    ps = np.stack([softmax(r, T) for r in s])
    pt = np.stack([softmax(r, T) for r in tt])
    return float(((pt @ pt.T - ps @ ps.T) ** 2).sum() / s.shape[0])


def ref_mlkd(sw, tw, ss, ts, T, std=False):
    """The reference's KD_ours.forward_train, written out (see kdbench/methods/mlkd.py)."""
    pw = np.stack([softmax(r) for r in tw])
    conf = pw.max(1)
    mask = (conf <= np.percentile(conf, 50)).astype(np.float64)
    cconf = pw.sum(0)
    cmask = (cconf <= np.percentile(cconf, 50)).astype(np.float64)
    temps = [T, 3.0, 5.0, 2.0, 6.0]
    kw = (zrows(sw), zrows(tw)) if std else (sw, tw)
    ks = (zrows(ss), zrows(ts)) if std else (ss, ts)
    inst = sum(np.mean(ref_kd(*kw, tau) * mask) for tau in temps)
    inst += sum(ref_kd(*ks, tau) for tau in temps[:3]) + sum(ref_kd(*kw, tau) for tau in temps[3:])
    cls = sum(np.mean(ref_cc(sw, tw, tau) * cmask) for tau in temps)
    bat = sum(np.mean(ref_bc(sw, tw, tau) * mask) for tau in temps)
    return inst, cls, bat


def logit_method(name, **hp):
    cls = method_class(name)
    ctx = MethodContext(
        student=torch.nn.Identity(), teacher=None, num_classes=C, n_train=B, input_shape=(1, 1, 1)
    )
    return cls({**cls.defaults(), **hp}, ctx)


def logit_step(s, tt, epoch=0, epochs=240, grad=False):
    s = t64(s).requires_grad_(grad)
    return Step(
        x=torch.zeros(B),
        y=torch.tensor(Y),
        student=ModelOutput(s),
        teacher=ModelOutput(t64(tt)),
        epoch=epoch,
        epochs=epochs,
    )


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# --- TTM / WTTM -----------------------------------------------------------------------------


@pytest.mark.parametrize("std", [False, True])
@pytest.mark.parametrize("name,weighted", [("ttm", False), ("wttm", True)])
def test_ttm_and_wttm_match_the_formula(name, weighted, std):
    for hp in ({}, {"T": 2.5, "beta": 3.0}):
        m = logit_method(name, logit_std=std, **hp)
        got = m.terms(logit_step(S, TT))[name].item()
        s, tt = (zrows(S), zrows(TT)) if std else (S, TT)
        want = m.hp["beta"] * ref_ttm(s, tt, m.hp["T"], weighted)
        assert rel(got, want) < REL


def test_ttm_defaults_and_weights():
    ttm, wttm = method_class("ttm"), method_class("wttm")
    assert ttm.defaults() == {"gamma": 1.0, "beta": 45.0, "T": 10.0}
    assert wttm.defaults() == {"gamma": 1.0, "beta": 4.0, "T": 5.0}
    one = logit_method("ttm", beta=1.0).terms(logit_step(S, TT))["ttm"].item()
    two = logit_method("ttm", beta=2.0).terms(logit_step(S, TT))["ttm"].item()
    assert rel(two, 2 * one) < REL
    # at T = 1 TTM is KD at temperature 1 (no T²)
    at1 = logit_method("ttm", beta=1.0, T=1.0).terms(logit_step(S, TT))["ttm"].item()
    assert rel(at1, ref_kd(S, TT, 1.0)) < REL


# --- CTKD -----------------------------------------------------------------------------------


def test_ctkd_curriculum_is_the_references_cosine():
    # the reference: CosineDecay(max 0, min -1, loops 10) at the 1-based epoch, λ = -value
    def ref(i, loops=10):
        i = min(max(i, 0), loops)
        return -((math.cos(i * math.pi / loops) + 1.0) * 0.5 * (0 - -1) + -1)

    for e in range(240):
        assert curriculum(e, 240, 10 / 240, 0.0, 1.0) == pytest.approx(ref(e + 1), abs=1e-12)
    assert curriculum(0, 240, 10 / 240, 0.0, 1.0) == pytest.approx((1 - math.cos(math.pi / 10)) / 2)
    assert curriculum(9, 240, 10 / 240, 0.0, 1.0) == pytest.approx(1.0)
    assert curriculum(200, 240, 10 / 240, 0.0, 1.0) == pytest.approx(1.0)
    # scaled to the budget: 30 epochs, the same share
    assert curriculum(0, 30, 0.5, 0.0, 2.0) == pytest.approx(2.0 * (1 - math.cos(math.pi / 15)) / 2)
    assert curriculum(3, 30, 0.0, 0.2, 0.7) == 0.7  # no warm-up: the final strength at once
    assert curriculum(0, 240, 10 / 240, 0.5, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("std", [False, True])
def test_ctkd_loss_is_kd_at_the_learned_temperature(std):
    m = logit_method("ctkd", logit_std=std).double()
    with torch.no_grad():
        m.theta.fill_(0.3)
    tau = 1.0 + 20.0 / (1.0 + math.exp(-0.3))
    got = m.terms(logit_step(S, TT, epoch=4))["kd"].item()
    s, tt = (zrows(S), zrows(TT)) if std else (S, TT)
    assert rel(got, 0.9 * ref_kd(s, tt, tau)) < REL
    assert rel(m.temperature().item(), tau) < REL
    assert (
        rel(logit_method("ctkd").double().temperature().item(), 1 + 20 / (1 + math.exp(-1))) < REL
    )


def test_ctkd_reverses_and_scales_the_temperature_gradient():
    m = logit_method("ctkd").double()
    for epoch, epochs in ((0, 240), (4, 240), (100, 240)):
        lam = curriculum(epoch, epochs, 10 / 240, 0.0, 1.0)
        m.zero_grad()
        step = logit_step(S, TT, epoch=epoch, epochs=epochs, grad=True)
        m.terms(step)["kd"].backward()
        reversed_grad = m.theta.grad.item()
        # d loss / d θ without the reversal, by finite differences of the same loss
        h = 1e-6
        vals = []
        for d in (h, -h):
            with torch.no_grad():
                m.theta += d
                vals.append(m.terms(logit_step(S, TT, epoch=epoch, epochs=epochs))["kd"].item())
                m.theta -= d
        plain = (vals[0] - vals[1]) / (2 * h)
        assert plain != 0
        assert reversed_grad == pytest.approx(-lam * plain, rel=1e-6)
        assert step.student.logits.grad is not None  # the student gets the ordinary gradient


# --- MLKD -----------------------------------------------------------------------------------


@pytest.mark.parametrize("std", [False, True])
@pytest.mark.parametrize("T", [4.0, 2.0])
def test_mlkd_terms_match_the_reference_formula(T, std):
    got = mlkd_terms(t64(S), t64(TT), t64(S2), t64(TT2), T, std)
    want = ref_mlkd(S, TT, S2, TT2, T, std)
    for g, w in zip(got, want, strict=True):
        assert rel(g.item(), w) < REL


def test_mlkd_masks_follow_the_median_with_odd_batches_and_ties():
    # 7 samples: the median is one of them, so 4 of 7 are at or below it
    got = mlkd_terms(t64(S[:7]), t64(TT[:7]), t64(S2[:7]), t64(TT2[:7]), 4.0)
    want = ref_mlkd(S[:7], TT[:7], S2[:7], TT2[:7], 4.0)
    for g, w in zip(got, want, strict=True):
        assert rel(g.item(), w) < REL


def _mlkd_models(seed=0):
    torch.manual_seed(seed)
    student = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    teacher = build_model("cnn_wide", num_classes=10, input_shape=(1, 8, 8)).eval()
    return student, teacher


def _mlkd(student, teacher, seed=0, **hp):
    cls = method_class("mlkd")
    ctx = MethodContext(
        student=student, teacher=teacher, num_classes=10, n_train=64, input_shape=(1, 8, 8)
    )
    torch.manual_seed(seed)
    return cls({**cls.defaults(), **hp}, ctx)


@pytest.mark.parametrize("std", [False, True])
def test_mlkd_method_runs_both_views_and_matches_the_formula(std):
    student, teacher = _mlkd_models()
    student, teacher = student.double(), teacher.double()
    m = _mlkd(student, teacher, seed=5, logit_std=std, gamma=0.3, alpha=2.0)
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(16) % 10
    with torch.no_grad():
        t_out = teacher.forward_features(x)
    student.eval()  # BatchNorm in eval: the two passes over the strong view agree exactly
    s_out = student.forward_features(x)
    terms = m.terms(Step(x=x, y=y, student=s_out, teacher=t_out))
    # the strong view, recomputed with a fresh generator of the same seed
    xs = strong_view(x, torch.Generator().manual_seed(5))
    with torch.no_grad():
        ss = student.forward_features(xs).logits.numpy()
        ts = teacher.forward_features(xs).logits.numpy()
    sw, tw = s_out.logits.detach().numpy(), t_out.logits.numpy()
    inst, cls, bat = ref_mlkd(sw, tw, ss, ts, 4.0, std)
    assert set(terms) == {"ce_strong", "mlkd_instance", "mlkd_class", "mlkd_batch"}
    assert rel(terms["ce_strong"].item(), 0.3 * ref_ce(ss, y.tolist())) < REL
    assert rel(terms["mlkd_instance"].item(), 2.0 * inst) < REL
    assert rel(terms["mlkd_class"].item(), 2.0 * cls) < REL
    assert rel(terms["mlkd_batch"].item(), 2.0 * bat) < REL
    # gradients reach the student, not the teacher; the models are not submodules
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in teacher.parameters())
    assert list(m.parameters()) == []


def test_mlkd_strong_view_is_deterministic_per_seed_and_differs_from_the_input():
    x = torch.randn(32, 3, 16, 16)
    a = strong_view(x, torch.Generator().manual_seed(1))
    b = strong_view(x, torch.Generator().manual_seed(1))
    c = strong_view(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and torch.isfinite(a).all()
    changed = (a - x).abs().flatten(1).amax(1) > 1e-6
    assert changed.float().mean() > 0.8  # cutout and the operations change nearly every image
    # kept in each image's own range
    assert (a.amin((1, 2, 3)) >= x.amin((1, 2, 3)) - 1e-5).all()
    assert (a.amax((1, 2, 3)) <= x.amax((1, 2, 3)) + 1e-5).all()
    # the method's generator follows the trial's seed
    s, t = _mlkd_models()
    v1 = _mlkd(s, t, seed=3).strong(x)
    v2 = _mlkd(s, t, seed=3).strong(x)
    assert torch.equal(v1, v2)
    assert not torch.equal(v1, _mlkd(s, t, seed=4).strong(x))


def test_mlkd_strong_view_operations_each_run():
    from kdbench.methods.mlkd import RAND_AUGMENT

    x = torch.rand(4, 3, 12, 12)
    for op, low, high in RAND_AUGMENT:
        for v in (low, high):
            out = op(x, torch.full((4,), float(v)))
            assert out.shape == x.shape and torch.isfinite(out).all(), op.__name__
            assert out.min() >= 0 and out.max() <= 1, op.__name__
    one = torch.rand(4, 1, 8, 8)
    for op, _low, high in RAND_AUGMENT:
        assert op(one, torch.full((4,), float(high))).shape == one.shape


def test_mlkd_weights_its_terms():
    student, teacher = _mlkd_models()
    x = torch.randn(16, 1, 8, 8)
    y = torch.arange(16) % 10
    student.eval()
    with torch.no_grad():
        t_out, s_out = teacher.forward_features(x), student.forward_features(x)
    base = _mlkd(student, teacher, alpha=1.0, gamma=1.0).terms(
        Step(x=x, y=y, student=s_out, teacher=t_out)
    )
    more = _mlkd(student, teacher, alpha=3.0, gamma=0.5).terms(
        Step(x=x, y=y, student=s_out, teacher=t_out)
    )
    for k in ("mlkd_instance", "mlkd_class", "mlkd_batch"):
        assert more[k].item() == pytest.approx(3.0 * base[k].item(), rel=1e-5)
    assert more["ce_strong"].item() == pytest.approx(0.5 * base["ce_strong"].item(), rel=1e-5)


# --- real steps -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlkd", "ctkd", "ttm", "wttm"])
@pytest.mark.parametrize("std", [False, True])
def test_real_step_on_resnets_of_different_depths(name, std):
    torch.manual_seed(0)
    shape = (3, 32, 32)
    student = build_model("resnet8", num_classes=10, input_shape=shape)
    teacher = build_model("resnet14", num_classes=10, input_shape=shape).eval()
    terms, s0, s1, t0, t1 = train_one_step(name, student, teacher, {"logit_std": std}, shape)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values()), terms
    assert all(torch.equal(t0[k], t1[k]) for k in t0), "the teacher changed"
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if s0[k].is_floating_point())


def test_ctkd_temperature_is_trained_with_the_student():
    torch.manual_seed(0)
    student = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    teacher = build_model("cnn_wide", num_classes=10, input_shape=(1, 8, 8)).eval()
    cls = method_class("ctkd")
    ctx = MethodContext(
        student=student, teacher=teacher, num_classes=10, n_train=64, input_shape=(1, 8, 8)
    )
    m = cls({**cls.defaults(), "lambda_warmup": 0.0}, ctx)
    assert [n for n, _ in m.named_parameters()] == ["theta"]
    opt = torch.optim.SGD(list(student.parameters()) + list(m.parameters()), lr=1.0)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        t_out = teacher.forward_features(x)
    before = m.theta.item()
    loss = sum(
        m.loss(
            Step(x=x, y=torch.arange(16) % 10, student=student.forward_features(x), teacher=t_out)
        ).values()
    )
    loss.backward()
    opt.step()
    assert m.theta.item() != before
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("name", ["mlkd", "ctkd", "ttm", "wttm"])
def test_logit_methods_pair_any_two_models(name):
    # logits alone: nothing a teacher → student pair could miss
    s = ModelOutput(torch.empty(2, 10, device="meta"))
    t = ModelOutput(
        torch.empty(2, 10, device="meta"), feats=[torch.empty(2, 4, 3, 3, device="meta")]
    )
    cls = method_class(name)
    assert cls.pairing(s, t, cls.defaults()) is None
