"""ShuffleNet V1 (Zhang et al. 2018, "ShuffleNet: An Extremely Efficient Convolutional Neural
Network for Mobile Devices") and V2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design"), in the CIFAR form of RepDistiller (Tian et al. 2020,
models/ShuffleNetv1.py, ShuffleNetv2.py): a 1×1 stride-1 stem of 24 channels (→ BN → ReLU),
three stages that each halve the map (32 → 16 → 8 → 4), global average pooling and one linear
layer ``fc``.

- **V1**, groups 3: stage widths 240, 480, 960 with 4, 8, 4 bottlenecks. A bottleneck is
  grouped 1×1 (to a quarter of the width; ungrouped when it reads the 24-channel stem) → BN →
  ReLU → channel shuffle → 3×3 depthwise → BN → ReLU → grouped 1×1 → BN, added to its input;
  a stage's first bottleneck has stride 2, concatenates a 3×3 average-pooled shortcut, and so
  only produces the width minus its input's.
- **V2**, size 1×: stage widths 116, 232, 464 with a down-sampling unit and then 3, 7, 3 basic
  units, and a 1×1 conv to 1024 (→ BN → ReLU) before pooling. A basic unit splits the channels
  in half, passes one half through 1×1 → BN → ReLU → 3×3 depthwise → BN → 1×1 → BN → ReLU,
  concatenates the other half and shuffles (2 groups).

Weights keep PyTorch's default initialisation, as RepDistiller's ShuffleNets do.

Features: ``feats`` are the three stage outputs and ``preact`` the same before the last unit's
final ReLU — RepDistiller's ``feat[1:-1]`` and its ``preact=True`` features; the stem is not a
feature (see ``resnet_cifar``). One deliberate difference: RepDistiller's V2 returns the
pre-activation of a basic unit *before* the channel shuffle; here it is shuffled like the
output, so that ``ReLU(preact[i]) == feats[i]`` channel for channel (RepDistiller's holds the
same values in another channel order).
``embedding`` is the pooled input of ``fc``: the last stage (V1) or the 1024-channel conv (V2).

Measured (``count_params`` at 100 classes, ``count_macs`` per 32×32 image):

| name | params | MACs |
| --- | --- | --- |
| shufflenet_v1 | 0.95M (949,258) | 38.7M |
| shufflenet_v2 | 1.36M (1,355,528) | 44.5M |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.models.base import KDModel, ModelOutput
from kdbench.models.registry import MODELS

STEM = 24


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(g, c/g) channel order → (c/g, g): each group's channels are spread over all groups."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _conv_bn(
    in_ch: int, out_ch: int, kernel: int = 1, *, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_ch),
    )


def _run_stage(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage's output and its last unit's pre-activation."""
    *head, last = stage
    for unit in head:
        x = unit(x)
    pre = last.preact(x)
    return F.relu(pre), pre


class ShuffleV1Unit(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = out_ch // 4
        self.groups1 = 1 if in_ch == STEM else groups
        self.reduce = _conv_bn(in_ch, mid, groups=self.groups1)
        self.depthwise = _conv_bn(mid, mid, 3, stride=stride, groups=mid)
        self.expand = _conv_bn(mid, out_ch, groups=groups)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.reduce(x)), self.groups1)
        out = self.expand(F.relu(self.depthwise(out)))
        res = self.shortcut(x)
        return torch.cat([out, res], 1) if self.stride == 2 else out + res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.preact(x))


class ShuffleNetV1(KDModel):
    def __init__(
        self,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        groups: int,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.stem = _conv_bn(input_shape[0], STEM)
        stages = []
        in_ch = STEM
        for width, n in zip(widths, blocks, strict=True):
            # The first unit concatenates its (pooled) input, so it adds width - in_ch channels.
            units = [ShuffleV1Unit(in_ch, width - in_ch, 2, groups)]
            units += [ShuffleV1Unit(width, width, 1, groups) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        x = F.relu(self.stem(x))
        feats, preact = [], []
        for stage in self.stages:
            x, pre = _run_stage(stage, x)
            feats.append(x)
            preact.append(pre)
        emb = self.pool(x).flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=feats, embedding=emb, preact=preact)


class ShuffleV2Down(nn.Module):
    """Stride 2, both branches: depthwise → 1×1 on the left, 1×1 → depthwise → 1×1 on the right."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.left_dw = _conv_bn(in_ch, in_ch, 3, stride=2, groups=in_ch)
        self.left_pw = _conv_bn(in_ch, mid)
        self.right_pw1 = _conv_bn(in_ch, mid)
        self.right_dw = _conv_bn(mid, mid, 3, stride=2, groups=mid)
        self.right_pw2 = _conv_bn(mid, mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.left_pw(self.left_dw(x)))
        right = F.relu(self.right_pw2(self.right_dw(F.relu(self.right_pw1(x)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleV2Unit(nn.Module):
    """Stride 1: half the channels pass through, the other half through 1×1 → dw → 1×1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        half = channels - self.split
        self.pw1 = _conv_bn(half, half)
        self.dw = _conv_bn(half, half, 3, groups=half)
        self.pw2 = _conv_bn(half, half)

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        # The kept half comes out of a ReLU already, so ReLU(preact) is the unit's output.
        keep, through = x[:, : self.split], x[:, self.split :]
        out = self.pw2(self.dw(F.relu(self.pw1(through))))
        return channel_shuffle(torch.cat([keep, out], 1), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.preact(x))


class ShuffleNetV2(KDModel):
    def __init__(
        self,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        last: int,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.stem = _conv_bn(input_shape[0], STEM)
        stages = []
        in_ch = STEM
        for width, n in zip(widths, blocks, strict=True):
            units = [ShuffleV2Down(in_ch, width), *(ShuffleV2Unit(width) for _ in range(n))]
            stages.append(nn.Sequential(*units))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.head = _conv_bn(in_ch, last)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        x = F.relu(self.stem(x))
        feats, preact = [], []
        for stage in self.stages:
            x, pre = _run_stage(stage, x)
            feats.append(x)
            preact.append(pre)
        emb = self.pool(F.relu(self.head(x))).flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=feats, embedding=emb, preact=preact)


@MODELS.register()
def shufflenet_v1(*, num_classes: int, input_shape: tuple[int, ...]) -> ShuffleNetV1:
    """CIFAR ShuffleNet V1, groups 3 (widths 240-480-960; RepDistiller's ShuffleV1)."""
    return ShuffleNetV1(
        (240, 480, 960), (4, 8, 4), 3, num_classes=num_classes, input_shape=input_shape
    )


@MODELS.register()
def shufflenet_v2(*, num_classes: int, input_shape: tuple[int, ...]) -> ShuffleNetV2:
    """CIFAR ShuffleNet V2, size 1× (widths 116-232-464, last conv 1024; RepDistiller's ShuffleV2)."""
    return ShuffleNetV2(
        (116, 232, 464), (3, 7, 3), 1024, num_classes=num_classes, input_shape=input_shape
    )
