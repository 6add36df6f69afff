"""Distillation methods: one file each, registered by name in ``METHODS``."""

from __future__ import annotations

from kdbench.methods import (  # noqa: F401  (registration)
    ab,
    at,
    cc,
    crd,
    ctkd,
    dd_dc,
    dd_dm,
    dd_dsa,
    dd_herding,
    dd_mtt,
    dd_random,
    dd_sre2l,
    dist,
    dkd,
    fitnet,
    fsp,
    ft,
    kd,
    kdsvd,
    mlkd,
    nkd,
    nst,
    ofd,
    pkt,
    pseudo_label,
    reviewkd,
    rkd,
    scratch,
    sp,
    ttm,
    vid,
    wttm,
)
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
