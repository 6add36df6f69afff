"""Wide residual networks (Zagoruyko & Komodakis 2016, "Wide Residual Networks"), WRN-d-k as
RepDistiller (Tian et al. 2020, models/wrn.py) builds them for CIFAR-100, dropout 0.

A 3×3 stem conv (16 channels, no BN: the blocks are pre-activation), three stages of
``n = (d − 4) / 6`` pre-activation blocks with 16k, 32k, 64k channels and strides 1, 2, 2,
then BN → ReLU, global average pooling and one linear layer ``fc``. A block is
BN → ReLU → conv3×3 → BN → ReLU → conv3×3 added to its input, or, where the width changes, to
a 1×1 conv of the *activated* input. Convs are Kaiming-normal (fan-out), BN γ = 1, β = 0 and
the classifier's bias 0, as there.

Features: in a pre-activation network a stage ends in a residual sum with no activation of its
own. ``feats`` are those sums (RepDistiller's ``feat[1:-1]`` and the group outputs the AT paper
transfers on its WRNs); ``preact`` are the sums after the BN that the next ReLU reads (the next
stage's first BN, or the final BN), RepDistiller's ``preact=True`` features. So
``ReLU(preact[i])`` is the activated map, not ``feats[i]``. The stem is not a feature (see
``resnet_cifar``). ``embedding`` is the pooled ReLU(BN(last stage)), the input of ``fc``.

Measured (``count_params`` at 100 classes, ``count_macs`` per 32×32 image):

| name | depth | widen | params | MACs |
| --- | --- | --- | --- | --- |
| wrn_16_1 | 16 | 1 | 0.18M (180,916) | 26.7M |
| wrn_16_2 | 16 | 2 | 0.70M (703,284) | 101.1M |
| wrn_40_1 | 40 | 1 | 0.57M (569,780) | 83.3M |
| wrn_40_2 | 40 | 2 | 2.26M (2,255,156) | 327.6M |
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.models.base import KDModel, ModelOutput, init_conv_bn
from kdbench.models.registry import MODELS


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.shortcut: nn.Conv2d | None = None
        if in_ch != out_ch or stride != 1:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor, normed: torch.Tensor | None = None) -> torch.Tensor:
        """``normed``: ``bn1(x)`` when the caller has already taken it (as a feature), so that
        BN runs once per batch and its running statistics are updated once."""
        act = F.relu(self.bn1(x) if normed is None else normed)
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(KDModel):
    def __init__(
        self, depth: int, widen: int, *, num_classes: int, input_shape: tuple[int, ...]
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a WRN has depth 6n + 4, not {depth}")
        n = (depth - 4) // 6
        self.conv1 = _conv3x3(input_shape[0], 16)
        stages = []
        in_ch = 16
        for out_ch, stride in zip((16 * widen, 32 * widen, 64 * widen), (1, 2, 2), strict=True):
            blocks = [PreActBlock(in_ch, out_ch, stride)]
            blocks += [PreActBlock(out_ch, out_ch, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.bn = nn.BatchNorm2d(in_ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_conv_bn(self)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        x = self.conv1(x)
        # The BN that reads each stage's output: the next stage's first one, then the final one.
        stages = [cast(nn.Sequential, s) for s in self.stages]
        exits = [cast(PreActBlock, s[0]).bn1 for s in stages[1:]] + [self.bn]
        feats, preact = [], []
        normed: torch.Tensor | None = None
        for stage, exit_bn in zip(stages, exits, strict=True):
            first, *rest = stage
            x = first(x, normed)
            for block in rest:
                x = block(x)
            normed = exit_bn(x)
            feats.append(x)
            preact.append(normed)
        assert normed is not None
        emb = self.pool(F.relu(normed)).flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=feats, embedding=emb, preact=preact)

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN that reads each stage's output (whose output ``preact`` is): the next stage's
        first ``bn1``, then the final ``bn``, as mdistiller's ``get_bn_before_relu``."""
        stages = [cast(nn.Sequential, s) for s in self.stages]
        return [cast(PreActBlock, s[0]).bn1 for s in stages[1:]] + [self.bn]


@MODELS.register()
def wrn_16_1(*, num_classes: int, input_shape: tuple[int, ...]) -> WideResNet:
    """WRN-16-1: 2 blocks per stage, widths 16-32-64."""
    return WideResNet(16, 1, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def wrn_16_2(*, num_classes: int, input_shape: tuple[int, ...]) -> WideResNet:
    """WRN-16-2: 2 blocks per stage, widths 32-64-128."""
    return WideResNet(16, 2, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def wrn_40_1(*, num_classes: int, input_shape: tuple[int, ...]) -> WideResNet:
    """WRN-40-1: 6 blocks per stage, widths 16-32-64."""
    return WideResNet(40, 1, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def wrn_40_2(*, num_classes: int, input_shape: tuple[int, ...]) -> WideResNet:
    """WRN-40-2: 6 blocks per stage, widths 32-64-128."""
    return WideResNet(40, 2, num_classes=num_classes, input_shape=input_shape)
