"""Data sets: loaders registered by name in ``DATASETS``, each returning a ``DataBundle``."""

from __future__ import annotations

from kdbench.data.augment import augment_batch
from kdbench.data.base import AugmentSpec, DataBundle, stratified_split
from kdbench.data.registry import (
    DATASETS,
    DatasetInfo,
    dataset_info,
    default_root,
    is_streamed,
    load_dataset,
)

FAMILIES = ("digits", "imagefolder", "imagenet", "synthetic", "torchvision_sets")
"""The files of ``kdbench/data/`` that register data sets, imported on the registry's first use."""

for _family in FAMILIES:
    DATASETS.lazy_module(f"kdbench.data.{_family}")

__all__ = [
    "DATASETS",
    "FAMILIES",
    "AugmentSpec",
    "DataBundle",
    "DatasetInfo",
    "augment_batch",
    "dataset_info",
    "default_root",
    "is_streamed",
    "load_dataset",
    "stratified_split",
]
