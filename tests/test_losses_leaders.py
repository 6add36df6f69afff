"""DIST, NKD and logit standardisation against their formulas, computed here independently
(plain NumPy loops on fixed seeded tensors), and the ``logit_std`` switch in suites."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdbench.errors import SuiteError
from kdbench.methods import MethodContext, Step, method_class
from kdbench.methods.dist import dist_terms
from kdbench.methods.dkd import dkd_terms
from kdbench.methods.kd import kd_loss, standardize
from kdbench.methods.nkd import nkd_terms
from kdbench.models.base import ModelOutput
from kdbench.plan import resolve_hparams, search_space
from kdbench.validation import load_suite
from tests.conftest import small_suite
from tests.formulas import softmax, zscore
from tests.test_methods import one_step

TOL = 1e-6
rng = np.random.default_rng(7)
B, C = 6, 5
S = rng.normal(scale=2.0, size=(B, C))
TT = rng.normal(scale=3.0, size=(B, C))
Y = [int(v) for v in rng.integers(0, C, size=B)]


def t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def pearson(a, b, eps=1e-8):
    a, b = np.asarray(a) - np.mean(a), np.asarray(b) - np.mean(b)
    return float((a * b).sum() / (np.sqrt((a * a).sum()) * np.sqrt((b * b).sum()) + eps))


def ref_kd(s, tt, T):
    total = 0.0
    for si, ti in zip(s, tt, strict=True):
        ps, pt = softmax(si, T), softmax(ti, T)
        total += (pt * np.log(pt / ps)).sum()
    return total / len(s) * T * T


def ref_dkd(s, tt, y, T):
    tckd = nckd = 0.0
    for si, ti, yi in zip(s, tt, y, strict=True):
        ps, pt = softmax(si, T), softmax(ti, T)
        bs, bt = np.array([ps[yi], 1 - ps[yi]]), np.array([pt[yi], 1 - pt[yi]])
        tckd += (bt * np.log(bt / bs)).sum()
        others = [j for j in range(len(si)) if j != yi]
        qs, qt = softmax(si[others], T), softmax(ti[others], T)
        nckd += (qt * np.log(qt / qs)).sum()
    return tckd / len(s) * T * T, nckd / len(s) * T * T


def ref_dist(s, tt, T):
    ps = np.stack([softmax(r, T) for r in s])
    pt = np.stack([softmax(r, T) for r in tt])
    inter = 1 - np.mean([pearson(ps[i], pt[i]) for i in range(len(s))])
    intra = 1 - np.mean([pearson(ps[:, j], pt[:, j]) for j in range(ps.shape[1])])
    return inter * T * T, intra * T * T


def ref_nkd(s, tt, y, T):
    target = non = 0.0
    for si, ti, yi in zip(s, tt, y, strict=True):
        target += -softmax(ti)[yi] * np.log(softmax(si)[yi])
        others = [j for j in range(len(si)) if j != yi]
        # the non-target probabilities, renormalised: p_j / (1 − p_y) at temperature T
        ps, pt = softmax(si, T), softmax(ti, T)
        qs, qt = ps[others] / (1 - ps[yi]), pt[others] / (1 - pt[yi])
        non += -(qt * np.log(qs)).sum()
    return target / len(s), non / len(s) * T * T


def method_terms(name, s, tt, y, **hp):
    cls = method_class(name)
    ctx = MethodContext(
        student=torch.nn.Identity(), teacher=None, num_classes=C, n_train=B, input_shape=(1, 1, 1)
    )
    m = cls({**cls.defaults(), **hp}, ctx)
    step = Step(
        x=torch.zeros(B),
        y=torch.tensor(y),
        student=ModelOutput(t(s)),
        teacher=ModelOutput(t(tt)),
        epoch=100,
        epochs=200,
    )
    return {k: v.item() for k, v in m.terms(step).items()}


def test_standardize_is_a_z_score_with_bessel_and_epsilon():
    got = standardize(t(S)).numpy()
    assert np.allclose(got, np.stack([zscore(r) for r in S]), rtol=0, atol=1e-12)
    assert np.allclose(got.mean(1), 0, atol=1e-12)
    assert np.allclose(got.std(1, ddof=1), 1, atol=1e-6)


def test_dist_inter_and_intra_relations_by_hand():
    for T in (1.0, 4.0):
        inter, intra = dist_terms(t(S), t(TT), T)
        ref_inter, ref_intra = ref_dist(S, TT, T)
        assert inter.item() == pytest.approx(ref_inter, rel=TOL)
        assert intra.item() == pytest.approx(ref_intra, rel=TOL)
    # a student matching the teacher has no relation loss (up to the ε in Pearson's denominator)
    same = dist_terms(t(TT), t(TT), 4.0)
    assert 0 < same[0].item() < 1e-4 and 0 < same[1].item() < 1e-4


def test_dist_method_weights_beta_and_each_relation():
    ref_inter, ref_intra = ref_dist(S, TT, 4.0)
    got = method_terms("dist", S, TT, Y)
    assert got["dist_inter"] == pytest.approx(2.0 * ref_inter, rel=TOL)  # β = 2, w = 1
    assert got["dist_intra"] == pytest.approx(2.0 * ref_intra, rel=TOL)
    got = method_terms("dist", S, TT, Y, beta=0.5, w_inter=3.0, w_intra=0.0, T=2.0)
    assert got["dist_inter"] == pytest.approx(1.5 * ref_dist(S, TT, 2.0)[0], rel=TOL)
    assert got["dist_intra"] == 0.0


def test_nkd_target_and_normalised_non_target_terms_by_hand():
    for T in (1.0, 3.0):
        target, non = nkd_terms(t(S), t(TT), torch.tensor(Y), T)
        ref_target, ref_non = ref_nkd(S, TT, Y, T)
        assert target.item() == pytest.approx(ref_target, rel=TOL)
        assert non.item() == pytest.approx(ref_non, rel=TOL)
    got = method_terms("nkd", S, TT, Y)
    ref_target, ref_non = ref_nkd(S, TT, Y, 3.0)
    assert got["nkd_target"] == pytest.approx(ref_target, rel=TOL)  # α = 1
    assert got["nkd_non_target"] == pytest.approx(3.5 * ref_non, rel=TOL)  # β = 3.5, T = 3


def test_logit_std_on_and_off_for_each_method():
    zs, zt = np.stack([zscore(r) for r in S]), np.stack([zscore(r) for r in TT])
    for std, (s, tt) in ((False, (S, TT)), (True, (zs, zt))):
        kd = method_terms("kd", S, TT, Y, logit_std=std)
        assert kd["kd"] == pytest.approx(0.9 * ref_kd(s, tt, 4.0), rel=TOL)
        dkd = method_terms("dkd", S, TT, Y, logit_std=std)
        tckd, nckd = ref_dkd(s, tt, Y, 4.0)
        assert dkd["tckd"] == pytest.approx(tckd, rel=TOL)
        assert dkd["nckd"] == pytest.approx(8.0 * nckd, rel=TOL)
        dist = method_terms("dist", S, TT, Y, logit_std=std)
        inter, intra = ref_dist(s, tt, 4.0)
        assert dist["dist_inter"] == pytest.approx(2 * inter, rel=TOL)
        assert dist["dist_intra"] == pytest.approx(2 * intra, rel=TOL)
        nkd = method_terms("nkd", S, TT, Y, logit_std=std)
        target, non = ref_nkd(s, tt, Y, 3.0)
        assert nkd["nkd_target"] == pytest.approx(target, rel=TOL)
        assert nkd["nkd_non_target"] == pytest.approx(3.5 * non, rel=TOL)
    # off is exactly the loss as it was before the switch existed
    assert method_terms("kd", S, TT, Y)["kd"] == 0.9 * kd_loss(t(S), t(TT), 4.0).item()
    tckd, nckd = dkd_terms(t(S), t(TT), torch.tensor(Y), 4.0)
    assert method_terms("dkd", S, TT, Y) == {"tckd": tckd.item(), "nckd": 8.0 * nckd.item()}
    # the reference's own setting: base temperature 2, KD weight 9
    ls = method_terms("kd", S, TT, Y, logit_std=True, T=2.0, alpha=9.0)["kd"]
    assert ls == pytest.approx(9.0 * ref_kd(zs, zt, 2.0), rel=TOL)


def test_logit_std_makes_kd_blind_to_the_logits_scale_and_shift():
    a = method_terms("kd", S, TT, Y, logit_std=True)["kd"]
    b = method_terms("kd", 5.0 * S + 3.0, 0.1 * TT - 2.0, Y, logit_std=True)["kd"]
    assert a == pytest.approx(b, rel=1e-5)
    assert method_terms("kd", 5.0 * S, TT, Y)["kd"] != pytest.approx(
        method_terms("kd", S, TT, Y)["kd"]
    )


def suite(methods):
    return small_suite(methods=methods, budget={"epochs": 3}, tuning={"trials": 4})


def test_logit_std_is_fixable_and_searchable_in_a_suite(tmp_path):
    s = suite([{"name": "kd", "params": {"logit_std": True}}])
    assert dict(s.methods[-1].params)["logit_std"] is True
    assert dict(resolve_hparams(s.methods[-1]))["logit_std"] is True
    # off, the switch is not in a trial's hyperparameters: kd's stored trials keep their identity
    assert dict(resolve_hparams(suite(["kd"]).methods[-1])) == {
        "T": 4.0,
        "alpha": 0.9,
        "gamma": 0.1,
    }
    assert "logit_std" not in search_space(s.methods[-1])
    assert "logit_std" not in search_space(suite(["kd"]).methods[-1])  # not searched by default
    for name in ("kd", "dkd", "dist", "nkd"):
        s = suite([{"name": name, "search": {"logit_std": {"choices": [False, True]}}}])
        assert search_space(s.methods[-1])["logit_std"].choices == (False, True)
    path = tmp_path / "ls.yaml"
    path.write_text(
        "name: t\ndatasets: [synthetic]\npairs: [{teacher: cnn_small, student: cnn_tiny}]\n"
        "methods:\n  - {name: kd, label: kd_ls, params: {logit_std: true, T: 2, alpha: 9}}\n"
        "  - {name: dist, search: {logit_std: {choices: [false, true]}}}\n"
        "seeds: [0]\nbudget: {epochs: 3}\nteacher: {epochs: 2}\n"
    )
    loaded = load_suite(path)
    assert {m.label for m in loaded.methods} >= {"kd_ls", "dist"}


@pytest.mark.parametrize("bad", [1, 0.0, "true", "yes", None])
def test_a_bad_logit_std_is_refused_in_one_line(bad):
    with pytest.raises(SuiteError) as err:
        suite([{"name": "nkd", "params": {"logit_std": bad}}])
    msg = str(err.value)
    assert "\n" not in msg and "logit_std" in msg and "one of False, True" in msg, msg
    with pytest.raises(SuiteError) as err:
        suite([{"name": "kd", "search": {"logit_std": [0, 1]}}])
    assert "\n" not in str(err.value) and "categorical" in str(err.value)


@pytest.mark.parametrize("name", ["dist", "nkd"])
def test_new_methods_declare_their_search_spaces(name):
    space = search_space(suite([name]).methods[-1])
    assert {"gamma", "beta", "T"} <= set(space)


@pytest.mark.parametrize("name", ["kd", "dkd", "dist", "nkd", "dist+kd"])
def test_one_real_step_with_logit_std(name):
    terms, s0, s1, _, _ = one_step(name, {"logit_std": True})
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values()), terms
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if s0[k].is_floating_point())
