"""ab, ft and fsp, the methods with a pre-training stage: each loss against its formula,
computed here independently (NumPy loops, float64, with the methods' own modules' weights);
what the stage trains and what it leaves; ``stage_epochs`` in a real trial's row; pairing
refusals; a real step on zoo models of different widths and depths."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.methods import METHODS, MethodContext, Step, method_class
from kdbench.methods.base import CostBasis
from kdbench.methods.stage import stage_epochs
from kdbench.models import build_model
from kdbench.models.base import ModelOutput
from kdbench.results.schema import COLUMNS, SCHEMA_VERSION
from kdbench.training.stage import prepare
from kdbench.training.trial import RunInfo, run_student, run_teacher
from kdbench.validation import parse_suite
from tests.conftest import small_plan
from tests.formulas import build_on_stubs
from tests.test_methods import train_one_step

rng = np.random.default_rng(0)
REL = 1e-10


def t(a):
    return torch.tensor(a, dtype=torch.float64)


def np_(x):
    return x.detach().double().numpy()


def pool(f, hh, ww):
    """Average pooling of an N × C × H × W array to hh × ww (H, W divisible)."""
    n, c, h, w = f.shape
    return f.reshape(n, c, hh, h // hh, ww, w // ww).mean(axis=(3, 5))


def match(a, b):
    """The larger (by H·W) of two maps pooled to the other's size."""
    (ha, wa), (hb, wb) = a.shape[2:], b.shape[2:]
    if ha * wa > hb * wb:
        return pool(a, hb, wb), b
    if ha * wa < hb * wb:
        return a, pool(b, ha, wa)
    return a, b


def conv3(x, w, b=None):
    """3×3 convolution, stride 1, zero padding 1: loops over the kernel's taps."""
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for u in range(3):
        for v in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, u : u + h, v : v + wd], w[:, :, u, v])
    return out if b is None else out + b[None, :, None, None]


def convT3(x, w, b):
    """3×3 transposed convolution, stride 1, padding 1 (weight C_in × C_out × 3 × 3): by its
    definition, each input pixel spreads its kernel over the output."""
    n, _, h, wd = x.shape
    out = np.zeros((n, w.shape[1], h + 2, wd + 2))
    for u in range(3):
        for v in range(3):
            out[:, :, u : u + h, v : v + wd] += np.einsum("nchw,co->nohw", x, w[:, :, u, v])
    return out[:, :, 1:-1, 1:-1] + b[None, :, None, None]


