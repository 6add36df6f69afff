"""Data sets: loaders registered by name in ``DATASETS``, each returning a ``DataBundle``."""

from __future__ import annotations

from kdbench.data import digits, imagefolder, synthetic, torchvision_sets  # noqa: F401  (registration)
from kdbench.data.augment import augment_batch
from kdbench.data.base import AugmentSpec, DataBundle, stratified_split
from kdbench.data.registry import DATASETS, DatasetInfo, dataset_info, default_root, load_dataset

__all__ = [
    "DATASETS",
    "AugmentSpec",
    "DataBundle",
    "DatasetInfo",
    "augment_batch",
    "dataset_info",
    "default_root",
    "load_dataset",
    "stratified_split",
]
