"""Distillation methods: one file each, ``kdbench/methods/<name>.py``, registered by name in
``METHODS`` and imported on first use.

``BUILT_IN`` is where a method's name is written, once: the registry imports the class from
the file of that name when a suite (or anything else) first asks for it, and gives the class
its name (``Method.name``).
"""

from __future__ import annotations

from kdbench.methods.base import HParam, Method, MethodContext, Needs, SearchSpace, Step
from kdbench.methods.registry import METHODS, method_class

BUILT_IN = {
    "ab": "AB",
    "at": "AT",
    "cc": "CC",
    "crd": "CRD",
    "ctkd": "CTKD",
    "dd_dc": "DDDC",
    "dd_dm": "DDDM",
    "dd_dsa": "DDDSA",
    "dd_herding": "DDHerding",
    "dd_mtt": "DDMTT",
    "dd_random": "DDRandom",
    "dd_sre2l": "DDSRe2L",
    "dist": "DIST",
    "dkd": "DKD",
    "fitnet": "FitNet",
    "fsp": "FSP",
    "ft": "FT",
    "kd": "KD",
    "kdsvd": "KDSVD",
    "mlkd": "MLKD",
    "nkd": "NKD",
    "nst": "NST",
    "ofd": "OFD",
    "pkt": "PKT",
    "pseudo_label": "PseudoLabel",
    "reviewkd": "ReviewKD",
    "rkd": "RKD",
    "scratch": "Scratch",
    "sp": "SP",
    "ttm": "TTM",
    "vid": "VID",
    "wttm": "WTTM",
}
"""name -> the class in ``kdbench/methods/<name>.py``."""

for _name, _cls in BUILT_IN.items():
    METHODS.lazy(_name, f"kdbench.methods.{_name}:{_cls}")

__all__ = [
    "BUILT_IN",
    "METHODS",
    "HParam",
    "Method",
    "MethodContext",
    "Needs",
    "SearchSpace",
    "Step",
    "method_class",
]
