"""Hyperparameters as a method declares them: each one's default, valid domain and default
search space (``HParam``), and what Optuna samples for one (``SearchSpace``).

They live below the methods so that a suite can be read and its ``params`` and ``search``
checked without importing torch: a method's file declares its ``hparams`` with these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SearchSpace:
    """What Optuna samples for one hyperparameter: a numeric range or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"[{self.low}, {self.high}{', log' if self.log else ''}]"


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its default, the values that make sense, and where to search."""

    name: str
    default: Any
    kind: str = "float"  # float | int | categorical
    low: float | None = None
    """Smallest valid value (inclusive unless ``low_open``); ``None``: unbounded."""
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] = ()
    """For ``categorical``: the valid values."""
    search: SearchSpace | None = None
    """Default search space; ``None``: not searched unless a suite gives a range."""
    doc: str = ""
    optional: bool = False
    """Left out of ``defaults()``, so of a trial's hyperparameters (and its identity) unless a
    suite fixes or searches it: a switch added to a method later, whose default leaves the
    method, and its stored results, as they were. The method reads it with ``hp.get``."""

    def domain(self) -> str:
        if self.kind == "categorical":
            return "one of " + ", ".join(map(str, self.choices))
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        bracket = "(" if self.low_open or self.low is None else "["
        return f"{self.kind} in {bracket}{lo}, {hi}{']' if self.high is not None else ')'}"

    def check(self, value: Any) -> str | None:
        """The reason ``value`` is invalid, or ``None``."""
        if self.kind == "categorical":
            # By type as well as value: ``1 == True`` and ``0.0 == False`` in Python.
            ok = any(type(value) is type(c) and value == c for c in self.choices)
            return None if ok else f"{value!r} is not {self.domain()}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str) and _reads_as_number(value):
                # YAML 1.1 (PyYAML) reads 1e-5 as text: a float needs its dot, 1.0e-5
                return (
                    f"{value!r} is text to YAML, not a number ({self.domain()}); "
                    "write a float with a dot, e.g. 1.0e-5"
                )
            return f"{value!r} is not a number ({self.domain()})"
        if self.kind == "int" and not float(value).is_integer():
            return f"{value!r} is not an integer ({self.domain()})"
        if not math.isfinite(value):
            return f"{value!r} is not finite"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"{value!r} is outside {self.domain()}"
        if self.high is not None and value > self.high:
            return f"{value!r} is outside {self.domain()}"
        return None

    def coerce(self, value: Any) -> Any:
        if self.kind == "int":
            return int(value)
        if self.kind == "float":
            return float(value)
        return value


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
