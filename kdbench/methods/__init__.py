"""Distillation methods: one file each, registered by name in ``METHODS``."""

from __future__ import annotations

from kdbench.methods import kd, scratch  # noqa: F401  (registration)
from kdbench.methods.base import HParam, Method, MethodContext, Needs, SearchSpace, Step
from kdbench.methods.registry import METHODS, method_class

__all__ = [
    "METHODS",
    "HParam",
    "Method",
    "MethodContext",
    "Needs",
    "SearchSpace",
    "Step",
    "method_class",
]
