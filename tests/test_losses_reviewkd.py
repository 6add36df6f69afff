"""ReviewKD against its formula, recomputed here independently in float64 NumPy (pooling,
nearest resizing, convolutions, BatchNorm and sums by hand) with the method's own ABF
weights; gradients; the warmup ramp; real steps on zoo pairs; pairing refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdbench.methods import METHODS, MethodContext, Step
from kdbench.methods.reviewkd import ABF, hcl_loss
from kdbench.models import build_model
from kdbench.models.base import ModelOutput
from tests.formulas import Stub
from tests.test_methods import train_one_step

rng = np.random.default_rng(0)
BN_EPS = 1e-5


def t(a):
    return torch.tensor(a, dtype=torch.float64)


# -- NumPy reference pieces


def adaptive_pool(f, out_h, out_w):
    """PyTorch's adaptive average pooling: bin i spans [⌊i·H/o⌋, ⌈(i+1)·H/o⌉)."""
    n, c, h, w = f.shape
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, math.ceil((i + 1) * h / out_h)
        for j in range(out_w):
            w0, w1 = (j * w) // out_w, math.ceil((j + 1) * w / out_w)
            out[:, :, i, j] = f[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def nearest(f, out_h, out_w):
    """Nearest resizing as F.interpolate(mode="nearest"): source index ⌊i·in/out⌋."""
    _, _, h, w = f.shape
    rows = [(i * h) // out_h for i in range(out_h)]
    cols = [(j * w) // out_w for j in range(out_w)]
    return f[:, :, rows][:, :, :, cols]


def hcl_np(preds, targets):
    total = 0.0
    for p, q in zip(preds, targets, strict=True):
        h = p.shape[2]
        terms = [(np.mean((p - q) ** 2), 1.0)]
        weight = 1.0
        for level in (4, 2, 1):
            if level < h:
                weight /= 2
                d = adaptive_pool(p, level, level) - adaptive_pool(q, level, level)
                terms.append((np.mean(d**2), weight))
        total += sum(v * w for v, w in terms) / sum(w for _, w in terms)
    return total


def w(param):
    return param.detach().numpy().astype(np.float64)


def conv1x1(x, weight, bias=None):
    out = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0], x)
    return out if bias is None else out + bias[None, :, None, None]


def conv3x3(x, weight):
    """3×3 convolution, stride 1, zero padding 1, no bias, by loops over the kernel."""
    n, c, h, wd = x.shape
    pad = np.zeros((n, c, h + 2, wd + 2))
    pad[:, :, 1:-1, 1:-1] = x
    out = np.zeros((n, weight.shape[0], h, wd))
    for di in range(3):
        for dj in range(3):
            out += np.einsum(
                "oc,nchw->nohw", weight[:, :, di, dj], pad[:, :, di : di + h, dj : dj + wd]
            )
    return out


def batchnorm_train(x, bn):
    """Training-mode BatchNorm: the batch's mean and biased variance per channel."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + BN_EPS) * w(bn.weight)[None, :, None, None] + w(bn.bias)[
        None, :, None, None
    ]


def abf_np(abf, x, residual, out_size):
    x = batchnorm_train(conv1x1(x, w(abf.conv1[0].weight)), abf.conv1[1])
    if abf.att_conv is not None:
        r = nearest(residual, *x.shape[-2:])
        z = conv1x1(
            np.concatenate([x, r], axis=1), w(abf.att_conv[0].weight), w(abf.att_conv[0].bias)
        )
        att = 1.0 / (1.0 + np.exp(-z))
        x = x * att[:, 0:1] + r * att[:, 1:2]
    if x.shape[-2:] != tuple(out_size):
        x = nearest(x, *out_size)
    return batchnorm_train(conv3x3(x, w(abf.conv2[0].weight)), abf.conv2[1]), x


def randomize_bn(module):
    """BatchNorm affine parameters away from 1 and 0, so that they are tested too."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(t(rng.uniform(0.5, 1.5, size=m.weight.shape)))
                m.bias.copy_(t(rng.normal(size=m.bias.shape)))


# -- stubs


def outputs(feats, emb, preact=(), classes=3):
    return ModelOutput(
        logits=t(rng.normal(size=(len(emb), classes))),
        feats=[t(f) for f in feats],
        embedding=t(emb),
        preact=[t(f) for f in preact],
    )


def build(s_out, t_out, **hp):
    cls = METHODS.get("reviewkd")
    ctx = MethodContext(
        student=Stub(s_out), teacher=Stub(t_out), num_classes=3, n_train=8, input_shape=(1, 8, 8)
    )
    torch.manual_seed(0)
    return cls({**cls.defaults(), **hp}, ctx).double()


def term(method, s_out, t_out, epoch=0, epochs=1):
    y = torch.zeros(len(s_out.logits), dtype=torch.long)
    step = Step(x=torch.zeros(1), y=y, student=s_out, teacher=t_out, epoch=epoch, epochs=epochs)
    return method.terms(step)


# -- HCL


def test_hcl_is_the_weighted_pyramid_of_mses_summed_over_stages():
    shapes = [(2, 3, 8, 8), (2, 4, 6, 6), (2, 2, 4, 4), (2, 3, 2, 2), (2, 5, 1, 1), (2, 2, 5, 3)]
    preds = [rng.normal(size=s) for s in shapes]
    targets = [rng.normal(size=s) for s in shapes]
    got = hcl_loss([t(p) for p in preds], [t(q) for q in targets]).item()
    assert got == pytest.approx(hcl_np(preds, targets), rel=1e-10)


def test_hcl_weights_by_hand_on_one_8x8_stage():
    # 8×8: levels 4, 2, 1 kept, weights 1, 1/2, 1/4, 1/8, normalised by 15/8
    p, q = rng.normal(size=(1, 1, 8, 8)), rng.normal(size=(1, 1, 8, 8))
    full = np.mean((p - q) ** 2)
    pooled = [
        np.mean(
            (
                p.reshape(1, 1, k, 8 // k, k, 8 // k).mean((3, 5))
                - q.reshape(1, 1, k, 8 // k, k, 8 // k).mean((3, 5))
            )
            ** 2
        )
        for k in (4, 2, 1)
    ]
    expected = (full + pooled[0] / 2 + pooled[1] / 4 + pooled[2] / 8) / (15 / 8)
    assert hcl_loss([t(p)], [t(q)]).item() == pytest.approx(expected, rel=1e-10)
    # a 1×1 stage (the pooled embedding) is its plain MSE
    a, b = rng.normal(size=(3, 4, 1, 1)), rng.normal(size=(3, 4, 1, 1))
    assert hcl_loss([t(a)], [t(b)]).item() == pytest.approx(np.mean((a - b) ** 2), rel=1e-10)


# -- ABF


@pytest.mark.parametrize(
    "x_hw,r_hw,out_hw",
    [((4, 4), (2, 2), (4, 4)), ((4, 4), (2, 2), (8, 8)), ((3, 5), (2, 2), (2, 3))],
)
def test_abf_fusion_is_the_attention_weighted_sum_then_the_3x3_head(x_hw, r_hw, out_hw):
    abf = ABF(3, 4, 5, fuse=True).double()
    randomize_bn(abf)
    x = rng.normal(size=(3, 3, *x_hw))
    r = rng.normal(size=(3, 4, *r_hw))
    pred, res = abf(t(x), t(r), out_hw)
    exp_pred, exp_res = abf_np(abf, x, r, out_hw)
    assert pred.shape == (3, 5, *out_hw) and res.shape == (3, 4, *out_hw)
    np.testing.assert_allclose(pred.detach().numpy(), exp_pred, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.detach().numpy(), exp_res, rtol=1e-10, atol=1e-12)


def test_the_deepest_abf_has_no_fusion_and_kaiming_uniform_convolutions():
    abf = ABF(6, 4, 2, fuse=False).double()
    assert abf.att_conv is None
    assert abf.conv1[0].bias is None and abf.conv2[0].bias is None
    x = rng.normal(size=(4, 6, 1, 1))
    pred, res = abf(t(x), None, (1, 1))
    exp_pred, exp_res = abf_np(abf, x, None, (1, 1))
    np.testing.assert_allclose(pred.detach().numpy(), exp_pred, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.detach().numpy(), exp_res, rtol=1e-10, atol=1e-12)
    # kaiming_uniform_(a=1): bound = sqrt(6 / ((1 + a²)·fan_in)) = sqrt(3 / fan_in)
    big = ABF(64, 128, 32, fuse=True)
    bound = math.sqrt(3 / 64)
    wt = big.conv1[0].weight
    assert wt.abs().max().item() <= bound and wt.abs().max().item() > 0.9 * bound


# -- the whole term


def stub_pair():
    """A student of 2 blocks, a teacher of 3 blocks whose pre-activation maps differ from its
    block outputs (in values and in size): 3 stages, the teacher's deepest 2 blocks paired."""
    b = 4
    s_feats = [rng.normal(size=(b, 3, 4, 4)), rng.normal(size=(b, 5, 2, 2))]
    s_emb = rng.normal(size=(b, 6))
    t_feats = [
        rng.normal(size=(b, 2, 8, 8)),
        rng.normal(size=(b, 4, 4, 4)),
        rng.normal(size=(b, 7, 2, 2)),
    ]
    t_pre = [
        rng.normal(size=(b, 2, 8, 8)),
        rng.normal(size=(b, 4, 8, 8)),
        rng.normal(size=(b, 7, 4, 4)),
    ]
    t_emb = rng.normal(size=(b, 9))
    s_out = outputs(s_feats, s_emb)
    t_out = outputs(t_feats, t_emb, preact=t_pre)
    return s_out, t_out, (s_feats, s_emb, t_feats, t_pre, t_emb)


def reviewkd_np(method, s_stages, t_stages):
    preds, residual = [], None
    for abf, fs, ft in zip(method.abfs, s_stages[::-1], t_stages[::-1], strict=True):
        pred, residual = abf_np(abf, fs, residual, ft.shape[-2:])
        preds.insert(0, pred)
    return hcl_np(preds, t_stages)


@pytest.mark.parametrize("teacher_preact", [True, False])
def test_reviewkd_term_is_hcl_of_the_abf_chain_on_a_three_stage_pair(teacher_preact):
    s_out, t_out, (s_feats, s_emb, t_feats, t_pre, t_emb) = stub_pair()
    m = build(s_out, t_out, teacher_preact=teacher_preact, beta=2.5)
    randomize_bn(m)
    # sized from the probe: deepest first, in = student stage, mid = min(512, 6), out = teacher's
    sizes = [
        (a.conv1[0].in_channels, a.conv1[0].out_channels, a.conv2[0].out_channels) for a in m.abfs
    ]
    assert sizes == [(6, 6, 9), (5, 6, 7), (3, 6, 4)]
    assert [a.att_conv is not None for a in m.abfs] == [False, True, True]
    t_blocks = t_pre if teacher_preact else t_feats
    s_stages = [*s_feats, s_emb[:, :, None, None]]
    t_stages = [*t_blocks[1:], t_emb[:, :, None, None]]
    got = term(m, s_out, t_out)
    assert set(got) == {"reviewkd"}
    assert got["reviewkd"].item() == pytest.approx(
        2.5 * reviewkd_np(m, s_stages, t_stages), rel=1e-10
    )


def test_student_preact_and_max_mid_channel():
    s_out, t_out, (s_feats, s_emb, _, t_pre, t_emb) = stub_pair()
    s_pre = [rng.normal(size=f.shape) for f in s_feats]
    s_out = outputs(s_feats, s_emb, preact=s_pre)
    m = build(s_out, t_out, student_preact=True, max_mid_channel=3)
    assert all(a.conv1[0].out_channels == 3 for a in m.abfs)
    s_stages = [*s_pre, s_emb[:, :, None, None]]
    t_stages = [*t_pre[1:], t_emb[:, :, None, None]]
    got = term(m, s_out, t_out)["reviewkd"].item()
    assert got == pytest.approx(5.0 * reviewkd_np(m, s_stages, t_stages), rel=1e-10)


def test_warmup_ramps_the_loss_over_the_first_twelfth_of_the_epochs():
    s_out, t_out, _ = stub_pair()
    m = build(s_out, t_out)
    full = term(m, s_out, t_out, epoch=239, epochs=240)["reviewkd"].item()
    # mdistiller: min(epoch / 20, 1) with 1-based epochs
    for epoch, share in [(0, 1 / 20), (9, 10 / 20), (18, 19 / 20), (19, 1.0), (100, 1.0)]:
        got = term(m, s_out, t_out, epoch=epoch, epochs=240)["reviewkd"].item()
        assert got == pytest.approx(share * full, rel=1e-10)
    # on a short budget the ramp is as long a share: epoch 1 of 24 → 2/2
    assert term(m, s_out, t_out, epoch=0, epochs=24)["reviewkd"].item() == pytest.approx(full / 2)
    no_warm = build(s_out, t_out, warmup=0.0)
    assert term(no_warm, s_out, t_out, epoch=0, epochs=240)["reviewkd"].item() == pytest.approx(
        full
    )


def test_defaults_are_mdistillers():
    cls = METHODS.get("reviewkd")
    assert cls.defaults() == {
        "gamma": 1.0,
        "beta": 5.0,
        "warmup": 20 / 240,
        "max_mid_channel": 512,
        "student_preact": False,
        "teacher_preact": True,
    }


def test_beta_and_gamma_weight_the_terms():
    s_out, t_out, _ = stub_pair()
    one = term(build(s_out, t_out, beta=1.0), s_out, t_out)["reviewkd"].item()
    three = term(build(s_out, t_out, beta=3.0), s_out, t_out)["reviewkd"].item()
    assert three == pytest.approx(3 * one, rel=1e-10)
    m = build(s_out, t_out, gamma=0.0)
    y = torch.zeros(len(s_out.logits), dtype=torch.long)
    losses = m.loss(Step(x=torch.zeros(1), y=y, student=s_out, teacher=t_out))
    assert losses["ce"].item() == 0.0 and losses["reviewkd"].item() > 0


# -- real models

CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)


def ctx_for(student, teacher, shape):
    return MethodContext(
        student=student, teacher=teacher, num_classes=10, n_train=8, input_shape=shape
    )


@pytest.mark.parametrize(
    "s_name,t_name,ins,outs",
    [
        # mdistiller / the authors' IN_CHANNELS and OUT_CHANNELS (shallow → deep)
        ("resnet8x4", "resnet32x4", [64, 128, 256, 256], [64, 128, 256, 256]),
        ("wrn_16_2", "wrn_40_2", [32, 64, 128, 128], [32, 64, 128, 128]),
    ],
)
def test_abfs_sized_from_the_probe_match_the_reference_tables(s_name, t_name, ins, outs):
    torch.manual_seed(0)
    s = build_model(s_name, num_classes=10, input_shape=CIFAR)
    tm = build_model(t_name, num_classes=10, input_shape=CIFAR)
    m = METHODS.get("reviewkd")(METHODS.get("reviewkd").defaults(), ctx_for(s, tm, CIFAR))
    abfs = list(m.abfs)[::-1]
    assert [a.conv1[0].in_channels for a in abfs] == ins
    assert [a.conv2[0].out_channels for a in abfs] == outs
    assert {a.conv1[0].out_channels for a in abfs} == {min(512, ins[-1])}


def test_gradients_reach_the_student_and_the_abfs_but_not_the_teacher():
    torch.manual_seed(0)
    student = build_model("cnn_tiny", num_classes=10, input_shape=DIGITS)
    teacher = build_model("cnn_wide", num_classes=10, input_shape=DIGITS)
    cls = METHODS.get("reviewkd")
    method = cls(cls.defaults(), ctx_for(student, teacher, DIGITS))
    x = torch.randn(8, *DIGITS)
    s_out, t_out = student.forward_features(x), teacher.forward_features(x)  # teacher with grad
    loss = method.terms(Step(x=x, y=torch.zeros(8, dtype=torch.long), student=s_out, teacher=t_out))
    loss["reviewkd"].backward()
    assert all(p.grad is None for p in teacher.parameters()), "a gradient reached the teacher"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the models are not submodules of the method
    assert not any(p is q for p in method.parameters() for q in student.parameters())
    assert len(method.abfs) == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    "s_name,t_name,shape",
    [
        ("resnet8x4", "resnet32x4", CIFAR),
        ("wrn_16_2", "wrn_40_2", CIFAR),
        ("cnn_tiny", "cnn_wide", DIGITS),
        ("vgg8", "resnet32x4", CIFAR),  # 4 student blocks against 3, other sizes and widths
    ],
)
def test_one_real_step_on_zoo_pairs(s_name, t_name, shape):
    torch.manual_seed(0)
    student = build_model(s_name, num_classes=10, input_shape=shape)
    teacher = build_model(t_name, num_classes=10, input_shape=shape).eval()
    assert (
        METHODS.get("reviewkd").pairing(
            student.forward_features(torch.zeros(2, *shape)),
            teacher.forward_features(torch.zeros(2, *shape)),
            METHODS.get("reviewkd").defaults(),
        )
        is None
    )
    terms, s0, s1, t0, t1 = train_one_step("reviewkd", student, teacher, shape=shape)
    assert set(terms) == {"ce", "reviewkd"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values()), terms
    assert terms["reviewkd"].item() > 0
    assert all(torch.equal(t0[k], t1[k]) for k in t0), "the teacher changed"
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if s0[k].is_floating_point())


