"""KDSVD and OFD (mdistiller's) against their formulas, computed here independently in float64
(NumPy's SVD, loops, SciPy's normal distribution), with the methods' own connectors; the
margins against the closed form from BN parameters; gradients; the models' BN accessor; real
steps on zoo pairs; and the pairings they refuse."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import norm
from test_methods import train_one_step
from torch import nn

from kdbench.methods import METHODS, MethodContext, Step, method_class
from kdbench.methods.ofd import margin_of
from kdbench.models import build_model
from kdbench.models.base import KDModel, ModelOutput

rng = np.random.default_rng(0)


def t(a):
    return torch.tensor(a, dtype=torch.float64)


class Stub(torch.nn.Module):
    """A model whose outputs are fixed arrays: what a method's modules are sized from."""

    def __init__(self, out: ModelOutput, bns: list[nn.BatchNorm2d] | None = None) -> None:
        super().__init__()
        self.out = out
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.bns = bns

    def forward_features(self, x):
        return self.out

    def bn_before_relu(self):
        return self.bns


def outputs(feats=(), preact=(), b=None, classes=3):
    feats = [t(f) for f in feats]
    preact = [t(f) for f in preact]
    n = b or len((feats or preact)[0])
    return ModelOutput(
        logits=t(rng.normal(size=(n, classes))),
        feats=feats,
        embedding=t(rng.normal(size=(n, 4))),
        preact=preact,
    )


def build(name, s_out, t_out, bns=None, **hp):
    cls = METHODS.get(name)
    ctx = MethodContext(
        student=Stub(s_out),
        teacher=Stub(t_out, bns),
        num_classes=3,
        n_train=8,
        input_shape=(1, 4, 4),
    )
    torch.manual_seed(0)
    return cls({**cls.defaults(), **hp}, ctx).double()


def term(method, s_out, t_out):
    y = torch.zeros(len(s_out.logits), dtype=torch.long)
    return method.terms(Step(x=torch.zeros(1), y=y, student=s_out, teacher=t_out))


# -- KDSVD


def lapack_sign_of_teacher(f, k):
    """The sign torch's SVD gives each of the teacher's first k right singular vectors (the
    formula leaves it to LAPACK; only the student's are aligned): +1 or -1 per sample, vector."""
    b, c, h, w = f.shape
    _, _, vh = torch.linalg.svd(t(f).reshape(b, c * h, w), full_matrices=False)
    return vh.transpose(-2, -1)[:, :, :k].numpy()


def kdsvd_by_hand(s_feats, t_feats, k):
    """(1/B) Σ_l Σ (RBF_s − RBF_t)² by loops, NumPy's SVD of each (C·H) × W matrix."""
    b = s_feats[0].shape[0]
    total = 0.0
    prev = None
    for fs, ft in zip(s_feats, t_feats, strict=True):
        torch_vt = lapack_sign_of_teacher(ft, k)
        vs_all, vt_all = [], []
        for n in range(b):
            xs = fs[n].reshape(-1, fs.shape[-1])
            xt = ft[n].reshape(-1, ft.shape[-1])
            _, _, vhs = np.linalg.svd(xs, full_matrices=False)
            _, st, vht = np.linalg.svd(xt, full_matrices=False)
            vs, vt = vhs.T[:, : k + 3], vht.T[:, :k]
            vt = vt * np.sign((vt * torch_vt[n]).sum(axis=0))  # LAPACK's sign, as torch's
            sig = st[:k] / np.linalg.norm(st[:k])
            aligned = np.zeros_like(vt)
            for j in range(vt.shape[1]):
                cos = [vs[:, i] @ vt[:, j] for i in range(vs.shape[1])]
                best = int(np.argmax(np.abs(cos)))
                aligned[:, j] = np.sign(cos[best]) * vs[:, best]
            vs_all.append(aligned * sig)
            vt_all.append(vt * sig)
        if prev is not None:
            ps, pt = prev
            for n in range(b):
                for j in range(vt_all[n].shape[1]):
                    for a in range(vt_all[n].shape[0]):
                        for c in range(pt[n].shape[0]):
                            rs = math.exp(-((vs_all[n][a, j] - ps[n][c, j]) ** 2) / 8)
                            rt = math.exp(-((vt_all[n][a, j] - pt[n][c, j]) ** 2) / 8)
                            total += (rs - rt) ** 2
        prev = (vs_all, vt_all)
    return total / b


