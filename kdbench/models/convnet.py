"""ConvNet-D: the network of the dataset-distillation literature (DC, DSA, DM; Zhao et al.).

``depth`` blocks of conv3×3 (``width`` channels, with bias) → instance norm (a GroupNorm with
one group per channel, affine, as the reference code builds it) → ReLU → 2×2 average pooling,
then a linear classifier on the *flattened* last map (not a global pool): with width 128 the
embedding is 128 features at 8×8 inputs, 1,152 at 28×28 and 2,048 at 32×32.

Instance norm rather than batch norm is what makes these networks usable on a batch of one
class's synthetic images (gradient and distribution matching feed them class by class).
"""

from __future__ import annotations

import torch
from torch import nn

from kdbench.models.base import KDModel, ModelOutput
from kdbench.models.registry import MODELS


class ConvNet(KDModel):
    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: int = 128,
        depth: int = 3,
    ) -> None:
        super().__init__()
        in_ch, h, w = input_shape[0], input_shape[-2], input_shape[-1]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.pools = nn.ModuleList()
        for block in range(depth):
            if h * w < 2:  # instance norm of a one-pixel map divides by a zero variance
                raise ValueError(
                    f"a ConvNet of depth {depth} needs images of at least "
                    f"{2 ** (depth - 1)}×{2 ** (depth - 1)} px: block {block + 1} would normalise "
                    f"a 1×1 map of {input_shape[-2]}×{input_shape[-1]} images"
                )
            self.convs.append(nn.Conv2d(in_ch, width, 3, padding=1))
            self.norms.append(nn.GroupNorm(width, width, affine=True))
            # A map already down to one pixel is not pooled again.
            pool = h >= 2 and w >= 2
            self.pools.append(nn.AvgPool2d(2) if pool else nn.Identity())
            if pool:
                h, w = h // 2, w // 2
            in_ch = width
        self.relu = nn.ReLU()
        self.embed_dim = width * h * w
        self.fc = nn.Linear(self.embed_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        feats, preact = [], []
        for conv, norm, pool in zip(self.convs, self.norms, self.pools, strict=True):
            x = norm(conv(x))
            preact.append(x)
            x = pool(self.relu(x))
            feats.append(x)
        emb = x.flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=feats, embedding=emb, preact=preact)


@MODELS.register()
def convnet3(*, num_classes: int, input_shape: tuple[int, ...]) -> ConvNet:
    """ConvNet-3, width 128, instance norm, average pooling: dataset distillation's network."""
    return ConvNet(num_classes=num_classes, input_shape=input_shape, width=128, depth=3)


@MODELS.register()
def convnet4(*, num_classes: int, input_shape: tuple[int, ...]) -> ConvNet:
    """ConvNet-4, width 128: dataset distillation's network on 64 × 64 images (Tiny-ImageNet
    in DM's and MTT's tables)."""
    return ConvNet(num_classes=num_classes, input_shape=input_shape, width=128, depth=4)


@MODELS.register()
def convnet_sized(*, num_classes: int, input_shape: tuple[int, ...]) -> ConvNet:
    """The ConvNet the dataset-distillation methods match with by default, sized to the images
    (``matching_size``): ConvNet-3 of width 128 on images of 28 px and
    more, as ``convnet3``; on smaller ones fewer blocks and width 64 (depth 2 on 8×8 digits,
    whose last map is then 2×2 rather than 1×1). The reference evaluates a set on the network
    it was matched with: this is that network on any image size."""
    width, depth = matching_size(tuple(input_shape), 0, 0)
    return ConvNet(num_classes=num_classes, input_shape=input_shape, width=width, depth=depth)


def matching_size(input_shape: tuple[int, ...], width: int, depth: int) -> tuple[int, int]:
    """(width, depth) of the matching ConvNet; 0 picks the size for the images.

    The reference (width 128, depth 3) is sized for 28-32 px images, whose last normalised map
    is 7×7 or 8×8. On smaller images depth 3 normalises a 2×2 map, which leaves the features
    almost nothing to say: measured on digits (8×8) at ipc 10, a 30 s distribution matching
    with depth 3 gave a ConvNet-3 student 76.8 % where depth 2 gave 98.0 %. So ``0`` means:
    images of 28 px and more, the reference; smaller ones, depth log2(side) − 1 (2 at 8 px,
    last normalised map 4×4) and width 64; on larger ones one block more per doubling, as the
    references match Tiny-ImageNet's 64 px images with ConvNet-4 (DM, MTT) and 128 px
    ImageNet subsets with ConvNet-5 (MTT).
    """
    side = min(input_shape[-2:])
    if not width:
        width = 128 if side >= 28 else 64
    if not depth:
        depth = max(3, side.bit_length() - 3) if side >= 28 else max(1, side.bit_length() - 2)
    return width, depth
