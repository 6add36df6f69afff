"""Every registered method, one step on tiny models: finite named terms, teacher unchanged,
student changed. And each loss against its formula, computed independently here."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kdbench.errors import KdbenchError
from kdbench.methods import METHODS, MethodContext, Step, method_class
from kdbench.methods.kd import kd_loss
from kdbench.models import build_model

SHAPE = (1, 8, 8)


def one_step(name: str, hp: dict | None = None):
    torch.manual_seed(0)
    student = build_model("cnn_tiny", num_classes=10, input_shape=SHAPE)
    teacher = build_model("cnn_small", num_classes=10, input_shape=SHAPE).eval()
    with torch.no_grad():  # a trained teacher is confident: sharpen its classifier
        teacher.fc.weight.mul_(300)
    return train_one_step(name, student, teacher, hp)


def train_one_step(name: str, student, teacher, hp: dict | None = None, shape=SHAPE):
    """One real optimiser step of method ``name``: (terms, student before, after, teacher
    before, after)."""
    labels = torch.arange(64) % 10
    cls = method_class(name)
    ctx = MethodContext(
        student=student,
        teacher=teacher,
        num_classes=10,
        n_train=64,
        input_shape=shape,
        train_labels=labels,
    )
    method = cls({**cls.defaults(), **(hp or {})}, ctx)
    idx = torch.randperm(64)[:16]
    x, y = torch.randn(16, *shape), labels[idx]
    before_s = {k: v.detach().clone() for k, v in student.named_parameters()}
    before_t = copy.deepcopy(teacher.state_dict())
    opt = torch.optim.SGD(list(student.parameters()) + list(method.parameters()), lr=0.1)
    with torch.no_grad():
        t_out = teacher.forward_features(x) if cls.needs.teacher else None
    step = Step(
        x=x,
        y=y,
        student=student.forward_features(x),
        teacher=t_out,
        index=idx if cls.needs.indices else None,
    )
    terms = method.loss(step)
    torch.stack(list(terms.values())).sum().backward()
    opt.step()
    after_s = {k: v.detach() for k, v in student.named_parameters()}
    return terms, before_s, after_s, before_t, teacher.state_dict()


@pytest.mark.parametrize("name", list(METHODS))
def test_method_contract(name):
    terms, s0, s1, t0, t1 = one_step(name)
    assert terms and all(isinstance(k, str) for k in terms)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values()), terms
    # cross-entropy on the labels, or (a set's soft labels, dd_sre2l's default) kd's term alone
    assert {"ce", "kd"} & set(terms)
    assert all(torch.equal(t0[k], t1[k]) for k in t0), "the teacher changed"
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if s0[k].is_floating_point()), (
        "the student did not change"
    )


@pytest.mark.parametrize("name", list(METHODS))
def test_method_declares_valid_defaults_and_search_spaces(name):
    cls = METHODS.get(name)
    assert cls.__doc__, "a method's docstring names its paper and equation"
    for h in cls.hparams:
        assert h.check(h.default) is None, (h.name, h.default)
        if h.search and not h.search.choices:
            assert h.check(h.search.low) is None and h.check(h.search.high) is None


def test_kd_loss_matches_the_formula_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    T = 4.0
    expected = 0.0
    for si, ti in zip(s.tolist(), t.tolist(), strict=True):
        ps = [math.exp(v / T) for v in si]
        pt = [math.exp(v / T) for v in ti]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        expected += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    expected = expected / 2 * T * T
    assert kd_loss(s, t, T).item() == pytest.approx(expected, rel=1e-5)


def test_kd_weights_its_terms_with_gamma_and_alpha():
    terms, *_ = one_step("kd", {"gamma": 0.0, "alpha": 2.0})
    assert terms["ce"].item() == 0.0 and terms["kd"].item() > 0
    half, *_ = one_step("kd", {"gamma": 0.0, "alpha": 1.0})
    assert terms["kd"].item() == pytest.approx(2 * half["kd"].item(), rel=1e-5)


def test_scratch_needs_no_teacher_and_cannot_be_combined():
    assert METHODS.get("scratch").needs.teacher is False
    with pytest.raises(KdbenchError, match="cannot be combined"):
        method_class("scratch+kd")
    with pytest.raises(KdbenchError, match="twice"):
        method_class("kd+kd")


@pytest.mark.parametrize("name", ["crd+kd", "at+kd", "fitnet+kd", "rkd+pkt"])
def test_combinations_train_with_the_terms_of_both(name):
    terms, s0, s1, t0, t1 = one_step(name)
    parts = name.split("+")
    own = {n: set(one_step(n)[0]) - {"ce"} for n in parts}
    assert set(terms) == {"ce"}.union(*own.values())
    assert all(torch.isfinite(v) for v in terms.values())
    assert all(torch.equal(t0[k], t1[k]) for k in t0)
    assert any(not torch.equal(s0[k], s1[k]) for k in s0)


def test_crd_plus_kd_defaults_are_repdistillers():
    assert method_class("crd+kd").defaults() == pytest.approx(
        {**method_class("crd").defaults(), "gamma": 1.0, "alpha": 1.0, "beta": 0.8, "T": 4.0}
    )
