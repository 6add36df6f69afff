"""One typed registry for data sets, models and methods.

An entry is registered by name, either as the object itself (``add``, ``register``) or as a
``"module:object"`` string that is imported on first use (``lazy``), as lm-evaluation-harness
registers its tasks: a registry need not import every method to list their names, and a
suite that names three methods imports three. Users add theirs from their own packages
through the entry-point groups ``kdbench.methods``, ``kdbench.models`` and
``kdbench.datasets``: an entry point that names an object (``my_pkg.methods:LogitL2``) is a
lazy entry under its own name; one that names a module is imported, and registers what it
defines.

A *family* answers every name ``<prefix>:<rest>`` through a resolver, for a library whose
entries are too many to register, or too slow to import, ahead of use (``timm:resnet18``):
``get`` and ``in`` know such names, while listing (``for name in registry``) keeps to the
registered entries.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from kdbench.errors import KdbenchError, choices_hint, first_line

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, refusing duplicates and checking what is registered.

    ``check`` validates an entry when it is added (a base class, a signature); a failed check
    is a programming error and raises ``TypeError``. ``bind`` gives an entry its name when it
    is added (a method class learns the name it is registered under, written once: in the
    registry).
    """

    def __init__(
        self,
        kind: str,
        *,
        check: Callable[[str, T], None] | None = None,
        bind: Callable[[str, T], None] | None = None,
    ) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._modules: list[str] = []
        self._check = check
        self._bind = bind
        self._plugins_loaded = False
        self._families: dict[str, Callable[[str], T]] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """A decorator that adds what it decorates, under ``name`` or else its own
        ``__name__`` (a model's factory ``def resnet8(...)`` is the model ``resnet8``)."""

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__, obj)  # type: ignore[attr-defined]
            return obj

        return decorator

    def lazy_module(self, module: str) -> None:
        """A module whose entries register themselves when it is imported (a model family's
        file, whose variants are its functions' names): imported on the registry's first use."""
        if module not in self._modules:
            self._modules.append(module)

    def _import_modules(self) -> None:
        while self._modules:
            module = self._modules.pop(0)
            try:
                importlib.import_module(module)
            except Exception:
                self._modules.insert(0, module)
                raise

    def add(self, name: str, obj: T) -> None:
        self._valid_name(name)
        if name in self._entries and self._entries[name] is not obj:
            raise TypeError(f"{self.kind} {name!r} is registered twice")
        if self._bind is not None:
            self._bind(name, obj)
        if self._check is not None:
            self._check(name, obj)
        self._entries[name] = obj

    def lazy(self, name: str, target: str) -> None:
        """Register ``name`` as ``"module:object"``, imported (and checked) on first use."""
        self._valid_name(name)
        if name in self._entries or self._lazy.get(name, target) != target:
            raise TypeError(f"{self.kind} {name!r} is registered twice")
        if target.count(":") != 1:
            raise TypeError(f"{self.kind} {name!r}: {target!r} is not 'module:object'")
        self._lazy[name] = target

    def _valid_name(self, name: str) -> None:
        if not name or not name.replace("_", "a").isalnum() or name != name.lower():
            raise TypeError(f"{self.kind} name {name!r} must be lower-case letters, digits and '_'")

    def _resolve(self, name: str) -> T:
        """Import a lazy entry and add what it names."""
        target = self._lazy[name]
        module, attr = target.split(":")
        try:
            obj = functools.reduce(getattr, attr.split("."), importlib.import_module(module))
        except Exception as exc:
            raise KdbenchError(
                f"the {self.kind} '{name}' ({target}) failed to import: {first_line(exc)}"
            ) from exc
        self.add(name, obj)
        del self._lazy[name]
        return obj

    def add_family(self, prefix: str, resolver: Callable[[str], T]) -> None:
        """Answer every name ``<prefix>:<rest>`` with ``resolver(rest)``, which returns the
        entry or raises a one-line ``KdbenchError`` saying why ``rest`` is not one (unknown, a
        library not installed). The resolver is called at each look-up, so it should be quick
        once its library is imported; what it returns is checked like a registered entry."""
        if not prefix or not prefix.replace("_", "a").isalnum() or prefix != prefix.lower():
            raise TypeError(
                f"{self.kind} family {prefix!r} must be lower-case letters, digits and '_'"
            )
        if prefix in self._families and self._families[prefix] is not resolver:
            raise TypeError(f"{self.kind} family {prefix!r} is registered twice")
        self._families[prefix] = resolver

    def families(self) -> list[str]:
        """The family prefixes, e.g. ``['timm']``: names ``timm:<name>`` resolve through them."""
        self.load_plugins()
        return sorted(self._families)

    def get(self, name: str) -> T:
        self.load_plugins()
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            return self._resolve(name)
        family = self._family(name)
        if family is not None:
            prefix, rest = family
            obj = self._families[prefix](rest)
            if self._check is not None:
                self._check(name, obj)
            return obj
        hint = choices_hint(name, self)
        if self._families:
            hint += "; or " + ", ".join(f"{p}:<name>" for p in sorted(self._families))
        raise KdbenchError(f"unknown {self.kind} '{name}'; {hint}")

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        if name in self._entries or name in self._lazy:
            return True
        if self._family(name) is None:
            return False
        try:
            self.get(name)  # type: ignore[arg-type]
        except KdbenchError:
            return False
        return True

    def _family(self, name: object) -> tuple[str, str] | None:
        """``(prefix, rest)`` of a name in a registered family, else None."""
        if not isinstance(name, str) or ":" not in name:
            return None
        prefix, rest = name.split(":", 1)
        return (prefix, rest) if prefix in self._families else None

    def __iter__(self) -> Iterator[str]:
        """The names, without importing a lazy entry."""
        self.load_plugins()
        return iter(sorted({*self._entries, *self._lazy}))

    def __len__(self) -> int:
        self.load_plugins()
        return len({*self._entries, *self._lazy})

    def items(self) -> list[tuple[str, T]]:
        """Every entry, each lazy one imported."""
        self.load_plugins()
        for name in list(self._lazy):
            self._resolve(name)
        return sorted(self._entries.items())

    def load_plugins(self) -> None:
        """What the registry's first use loads: the modules of ``lazy_module``, then, once,
        the entry points of the group ``kdbench.<kind>s``. An entry point that names an
        object is a lazy entry under its own name; one that names a module is imported now
        (it registers what it defines); a name registered already keeps its entry."""
        self._import_modules()
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=f"kdbench.{self.kind}s"):
            if ep.attr:
                if ep.name not in self._entries and ep.name not in self._lazy:
                    self.lazy(ep.name, f"{ep.module}:{ep.attr}")
                continue
            try:
                ep.load()
            except Exception as exc:
                raise KdbenchError(
                    f"the {self.kind} plugin '{ep.name}' ({ep.value}) failed to import: {exc}"
                ) from exc
