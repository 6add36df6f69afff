"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks")
in the CIFAR form of RepDistiller (Tian et al. 2020, models/mobilenetv2.py), at width 0.5:
its ``mobile_half``, the student of its vgg13 and resnet50 pairs.

A 3×3 stride-2 stem (conv → BN → ReLU), seven groups of inverted residual blocks
(expansion t, output channels c, n blocks, first stride s), a 1×1 conv to 1280 channels
(→ BN → ReLU), global average pooling and one linear layer ``fc``. The CIFAR form differs from
ImageNet's in the second group's stride (1, not 2), so the network downsamples by 16:
32 × 32 → 2 × 2. Width 0.5 halves every channel count but the 1280 of the last conv.

| t | c | n | s |
| --- | --- | --- | --- |
| 1 | 16 | 1 | 1 |
| 6 | 24 | 2 | 1 |
| 6 | 32 | 3 | 2 |
| 6 | 64 | 4 | 2 |
| 6 | 96 | 3 | 1 |
| 6 | 160 | 3 | 2 |
| 6 | 320 | 1 | 1 |

A block is 1×1 expand → BN → ReLU → 3×3 depthwise → BN → ReLU → 1×1 project → BN (linear:
no ReLU), plus the identity where stride and width allow. Convs Kaiming-normal (fan-out),
BN γ = 1, β = 0, the classifier N(0, 0.01) with bias 0, as there.

Features: RepDistiller's ``feat[1:-1]``, the outputs of groups 1–2, 3, 4–5 and 6–7 (strides
2, 4, 8, 16 on 32 × 32 inputs: 12, 16, 48, 160 channels at width 0.5). A block ends in its
linear bottleneck, with no activation, so ``preact`` holds the same tensors as ``feats``. The
stem is not a feature (see ``resnet_cifar``). ``embedding`` is the pooled 1280-channel map of
the last 1×1 conv, the input of ``fc``; that conv follows the last feature.

Measured (``count_params`` at 100 classes, ``count_macs`` per 32×32 image):

| name | width | params | MACs |
| --- | --- | --- | --- |
| mobilenetv2 | 0.5 | 0.81M (812,836) | 6.5M |
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from kdbench.models.base import KDModel, ModelOutput, init_conv_bn
from kdbench.models.registry import MODELS

_SETTINGS = (  # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_FEATURE_GROUPS = ((0, 1), (2,), (3, 4), (5, 6))
"""Which of the seven groups make up each feature stage (RepDistiller's f1–f4)."""


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            _conv_bn_relu(in_ch, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(KDModel):
    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: float = 0.5,
        last_channels: int = 1280,
    ) -> None:
        super().__init__()
        in_ch = int(32 * width)
        self.stem = _conv_bn_relu(input_shape[0], in_ch, 3, stride=2)
        groups = []
        for t, c, n, s in _SETTINGS:
            out_ch = int(c * width)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
            groups.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(
            nn.Sequential(*(groups[g] for g in members)) for members in _FEATURE_GROUPS
        )
        # RepDistiller widens the last conv only for width > 1.
        last = int(last_channels * width) if width > 1.0 else last_channels
        self.head = _conv_bn_relu(in_ch, last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)
        init_conv_bn(self)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        emb = self.pool(self.head(x)).flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=feats, embedding=emb, preact=list(feats))

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The projection BN of each feature stage's last block (before its residual sum, where
        it has one), as mdistiller's ``get_bn_before_relu`` (``blocks[g][-1].conv[-1]`` for
        groups 1, 2, 4, 6)."""
        out = []
        for stage in self.stages:
            last_group = cast(nn.Sequential, cast(nn.Sequential, stage)[-1])
            block = cast(InvertedResidual, last_group[-1])
            out.append(cast(nn.BatchNorm2d, block.conv[-1]))
        return out


@MODELS.register()
def mobilenetv2(*, num_classes: int, input_shape: tuple[int, ...]) -> MobileNetV2:
    """CIFAR MobileNetV2 at width 0.5 (RepDistiller's mobile_half)."""
    return MobileNetV2(num_classes=num_classes, input_shape=input_shape, width=0.5)
