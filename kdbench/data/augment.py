"""Augmentation of whole batches on tensors (on the trial's device), not per sample in Python."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.base import AugmentSpec


def augment_batch(
    x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop of each image after zero padding by ``spec.pad``; random h-flip if ``spec.flip``.

    ``x`` is a normalised float batch (N, C, H, W); padding with zeros pads with the mean.
    """
    n, c, h, w = x.shape
    if spec.pad > 0:
        p = spec.pad
        padded = F.pad(x, (p, p, p, p))
        dev = x.device
        oy = torch.randint(0, 2 * p + 1, (n,), generator=gen, device="cpu").to(dev)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=gen, device="cpu").to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chan = torch.arange(c, device=dev)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if spec.flip:
        flip = (torch.rand(n, generator=gen, device="cpu") < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x
