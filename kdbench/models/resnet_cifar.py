"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", §4.2), as
RepDistiller (Tian et al. 2020, "Contrastive Representation Distillation", models/resnet.py)
builds them for its CIFAR-100 teacher/student pairs.

A 3×3 stem (conv → BN → ReLU, ``widths[0]`` channels), three stages of ``n`` BasicBlocks
(``depth = 6n + 2``) with ``widths[1:]`` channels and strides 1, 2, 2, global average pooling
and one linear layer ``fc``. Where a block changes width or stride its shortcut is a 1×1 conv
+ BN, as in RepDistiller (He et al.'s CIFAR nets used parameter-free zero-padding shortcuts
there). Convs are Kaiming-normal (fan-out), BN starts at γ = 1, β = 0, as in RepDistiller.

Features: ``feats`` are the three stage outputs (after the last block's ReLU) and ``preact``
the same sums before that ReLU — RepDistiller's ``feat[1:-1]``, the blocks its AT, SP, VID and
AB losses read. The stem is not a feature: RepDistiller lists it as ``f0``, but only its FSP
uses it, and counting it would add a 32×32 term to AT's sum. ``embedding`` is the pooled last
stage (RepDistiller's ``f4``), the input of ``fc``.

Measured (``count_params`` at 100 classes, ``count_macs`` per 32×32 image):

| name | depth | widths | params | MACs |
| --- | --- | --- | --- | --- |
| resnet8 | 8 | 16, 16, 32, 64 | 0.08M (83,892) | 12.5M |
| resnet14 | 14 | 16, 16, 32, 64 | 0.18M (181,108) | 26.7M |
| resnet20 | 20 | 16, 16, 32, 64 | 0.28M (278,324) | 40.8M |
| resnet32 | 32 | 16, 16, 32, 64 | 0.47M (472,756) | 69.1M |
| resnet44 | 44 | 16, 16, 32, 64 | 0.67M (667,188) | 97.4M |
| resnet56 | 56 | 16, 16, 32, 64 | 0.86M (861,620) | 125.8M |
| resnet110 | 110 | 16, 16, 32, 64 | 1.74M (1,736,564) | 253.2M |
| resnet8x4 | 8 | 32, 64, 128, 256 | 1.23M (1,233,540) | 177.1M |
| resnet32x4 | 32 | 32, 64, 128, 256 | 7.43M (7,433,860) | 1083.0M |
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


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        """The residual sum, before the block's final ReLU."""
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return out + (x if self.downsample is None else self.downsample(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.preact(x))


class CifarResNet(KDModel):
    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int],
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2, not {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(input_shape[0], widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_ch = widths[0]
        for out_ch, stride in zip(widths[1:], (1, 2, 2), strict=True):
            blocks = [BasicBlock(in_ch, out_ch, stride)]
            blocks += [BasicBlock(out_ch, out_ch, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        x = F.relu(self.bn1(self.conv1(x)))
        feats, preact = [], []
        for stage in self.stages:
            *head, last = stage
            for block in head:
                x = block(x)
            pre = last.preact(x)
            x = F.relu(pre)
            preact.append(pre)
            feats.append(x)
        emb = self.pool(x).flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=feats, embedding=emb, preact=preact)

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """Each stage's last block's ``bn2`` (the residual branch's BN, before the sum), as
        mdistiller's ``get_bn_before_relu``."""
        return [cast(BasicBlock, cast(nn.Sequential, stage)[-1]).bn2 for stage in self.stages]


_BASE = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


@MODELS.register()
def resnet8(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-8 (1 block per stage, widths 16-32-64)."""
    return CifarResNet(8, _BASE, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet14(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-14 (2 blocks per stage, widths 16-32-64)."""
    return CifarResNet(14, _BASE, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet20(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-20 (3 blocks per stage, widths 16-32-64)."""
    return CifarResNet(20, _BASE, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet32(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-32 (5 blocks per stage, widths 16-32-64)."""
    return CifarResNet(32, _BASE, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet44(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-44 (7 blocks per stage, widths 16-32-64)."""
    return CifarResNet(44, _BASE, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet56(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-56 (9 blocks per stage, widths 16-32-64)."""
    return CifarResNet(56, _BASE, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet110(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-110 (18 blocks per stage, widths 16-32-64)."""
    return CifarResNet(110, _BASE, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet8x4(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-8, four times wider (stem 32, stages 64-128-256)."""
    return CifarResNet(8, _X4, num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet32x4(*, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """CIFAR ResNet-32, four times wider (stem 32, stages 64-128-256)."""
    return CifarResNet(32, _X4, num_classes=num_classes, input_shape=input_shape)
