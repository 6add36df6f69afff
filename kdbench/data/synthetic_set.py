"""A synthetic (distilled) training set: ``ipc`` images per class that a dataset-distillation
method made or selected, as the student trains on it and as its artifact file stores it."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class SyntheticSet:
    """``ipc`` images per class, in the data set's stored scale, and how they were made."""

    images: torch.Tensor
    """(N, C, H, W) float32."""
    labels: torch.Tensor
    """(N,) int64, grouped by class."""
    iterations: int = 0
    """Optimisation iterations done (0 for a selected real subset)."""
    seconds: float = 0.0
    """Wall time it took to make."""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The artifact file: a weights-only loadable dict (``torch.load(f, weights_only=True)``)."""
        buf = io.BytesIO()
        torch.save(
            {
                "images": self.images.detach().cpu().float().contiguous(),
                "labels": self.labels.detach().cpu().long(),
                "iterations": self.iterations,
                "seconds": self.seconds,
                "meta": self.meta,
            },
            buf,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> SyntheticSet:
        d = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        return cls(d["images"], d["labels"], d["iterations"], d["seconds"], d.get("meta", {}))
