"""ImageNet architectures from torchvision (``torchvision.models``), untrained, as KDModels:
ResNet-18/34/50 (He et al. 2016, "Deep Residual Learning for Image Recognition") and
MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Always built with ``weights=None``: nothing is downloaded. The torchvision network is kept
whole as ``self.net`` (so a torchvision state dict loads into ``model.net``) and only run
stage by stage; ``model.fc`` is its final linear layer. An input with other than 3 channels
gets a fresh first conv of the same shape, Kaiming-initialised as torchvision does.

The architectures are unchanged, ImageNet stems included (a stride-2 7×7 conv and a max pool
for the ResNets, a stride-2 conv for MobileNetV2): on 32×32 images the last stage is 1×1.
RepDistiller's CIFAR ResNet-50 (the teacher of its cross-architecture table) is
``resnet50_cifar``: the same network with a 3×3 stride-1 stem conv and no max pool, so its
stages end in 32, 16, 8 and 4 px maps on CIFAR (RepDistiller's ``resnetv2.ResNet50`` has the
same bottleneck blocks, stride on the 3×3 conv, and 1×1 projection shortcuts).

Features: the four stages (ResNet ``layer1``–``layer4``; MobileNetV2's inverted-residual
blocks grouped at the points the map halves: ``features[1:4]``, ``[4:7]``, ``[7:14]``,
``[14:18]``, i.e. strides 4, 8, 16, 32). A ResNet's ``preact`` is the last block's residual sum
before its ReLU, computed from the block's own layers. A MobileNetV2 block ends in a linear
bottleneck (no activation), so its ``preact`` holds the same tensors as ``feats``. The stem is
not a feature (as in the CIFAR zoo). ``embedding`` is the globally average-pooled last map:
``layer4`` for the ResNets, the 1280-channel ``features[18]`` for MobileNetV2 (its dropout,
active only in training, sits between the embedding and ``fc``).

Measured (``count_params`` at 100 classes, ``count_macs`` per 32×32 and 224×224 image):

| name | params | MACs 32×32 | MACs 224×224 |
| --- | --- | --- | --- |
| resnet18 | 11.23M (11,227,812) | 37.1M | 1.81G |
| resnet34 | 21.34M (21,335,972) | 74.8M | 3.66G |
| resnet50 | 23.71M (23,712,932) | 83.6M | 4.09G |
| resnet50_cifar | 23.71M (23,705,252) | 1.30G | — |
| mobilenet_v2 | 2.35M (2,351,972) | 6.2M | 0.30G |
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.models.base import KDModel, ModelOutput
from kdbench.models.pretrained import torchvision_arch
from kdbench.models.registry import MODELS


def _like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh copy of ``conv`` reading ``in_channels`` channels."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _block_preact(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision residual block's output before its final ReLU (BasicBlock or Bottleneck,
    the latter told apart by its third conv)."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if hasattr(block, "conv3"):
        out = block.bn3(block.conv3(F.relu(out)))
    identity = x if block.downsample is None else block.downsample(x)
    return out + identity


class TorchvisionResNet(KDModel):
    def __init__(
        self,
        arch: str,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        cifar_stem: bool = False,
    ) -> None:
        super().__init__()
        from torchvision import models  # imported here: it takes seconds, most runs never need it

        self.net = getattr(models, arch)(weights=None, num_classes=num_classes)
        if cifar_stem:  # a 3×3 stride-1 conv and no max pool: 32×32 maps in layer1
            self.net.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.net.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.net.maxpool = nn.Identity()
        elif input_shape[0] != 3:
            self.net.conv1 = _like(self.net.conv1, input_shape[0])

    @property
    def fc(self) -> nn.Linear:
        return self.net.fc

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        feats, preact = [], []
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            *head, last = stage
            for block in head:
                x = block(x)
            pre = _block_preact(last, x)
            x = F.relu(pre)
            preact.append(pre)
            feats.append(x)
        emb = torch.flatten(net.avgpool(x), 1)
        return ModelOutput(logits=net.fc(emb), feats=feats, embedding=emb, preact=preact)


class TorchvisionMobileNetV2(KDModel):
    STAGES = ((1, 4), (4, 7), (7, 14), (14, 18))
    """``features`` index ranges of the four stages; 0 is the stem, 18 the last 1×1 conv."""

    def __init__(self, *, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        from torchvision import models

        self.net = models.mobilenet_v2(weights=None, num_classes=num_classes)
        if input_shape[0] != 3:
            stem = self.net.features[0]
            stem[0] = _like(stem[0], input_shape[0])

    @property
    def fc(self) -> nn.Linear:
        return self.net.classifier[1]

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        features = self.net.features
        x = features[0](x)
        feats = []
        for start, stop in self.STAGES:
            for i in range(start, stop):
                x = features[i](x)
            feats.append(x)
        x = features[len(features) - 1](x)
        emb = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        logits = self.net.classifier(emb)
        return ModelOutput(logits=logits, feats=feats, embedding=emb, preact=list(feats))


@MODELS.register()
def resnet18(*, num_classes: int, input_shape: tuple[int, ...]) -> TorchvisionResNet:
    """torchvision ResNet-18 (ImageNet stem), untrained."""
    return TorchvisionResNet("resnet18", num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet34(*, num_classes: int, input_shape: tuple[int, ...]) -> TorchvisionResNet:
    """torchvision ResNet-34 (ImageNet stem), untrained."""
    return TorchvisionResNet("resnet34", num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet50(*, num_classes: int, input_shape: tuple[int, ...]) -> TorchvisionResNet:
    """torchvision ResNet-50 (ImageNet stem, bottleneck blocks), untrained."""
    return TorchvisionResNet("resnet50", num_classes=num_classes, input_shape=input_shape)


@MODELS.register()
def resnet50_cifar(*, num_classes: int, input_shape: tuple[int, ...]) -> TorchvisionResNet:
    """ResNet-50 with a CIFAR stem (3×3 stride-1 conv, no max pool; RepDistiller's ResNet50)."""
    return TorchvisionResNet(
        "resnet50", num_classes=num_classes, input_shape=input_shape, cifar_stem=True
    )


@MODELS.register()
def mobilenet_v2(*, num_classes: int, input_shape: tuple[int, ...]) -> TorchvisionMobileNetV2:
    """torchvision MobileNetV2, width 1.0 (ImageNet strides), untrained."""
    return TorchvisionMobileNetV2(num_classes=num_classes, input_shape=input_shape)


def _family(name: str) -> Any:
    """``torchvision:<name>``: the same network as ``<name>`` (a pretrained teacher is named so,
    ``{arch: "torchvision:resnet34", weights: IMAGENET1K_V1}``)."""
    return MODELS.get(torchvision_arch(name))


MODELS.add_family("torchvision", _family)
