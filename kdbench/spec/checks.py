"""The one vocabulary that validates a suite's raw YAML values.

A ``Check`` (``Int``, ``Number``, ``Choice``, ``Bool``, ``String``, ``Optional``...) both
validates and coerces one raw value and renders a parsed one back to plain YAML. A ``Reader``
is the file being read: it names the file in every refusal (``Reader.fail``) and checks the
shapes around values (a mapping's keys, a list's length, duplicates). Every refusal reads
``FILE: KEY: VALUE ...; valid: ...`` (``SuiteError``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from kdbench.errors import SuiteError, choices_hint
from kdbench.spec.messages import show, text

_FLOAT_MAX = sys.float_info.max


class Reader:
    """The suite being read: every refusal names its file, the key and the value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> SuiteError:
        return SuiteError(self.source, key, message)

    def mapping(
        self, raw: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """A mapping (``null`` reads as an empty one) with only ``allowed`` keys and every
        ``required`` one given (and not null)."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise self.fail(key or "(top level)", f"expected a mapping, got {show(raw)}")
        for k in raw:
            if k not in allowed:
                name = text(k) if isinstance(k, str) else show(k)
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key '{name}'; {choices_hint(k, allowed)}")
        for k in required:
            if k not in raw or raw[k] is None:
                where = f"{key}.{k}" if key else k
                raise self.fail(where, "is required")
        return raw

    def nonempty_list(self, value: Any, key: str, *, most: int | None = None) -> list[Any]:
        """A list of 1 to ``most`` entries: its length is checked before any entry is."""
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {show(value)}")
        if not value:
            raise self.fail(key, "is empty; give at least one entry")
        if most is not None and len(value) > most:
            raise self.fail(key, f"has {len(value)} entries; give at most {most}")
        return value

    def unique(self, items: list[Any], key: str, shown: Any = None) -> None:
        """Refuse an entry equal to an earlier one, naming both."""
        seen: dict[Any, int] = {}
        for i, item in enumerate(items):
            if item in seen:
                what = shown(item) if shown else show(item)
                raise self.fail(f"{key}[{i}]", f"{what} duplicates {key}[{seen[item]}]")
            seen[item] = i


class Check:
    """Validates and coerces one raw YAML value, and renders a parsed one back to plain YAML."""

    def parse(self, r: Reader, value: Any, key: str) -> Any:
        raise NotImplementedError

    def render(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Int(Check):
    """An integer (a float such as 3.0 reads as 3) between ``minimum`` and ``maximum`` when
    given; ``why`` says in the refusal why the maximum is what it is."""

    minimum: int | None = None
    maximum: int | None = None
    why: str = ""

    def parse(self, r: Reader, value: Any, key: str) -> int:
        # An int is never converted to a float: one of 400 digits overflows one.
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise r.fail(key, f"{show(value)} is not an integer")
        if self.minimum is not None and value < self.minimum:
            raise r.fail(key, f"{show(value)} must be ≥ {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            why = f" ({self.why})" if self.why else ""
            raise r.fail(key, f"{show(value)} must be ≤ {self.maximum}{why}")
        return int(value)


@dataclass(frozen=True)
class Number(Check):
    """A finite number between optional bounds, each closed unless marked open."""

    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    def parse(self, r: Reader, value: Any, key: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            # math.isfinite would convert an int too large for a float, and overflow
            or not (math.isfinite(value) if isinstance(value, float) else abs(value) <= _FLOAT_MAX)
        ):
            raise r.fail(key, f"{show(value)} is not a finite number")
        low, high = self.low, self.high
        if low is not None and (value < low or (self.low_open and value == low)):
            raise r.fail(key, f"{show(value)} must be {'>' if self.low_open else '≥'} {low:g}")
        if high is not None and (value > high or (self.high_open and value == high)):
            raise r.fail(key, f"{show(value)} must be {'<' if self.high_open else '≤'} {high:g}")
        return float(value)


@dataclass(frozen=True)
class Choice(Check):
    """One of ``choices`` (any container of names: a registry too); a typo is offered the
    closest."""

    choices: Any

    def parse(self, r: Reader, value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise r.fail(key, f"{show(value)} is not valid; {choices_hint(value, self.choices)}")
        return value


class Bool(Check):
    """``true`` or ``false``, nothing that merely converts to one."""

    def parse(self, r: Reader, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise r.fail(key, f"{show(value)} is not true or false")
        return value


class String(Check):
    """A non-empty string."""

    def parse(self, r: Reader, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise r.fail(key, f"{show(value)} is not a non-empty string")
        return value


@dataclass(frozen=True)
class Optional(Check):
    """``null``, or what ``inner`` accepts."""

    inner: Check

    def parse(self, r: Reader, value: Any, key: str) -> Any:
        return None if value is None else self.inner.parse(r, value, key)

    def render(self, value: Any) -> Any:
        return None if value is None else self.inner.render(value)
