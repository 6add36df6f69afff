"""The data-set registry. An entry is a loader ``(root, val_fraction) -> DataBundle``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdbench.data.base import DataBundle
from kdbench.registry import Registry

DatasetLoader = Callable[..., DataBundle]


def _check(name: str, loader: DatasetLoader) -> None:
    if not {"root", "val_fraction"} <= set(inspect.signature(loader).parameters):
        raise TypeError(f"data set loader {name!r} must accept root= and val_fraction=")


DATASETS: Registry[DatasetLoader] = Registry("dataset", check=_check)


@dataclass(frozen=True)
class DatasetInfo:
    """What is known of a data set without loading it (for plans and cost estimates)."""

    num_classes: int
    input_shape: tuple[int, int, int]
    train: int
    """Training images before `val` is carved from them; with a fixed ``val``, after."""
    test: int
    val: int | None = None
    """A fixed validation split's size (digits); None: carved by ``data.val_fraction``."""

    def split_sizes(self, val_fraction: float) -> tuple[int, int]:
        """(train, val) images for a suite's ``data.val_fraction``."""
        if self.val is not None:
            return self.train, self.val
        val = round(val_fraction * self.train)
        return self.train - val, val


def dataset_info(name: str, root: str | os.PathLike[str] | None = None) -> DatasetInfo:
    """What a loader declares: its ``info``, or ``info_at(root)`` when the sizes depend on the
    files found (``imagefolder``); a user's loader with neither is loaded once to find out."""
    loader = DATASETS.get(name)
    info = getattr(loader, "info", None)
    if info is None and hasattr(loader, "info_at"):
        info = loader.info_at(Path(root) if root else default_root())
    if info is None:
        b = load_dataset(name, root=root)
        info = DatasetInfo(
            b.num_classes, b.input_shape, len(b.train_y), len(b.test_y), len(b.val_y)
        )
    return info


def is_streamed(name: str) -> bool:
    """Whether the data set is read from files as training goes (``StreamedImages``)."""
    return bool(getattr(DATASETS.get(name), "streamed", False))


def default_root() -> Path:
    """Where data sets live when a suite names no ``data.root``: $KDBENCH_DATA or ~/.cache/kdbench/data."""
    return Path(os.environ.get("KDBENCH_DATA") or Path.home() / ".cache" / "kdbench" / "data")


def load_dataset(
    name: str, *, root: str | os.PathLike[str] | None = None, val_fraction: float = 0.1
) -> DataBundle:
    return DATASETS.get(name)(
        root=Path(root) if root else default_root(), val_fraction=val_fraction
    )