@pytest.mark.parametrize("k", [1, 2])
def test_kdsvd_is_the_rbf_distance_of_aligned_singular_vectors(k):
    b = 3
    s_feats = [
        rng.normal(size=(b, 2, 3, 6)),
        rng.normal(size=(b, 3, 2, 5)),
        rng.normal(size=(b, 2, 4, 4)),
    ]
    t_feats = [
        rng.normal(size=(b, 4, 2, 6)),
        rng.normal(size=(b, 2, 3, 5)),
        rng.normal(size=(b, 5, 1, 4)),
    ]
    s_out, t_out = outputs(s_feats), outputs(t_feats, b=b)
    m = build("kdsvd", s_out, t_out, K=k, beta=2.5)
    got = term(m, s_out, t_out)["kdsvd"].item()
    expected = 2.5 * kdsvd_by_hand(s_feats, t_feats, k)
    assert expected > 0
    assert got == pytest.approx(expected, rel=1e-10)


def test_kdsvd_pairs_the_deepest_blocks_when_depths_differ():
    b = 2
    s_feats = [
        rng.normal(size=(b, 2, 2, 7)),
        rng.normal(size=(b, 2, 3, 6)),
        rng.normal(size=(b, 3, 2, 5)),
    ]
    t_feats = [rng.normal(size=(b, 4, 2, 6)), rng.normal(size=(b, 2, 3, 5))]
    s_out, t_out = outputs(s_feats), outputs(t_feats, b=b)
    got = term(build("kdsvd", s_out, t_out), s_out, t_out)["kdsvd"].item()
    assert got == pytest.approx(kdsvd_by_hand(s_feats[1:], t_feats, 1), rel=1e-10)


def test_kdsvd_does_not_depend_on_the_students_singular_vector_signs():
    """Flipping a student's map flips its singular vectors: the alignment undoes it."""
    b = 2
    s_feats = [rng.normal(size=(b, 2, 3, 6)), rng.normal(size=(b, 3, 2, 5))]
    t_feats = [rng.normal(size=(b, 4, 2, 6)), rng.normal(size=(b, 2, 3, 5))]
    s_out, t_out = outputs(s_feats), outputs(t_feats, b=b)
    flipped = outputs([-f for f in s_feats])
    m = build("kdsvd", s_out, t_out)
    a, c = term(m, s_out, t_out)["kdsvd"].item(), term(m, flipped, t_out)["kdsvd"].item()
    assert a == pytest.approx(c, rel=1e-10)


def test_kdsvd_gradients_reach_the_student_not_the_teacher():
    b = 3
    s_out = outputs([rng.normal(size=(b, 2, 3, 6)), rng.normal(size=(b, 3, 2, 5))])
    t_out = outputs([rng.normal(size=(b, 4, 2, 6)), rng.normal(size=(b, 2, 3, 5))], b=b)
    for f in s_out.feats + t_out.feats:
        f.requires_grad_(True)
    m = build("kdsvd", s_out, t_out)
    term(m, s_out, t_out)["kdsvd"].backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s_out.feats)
    assert all(f.grad is None for f in t_out.feats)


# -- OFD


def closed_form_margin(gamma_, beta_):
    s, m = abs(gamma_), beta_
    if norm.cdf(-m / s) > 0.001:
        return m - s * norm.pdf(m / s) / norm.cdf(-m / s)
    return -3 * s


def test_margin_is_the_mean_of_the_negative_part_of_the_bn_gaussian():
    for g, b_ in [(1.0, 0.0), (0.5, -0.3), (-2.0, 1.0), (0.7, 2.5), (1.0, 3.5), (0.1, 5.0)]:
        assert margin_of(g, b_) == pytest.approx(closed_form_margin(g, b_), rel=1e-12)
    # E[x | x < 0] by sampling, for one BN
    x = rng.normal(0.4, 1.3, size=2_000_000)
    assert margin_of(1.3, 0.4) == pytest.approx(x[x < 0].mean(), abs=3e-3)
    assert margin_of(0.0, -0.5) == -0.5 and margin_of(0.0, 0.5) == 0.0
    assert margin_of(1.0, 3.5) == -3.0  # Φ(−3.5) < 0.001


