"""A suite as kdbench holds it once read: frozen dataclasses (``Suite``, ``Pair``,
``MethodEntry``) that render back to the resolved YAML a run records (``Suite.to_dict``) and
hash to the suite's identity (``Suite.sha256``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kdbench.spec.hparams import SearchSpace
from kdbench.spec.ids import digest
from kdbench.spec.sections import render_section
from kdbench.spec.settings import (
    SECTIONS,
    Budget,
    DataConfig,
    ResourceConfig,
    TeacherConfig,
    TuningConfig,
)


@dataclass(frozen=True)
class TeacherRef:
    """A teacher architecture, trained by kdbench or loaded from the user's checkpoint."""

    arch: str
    checkpoint: str | None = None
    """Absolute path of a state dict (resolved from the suite's directory or the working one;
    for ``weights``, where the library keeps that file)."""
    weights: str | None = None
    """A library's pretrained weights by tag (``IMAGENET1K_V1`` of ``torchvision:resnet34``),
    loaded from the library's cache (``kdbench.models.pretrained``)."""
    digest: str | None = None
    """``weights``' published hash (the one the library checks the file against): the
    teacher's id without the file at hand, so a plan is the same before and after download."""

    def __str__(self) -> str:
        return self.arch


@dataclass(frozen=True)
class Pair:
    teacher: TeacherRef
    student: str


@dataclass(frozen=True)
class MethodEntry:
    """One line of ``methods``: a registry name (or ``A+B``), fixed params, search overrides."""

    name: str
    label: str
    """What the ``method`` column says; the name unless the entry gives ``label``."""
    params: tuple[tuple[str, Any], ...] = ()
    search: tuple[tuple[str, SearchSpace], ...] = ()
    pairs: tuple[str, ...] = ()
    """The pairs (``teacher->student``) the method runs on; empty: every pair of the suite."""

    def runs_on(self, pair: Pair) -> bool:
        return not self.pairs or pair_name(pair) in self.pairs


def pair_name(pair: Pair) -> str:
    """A pair as a method entry's ``pairs`` names it: ``teacher->student``."""
    return f"{pair.teacher.arch}->{pair.student}"


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[str, ...]
    pairs: tuple[Pair, ...]
    methods: tuple[MethodEntry, ...]
    """As written, with ``scratch`` first (added when the suite does not list it)."""
    seeds: tuple[int, ...]
    budget: Budget = field(default_factory=Budget)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    source: str = "<suite>"

    def to_dict(self) -> dict[str, Any]:
        """The resolved suite, every default filled in, as plain YAML-able data."""
        return {
            f.name: render_section(value) if f.name in SECTIONS else _plain(value)
            for f in dataclasses.fields(self)
            if f.name != "source"
            for value in [getattr(self, f.name)]
        }

    def sha256(self) -> str:
        return digest(self.to_dict(), 64)

    @property
    def tuning_seeds(self) -> tuple[int, ...]:
        """The seeds tuning trials train at: ``tuning.seed``, then one more per confirmation
        seed. Never any of ``seeds`` (refused when the suite is read)."""
        extra = self.tuning.confirm.seeds if self.tuning.confirm else 0
        return tuple(range(self.tuning.seed, self.tuning.seed + 1 + extra))


def _plain(obj: Any) -> Any:
    """The suite's parts other than its sections as plain YAML-able data."""
    if isinstance(obj, SearchSpace):
        return (
            {"choices": list(obj.choices)}
            if obj.choices
            else ([obj.low, obj.high, "log"] if obj.log else [obj.low, obj.high])
        )
    if isinstance(obj, MethodEntry):
        out: dict[str, Any] = {"name": obj.name}
        if obj.label != obj.name:
            out["label"] = obj.label
        if obj.params:
            out["params"] = dict(obj.params)
        if obj.search:
            out["search"] = {k: _plain(v) for k, v in obj.search}
        if obj.pairs:
            out["pairs"] = list(obj.pairs)
        return out
    if isinstance(obj, TeacherRef):
        if obj.weights is not None:
            return {"arch": obj.arch, "weights": obj.weights}
        return (
            obj.arch if obj.checkpoint is None else {"arch": obj.arch, "checkpoint": obj.checkpoint}
        )
    if isinstance(obj, Pair):
        return {"teacher": _plain(obj.teacher), "student": obj.student}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj
