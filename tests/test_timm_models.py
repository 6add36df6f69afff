"""timm models (``timm:<name>``) as teachers and students: the zoo's feature contract, the
classifier, weights-only checkpoints, name resolution, every method's step, and a real run.

Small timm models only (the ``test_*`` architectures timm ships for its own tests, ResNet-10t,
MobileNetV3-Small): the module takes well under two minutes on 2 cores."""

from __future__ import annotations

import copy
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from kdbench.errors import KdbenchError, SuiteError
from kdbench.methods import METHODS
from kdbench.models import MODELS, build_model, count_macs, count_params
from kdbench.models.timm_models import TimmModel
from kdbench.training.weights import load_weights, read_checkpoint
from kdbench.validation import load_suite
from tests.conftest import write_suite
from tests.test_methods import train_one_step

# An optional extra (kdbench[timm]); the test_* architectures used here arrived in timm 1.0.12.
pytest.importorskip("timm", minversion="1.0.12")

TIMM_MODELS = [
    "timm:test_resnet",
    "timm:resnet10t",
    "timm:mobilenetv3_small_100",
    "timm:test_efficientnet",
]
WITH_PREACT = ["timm:test_resnet", "timm:resnet10t"]
"""Every feature point is a ReLU's output (ResNet stages, the stem's act1)."""
WITHOUT_PREACT = ["timm:mobilenetv3_small_100", "timm:test_efficientnet"]
"""Stages that end in a linear bottleneck or a residual sum: no honest pre-activation."""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches: intra-op threads only add overhead on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(model, shape, batch=2):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.forward_features(torch.randn(batch, *shape))


# -- the contract of tests/test_zoo.py


@pytest.mark.parametrize("name", TIMM_MODELS)
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_features_follow_the_contract(name, shape):
    model = build_model(name, num_classes=10, input_shape=shape).eval()
    out = run(model, shape)
    assert out.logits.shape == (2, 10)
    assert out.feats and len(out.preact) in (0, len(out.feats))
    assert all(f.ndim == 4 for f in out.feats)
    for f, p in zip(out.feats, out.preact, strict=False):
        assert p.shape == f.shape
    sizes = [f.shape[-1] for f in out.feats]
    assert sizes == sorted(sizes, reverse=True), "feats go shallow to deep"
    assert out.embedding is not None and out.embedding.shape == (2, model.fc.in_features)
    assert count_params(model) > 0 and count_macs(model, shape) > 0


@pytest.mark.parametrize("name", WITH_PREACT)
def test_preact_is_feats_before_relu(name):
    out = run(build_model(name, num_classes=5, input_shape=(3, 32, 32)).eval(), (3, 32, 32))
    assert len(out.preact) == len(out.feats) == 5
    # (a stage whose residual sum is all positive at initialisation has no negative entry)
    assert any((p < 0).any() for p in out.preact), "pre-activation maps have negative entries"
    for f, p in zip(out.feats, out.preact, strict=True):
        torch.testing.assert_close(F.relu(p), f)


