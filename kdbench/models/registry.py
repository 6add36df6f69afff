"""The model registry. An entry is a factory ``(num_classes, input_shape) -> KDModel``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from kdbench.models.base import KDModel
from kdbench.registry import Registry

ModelFactory = Callable[..., KDModel]


def _check(name: str, factory: ModelFactory) -> None:
    params = inspect.signature(factory).parameters
    if not {"num_classes", "input_shape"} <= set(params):
        raise TypeError(f"model factory {name!r} must accept num_classes= and input_shape=")


MODELS: Registry[ModelFactory] = Registry("model", check=_check)


def build_model(name: str, *, num_classes: int, input_shape: tuple[int, ...]) -> KDModel:
    model = MODELS.get(name)(num_classes=num_classes, input_shape=tuple(input_shape))
    if not isinstance(model, KDModel):
        raise TypeError(f"model {name!r} built a {type(model).__name__}, not a KDModel")
    return model
