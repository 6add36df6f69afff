"""A section of settings (``budget``, ``data``, ``teacher``, ``tuning``, ``resources``) is a
frozen dataclass whose every field is declared once with ``setting(default, check, doc)``.

From those declarations alone, ``parse_section`` reads any section (unknown keys refused,
defaults filled), ``render_section`` writes one back to plain YAML (the resolved suite), and
``identity`` gives a section's part of trial ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kdbench.spec.checks import Check, Reader

Identity = Literal["always", "never", "unless default"]


@dataclass(frozen=True)
class Setting:
    """What a section's field declares beside its name and default (kept in its metadata)."""

    check: Check
    doc: str
    identity: Identity = "always"
    """Whether the field enters trial ids (``identity``); ``unless default``: only when set
    otherwise, so the trials of suites written before the field keep their ids."""


def setting(default: Any, check: Check, doc: str, *, identity: Identity = "always") -> Any:
    """A section's field, declared once: its default, how its YAML value is checked and
    rendered, and one line saying what it is.

    The default is shared by every instance, so it must be immutable (the sections and
    ``Schedule`` are frozen); pyproject.toml tells ruff so (it cannot see it through the call)."""
    return field(default=default, metadata={"setting": Setting(check, doc, identity)})


def declaration(f: dataclasses.Field) -> Setting:
    """The ``Setting`` a section's field was declared with."""
    return f.metadata["setting"]


@dataclass(frozen=True)
class Section(Check):
    """A nested section: its own mapping, or with ``inline`` its fields written straight into
    the enclosing mapping, each under ``keys.get(field, field)``."""

    cls: type
    inline: bool = False
    keys: Mapping[str, str] = field(default_factory=dict)

    def parse(self, r: Reader, value: Any, key: str) -> Any:
        return parse_section(r, self.cls, value, key)

    def render(self, value: Any) -> dict[str, Any]:
        return render_section(value)


def parse_section(r: Reader, cls: type, raw: Any, key: str) -> Any:
    """A section read by its dataclass's declarations: an unknown key is refused, and an
    absent one takes its default's YAML form through the same check as a written value (so
    a default is coerced as a written value would be: ``cpus: 1`` reads as 1.0 either way)."""
    raw = _known_keys(r, cls, raw, key)
    return _section_from(r, cls, raw, key, {})


def _known_keys(r: Reader, cls: type, raw: Any, key: str) -> dict[str, Any]:
    """The section's mapping, its keys and those of the sections inside it checked before
    any value, so that a misspelt key is the one named, wherever it is."""
    raw = r.mapping(raw, key, tuple(name for name, _ in _declared(cls, {})))
    for name, check in _declared(cls, {}):
        if isinstance(check, Section) and name in raw:
            _known_keys(r, check.cls, raw[name], f"{key}.{name}")
    return raw


def _declared(cls: type, keys: Mapping[str, str]) -> Iterator[tuple[str, Check]]:
    """(key, check) of each setting a section's mapping holds, an inline section's among them."""
    for f in dataclasses.fields(cls):
        check = declaration(f).check
        if isinstance(check, Section) and check.inline:
            yield from _declared(check.cls, check.keys)
        else:
            yield keys.get(f.name, f.name), check


def _section_from(
    r: Reader, cls: type, raw: dict[str, Any], key: str, keys: Mapping[str, str]
) -> Any:
    values = {}
    for f in dataclasses.fields(cls):
        check = declaration(f).check
        if isinstance(check, Section) and check.inline:
            values[f.name] = _section_from(r, check.cls, raw, key, check.keys)
            continue
        name = keys.get(f.name, f.name)
        value = raw[name] if name in raw else check.render(f.default)
        values[f.name] = check.parse(r, value, f"{key}.{name}")
    return cls(**values)


def render_section(section: Any, keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Any section as plain YAML, keys in declaration order: the inverse of parse_section."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        check = declaration(f).check
        value = getattr(section, f.name)
        if isinstance(check, Section) and check.inline:
            out.update(render_section(value, check.keys))
        else:
            out[(keys or {}).get(f.name, f.name)] = check.render(value)
    return out


def identity(section: Any) -> dict[str, Any]:
    """A section's part of a trial's id: each field as its declaration's ``identity`` says."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        s = declaration(f)
        value = getattr(section, f.name)
        if s.identity == "never" or (s.identity == "unless default" and value == f.default):
            continue
        out[f.name] = s.check.render(value)
    return out
