"""The suite layer: what a suite says, read and checked without torch.

``settings`` declares the sections (``budget``, ``data``, ``teacher``, ``tuning``,
``resources``), ``suite`` the frozen ``Suite`` they make up, ``hparams`` a method's
hyperparameter declarations, ``yamlfile`` the hardened YAML reading, ``checks`` and
``messages`` the one vocabulary of refusals, ``parse`` and ``entries`` the per-key parsers.
Nothing here imports torch or any kdbench module above ``kdbench.errors`` (an import
contract in pyproject.toml holds it so); checks that need the registries, models or
checkpoints are ``kdbench.validation``'s.
"""

from __future__ import annotations

from kdbench.spec.hparams import HParam, SearchSpace
from kdbench.spec.ids import PROTOCOL_VERSION, canonical_json, digest, slug, split_identity
from kdbench.spec.parse import Catalog, parse_suite
from kdbench.spec.settings import (
    MAX_SEED,
    SECTIONS,
    TUNING_SEED,
    Budget,
    Confirm,
    DataConfig,
    ResourceConfig,
    Resources,
    Schedule,
    TeacherConfig,
    TuningConfig,
    budget_identity,
)
from kdbench.spec.suite import MethodEntry, Pair, Suite, TeacherRef, pair_name
from kdbench.spec.yamlfile import read_yaml

__all__ = [
    "MAX_SEED",
    "PROTOCOL_VERSION",
    "SECTIONS",
    "TUNING_SEED",
    "Budget",
    "Catalog",
    "Confirm",
    "DataConfig",
    "HParam",
    "MethodEntry",
    "Pair",
    "ResourceConfig",
    "Resources",
    "Schedule",
    "SearchSpace",
    "Suite",
    "TeacherConfig",
    "TeacherRef",
    "TuningConfig",
    "budget_identity",
    "canonical_json",
    "digest",
    "pair_name",
    "parse_suite",
    "read_yaml",
    "slug",
    "split_identity",
]
