"""A cell's search space: the method's declared ranges, minus ``params``, plus ``search``."""

from __future__ import annotations

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kdbench.methods import method_class
from kdbench.methods.base import HParam, SearchSpace
from kdbench.spec import MethodEntry


def _distribution(h: HParam, space: SearchSpace) -> BaseDistribution:
    if space.choices:
        return CategoricalDistribution(list(space.choices))
    if h.kind == "int":
        return IntDistribution(int(space.low), int(space.high), log=space.log)
    return FloatDistribution(float(space.low), float(space.high), log=space.log)


def search_space(entry: MethodEntry) -> dict[str, BaseDistribution]:
    """What a study samples for this entry; empty when there is nothing to tune."""
    cls = method_class(entry.name)
    fixed = dict(entry.params)
    overrides = dict(entry.search)
    out: dict[str, BaseDistribution] = {}
    for h in cls.hparams:
        if h.name in fixed:
            continue
        space = overrides.get(h.name, h.search)
        if space is not None:
            out[h.name] = _distribution(h, space)
    return out


def contains(dist: BaseDistribution, value: object) -> bool:
    """Whether ``value`` lies in the distribution's range or choices."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return isinstance(value, (int, float)) and dist.low <= value <= dist.high
    return False