# -- pairing


def meta(feats, emb=8, preact=None):
    with torch.device("meta"):
        return ModelOutput(
            logits=torch.empty(2, 10),
            feats=[torch.empty(2, *f) for f in feats],
            embedding=None if emb is None else torch.empty(2, emb),
            preact=[torch.empty(2, *f) for f in (feats if preact is None else preact)],
        )


def test_pairing_refusals():
    cls = METHODS.get("reviewkd")
    hp = cls.defaults()
    ok = meta([(4, 8, 8), (8, 4, 4)])
    assert cls.pairing(ok, meta([(16, 4, 4), (32, 2, 2), (64, 1, 1)], emb=64), hp) is None
    assert cls.pairing(meta([(4, 5, 3)]), ok, hp) is None  # one block, non-square: served
    assert "needs a teacher" in cls.pairing(ok, None, hp)
    assert "student exposes no block features" in cls.pairing(meta([]), ok, hp)
    assert "teacher exposes no block features" in cls.pairing(ok, meta([]), hp)
    no_pre = meta([(4, 8, 8)], preact=[])
    reason = cls.pairing(ok, no_pre, hp)
    assert "teacher exposes no pre-activation features" in reason and "teacher_preact" in reason
    assert cls.pairing(ok, no_pre, {**hp, "teacher_preact": False}) is None
    assert cls.pairing(no_pre, ok, hp) is None
    assert "student exposes no pre-activation" in cls.pairing(
        no_pre, ok, {**hp, "student_preact": True}
    )
    assert "student exposes no pooled" in cls.pairing(meta([(4, 8, 8)], emb=None), ok, hp)
    assert "teacher exposes no pooled" in cls.pairing(ok, meta([(4, 8, 8)], emb=None), hp)
    assert "not (batch, channels, H, W)" in cls.pairing(ok, meta([(4, 8)]), hp)


def test_a_refused_pair_is_refused_when_built():
    s_out = outputs([rng.normal(size=(2, 3, 4, 4))], rng.normal(size=(2, 3)))
    t_out = outputs([rng.normal(size=(2, 3, 4, 4))], rng.normal(size=(2, 3)))  # no preact
    with pytest.raises(ValueError, match="pre-activation"):
        build(s_out, t_out)
    assert build(s_out, t_out, teacher_preact=False) is not None