@pytest.mark.parametrize("name", WITHOUT_PREACT)
def test_no_preact_where_the_stages_end_in_no_activation(name):
    out = run(build_model(name, num_classes=5, input_shape=(3, 32, 32)).eval(), (3, 32, 32))
    assert out.preact == [] and len(out.feats) == 5


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_classifier_on_embedding_gives_logits_as_timm_computes_them(name):
    model = build_model(name, num_classes=5, input_shape=(3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_features(x)
        torch.testing.assert_close(model.fc(out.embedding), out.logits)
        torch.testing.assert_close(out.logits, model.net(x))
    assert isinstance(model.fc, torch.nn.Linear) and model.fc is model.net.get_classifier()


@pytest.mark.parametrize("name", ["timm:test_resnet", "timm:mobilenetv3_small_100"])
def test_one_forward_updates_each_batchnorm_once_and_leaves_no_hook(name):
    model = build_model(name, num_classes=5, input_shape=(3, 32, 32)).train()
    bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert bns and all(int(m.num_batches_tracked) == 0 for m in bns.values()), "built untouched"
    out = model.forward_features(torch.randn(2, 3, 32, 32))
    assert all(int(m.num_batches_tracked) == 1 for m in bns.values())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    # a copy (what a worker keeps of its best epoch) computes the same, through its own layers
    twin = copy.deepcopy(model).eval()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model.forward_features(x), twin.forward_features(x)
    for p, q in zip(a.preact, b.preact, strict=True):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(a.logits, b.logits)
    assert out.logits.requires_grad


# -- small inputs and heads kdbench cannot use: refused in one line


def test_a_model_too_deep_for_the_images_is_refused_naming_its_smallest_size():
    with pytest.raises(KdbenchError) as err:
        build_model("timm:test_convnext", num_classes=10, input_shape=(1, 8, 8))
    text = str(err.value)
    assert "\n" not in text
    assert "'timm:test_convnext'" in text and "1×8×8" in text
    assert "the smallest square input it runs on is 32×32" in text
    build_model("timm:test_convnext", num_classes=10, input_shape=(3, 32, 32))  # 32×32 runs


def test_a_classifier_that_is_not_one_linear_layer_is_refused():
    with pytest.raises(KdbenchError, match=r"'timm:dla34': its classifier is Conv2d"):
        build_model("timm:dla34", num_classes=10, input_shape=(3, 32, 32))


# -- weights


def test_state_dict_round_trips_weights_only_as_kdbench_loads_teachers(tmp_path):
    shape = (1, 8, 8)
    torch.manual_seed(0)
    model = build_model("timm:test_resnet", num_classes=10, input_shape=shape)
    model.forward_features(torch.randn(8, *shape))  # move the BatchNorm statistics
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    fresh = build_model("timm:test_resnet", num_classes=10, input_shape=shape)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(4, *shape)
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
    # the path a suite's teacher checkpoint takes: read_checkpoint, then load_weights
    again = build_model("timm:test_resnet", num_classes=10, input_shape=shape).eval()
    again.load_state_dict(load_weights(read_checkpoint(str(path))))
    # and a bare timm model's state dict (no `net.` prefix), as a user saves one from timm
    bare = tmp_path / "bare.pt"
    torch.save(model.net.state_dict(), bare)
    plain = build_model("timm:test_resnet", num_classes=10, input_shape=shape).eval()
    plain.load_state_dict(load_weights(read_checkpoint(str(bare))))
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
        torch.testing.assert_close(plain(x), model(x))


# -- names


@pytest.mark.slow
def test_names_resolve_lazily_and_listing_keeps_to_the_zoo():
    assert "timm:resnet18" in MODELS and "timm:resnet1800" not in MODELS
    assert "resnet18" in MODELS and "timm" in MODELS.families()
    assert not any(":" in name for name in MODELS)
    factory = MODELS.get("timm:test_resnet")
    assert isinstance(factory(num_classes=3, input_shape=(3, 32, 32)), TimmModel)
    code = "import sys, kdbench.models, kdbench.validation; assert 'timm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_names_are_refused_in_one_line_with_close_matches():
    with pytest.raises(KdbenchError) as err:
        MODELS.get("timm:resnet1800")
    text = str(err.value)
    assert text.startswith("unknown timm model 'timm:resnet1800'") and "'timm:resnet18'" in text
    assert "\n" not in text
    with pytest.raises(KdbenchError, match=r"close matches: 'timm:resnet18'"):
        MODELS.get("timm:ResNet18")
    with pytest.raises(
        KdbenchError, match=r"pretrained tag .*name the architecture: 'timm:resnet18'"
    ):
        MODELS.get("timm:resnet18.a1_in1k")
    with pytest.raises(
        KdbenchError, match=r"unknown model 'nope:resnet18'.*; or timm:<name>, torchvision:<name>$"
    ):
        MODELS.get("nope:resnet18")


def test_without_timm_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(KdbenchError, match=r"not installed: pip install 'kdbench\[timm\]'$"):
        MODELS.get("timm:resnet18")
    assert "timm:resnet18" not in MODELS


def test_a_suite_names_the_key_and_timms_reason(tmp_path):
    text = yaml.safe_dump(
        {
            "name": "t",
            "datasets": ["digits"],
            "pairs": [{"teacher": "timm:test_resnet", "student": "timm:resnet1800"}],
            "methods": [{"name": "kd", "pairs": ["timm:test_resnet->timm:resnet1800"]}],
            "seeds": [0],
        }
    )
    with pytest.raises(SuiteError, match=r"pairs\[0\]\.student: unknown timm model") as err:
        load_suite(write_suite(tmp_path, text))
    assert "'timm:resnet18'" in str(err.value)
    suite = load_suite(write_suite(tmp_path, text.replace("resnet1800", "resnet10t")))
    assert suite.pairs[0].student == "timm:resnet10t"
    assert suite.methods[-1].pairs == ("timm:test_resnet->timm:resnet10t",)


# -- every method, one step, timm teacher and timm student

SHAPE = (3, 32, 32)
STEP_METHODS = [n for n in METHODS if not METHODS.get(n).needs.synthetic_set]
"""Every method that trains on the real images (dd_* make a set first: their own tests)."""


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    teacher = build_model("timm:resnet10t", num_classes=10, input_shape=SHAPE).eval()
    with torch.no_grad():  # a trained teacher is confident: sharpen its classifier
        teacher.fc.weight.mul_(300)
    student = build_model("timm:mobilenetv3_small_100", num_classes=10, input_shape=SHAPE)
    return teacher, student


def test_the_step_covers_the_feature_methods():
    assert {"at", "fitnet", "sp", "crd", "rkd", "pkt"} <= set(STEP_METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("name", STEP_METHODS)
def test_method_trains_one_step_with_a_timm_teacher_and_student(name, pair):
    """Every method takes a step on the pair, or refuses it, saying what the pair lacks: this
    MobileNetV3's stages end in a linear bottleneck, so it has no pre-activation features
    (ab, ofd), and its channels are not the teacher's (fsp)."""
    teacher, base = pair
    student = copy.deepcopy(base).train()
    with torch.no_grad():
        probe = [m.eval().forward_features(torch.zeros(2, *SHAPE)) for m in (student, teacher)]
    student.train()
    reason = METHODS.get(name).pairing(*probe, METHODS.get(name).defaults())
    if reason:
        assert name in {"ab", "ofd", "fsp"}, reason  # validation refuses such a suite
        return
    torch.manual_seed(0)
    terms, s0, s1, t0, t1 = train_one_step(name, student, teacher, shape=SHAPE)
    assert "ce" in terms and all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    assert all(torch.equal(t0[k], t1[k]) for k in t0), "the teacher changed"
    assert any(not torch.equal(s0[k], v) for k, v in s1.items())


# -- a real run


@pytest.mark.slow
def test_a_suite_distils_a_timm_teacher_into_a_timm_student(ray_local, tmp_path):
    from kdbench.plan import expand
    from kdbench.scheduler.driver import run_suite
    from kdbench.scheduler.estimate import estimate

    teacher, student = "timm:resnet10t", "timm:test_resnet"
    path = write_suite(
        tmp_path,
        yaml.safe_dump(
            {
                "name": "timm_e2e",
                "datasets": ["digits"],
                "pairs": [{"teacher": teacher, "student": student}],
                "methods": ["scratch", "kd", "fitnet", "at"],
                "seeds": [0],
                "budget": {"epochs": 1, "batch_size": 64},
                "teacher": {"epochs": 1},
                "tuning": {"trials": 0},
            }
        ),
    )
    suite = load_suite(path)
    est = estimate(expand(suite))
    assert est.macs > 0 and est.cpu_seconds > 0
    results = tmp_path / "results"
    summary = run_suite(suite, results, live=False)
    assert summary.planned == summary.ran == 5
    df = pd.read_parquet(results)
    assert (df.status == "ok").all(), df[["method", "error"]]
    assert set(df.teacher) == {teacher}
    finals = df[df.phase == "final"]
    assert set(finals.student) == {student}
    assert set(finals.method) == {"scratch", "kd", "fitnet", "at"}
    assert finals.test_acc.between(0, 1).all() and (finals.student_macs > 0).all()
    assert all("timm_resnet10t-timm_test_resnet" in t for t in finals.trial_id)