def hand_bn(c, seed):
    g = np.random.default_rng(seed)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(g.normal(0.0, 1.0, size=c)))
        bn.bias.copy_(torch.tensor(g.normal(0.0, 1.0, size=c)))
    bn.bias.data[0] = 4.0 * abs(bn.weight.data[0])  # a channel on the −3σ branch
    return bn


def pool(f, size):
    n, c, h, w = f.shape
    kh, kw = h // size[0], w // size[1]
    return f.reshape(n, c, size[0], kh, size[1], kw).mean(axis=(3, 5))


def ofd_by_hand(method, s_pre, t_pre, margins):
    """Σ_i 2^−(k−1−i) · mean over the batch of Σ_{c,h,w} the partial L2 distance."""
    k = len(method.connectors)
    s_pre, t_pre = s_pre[len(s_pre) - k :], t_pre[len(t_pre) - k :]
    total = 0.0
    for i, (conn, fs, ft, mg) in enumerate(
        zip(method.connectors, s_pre, t_pre, margins, strict=True)
    ):
        w = conn[0].weight.detach().numpy()[:, :, 0, 0]
        gamma_, beta_, eps = (
            conn[1].weight.detach().numpy(),
            conn[1].bias.detach().numpy(),
            conn[1].eps,
        )
        z = np.einsum("oc,nchw->nohw", w, fs)
        mu, var = z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3))  # training-mode BN: batch stats
        src = (z - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps)
        src = src * gamma_[None, :, None, None] + beta_[None, :, None, None]
        tgt = pool(ft, src.shape[-2:])
        d = 0.0
        n, c, h, ww = src.shape
        for a in range(n):
            for ch in range(c):
                m = mg[ch]
                for y in range(h):
                    for x in range(ww):
                        sv, tv = src[a, ch, y, x], tgt[a, ch, y, x]
                        if tv > 0:
                            d += (sv - tv) ** 2
                        elif tv > m:
                            d += (sv - tv) ** 2 if sv > tv else 0.0
                        else:
                            d += (sv - m) ** 2 if sv > m else 0.0
        total += d / n / 2 ** (k - 1 - i)
    return total


def test_ofd_is_the_partial_l2_with_bn_margins_through_the_connector():
    b = 4
    s_pre = [
        rng.normal(size=(b, 3, 4, 4)),
        rng.normal(size=(b, 2, 2, 2)),
        rng.normal(size=(b, 3, 2, 2)),
    ]
    t_pre = [
        rng.normal(size=(b, 5, 8, 8)),
        rng.normal(size=(b, 4, 4, 4)),
        rng.normal(size=(b, 6, 2, 2)),
    ]
    bns = [hand_bn(5, 1), hand_bn(4, 2), hand_bn(6, 3)]
    s_out, t_out = outputs(preact=s_pre), outputs(preact=t_pre, b=b)
    m = build("ofd", s_out, t_out, bns=bns, beta=0.7)
    assert m.margin_source == "bn"
    margins = [mg.numpy() for mg in m.margins()]
    for mg, bn in zip(margins, bns, strict=True):
        expect = [
            closed_form_margin(g, b_)
            for g, b_ in zip(bn.weight.tolist(), bn.bias.tolist(), strict=True)
        ]
        assert np.array_equal(mg, mg.astype(np.float32)) and mg[0] == pytest.approx(
            -3 * abs(bn.weight[0].item()), rel=1e-6
        )
        np.testing.assert_allclose(mg, expect, rtol=1e-6)
    got = term(m, s_out, t_out)["ofd"].item()
    expected = 0.7 * ofd_by_hand(m, s_pre, t_pre, [mg.astype(np.float64) for mg in margins])
    assert expected > 0
    assert got == pytest.approx(expected, rel=1e-10)


def test_ofd_pairs_the_deepest_blocks_and_their_own_margins():
    b = 3
    s_pre = [rng.normal(size=(b, 3, 2, 2)), rng.normal(size=(b, 2, 2, 2))]
    t_pre = [
        rng.normal(size=(b, 5, 4, 4)),
        rng.normal(size=(b, 4, 2, 2)),
        rng.normal(size=(b, 6, 2, 2)),
    ]
    bns = [hand_bn(5, 4), hand_bn(4, 5), hand_bn(6, 6)]
    s_out, t_out = outputs(preact=s_pre), outputs(preact=t_pre, b=b)
    m = build("ofd", s_out, t_out, bns=bns)
    assert len(m.connectors) == 2 and m.connectors[0][0].weight.shape == (4, 3, 1, 1)
    margins = [mg.numpy().astype(np.float64) for mg in m.margins()]
    assert margins[0].shape == (4,) and margins[1].shape == (6,)
    got = term(m, s_out, t_out)["ofd"].item()
    assert got == pytest.approx(0.001 * ofd_by_hand(m, s_pre, t_pre, margins), rel=1e-10)


