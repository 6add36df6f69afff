"""The method registry, the resolution of names such as ``crd+kd``, and of a method
entry's hyperparameters."""

from __future__ import annotations

import inspect
from typing import Any

from kdbench.errors import KdbenchError, choices_hint
from kdbench.methods.base import Method, combine
from kdbench.registry import Registry
from kdbench.spec import MethodEntry


def _check(name: str, obj: type[Method]) -> None:
    if not (inspect.isclass(obj) and issubclass(obj, Method)):
        raise TypeError(f"method {name!r} must be a subclass of kdbench.methods.Method")
    if obj.name != name:
        raise TypeError(
            f"method class {obj.__name__} has name {obj.name!r}, registered as {name!r}"
        )
    names = [h.name for h in obj.hparams]
    if len(names) != len(set(names)):
        raise TypeError(f"method {name!r} declares a hyperparameter twice: {names}")


def _bind(name: str, obj: type[Method]) -> None:
    """A class registered under ``name`` is that method: it learns its name here (a class that
    writes one itself, as a user's plugin may, must write the same)."""
    if inspect.isclass(obj) and issubclass(obj, Method) and "name" not in vars(obj):
        obj.name = name


METHODS: Registry[type[Method]] = Registry("method", check=_check, bind=_bind)


def method_class(name: str) -> type[Method]:
    """The class for a registry name or a combination ``A+B`` of registered names."""
    parts = name.split("+")
    if len(parts) == 1:
        return METHODS.get(name)
    if len(set(parts)) != len(parts):
        raise KdbenchError(f"method '{name}' names a component twice")
    classes = []
    for part in parts:
        if part not in METHODS:
            raise KdbenchError(
                f"unknown method '{part}' in '{name}'; {choices_hint(part, METHODS)}"
            )
        cls = METHODS.get(part)
        if not cls.combinable:
            raise KdbenchError(
                f"'{part}' cannot be combined ('{name}'): it has no loss term of its own"
            )
        classes.append(cls)
    return combine(classes)


def resolve_hparams(
    entry: MethodEntry, overrides: dict[str, Any] | None = None
) -> tuple[tuple[str, Any], ...]:
    """A trial's hyperparameters: the method's defaults, then the suite's fixed ``params``,
    then tuned values (with the optional ones a switch among them brings in)."""
    cls = method_class(entry.name)
    hp = cls.defaults()
    hp.update(dict(entry.params))
    hp.update(overrides or {})
    return tuple(sorted(cls.complete(hp).items()))