def bn_train(x, bn):
    """BatchNorm in training mode: batch mean and biased variance per channel."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    w, b = np_(bn.weight)[None, :, None, None], np_(bn.bias)[None, :, None, None]
    return (x - mean) / np.sqrt(var + bn.eps) * w + b


def leaky(x):
    return np.where(x > 0, x, 0.1 * x)


def att(f):
    """normalise₂(mean_c f²) per sample, flattened."""
    a = (f**2).mean(axis=1).reshape(len(f), -1)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def outputs(feats, preact=None, classes=3):
    b = len(feats[0])
    return ModelOutput(
        logits=t(rng.normal(size=(b, classes))),
        feats=[t(f) for f in feats],
        embedding=t(rng.normal(size=(b, 2))),
        preact=[t(f) for f in (preact or [])],
    )


build = build_on_stubs


# -- AB


def ab_np(g_s, g_t, margin=1.0):
    n = len(g_s)
    total = 0.0
    for i, (s, tt) in enumerate(zip(g_s, g_t, strict=True)):
        block = 0.0
        for sv, tv in zip(s.ravel(), tt.ravel(), strict=True):
            if sv > -margin and tv <= 0:
                block += (sv + margin) ** 2
            if sv <= margin and tv > 0:
                block += (sv - margin) ** 2
        total += 2.0 ** (i - n + 1) * block / len(s) / 1000 * 3
    return total


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_stage_loss_is_the_weighted_alternative_l2_of_activation_boundaries(margin):
    b = 3
    # the student's three blocks (deepest last) against the teacher's last three of four:
    # the same shape (identity), other channels (1×1 conv + BN), twice the height (3×3
    # stride-2 conv + BN)
    ps = [
        rng.normal(size=(b, 2, 4, 4)),
        rng.normal(size=(b, 2, 4, 4)),
        rng.normal(size=(b, 3, 4, 4)),
    ]
    pt = [
        rng.normal(size=(b, 5, 8, 8)),
        rng.normal(size=(b, 2, 4, 4)),
        rng.normal(size=(b, 4, 4, 4)),
        rng.normal(size=(b, 6, 2, 2)),
    ]
    s_out, t_out = outputs(ps, ps), outputs(pt, pt)
    m = build("ab", s_out, t_out, margin=margin)
    assert [type(c).__name__ for c in m.connectors] == ["Identity", "ConvReg", "ConvReg"]
    with torch.no_grad():  # BN's affine parameters away from (1, 0)
        for c in m.connectors[1:]:
            c.bn.weight.copy_(t(rng.uniform(0.5, 1.5, size=c.bn.weight.shape)))
            c.bn.bias.copy_(t(rng.normal(size=c.bn.bias.shape)))
    c1, c2 = m.connectors[1], m.connectors[2]
    assert c1.conv.kernel_size == (1, 1) and c2.conv.stride == (2, 2)
    w1, b1 = np_(c1.conv.weight)[:, :, 0, 0], np_(c1.conv.bias)
    g1 = bn_train(np.einsum("nchw,oc->nohw", ps[1], w1) + b1[None, :, None, None], c1.bn)
    g2 = np_(c2(t(ps[2])))  # the stride-2 conv + BN, the module's own
    expected = ab_np([ps[0], g1, g2], pt[1:], margin)
    got = m.stage_loss(s_out, t_out).item()
    assert got == pytest.approx(expected, rel=REL)
    # the main phase adds nothing (RepDistiller's abound: loss_kd = 0)
    assert (
        m.terms(Step(x=t(0), y=torch.zeros(b, dtype=torch.long), student=s_out, teacher=t_out))
        == {}
    )


def test_ab_connector_follows_convreg_for_each_size_ratio():
    from kdbench.methods.ab import ConvReg, connector

    def shape(c, h):
        return torch.Size((2, c, h, h))

    assert isinstance(connector(shape(4, 8), shape(4, 8)), torch.nn.Identity)
    half = ConvReg(shape(4, 4), shape(6, 8))
    assert isinstance(half.conv, torch.nn.ConvTranspose2d) and half.conv.kernel_size == (4, 4)
    larger = ConvReg(shape(4, 8), shape(6, 5))
    assert larger.conv.kernel_size == (4, 4)
    up = ConvReg(shape(4, 2), shape(6, 8))  # RepDistiller raises: upsampled, then 1×1
    for reg, s, tt in ((half, shape(4, 4), shape(6, 8)), (larger, shape(4, 8), shape(6, 5))):
        assert reg(torch.randn(s)).shape == tt
    assert up(torch.randn(shape(4, 2))).shape == shape(6, 8)
    assert all(not hasattr(m, "relu") for m in (half, larger, up))  # use_relu=False


# -- FT


def test_ft_stage_loss_is_the_paraphrasers_reconstruction_error():
    b = 2
    ft_ = [rng.normal(size=(b, 3, 4, 4)), np.abs(rng.normal(size=(b, 4, 3, 3)))]
    s_out, t_out = outputs([rng.normal(size=(b, 5, 3, 3))]), outputs(ft_)
    m = build("ft", s_out, t_out)
    enc = [np_(c.weight) for c in m.paraphraser.encoder if hasattr(c, "weight")]
    encb = [np_(c.bias) for c in m.paraphraser.encoder if hasattr(c, "weight")]
    dec = [np_(c.weight) for c in m.paraphraser.decoder if hasattr(c, "weight")]
    decb = [np_(c.bias) for c in m.paraphraser.decoder if hasattr(c, "weight")]
    assert [w.shape[:2] for w in enc] == [(4, 4), (2, 4), (2, 2)]  # k = 0.5: 2 factor channels
    assert [w.shape[:2] for w in dec] == [(2, 2), (2, 4), (4, 4)]  # (C_in, C_out), transposed
    x = ft_[1]
    for w, bb in zip(enc, encb, strict=True):
        x = leaky(conv3(x, w, bb))
    for w, bb in zip(dec, decb, strict=True):
        x = leaky(convT3(x, w, bb))
    expected = ((x - ft_[1]) ** 2).mean()
    assert m.stage_loss(None, t_out).item() == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("s_hw,t_hw", [(4, 4), (4, 2), (2, 4)])
def test_ft_term_is_the_l1_distance_of_the_normalised_factor_maps(s_hw, t_hw):
    b = 3
    fs = rng.normal(size=(b, 3, s_hw, s_hw))
    ft_ = np.abs(rng.normal(size=(b, 6, t_hw, t_hw)))
    s_out, t_out = outputs([rng.normal(size=(b, 2, 8, 8)), fs]), outputs([ft_])
    m = build("ft", s_out, t_out, beta=7.0)
    with torch.no_grad():
        for c in m.translator.encoder:
            if isinstance(c, torch.nn.BatchNorm2d):
                c.weight.copy_(t(rng.uniform(0.5, 1.5, size=c.weight.shape)))
                c.bias.copy_(t(rng.normal(size=c.bias.shape)))
    layers = list(m.translator.encoder)
    x = fs
    for conv, bn in ((layers[0], layers[1]), (layers[3], layers[4]), (layers[6], layers[7])):
        x = leaky(bn_train(conv3(x, np_(conv.weight), np_(conv.bias)), bn))
    factor_s = x
    x = ft_
    for conv in m.paraphraser.encoder:
        if hasattr(conv, "weight"):
            x = leaky(conv3(x, np_(conv.weight), np_(conv.bias)))
    factor_t = x
    assert factor_s.shape[1] == factor_t.shape[1] == 3  # int(0.5 · 6)
    a, c = match(factor_s, factor_t)
    expected = 7.0 * np.abs(att(a) - att(c)).mean()
    got = m.terms(Step(x=t(0), y=torch.zeros(b, dtype=torch.long), student=s_out, teacher=t_out))
    assert set(got) == {"ft"}
    assert got["ft"].item() == pytest.approx(expected, rel=REL)


# -- FSP


def fsp_np(feats):
    out = []
    for bot, top in itertools.pairwise(feats):
        bot, top = match(bot, top)
        n, cb = bot.shape[:2]
        ct = top.shape[1]
        g = np.zeros((n, ct, cb))
        for s in range(n):
            for j in range(ct):
                for k in range(cb):
                    g[s, j, k] = np.mean(top[s, j] * bot[s, k])
        out.append(g)
    return out


def test_fsp_stage_loss_is_the_squared_distance_of_flow_matrices():
    b = 2
    fs = [
        rng.normal(size=(b, 3, 8, 8)),
        rng.normal(size=(b, 4, 4, 4)),
        rng.normal(size=(b, 2, 4, 4)),
    ]
    # the teacher has one more (shallower) block: its last three pair with the student's
    tf = [rng.normal(size=(b, 9, 8, 8))] + [
        rng.normal(size=(b, f.shape[1], f.shape[2], f.shape[3])) for f in fs
    ]
    s_out, t_out = outputs(fs), outputs(tf)
    m = build("fsp", s_out, t_out)
    expected = sum(
        ((gs - gt) ** 2).mean() for gs, gt in zip(fsp_np(fs), fsp_np(tf[1:]), strict=True)
    )
    assert m.stage_loss(s_out, t_out).item() == pytest.approx(expected, rel=REL)
    assert (
        m.terms(Step(x=t(0), y=torch.zeros(b, dtype=torch.long), student=s_out, teacher=t_out))
        == {}
    )
    assert list(m.parameters()) == []  # fsp has no module of its own


# -- pairing refusals


def shapes(feats, preact=True):
    out = [torch.empty(s, device="meta") for s in feats]
    return ModelOutput(
        logits=torch.empty(2, 3, device="meta"), feats=out, preact=out if preact else []
    )


def test_pairing_refusals():
    ab, ft, fsp = (METHODS.get(n) for n in ("ab", "ft", "fsp"))
    good = shapes([(2, 4, 8, 8), (2, 8, 4, 4)])
    wide = shapes([(2, 8, 8, 8), (2, 16, 4, 4)])
    assert ab.pairing(good, wide, ab.defaults()) is None
    assert "the student exposes no pre-activation" in ab.pairing(
        shapes([(2, 4, 8, 8)], preact=False), wide, {}
    )
    assert "the teacher exposes no pre-activation" in ab.pairing(
        good, shapes([(2, 4, 8, 8)], preact=False), {}
    )
    assert ft.pairing(good, wide, {}) is None
    assert "the teacher exposes no block features" in ft.pairing(good, shapes([]), {})
    assert fsp.pairing(good, shapes([(2, 9, 16, 16), (2, 4, 8, 8), (2, 8, 4, 4)]), {}) is None
    assert "differ in channels (4 vs 8)" in fsp.pairing(good, wide, {})
    assert "the student exposes fewer than 2 blocks" in fsp.pairing(
        shapes([(2, 8, 4, 4)]), good, {}
    )
    for cls in (ab, ft, fsp):
        assert "there is none" in cls.pairing(good, None, {})


def test_fsp_refuses_wrn_40_2_to_wrn_40_1_as_repdistillers_table_does():
    shape = (3, 32, 32)

    def probe(arch):
        with torch.device("meta"):
            model = build_model(arch, num_classes=10, input_shape=shape)
            return model.forward_features(torch.empty(2, *shape))

    fsp = METHODS.get("fsp")
    assert "differ in channels" in fsp.pairing(probe("wrn_40_1"), probe("wrn_40_2"), {})
    assert fsp.pairing(probe("resnet8x4"), probe("resnet32x4"), {}) is None
    assert fsp.pairing(probe("resnet20"), probe("resnet56"), {}) is None


def test_a_suite_pairing_fsp_with_unequal_widths_is_refused():
    raw = {
        "name": "t",
        "datasets": ["digits"],
        "pairs": [{"teacher": "cnn_wide", "student": "cnn_tiny"}],
        "methods": ["fsp"],
        "seeds": [0],
        "tuning": {"trials": 0},
    }
    with pytest.raises(KdbenchError, match=r"fsp.*differ in channels"):
        parse_suite(raw)


def test_staged_methods_cannot_be_combined():
    for name in ("ab+kd", "ft+kd", "fsp+kd"):
        with pytest.raises(KdbenchError, match="cannot be combined"):
            method_class(name)


# -- the stage: length, cost, what it trains


def test_stage_length_is_a_share_of_the_epochs():
    assert stage_epochs({"init_share": 0.125}, 240) == 30
    assert stage_epochs({"init_share": 0.125}, 4) == 1  # at least one
    assert stage_epochs({"init_share": 0.0}, 240) == 0
    assert stage_epochs({"init_share": 1.0}, 7) == 7
    assert stage_epochs({"init_share": 0.125}, 30) == 4  # round(3.75)
    for name in ("ab", "ft", "fsp"):
        cls = METHODS.get(name)
        assert cls.defaults()["init_share"] == 0.125
        cost = cls.cost(cls.defaults(), CostBasis(1000, 10, 240, 64))
        assert (cost.images_per_epoch, cost.epochs) == (1000, 270)
        assert (
            cls.cost({**cls.defaults(), "init_share": 0.0}, CostBasis(1000, 10, 8, 64)).epochs == 8
        )


def test_defaults_are_repdistillers():
    assert METHODS.get("ab").defaults() == {"gamma": 1.0, "margin": 1.0, "init_share": 0.125}
    assert METHODS.get("ft").defaults() == {
        "gamma": 1.0,
        "beta": 200.0,
        "rate": 0.5,
        "init_share": 0.125,
        "init_lr_scale": 0.2,
    }
    assert METHODS.get("fsp").defaults() == {"gamma": 1.0, "init_share": 0.125}


INFO = RunInfo(run_id="r", suite="t")


def plan_for(**over):
    return small_plan(**{"budget": {"epochs": 4}, **over})


@pytest.fixture(scope="module")
def trained(synthetic):
    """cnn_small's trained weights on the synthetic set, and resnet14's (fsp needs equal widths)."""
    out = {}
    for teacher, student in (("cnn_small", "cnn_tiny"), ("resnet14", "resnet8")):
        plan = plan_for(pairs=[{"teacher": teacher, "student": student}])
        row = run_teacher(plan.teachers[0], synthetic, INFO)
        assert row.row["status"] == "ok"
        out[teacher] = row.weights
    return out


PAIRS = {
    "ab": ("cnn_small", "cnn_tiny"),
    "ft": ("cnn_small", "cnn_tiny"),
    "fsp": ("resnet14", "resnet8"),
}


def staged(name, synthetic, weights, **hp):
    """A final spec of ``name`` and its method, built as a trial builds it."""
    from kdbench.training.weights import load_weights

    teacher_arch, student_arch = PAIRS[name]
    entry = {"name": name, "params": hp} if hp else name
    plan = plan_for(methods=[entry], pairs=[{"teacher": teacher_arch, "student": student_arch}])
    spec = next(s for s in plan.finals if s.method == name)
    shape = synthetic.input_shape
    teacher = build_model(teacher_arch, num_classes=synthetic.num_classes, input_shape=shape)
    teacher.load_state_dict(load_weights(weights[teacher_arch]))
    teacher.eval().requires_grad_(False)
    torch.manual_seed(0)
    student = build_model(student_arch, num_classes=synthetic.num_classes, input_shape=shape)
    ctx = MethodContext.for_data(student, teacher, synthetic, torch.device("cpu"))
    method = method_class(name)(dict(spec.hparams), ctx)
    return spec, method, student, teacher


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module, prefix=""):
    after = module.state_dict()
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("name", ["ab", "ft", "fsp"])
def test_the_stage_trains_what_it_should_and_leaves_the_rest(name, synthetic, trained):
    spec, method, student, teacher = staged(name, synthetic, trained)
    s0, t0, m0 = snapshot(student), snapshot(teacher), snapshot(method)
    training = prepare(method, synthetic, spec=spec, device=torch.device("cpu"), reused={})
    assert training.stage_epochs == 1 and training.epochs == spec.epochs == 4
    assert training.seconds > 0 and training.data is synthetic
    assert not changed(t0, teacher), "the stage changed the teacher"
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher.training and student.training  # the modes as they were
    student_weights = {k for k in s0 if "running" not in k and "num_batches" not in k}
    if name in ("ab", "fsp"):
        # every layer of the student but its classifier, as get_feat_modules()
        moved = changed(s0, student)
        assert {k for k in student_weights if not k.startswith("fc.")} <= moved
        assert not changed(s0, student, "fc."), "the classifier moved"
        assert training.with_teacher is False  # the main phase is γ·CE alone
    if name == "ab":
        assert changed(m0, method, "connectors.")
        assert all(p.requires_grad for p in method.parameters())
    if name == "ft":
        assert not changed(s0, student), "ft's stage trains the paraphraser alone"
        assert changed(m0, method, "paraphraser.") == {
            k for k in m0 if k.startswith("paraphraser.")
        }
        assert not changed(m0, method, "translator.")
        assert all(not p.requires_grad for p in method.paraphraser.parameters())  # frozen again
        assert training.with_teacher is True


def test_ft_stage_lowers_the_reconstruction_error(synthetic, trained):
    spec, method, _, teacher = staged("ft", synthetic, trained, init_share=0.5)
    x = synthetic.normalize(synthetic.train_x)
    with torch.no_grad():
        t_out = teacher.forward_features(x)
        before = method.stage_loss(None, t_out).item()
    prepare(method, synthetic, spec=spec, device=torch.device("cpu"), reused={})
    with torch.no_grad():
        after = method.stage_loss(None, t_out).item()
    assert after < before


def test_the_stage_runs_sgd_at_the_suites_lr_times_init_lr_scale(synthetic, trained, monkeypatch):
    import kdbench.training.trainer as trainer

    seen = []
    real = trainer.make_optimizer

    def spy(params, budget):
        seen.append((budget.optimizer, budget.lr, budget.momentum, budget.weight_decay))
        return real(params, budget)

    monkeypatch.setattr(trainer, "make_optimizer", spy)
    spec, method, *_ = staged("ft", synthetic, trained, init_lr_scale=0.5)
    prepare(method, synthetic, spec=spec, device=torch.device("cpu"), reused={})
    b = spec.budget
    assert seen == [("sgd", pytest.approx(0.5 * b.lr), b.momentum, b.weight_decay)]
    seen.clear()
    spec, method, *_ = staged("ab", synthetic, trained)
    prepare(method, synthetic, spec=spec, device=torch.device("cpu"), reused={})
    assert seen == [("sgd", b.lr, b.momentum, b.weight_decay)]


def test_no_stage_when_init_share_is_zero(synthetic, trained):
    spec, method, student, _ = staged("ab", synthetic, trained, init_share=0.0)
    s0 = snapshot(student)
    training = prepare(method, synthetic, spec=spec, device=torch.device("cpu"), reused={})
    assert training.stage_epochs == 0 and training.seconds == 0.0 and not changed(s0, student)


def test_stage_epochs_is_in_a_real_trials_row(synthetic, trained):
    assert SCHEMA_VERSION == 4
    assert COLUMNS.index("stage_epochs") == COLUMNS.index("epochs") + 1
    plan = plan_for(methods=["ab", "ft", {"name": "kd"}])
    rows = {}
    for spec in plan.finals:
        out = run_student(spec, synthetic, INFO, trained["cnn_small"])
        rows[spec.label] = out.row
    for name, row in rows.items():
        assert row["status"] == "ok", row.get("error")
        assert set(row) <= set(COLUMNS)
        assert row["epochs"] == 4 and row["epoch_reported"] == 4
        assert row["stage_epochs"] == (1 if name in ("ab", "ft") else 0), name
        assert row["images_seen"] == 4 * len(synthetic.train_y)  # the stage's are not counted
    fsp = plan_for(methods=["fsp"], pairs=[{"teacher": "resnet14", "student": "resnet8"}])
    spec = next(s for s in fsp.finals if s.method == "fsp")
    row = run_student(spec, synthetic, INFO, trained["resnet14"]).row
    assert row["status"] == "ok" and row["stage_epochs"] == 1
    assert 0 <= row["teacher_test_acc"] <= 1  # scored though the main phase never runs it


# -- gradients and a real step on zoo models of different widths and depths

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def zoo():
    torch.manual_seed(0)
    student = build_model("resnet8x4", num_classes=10, input_shape=SHAPE)
    teacher = build_model("resnet32x4", num_classes=10, input_shape=SHAPE).eval()
    return student, teacher


def context(student, teacher):
    return MethodContext(
        student=student, teacher=teacher, num_classes=10, n_train=8, input_shape=SHAPE
    )


@pytest.mark.parametrize("name", ["ab", "ft", "fsp"])
def test_stage_gradients_reach_what_the_stage_trains_and_not_the_teacher(name, zoo):
    student, teacher = zoo
    cls = METHODS.get(name)
    method = cls(cls.defaults(), context(student, teacher))
    for m in (student, teacher, method):
        m.zero_grad(set_to_none=True)
    x = torch.randn(4, *SHAPE)
    s_out, t_out = student.forward_features(x), teacher.forward_features(x)  # teacher with grad
    if name == "ft":
        for p in method.paraphraser.parameters():
            p.requires_grad_(True)  # as the stage does
    method.stage_loss(s_out, t_out).backward()
    assert all(p.grad is None for p in teacher.parameters()), "a gradient reached the teacher"
    if name == "ft":
        assert all(p.grad is not None for p in method.paraphraser.parameters())
        assert all(p.grad is None for p in student.parameters())
        assert all(p.grad is None for p in method.translator.parameters())
        method.paraphraser.requires_grad_(False)
    else:
        grads = {k for k, p in student.named_parameters() if p.grad is not None}
        assert grads and not any(k.startswith("fc.") for k in grads)
        assert any(p.grad.abs().sum() > 0 for p in student.parameters() if p.grad is not None)
    if name == "ab":
        assert all(p.grad is not None for p in method.connectors.parameters())


def test_ft_main_term_reaches_the_student_and_translator_not_the_paraphraser(zoo):
    student, teacher = zoo
    cls = METHODS.get("ft")
    method = cls(cls.defaults(), context(student, teacher))
    student.zero_grad(set_to_none=True)
    x = torch.randn(4, *SHAPE)
    s_out, t_out = student.forward_features(x), teacher.forward_features(x)
    terms = method.terms(
        Step(x=x, y=torch.zeros(4, dtype=torch.long), student=s_out, teacher=t_out)
    )
    terms["ft"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in method.paraphraser.parameters())
    assert all(p.grad is not None for p in method.translator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_ft_weights_its_terms_with_gamma_and_beta(zoo):
    student, teacher = zoo
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        s_out, t_out = student.forward_features(x), teacher.forward_features(x)
    step = Step(x=x, y=torch.zeros(4, dtype=torch.long), student=s_out, teacher=t_out)
    cls = METHODS.get("ft")
    torch.manual_seed(3)
    a = cls({**cls.defaults(), "beta": 1.0, "gamma": 0.0}, context(student, teacher)).eval()
    torch.manual_seed(3)
    b = cls({**cls.defaults(), "beta": 3.0, "gamma": 2.0}, context(student, teacher)).eval()
    la, lb = a.loss(step), b.loss(step)
    assert la["ce"].item() == 0.0 and lb["ce"].item() > 0
    assert lb["ft"].item() == pytest.approx(3.0 * la["ft"].item(), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ab", "ft", "fsp"])
def test_one_real_step_on_zoo_models(name, zoo):
    student, teacher = copy.deepcopy(zoo[0]), copy.deepcopy(zoo[1])
    terms, s0, s1, t0, t1 = train_one_step(name, student, teacher, shape=SHAPE)
    assert "ce" in terms and all(torch.isfinite(v) for v in terms.values())
    assert set(terms) == ({"ce", "ft"} if name == "ft" else {"ce"})
    assert all(torch.equal(t0[k], t1[k]) for k in t0), "the teacher changed"
    assert any(not torch.equal(s0[k], s1[k]) for k in s0)
