"""VGG with batch norm (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for
Large-Scale Image Recognition"), in the CIFAR form of RepDistiller (Tian et al. 2020,
models/vgg.py): five groups of conv3×3 (with bias) → BN → ReLU, no hidden FC layers, and one
linear layer ``fc`` (512 → classes) on the globally average-pooled last group.

2×2 max pooling follows groups 1, 2 and 3 (32 → 16 → 8 → 4 on CIFAR); group 4 is pooled only
for inputs of 64 pixels and more (RepDistiller's Tiny-ImageNet rule), and a map already down to
one pixel is not pooled again. Convs are Kaiming-normal (fan-out, RepDistiller's
N(0, 2 / (k²·out))), BN γ = 1, β = 0, the classifier N(0, 0.01) with bias 0, as there.

Features: ``feats`` are the outputs of groups 2–5 after their last ReLU and ``preact`` the same
before it — RepDistiller's ``feat[1:-1]``. The first group (64 channels at full resolution) is
RepDistiller's ``f0``: like the ResNets' stem it is left out, so AT sums over the same four
blocks as there. ``embedding`` is the pooled last group (512), the input of ``fc``.

Measured (``count_params`` at 100 classes, ``count_macs`` per 32×32 image):

| name | convs per group | params | MACs |
| --- | --- | --- | --- |
| vgg8 | 1, 1, 1, 1, 1 | 3.97M (3,965,028) | 96.2M |
| vgg11 | 1, 1, 2, 2, 2 | 9.28M (9,277,284) | 209.4M |
| vgg13 | 2, 2, 2, 2, 2 | 9.46M (9,462,180) | 284.9M |
| vgg16 | 2, 2, 3, 3, 3 | 14.77M (14,774,436) | 398.2M |
| vgg19 | 2, 2, 4, 4, 4 | 20.09M (20,086,692) | 511.4M |
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.models.base import KDModel, ModelOutput
from kdbench.models.registry import MODELS

_WIDTHS = (64, 128, 256, 512, 512)


def _group(in_ch: int, out_ch: int, convs: int) -> nn.Sequential:
    """``convs`` × (conv3×3 → BN), ReLU between them; the group's own last ReLU is left to the
    caller so that its input can be kept as the pre-activation feature."""
    layers: list[nn.Module] = []
    for i in range(convs):
        if i:
            layers.append(nn.ReLU())
        layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch)]
        in_ch = out_ch
    return nn.Sequential(*layers)


class VGG(KDModel):
    def __init__(
        self, convs: tuple[int, ...], *, num_classes: int, input_shape: tuple[int, ...]
    ) -> None:
        super().__init__()
        in_ch, size = input_shape[0], min(input_shape[-2], input_shape[-1])
        pool_last = size >= 64
        groups, pools = [], []
        for i, (width, n) in enumerate(zip(_WIDTHS, convs, strict=True)):
            groups.append(_group(in_ch, width, n))
            in_ch = width
            pooled = i < len(_WIDTHS) - 1 and size >= 2 and (i < 3 or pool_last)
            pools.append(nn.MaxPool2d(2) if pooled else nn.Identity())
            size = size // 2 if pooled else size
        self.groups = nn.ModuleList(groups)
        self.pools = nn.ModuleList(pools)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        feats, preact = [], []
        for i, (group, pool) in enumerate(zip(self.groups, self.pools, strict=True)):
            pre = group(x)
            x = F.relu(pre)
            if i:  # the first group is RepDistiller's f0: not a feature (see the docstring)
                preact.append(pre)
                feats.append(x)
            x = pool(x)
        emb = self.pool(x).flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=feats, embedding=emb, preact=preact)

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The last BN of groups 2–5, whose output ``preact`` is (mdistiller's
        ``get_bn_before_relu``: ``block1[-1]`` … ``block4[-1]``)."""
        return [cast(nn.BatchNorm2d, cast(nn.Sequential, g)[-1]) for g in list(self.groups)[1:]]


@MODELS.register()
def vgg8(*, num_classes: int, input_shape: tuple[int, ...]) -> VGG:
    """VGG-8 with BN: one conv per group (RepDistiller's cfg 'S')."""
    return VGG((1, 1, 1, 1, 1), num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def vgg11(*, num_classes: int, input_shape: tuple[int, ...]) -> VGG:
    """VGG-11 with BN (configuration A)."""
    return VGG((1, 1, 2, 2, 2), num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def vgg13(*, num_classes: int, input_shape: tuple[int, ...]) -> VGG:
    """VGG-13 with BN (configuration B)."""
    return VGG((2, 2, 2, 2, 2), num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def vgg16(*, num_classes: int, input_shape: tuple[int, ...]) -> VGG:
    """VGG-16 with BN (configuration D)."""
    return VGG((2, 2, 3, 3, 3), num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def vgg19(*, num_classes: int, input_shape: tuple[int, ...]) -> VGG:
    """VGG-19 with BN (configuration E)."""
    return VGG((2, 2, 4, 4, 4), num_classes=num_classes, input_shape=input_shape)
