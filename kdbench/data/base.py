"""A data set as kdbench holds it: three splits of tensors, plus how to normalise and augment.

Small-image data sets fit in memory (CIFAR-100's 50,000 training images are 150 MB as uint8),
so they are held as tensors, moved to the trial's device once, and augmented in batches.

A data set too large for memory is *streamed*: its splits are ``ImageStream``s
(``kdbench.data.stream``) where an in-memory one holds tensors, read from files as training
goes; its labels are tensors as ever. Which one a data set is, its registration decides.

A data set may also hold an unlabeled pool (``unlabeled_x``: SVHN's ``extra`` split, an image
folder's ``unlabeled/``): images without labels that a method declaring
``Needs(transfer_set=True)`` trains on beside the training split (``transfer_set``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from kdbench.data.stream import ImageStream, is_stream

SPLIT_SEED = 0
"""The seed that carves `val` out of the training data: fixed, so every trial sees the same split."""


@dataclass(frozen=True)
class AugmentSpec:
    """Batched augmentation: random crop after zero padding by ``pad`` pixels, optional h-flip."""

    pad: int = 0
    flip: bool = False


@dataclass
class DataBundle:
    name: str
    train_x: torch.Tensor | ImageStream
    train_y: torch.Tensor
    val_x: torch.Tensor | ImageStream
    val_y: torch.Tensor
    test_x: torch.Tensor | ImageStream
    test_y: torch.Tensor
    num_classes: int
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    unlabeled_x: torch.Tensor | None = None
    """An optional pool of unlabeled images, stored like ``train_x`` (same C, H, W); never
    used for ``val`` or ``test``, nor for the normalisation statistics."""

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.ndim != 4 or len(x) != len(y):
                raise ValueError(f"{self.name}: {split} must be (N, C, H, W) images with N labels")
        pool = self.unlabeled_x
        if pool is not None and (pool.ndim != 4 or pool.shape[1:] != self.train_x.shape[1:]):
            raise ValueError(
                f"{self.name}: the unlabeled pool's images are {tuple(pool.shape[1:])}, "
                f"the training images {tuple(self.train_x.shape[1:])}"
            )
        if not self.mean:
            if is_stream(self.train_x):
                raise ValueError(f"{self.name}: a streamed data set declares its mean and std")
            x = to_unit(self.train_x)
            self.mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
            self.std = tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def streamed(self) -> bool:
        """Whether any split is read from files as training goes (an ``ImageStream``)."""
        return any(is_stream(x) for x in (self.train_x, self.val_x, self.test_x))

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}

    def transfer_set(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images followed by the unlabeled pool, if any, and their labels, on
        ``device``: a pool image's label is -1. Without a pool: the training split itself.

        Index ``i < len(train_y)`` is training image ``i``; the pool follows in its own order.
        """
        if is_stream(self.train_x):
            raise ValueError(f"{self.name} is streamed: it has no transfer set in memory")
        x, y = self.train_x.to(device), self.train_y.to(device)
        if self.unlabeled_x is None or len(self.unlabeled_x) == 0:
            return x, y
        pool = self.unlabeled_x.to(device)
        if pool.dtype != x.dtype:  # e.g. float synthetic training images beside a uint8 pool
            x, pool = to_unit(x), to_unit(pool)
        no_label = torch.full((len(pool),), -1, dtype=y.dtype, device=y.device)
        return torch.cat([x, pool]), torch.cat([y, no_label])

    def refit(self) -> DataBundle:
        """The same data with `val` folded into `train` (``data.refit: train+val``) and no
        `val` left: what teachers and finals train on once tuning is done. The normalisation
        statistics stay those of `train`, which the tuned settings were chosen under."""
        return DataBundle(
            name=self.name,
            train_x=join(self.train_x, self.val_x),
            train_y=torch.cat([self.train_y, self.val_y]),
            val_x=self.val_x[:0],
            val_y=self.val_y[:0],
            test_x=self.test_x,
            test_y=self.test_y,
            num_classes=self.num_classes,
            augment=self.augment,
            mean=self.mean,
            std=self.std,
            unlabeled_x=self.unlabeled_x,
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Stored images (uint8 or float in [0, 1]) -> float, zero mean, unit variance per channel."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (to_unit(x) - mean) / std


def join(a: torch.Tensor | ImageStream, b: torch.Tensor | ImageStream) -> Any:
    """Split ``a`` followed by split ``b``, both in memory or both streamed."""
    if is_stream(a) and is_stream(b):
        return a.cat(b)
    return torch.cat([a, b])


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Images as stored (uint8, or floats in [0, 1]) as floats in [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def stratified_split(
    y: torch.Tensor, fractions: tuple[float, ...], *, seed: int = SPLIT_SEED
) -> list[torch.Tensor]:
    """Split indices into parts of ``round(f·N)`` samples (the last takes the rest), stratified.

    Each sample gets its position within its own class, in a seeded random order, as a
    fraction in (0, 1); the parts are cut from the samples sorted by that position. Every part
    then holds each class in proportion, to within one sample, even when a class has fewer
    samples than there are parts. Deterministic for a seed.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    position = torch.empty(n, dtype=torch.float64)
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        position[idx] = (torch.arange(len(idx), dtype=torch.float64) + 0.5) / len(idx)
    shuffle = torch.randperm(n, generator=gen)  # breaks ties between classes at random
    order = shuffle[torch.argsort(position[shuffle], stable=True)]
    parts, start = [], 0
    for i, frac in enumerate(fractions):
        stop = n if i == len(fractions) - 1 else start + round(frac * n)
        parts.append(torch.sort(order[start:stop]).values)
        start = stop
    return parts


def carve_val(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    val_fraction: float,
    num_classes: int,
    augment: AugmentSpec,
    unlabeled_x: torch.Tensor | None = None,
) -> DataBundle:
    """An official train/test split, with `val` carved from train by the fixed split seed.

    ``unlabeled_x``, an optional pool of unlabeled images, is kept as it is.
    """
    keep, val = stratified_split(train_y, (1.0 - val_fraction, val_fraction))
    return DataBundle(
        name=name,
        train_x=train_x[keep],
        train_y=train_y[keep],
        val_x=train_x[val],
        val_y=train_y[val],
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        augment=augment,
        unlabeled_x=unlabeled_x,
    )


def fixed_split(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    augment: AugmentSpec | None = None,
) -> DataBundle:
    """A data set without an official split: train/val/test cut by the fixed split seed."""
    train, val, test = stratified_split(y, fractions)
    return DataBundle(
        name=name,
        train_x=x[train],
        train_y=y[train],
        val_x=x[val],
        val_y=y[val],
        test_x=x[test],
        test_y=y[test],
        num_classes=num_classes,
        augment=augment or AugmentSpec(),
    )