def test_ofd_gradients_reach_the_student_and_connectors_not_the_teacher():
    b = 3
    s_out = outputs(preact=[rng.normal(size=(b, 3, 4, 4)), rng.normal(size=(b, 2, 2, 2))])
    t_out = outputs(preact=[rng.normal(size=(b, 5, 4, 4)), rng.normal(size=(b, 4, 2, 2))], b=b)
    for f in s_out.preact + t_out.preact:
        f.requires_grad_(True)
    m = build("ofd", s_out, t_out, bns=[hand_bn(5, 7), hand_bn(4, 8)])
    term(m, s_out, t_out)["ofd"].backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s_out.preact)
    assert all(f.grad is None for f in t_out.preact)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.connectors.parameters())


def test_ofd_weights_beta_and_gamma():
    b = 3
    s_out = outputs(preact=[rng.normal(size=(b, 3, 2, 2))])
    t_out = outputs(preact=[rng.normal(size=(b, 4, 2, 2))], b=b)
    bns = [hand_bn(4, 9)]
    one = term(build("ofd", s_out, t_out, bns=bns, beta=1.0), s_out, t_out)["ofd"].item()
    ten = term(build("ofd", s_out, t_out, bns=bns, beta=10.0), s_out, t_out)["ofd"].item()
    assert ten == pytest.approx(10 * one, rel=1e-12)
    y = torch.zeros(b, dtype=torch.long)
    terms = build("ofd", s_out, t_out, bns=bns, gamma=0.0).loss(
        Step(x=torch.zeros(1), y=y, student=s_out, teacher=t_out)
    )
    assert terms["ce"].item() == 0.0 and terms["ofd"].item() > 0


def test_kdsvd_weights_beta_and_gamma():
    b = 2
    s_out = outputs([rng.normal(size=(b, 2, 3, 6)), rng.normal(size=(b, 3, 2, 5))])
    t_out = outputs([rng.normal(size=(b, 4, 2, 6)), rng.normal(size=(b, 2, 3, 5))], b=b)
    one = term(build("kdsvd", s_out, t_out, beta=1.0), s_out, t_out)["kdsvd"].item()
    ten = term(build("kdsvd", s_out, t_out, beta=10.0), s_out, t_out)["kdsvd"].item()
    assert one > 0 and ten == pytest.approx(10 * one, rel=1e-12)
    y = torch.zeros(b, dtype=torch.long)
    terms = build("kdsvd", s_out, t_out, gamma=0.0).loss(
        Step(x=torch.zeros(1), y=y, student=s_out, teacher=t_out)
    )
    assert terms["ce"].item() == 0.0


