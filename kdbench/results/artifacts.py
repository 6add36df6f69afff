"""What trials leave beside their rows, under ``DIR/_artifacts/``, read back for users.

- ``students/<trial_id>.pt``: every final trial's distilled student (weights, architecture,
  input normalisation), so the winner can be taken home: ``load_student(DIR, trial_id)``.
- ``synthetic/<key>.pt``: a ``dd_*`` trial's synthetic set, named by its content key and
  shared by every trial that would make the same set: ``load_synthetic(DIR, row.artifact)``.

Both are plain ``torch.save`` dicts of tensors and numbers, loadable with
``torch.load(path, weights_only=True)`` without kdbench.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from kdbench.data.base import to_unit
from kdbench.data.synthetic_set import SyntheticSet
from kdbench.errors import KdbenchError
from kdbench.models import KDModel, build_model
from kdbench.results.layout import Layout, student_artifact


class Student(torch.nn.Module):
    """A distilled student that takes images as stored (floats in [0, 1] or uint8) and
    normalises them as it was trained to; ``.model`` is the bare network."""

    def __init__(self, model: KDModel, mean: list[float], std: list[float], info: dict[str, Any]):
        super().__init__()
        self.model = model
        self.info = info
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((to_unit(x) - self.mean) / self.std)


def load_student(results_dir: str | os.PathLike[str], trial_id: str) -> Student:
    """The student a final trial trained, in eval mode, ready to classify stored images.

    A trial id whose file would lie outside the results directory is refused (KdbenchError).
    """
    path = Layout.of(results_dir).artifact(student_artifact(trial_id))
    if not path.exists():
        raise KdbenchError(f"{path}: no saved student (only final trials that finished save one)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(
        blob["arch"], num_classes=blob["num_classes"], input_shape=tuple(blob["input_shape"])
    )
    model.load_state_dict(blob["state_dict"])
    info = {k: v for k, v in blob.items() if k not in ("state_dict", "mean", "std")}
    return Student(model, blob["mean"], blob["std"], info).eval()


def load_synthetic(results_dir: str | os.PathLike[str], artifact: str) -> SyntheticSet:
    """A ``dd_*`` row's synthetic set (its ``artifact`` column), images in stored scale.

    Rows are untrusted: an ``artifact`` that leads outside the results directory (absolute,
    climbing with '..', or through a symlink) is refused with a KdbenchError.
    """
    path = Layout.of(results_dir).artifact(artifact)
    if not path.exists():
        raise KdbenchError(f"{path}: no such synthetic set")
    return SyntheticSet.from_bytes(path.read_bytes())
