"""A small CNN family for digits-sized inputs (8×8 and up): three conv blocks, two poolings.

Block i: conv3×3 → BatchNorm → ReLU (→ 2×2 max-pool after blocks 1 and 2 when the map is
large enough), then global average pooling and a linear classifier. The variants differ
only in width, so any pair works for feature methods (their spatial sizes match, their
channel counts do not).

| name | widths | params (digits) |
| --- | --- | --- |
| cnn_wide | 32, 64, 128 | ~93k |
| cnn_small | 16, 32, 64 | ~24k |
| cnn_tiny | 4, 8, 8 | ~1k |
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from kdbench.models.base import KDModel, ModelOutput
from kdbench.models.registry import MODELS


class SmallCNN(KDModel):
    def __init__(
        self, widths: tuple[int, ...], *, num_classes: int, input_shape: tuple[int, ...]
    ) -> None:
        super().__init__()
        in_ch, size = input_shape[0], input_shape[-1]
        blocks = []
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [
                nn.Conv2d(in_ch, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(),  # not in place: the pre-activation map is kept
            ]
            if i < len(widths) - 1 and size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            blocks.append(nn.Sequential(*layers))
            in_ch = w
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        feats, preact = [], []
        for block in self.blocks:
            conv, bn, *post = block
            x = bn(conv(x))
            preact.append(x)
            for layer in post:
                x = layer(x)
            feats.append(x)
        emb = self.pool(x).flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=feats, embedding=emb, preact=preact)

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """Each block's BN, whose output ``preact`` is."""
        return [cast(nn.BatchNorm2d, cast(nn.Sequential, b)[1]) for b in self.blocks]


@MODELS.register()
def cnn_wide(*, num_classes: int, input_shape: tuple[int, ...]) -> SmallCNN:
    """Small CNN, widths 32-64-128: the wide teacher."""
    return SmallCNN((32, 64, 128), num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def cnn_small(*, num_classes: int, input_shape: tuple[int, ...]) -> SmallCNN:
    """Small CNN, widths 16-32-64."""
    return SmallCNN((16, 32, 64), num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def cnn_tiny(*, num_classes: int, input_shape: tuple[int, ...]) -> SmallCNN:
    """Small CNN, widths 4-8-8: the tiny student."""
    return SmallCNN((4, 8, 8), num_classes=num_classes, input_shape=input_shape)
