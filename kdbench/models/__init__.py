"""The model zoo: one file per family, each variant a factory function registered in
``MODELS`` under the function's name (``def resnet8`` is ``resnet8``). A family's file is
imported on the registry's first use; timm's models answer ``timm:<name>``."""

from __future__ import annotations

from kdbench.models.base import KDModel, ModelOutput, count_macs, count_params
from kdbench.models.registry import MODELS, build_model

FAMILIES = (
    "cnn",
    "convnet",
    "mobilenetv1",
    "mobilenetv2",
    "resnet_cifar",
    "shufflenet",
    "timm_models",
    "torchvision_models",
    "vgg",
    "wrn",
)
"""The files of ``kdbench/models/`` that register models."""

for _family in FAMILIES:
    MODELS.lazy_module(f"kdbench.models.{_family}")

__all__ = [
    "FAMILIES",
    "MODELS",
    "KDModel",
    "ModelOutput",
    "build_model",
    "count_macs",
    "count_params",
]
