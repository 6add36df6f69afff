"""``synthetic``: a small generated set for fast tests (600 images of 1×8×8, 10 classes).

Each class is a fixed random prototype; a sample is its prototype plus Gaussian noise, so a
model can learn it in a few epochs yet does not reach 100% at once. Generated from a fixed
seed: identical everywhere. Split 60/20/20 like digits; no augmentation (a shift breaks
the prototypes).
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdbench.data.base import DataBundle, fixed_split
from kdbench.data.registry import DATASETS, DatasetInfo


def make_synthetic(
    n: int = 600,
    classes: int = 10,
    shape: tuple[int, int, int] = (1, 8, 8),
    noise: float = 0.9,
    seed: int = 1234,
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    protos = torch.rand((classes, *shape), generator=gen)
    y = torch.arange(n) % classes
    x = protos[y] + noise * torch.randn((n, *shape), generator=gen) * protos.std()
    return x.clamp_(0.0, 1.0), y


@DATASETS.register("synthetic")
def synthetic(*, root: Path | None = None, val_fraction: float = 0.2) -> DataBundle:
    """Generated prototypes + noise, 8×8, for fast tests."""
    x, y = make_synthetic()
    return fixed_split("synthetic", x, y, num_classes=10)


synthetic.info = DatasetInfo(num_classes=10, input_shape=(1, 8, 8), train=360, test=120, val=120)  # type: ignore[attr-defined]
