"""One typed registry for data sets, models and methods.

Built-in entries register at import; users add theirs from their own packages through the
entry-point groups ``kdbench.methods``, ``kdbench.models`` and ``kdbench.datasets`` (each entry
point names a module or a callable; loading it registers what it defines).

A *family* answers every name ``<prefix>:<rest>`` through a resolver, for a library whose
entries are too many to register, or too slow to import, ahead of use (``timm:resnet18``):
``get`` and ``in`` know such names, while listing (``for name in registry``) keeps to the
registered entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from kdbench.errors import KdbenchError, choices_hint

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, refusing duplicates and checking what is registered.

    ``check`` validates an entry at registration (a base class, a signature); a failed check
    is a programming error and raises ``TypeError`` at import, not at run time.
    """

    def __init__(self, kind: str, *, check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._check = check
        self._plugins_loaded = False
        self._families: dict[str, Callable[[str], T]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if not name or not name.replace("_", "a").isalnum() or name != name.lower():
            raise TypeError(f"{self.kind} name {name!r} must be lower-case letters, digits and '_'")
        if name in self._entries and self._entries[name] is not obj:
            raise TypeError(f"{self.kind} {name!r} is registered twice")
        if self._check is not None:
            self._check(name, obj)
        self._entries[name] = obj

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
        return sorted(self._families)

    def get(self, name: str) -> T:
        self.load_plugins()
        if name in self._entries:
            return self._entries[name]
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
        if name in self._entries:
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
        self.load_plugins()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        self.load_plugins()
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self.load_plugins()
        return sorted(self._entries.items())

    def load_plugins(self) -> None:
        """Import the entry points of the group ``kdbench.<kind>s`` once."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=f"kdbench.{self.kind}s"):
            try:
                loaded = ep.load()
            except Exception as exc:
                raise KdbenchError(
                    f"the {self.kind} plugin '{ep.name}' ({ep.value}) failed to import: {exc}"
                ) from exc
            if ep.name not in self._entries and not _is_module(loaded):
                self.add(ep.name, loaded)


def _is_module(obj: object) -> bool:
    return type(obj).__name__ == "module"