class NoBNTeacher(KDModel):
    """A teacher whose pre-activation features come out of plain convolutions, no BN."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 4, 3, padding=1, stride=2)
        self.fc = nn.Linear(4, 10)
        with torch.no_grad():
            self.c1.bias.copy_(torch.tensor([0.5, -0.5, 2.0]))

    def forward_features(self, x):
        p1 = self.c1(x)
        f1 = torch.relu(p1)
        p2 = self.c2(f1)
        f2 = torch.relu(p2)
        emb = f2.mean(dim=(2, 3))
        return ModelOutput(self.fc(emb), [f1, f2], emb, [p1, p2])


def test_ofd_measures_the_margins_of_a_teacher_without_bn_on_the_training_split():
    torch.manual_seed(0)
    teacher = NoBNTeacher().eval()
    student = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    ctx = MethodContext(
        student=student, teacher=teacher, num_classes=3, n_train=40, input_shape=(1, 8, 8)
    )
    m = METHODS.get("ofd")(METHODS.get("ofd").defaults(), ctx)
    assert m.margin_source == "statistics"
    train_x = torch.rand(1100, 1, 8, 8)  # more than one batch of 512
    data = SimpleNamespace(train_x=train_x, normalize=lambda x: (x - 0.5) * 2)
    got = m.prepare(data, spec=SimpleNamespace(epochs=3), device=torch.device("cpu"), reused={})
    assert got.epochs == 3 and got.data is data and got.seconds > 0
    with torch.no_grad():
        pre = teacher.forward_features(data.normalize(train_x)).preact
    for mg, p in zip(m.margins(), pre[-2:], strict=True):
        a = p.double().numpy().transpose(1, 0, 2, 3).reshape(p.shape[1], -1)
        expect = [
            closed_form_margin(s, mu) for s, mu in zip(a.std(axis=1), a.mean(axis=1), strict=True)
        ]
        np.testing.assert_allclose(mg.numpy(), expect, rtol=1e-6)


def test_ofd_with_a_teacher_without_bn_trains_in_a_combination():
    torch.manual_seed(0)
    teacher = NoBNTeacher().eval()
    student = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    terms, _, _, t0, t1 = train_one_step("ofd+kd", student, teacher, shape=(1, 8, 8))
    assert {"ce", "ofd", "kd"} <= set(terms) and all(torch.isfinite(v) for v in terms.values())
    assert all(torch.equal(t0[k], t1[k]) for k in t0)


# -- the models' BN accessor


def _bn_outputs(model, x):
    outs = []
    handles = [
        bn.register_forward_hook(lambda _m, _i, o: outs.append(o)) for bn in model.bn_before_relu()
    ]
    with torch.no_grad():
        pre = model.forward_features(x).preact
    for h in handles:
        h.remove()
    return outs, pre


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("cnn_tiny", (1, 8, 8)),
        ("cnn_wide", (1, 8, 8)),
        ("wrn_16_1", (3, 32, 32)),
        ("vgg8", (3, 32, 32)),
    ],
)
def test_bn_before_relu_is_the_bn_whose_output_is_preact(arch, shape):
    model = build_model(arch, num_classes=5, input_shape=shape).eval()
    bns = model.bn_before_relu()
    assert len(bns) == len(model.forward_features(torch.zeros(1, *shape)).preact)
    outs, pre = _bn_outputs(model, torch.randn(2, *shape))
    assert len(outs) == len(pre)
    assert all(torch.equal(o, p) for o, p in zip(outs, pre, strict=True))


def test_resnet_bn_before_relu_is_each_stages_last_bn2_before_the_shortcut():
    model = build_model("resnet14", num_classes=5, input_shape=(3, 16, 16)).eval()
    bns = model.bn_before_relu()
    assert [bn is stage[-1].bn2 for bn, stage in zip(bns, model.stages, strict=True)] == [True] * 3
    inputs = []
    hooks = [
        s[-1].conv1.register_forward_pre_hook(lambda _m, a: inputs.append(a[0]))
        for s in model.stages
    ]
    outs, pre = _bn_outputs(model, torch.randn(2, 3, 16, 16))
    for h in hooks:
        h.remove()
    for stage, o, p, x in zip(model.stages, outs, pre, inputs, strict=True):
        last = stage[-1]
        with torch.no_grad():
            short = x if last.downsample is None else last.downsample(x)
        torch.testing.assert_close(o + short, p, rtol=0, atol=1e-6)


def test_mobilenetv2_bn_before_relu_is_each_stages_last_projection_bn():
    model = build_model("mobilenetv2", num_classes=5, input_shape=(3, 32, 32)).eval()
    bns = model.bn_before_relu()
    assert len(bns) == 4
    for bn, stage in zip(bns, model.stages, strict=True):
        block = stage[-1][-1]
        assert bn is block.conv[-1] and bn.num_features == block.conv[-2].out_channels
    inputs = []
    hooks = [
        s[-1][-1].conv.register_forward_pre_hook(lambda _m, a: inputs.append(a[0]))
        for s in model.stages
    ]
    outs, pre = _bn_outputs(model, torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    for stage, o, p, x in zip(model.stages, outs, pre, inputs, strict=True):
        torch.testing.assert_close(o + x if stage[-1][-1].residual else o, p, rtol=0, atol=1e-6)


def test_models_without_their_bns_say_so():
    for arch in ("shufflenet_v1", "shufflenet_v2", "convnet3"):
        assert build_model(arch, num_classes=5, input_shape=(3, 32, 32)).bn_before_relu() is None


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("resnet8", (3, 16, 16)),
        ("wrn_16_1", (3, 16, 16)),
        ("vgg8", (3, 32, 32)),
        ("cnn_small", (1, 8, 8)),
        ("mobilenetv2", (3, 32, 32)),
    ],
)
def test_ofd_margins_follow_a_teachers_bn_set_by_hand(arch, shape):
    torch.manual_seed(0)
    teacher = build_model(arch, num_classes=5, input_shape=shape).eval()
    bn = teacher.bn_before_relu()[-1]
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(-2.0, 2.0, c))
        bn.bias.copy_(torch.linspace(-1.0, 3.0, c))
    student = build_model(
        "cnn_tiny" if shape[0] == 1 else "resnet8", num_classes=5, input_shape=shape
    )
    ctx = MethodContext(
        student=student, teacher=teacher, num_classes=5, n_train=8, input_shape=shape
    )
    m = METHODS.get("ofd")(METHODS.get("ofd").defaults(), ctx)
    expect = [
        closed_form_margin(g, b_)
        for g, b_ in zip(bn.weight.tolist(), bn.bias.tolist(), strict=True)
    ]
    np.testing.assert_allclose(m.margins()[-1].numpy(), expect, rtol=1e-6)


# -- real steps, pairings


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kdsvd", "ofd"])
@pytest.mark.parametrize(
    "pair,shape",
    [
        (("cnn_tiny", "cnn_wide"), (1, 8, 8)),
        (("resnet8x4", "resnet32x4"), (3, 32, 32)),
        (("wrn_16_1", "wrn_40_1"), (3, 32, 32)),
    ],
)
def test_one_real_step_on_zoo_models(name, pair, shape):
    torch.manual_seed(0)
    student = build_model(pair[0], num_classes=10, input_shape=shape)
    teacher = build_model(pair[1], num_classes=10, input_shape=shape).eval()
    s_shape, t_shape = (
        o.map(lambda x: x.to("meta"))
        for o in (
            student.forward_features(torch.zeros(2, *shape)),
            teacher.forward_features(torch.zeros(2, *shape)),
        )
    )
    assert method_class(name).pairing(s_shape, t_shape, method_class(name).defaults()) is None
    terms, s0, s1, t0, t1 = train_one_step(name, student, teacher, shape=shape)
    assert set(terms) == {"ce", name}
    assert all(torch.isfinite(v) for v in terms.values()) and terms[name].item() > 0
    assert all(torch.equal(t0[k], t1[k]) for k in t0), "the teacher changed"
    assert any(not torch.equal(s0[k], s1[k]) for k in s0)
    assert all(torch.isfinite(v).all() for v in s1.values())


def test_ofd_connector_kernel_3_keeps_the_size():
    torch.manual_seed(0)
    student = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    teacher = build_model("cnn_wide", num_classes=10, input_shape=(1, 8, 8)).eval()
    terms, *_ = train_one_step("ofd", student, teacher, {"kernel_size": 3}, shape=(1, 8, 8))
    assert torch.isfinite(terms["ofd"])


def meta(*shapes, preact=True):
    fs = [torch.empty(s, device="meta") for s in shapes]
    return ModelOutput(
        logits=torch.empty(2, 3, device="meta"), feats=fs, preact=list(fs) if preact else []
    )


def test_pairings_refused():
    kdsvd, ofd = method_class("kdsvd"), method_class("ofd")
    two = meta((2, 4, 8, 8), (2, 8, 4, 4))
    assert kdsvd.pairing(two, meta((2, 16, 8, 8), (2, 32, 4, 4)), {}) is None
    assert "fewer than 2 blocks" in kdsvd.pairing(meta((2, 4, 8, 8)), two, {})
    assert "teacher exposes fewer than 2" in kdsvd.pairing(two, meta((2, 4, 4, 4)), {})
    assert "width" in kdsvd.pairing(two, meta((2, 16, 8, 8), (2, 32, 4, 2)), {})
    assert "(batch, channels, H, W) maps" in kdsvd.pairing(two, meta((2, 16, 8, 8), (2, 32)), {})
    assert ofd.pairing(two, meta((2, 16, 8, 8)), {}) is None
    assert ofd.pairing(two, meta((2, 16, 8, 8), preact=False), {}) == (
        "the teacher exposes no pre-activation features"
    )
    assert ofd.pairing(meta((2, 4, 8, 8), preact=False), two, {}) == (
        "the student exposes no pre-activation features"
    )
    assert "ofd: the student exposes no" in method_class("ofd+kd").pairing(
        meta((2, 4, 8, 8), preact=False), two, {}
    )
