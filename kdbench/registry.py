"""One typed registry for data sets, models and methods.

Built-in entries register at import; users add theirs from their own packages through the
entry-point groups ``kdbench.methods``, ``kdbench.models`` and ``kdbench.datasets`` (each entry
point names a module or a callable; loading it registers what it defines).
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

    def get(self, name: str) -> T:
        self.load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise KdbenchError(
                f"unknown {self.kind} '{name}'; {choices_hint(name, self)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._entries

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
