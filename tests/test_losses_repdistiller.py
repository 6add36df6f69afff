"""CC, NST and VID against their formulas, computed here independently (NumPy loops), with
the methods' own heads; gradients; and a real step on a pair of different depths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdbench.methods import METHODS, MethodContext, Step
from kdbench.methods.nst import nst_loss
from kdbench.models import build_model
from kdbench.models.base import ModelOutput
from tests.formulas import build_on_stubs

rng = np.random.default_rng(0)


def t(a):
    return torch.tensor(a, dtype=torch.float64)


def pool(f, size):
    """Average pooling of an N × C × H × W array to size × size (H divisible by size)."""
    n, c, h, w = f.shape
    k = h // size
    return f.reshape(n, c, size, k, size, w // size).mean(axis=(3, 5))


def outputs(feats, emb, classes=3):
    feats = [t(f) for f in feats]
    return ModelOutput(
        logits=t(rng.normal(size=(len(emb), classes))), feats=feats, embedding=t(emb)
    )


build = build_on_stubs


def term(method, s_out, t_out):
    y = torch.zeros(len(s_out.logits), dtype=torch.long)
    return method.terms(Step(x=torch.zeros(1), y=y, student=s_out, teacher=t_out))


# -- CC


def test_cc_is_the_mean_product_of_consecutive_embedding_discrepancies():
    b = 5
    s_out = outputs([rng.normal(size=(b, 2, 2, 2))], rng.normal(size=(b, 6)))
    t_out = outputs([rng.normal(size=(b, 3, 2, 2))], rng.normal(size=(b, 9)))
    m = build("cc", s_out, t_out, feat_dim=4)
    ws, bs = m.embed_s.weight.detach().numpy(), m.embed_s.bias.detach().numpy()
    wt, bt = m.embed_t.weight.detach().numpy(), m.embed_t.bias.detach().numpy()
    assert ws.shape == (4, 6) and wt.shape == (4, 9)
    es = s_out.embedding.numpy() @ ws.T + bs
    et = t_out.embedding.numpy() @ wt.T + bt
    total = 0.0
    for i in range(b - 1):
        for d in range(4):
            total += abs(es[i, d] - et[i, d]) * abs(es[i + 1, d] - et[i + 1, d])
    expected = 0.02 * total / (b - 1)
    got = term(m, s_out, t_out)["cc"].item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert METHODS.get("cc").hparam("feat_dim").default == 128


# -- NST


def nst_np(fs, ft):
    """Squared MMD, polynomial kernel (xᵀy)², between the L2-normalised channel maps."""
    if fs.shape[2] > ft.shape[2]:
        fs = pool(fs, ft.shape[2])
    elif fs.shape[2] < ft.shape[2]:
        ft = pool(ft, fs.shape[2])
    total = 0.0
    for b in range(len(fs)):
        s = [c.ravel() / np.linalg.norm(c.ravel()) for c in fs[b]]
        tt = [c.ravel() / np.linalg.norm(c.ravel()) for c in ft[b]]

        def k_mean(a, c):
            return np.mean([np.dot(x, y) ** 2 for x in a for y in c])

        total += k_mean(tt, tt) + k_mean(s, s) - 2 * k_mean(s, tt)
    return total / len(fs)


@pytest.mark.parametrize("s_hw,t_hw", [(4, 4), (4, 2), (2, 4)])
def test_nst_is_the_polynomial_mmd_of_normalised_channels(s_hw, t_hw):
    fs = rng.normal(size=(3, 2, s_hw, s_hw))
    ft = rng.normal(size=(3, 5, t_hw, t_hw))  # other channel count
    s_out = outputs([fs], rng.normal(size=(3, 2)))
    t_out = outputs([ft], rng.normal(size=(3, 5)))
    got = term(build("nst", s_out, t_out), s_out, t_out)["nst"].item()
    assert got == pytest.approx(50.0 * nst_np(fs, ft), rel=1e-6)


def test_nst_sums_the_deepest_blocks_when_depths_differ():
    s = [rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 4, 2, 2))]
    tf = [
        rng.normal(size=(2, 2, 8, 8)),
        rng.normal(size=(2, 6, 4, 4)),
        rng.normal(size=(2, 5, 2, 2)),
    ]
    got = nst_loss([t(f) for f in s], [t(f) for f in tf]).item()
    assert got == pytest.approx(nst_np(s[0], tf[1]) + nst_np(s[1], tf[2]), rel=1e-6)
    # identical maps: zero
    assert nst_loss([t(s[0])], [t(s[0])]).item() == pytest.approx(0.0, abs=1e-12)


# -- VID


def vid_np(head, fs, ft, eps=1e-5):
    if fs.shape[2] > ft.shape[2]:
        fs = pool(fs, ft.shape[2])
    elif fs.shape[2] < ft.shape[2]:
        ft = pool(ft, fs.shape[2])
    w = [c.weight.detach().numpy()[:, :, 0, 0] for c in head.regressor if hasattr(c, "weight")]
    assert all(c.bias is None for c in head.regressor if hasattr(c, "weight"))
    alpha = head.log_scale.detach().numpy()
    var = np.log(1.0 + np.exp(alpha)) + eps
    n, _, h, wd = fs.shape
    terms = []
    for b in range(n):
        for i in range(h):
            for j in range(wd):
                x = fs[b, :, i, j]
                mu = w[2] @ np.maximum(w[1] @ np.maximum(w[0] @ x, 0), 0)
                for c in range(len(mu)):
                    terms.append(0.5 * ((mu[c] - ft[b, c, i, j]) ** 2 / var[c] + np.log(var[c])))
    return float(np.mean(terms))


@pytest.mark.parametrize("s_hw,t_hw", [(4, 4), (4, 2), (2, 4)])
def test_vid_is_the_gaussian_nll_under_the_regressor_and_learned_variance(s_hw, t_hw):
    fs = [rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(2, 3, s_hw, s_hw))]
    ft = [rng.normal(size=(2, 4, t_hw, t_hw))]  # one teacher block: the deepest pair only
    s_out = outputs(fs, rng.normal(size=(2, 3)))
    t_out = outputs(ft, rng.normal(size=(2, 4)))
    m = build("vid", s_out, t_out)
    assert len(m.heads) == 1
    head = m.heads[0]
    # σ² starts at init_pred_var for every teacher channel (α is stored in float32)
    assert np.allclose(head.variance().detach().numpy(), 5.0, rtol=1e-6)
    with torch.no_grad():  # a variance away from its initial value, per channel
        head.log_scale.add_(t(rng.normal(size=4)))
    got = term(m, s_out, t_out)["vid"].item()
    assert got == pytest.approx(vid_np(head, fs[1], ft[0]), rel=1e-6)


# -- gradients and a real step on a pair of different depths

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    student = build_model("resnet8", num_classes=10, input_shape=SHAPE)  # 3 stages
    teacher = build_model("vgg8", num_classes=10, input_shape=SHAPE)  # 4 blocks, other sizes
    return student, teacher


@pytest.mark.parametrize("name", ["cc", "nst", "vid"])
def test_gradients_reach_the_student_and_the_heads_but_not_the_teacher(name, pair):
    student, teacher = pair
    ctx = MethodContext(
        student=student, teacher=teacher, num_classes=10, n_train=8, input_shape=SHAPE
    )
    cls = METHODS.get(name)
    method = cls(cls.defaults(), ctx)
    student.zero_grad(set_to_none=True)
    teacher.zero_grad(set_to_none=True)
    x = torch.randn(4, *SHAPE)
    s_out, t_out = student.forward_features(x), teacher.forward_features(x)  # teacher with grad
    loss = method.terms(Step(x=x, y=torch.zeros(4, dtype=torch.long), student=s_out, teacher=t_out))
    assert set(loss) == {name}
    loss[name].backward()
    assert all(p.grad is None for p in teacher.parameters()), "a gradient reached the teacher"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    own = list(method.named_parameters())
    if name == "nst":
        assert not own
    else:
        assert own and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in own), [
            n for n, p in own if p.grad is None or p.grad.abs().sum() == 0
        ]
    if name == "vid":
        assert len(method.heads) == 3  # the student's three stages, paired with vgg8's last three


@pytest.mark.parametrize("name", ["cc", "nst", "vid"])
def test_a_training_step_lowers_the_term_on_the_same_batch(name, pair):
    student, teacher = pair
    teacher.eval()
    ctx = MethodContext(
        student=student, teacher=teacher, num_classes=10, n_train=8, input_shape=SHAPE
    )
    cls = METHODS.get(name)
    torch.manual_seed(1)
    method = cls(cls.defaults(), ctx)
    s = build_model("resnet8", num_classes=10, input_shape=SHAPE)
    s.load_state_dict(student.state_dict())
    s.eval()  # BatchNorm statistics fixed, so the two evaluations compare like with like
    # vid's term moves by less than float32's rounding in a step of 1e-3 (its variances start
    # at 5, so its gradients are small): a larger step, measured to lower it by ~5e-6 relative.
    lr = 0.1 if name == "vid" else 1e-3
    opt = torch.optim.SGD(list(s.parameters()) + list(method.parameters()), lr=lr)
    x, y = torch.randn(8, *SHAPE), torch.arange(8) % 10
    with torch.no_grad():
        t_out = teacher.forward_features(x)
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}

    def own_term():
        return method.terms(Step(x=x, y=y, student=s.forward_features(x), teacher=t_out))[name]

    before = own_term()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = own_term()
    assert torch.isfinite(after) and after < before
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t0.items())
