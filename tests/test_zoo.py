"""The model zoo: every registered model keeps the feature contract, and the CIFAR models have
the sizes RepDistiller's builds have (its published CIFAR-100 model sizes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.models import MODELS, KDModel, ModelOutput, build_model, count_macs, count_params

REFERENCE_PARAMS_M = {
    "resnet8": 0.08,
    "resnet20": 0.28,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "vgg8": 3.97,
    "vgg13": 9.46,
    "mobilenetv2": 0.81,
    "shufflenet_v1": 0.95,
    "shufflenet_v2": 1.36,
    "resnet50_cifar": 23.71,
}
"""Parameters at 100 classes, in millions, as RepDistiller's model zoo builds them."""

POST_ACTIVATION = [
    *(f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)),
    "resnet8x4",
    "resnet32x4",
    *(f"vgg{d}" for d in (8, 11, 13, 16, 19)),
    "shufflenet_v1",
    "shufflenet_v2",
    "resnet18",
    "resnet50",
    "resnet50_cifar",
]
"""Models whose stages end in a ReLU, so ``feats[i] == ReLU(preact[i])``."""

LINEAR_BOTTLENECK = ["mobilenetv2", "mobilenet_v2"]
"""Models whose stages end without an activation, so ``preact`` is ``feats``."""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of two: intra-op threads only add overhead, and on a shared 2-core machine they
    made this module several times slower (see benchmarks/README.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def classifier(model: KDModel) -> nn.Linear:
    fc = getattr(model, "fc", None)
    assert isinstance(fc, nn.Linear), "zoo models name their final linear layer `fc`"
    return fc


def run(model: KDModel, shape: tuple[int, ...], batch: int = 2) -> ModelOutput:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.forward_features(torch.randn(batch, *shape))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_features_follow_the_contract(name, shape):
    if name == "convnet4" and shape[-1] < 16:  # refused at build (tests/test_models.py)
        return
    model = build_model(name, num_classes=10, input_shape=shape).eval()
    out = run(model, shape)
    assert out.logits.shape == (2, 10)
    assert out.feats and len(out.preact) == len(out.feats)
    for f, p in zip(out.feats, out.preact, strict=True):
        assert f.ndim == 4 and f.shape[:2] == p.shape[:2]
    sizes = [f.shape[-1] for f in out.feats]
    assert sizes == sorted(sizes, reverse=True), "feats go shallow to deep"
    assert out.embedding is not None and out.embedding.shape == (2, classifier(model).in_features)
    assert count_params(model) > 0 and count_macs(model, shape) > 0


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_M))
def test_cifar100_sizes_match_the_reference(name):
    params = count_params(build_model(name, num_classes=100, input_shape=(3, 32, 32)))
    assert round(params / 1e6, 2) == pytest.approx(REFERENCE_PARAMS_M[name], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_classifier_on_embedding_gives_logits(name):
    model = build_model(name, num_classes=5, input_shape=(3, 32, 32)).eval()
    out = run(model, (3, 32, 32))
    with torch.no_grad():
        logits = classifier(model)(out.embedding)
    torch.testing.assert_close(logits, out.logits)


@pytest.mark.slow
@pytest.mark.parametrize("name", POST_ACTIVATION)
def test_preact_is_feats_before_relu(name):
    model = build_model(name, num_classes=5, input_shape=(3, 32, 32)).eval()
    out = run(model, (3, 32, 32))
    for f, p in zip(out.feats, out.preact, strict=True):
        assert (p < 0).any(), "a pre-activation map has negative entries"
        torch.testing.assert_close(F.relu(p), f)


@pytest.mark.parametrize("name", LINEAR_BOTTLENECK)
def test_linear_bottleneck_preact_is_feats(name):
    out = run(build_model(name, num_classes=5, input_shape=(3, 32, 32)).eval(), (3, 32, 32))
    assert all(p is f for f, p in zip(out.feats, out.preact, strict=True))


@pytest.mark.parametrize("name", ["wrn_16_1", "wrn_40_2"])
def test_preactivation_wrn_preact_is_the_normalised_stage_output(name):
    model = build_model(name, num_classes=5, input_shape=(3, 32, 32)).eval()
    out = run(model, (3, 32, 32))
    exits = [model.stages[1][0].bn1, model.stages[2][0].bn1, model.bn]
    with torch.no_grad():
        for f, p, bn in zip(out.feats, out.preact, exits, strict=True):
            torch.testing.assert_close(bn(f), p)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_one_forward_updates_each_batchnorm_once(name):
    """Taking features must not run a BN twice (its running statistics would move twice)."""
    model = build_model(name, num_classes=5, input_shape=(3, 32, 32)).train()
    run(model, (3, 32, 32))
    counts = {n: int(m.num_batches_tracked) for n, m in model.named_modules() if _is_bn(m)}
    assert all(c == 1 for c in counts.values()), counts


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet50_cifar", "mobilenet_v2"])
def test_torchvision_wrappers_compute_what_torchvision_computes(name):
    model = build_model(name, num_classes=5, input_shape=(3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(x))


@pytest.mark.slow
def test_the_cifar_resnet50_keeps_32px_maps_in_its_first_stage():
    """RepDistiller's ResNet50: 3×3 stride-1 stem, no max pool, so stages end at 32/16/8/4 px
    (torchvision's ImageNet stem would leave 8/4/2/1)."""
    model = build_model("resnet50_cifar", num_classes=100, input_shape=(3, 32, 32))
    assert model.net.conv1.kernel_size == (3, 3) and model.net.conv1.stride == (1, 1)
    out = run(model.eval(), (3, 32, 32))
    assert [f.shape[-1] for f in out.feats] == [32, 16, 8, 4]
    assert [f.shape[1] for f in out.feats] == [256, 512, 1024, 2048]
