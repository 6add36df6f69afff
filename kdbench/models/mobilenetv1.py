"""MobileNetV1 (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for
Mobile Vision Applications") as mdistiller's ImageNet table uses it, the student of its
ResNet-50 → MobileNetV1 pair (github:megvii-research/mdistiller,
``mdistiller/models/imagenet/mobilenetv1.py``).

A 3×3 stride-2 conv (→ BN → ReLU) to 32 channels, then thirteen depthwise-separable blocks
(3×3 depthwise conv → BN → ReLU → 1×1 conv → BN → ReLU) to 64, 128 (stride 2), 128, 256
(stride 2), 256, 512 (stride 2), five of 512, 1024 (stride 2) and 1024 channels, global
average pooling and one linear layer ``fc``: 4.23M parameters at 1,000 classes, 0.58G MACs
per 224 × 224 image. PyTorch's default initialisation, as there.

Features, as mdistiller's ``forward``: the outputs of blocks 3, 5, 11 and 13 (128, 256, 512
and 1024 channels, strides 4, 8, 16, 32), each ``preact`` taken before the block's last ReLU
and ``feats`` after it; ``bn_before_relu`` is each of those blocks' last BN (its
``get_bn_before_relu``). ``embedding`` is the pooled last map, the input of ``fc``. Where it
differs on purpose: the pool is adaptive (mdistiller's ``AvgPool2d(7)`` assumes 224 × 224
inputs), so the network runs on any input size.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.models.base import KDModel, ModelOutput
from kdbench.models.registry import MODELS

_BLOCKS = (
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    *((512, 512, 1),) * 5,
    (512, 1024, 2),
    (1024, 1024, 1),
)
_STAGE_ENDS = (3, 5, 11, 13)
"""The layers (0: the stem conv, 1–13: the blocks) whose outputs are the features."""


def _separable(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(KDModel):
    def __init__(self, *, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(input_shape[0], 32, 3, 2, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        self.layers = nn.Sequential(stem, *(_separable(*b) for b in _BLOCKS))
        self.fc = nn.Linear(1024, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        preact: list[torch.Tensor] = []
        start = 0
        for end in _STAGE_ENDS:
            x = self.layers[start:end](x)
            last = cast(nn.Sequential, self.layers[end])
            pre = last[:-1](x)
            preact.append(pre)
            x = F.relu(pre)
            start = end + 1
        emb = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return ModelOutput(
            logits=self.fc(emb), feats=[F.relu(p) for p in preact], embedding=emb, preact=preact
        )

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [cast(nn.BatchNorm2d, cast(nn.Sequential, self.layers[e])[-2]) for e in _STAGE_ENDS]


@MODELS.register()
def mobilenet_v1(*, num_classes: int, input_shape: tuple[int, ...]) -> MobileNetV1:
    """MobileNetV1 as in mdistiller's ImageNet table (the ResNet-50 student)."""
    return MobileNetV1(num_classes=num_classes, input_shape=input_shape)
