"""The model zoo: one file per family, each variant registered by name in ``MODELS``."""

from __future__ import annotations

from kdbench.models import (  # noqa: F401  (registration)
    cnn,
    convnet,
    mobilenetv2,
    resnet_cifar,
    shufflenet,
    timm_models,
    torchvision_models,
    vgg,
    wrn,
)
from kdbench.models.base import KDModel, ModelOutput, count_macs, count_params
from kdbench.models.registry import MODELS, build_model

__all__ = ["MODELS", "KDModel", "ModelOutput", "build_model", "count_macs", "count_params"]
