"""Result rows: the schema, the reader (``load``), the layout and writer, the leaderboard.

The names below are imported when first asked for: ``kdbench.results.render``'s formats or the
layout's paths do not bring in pyarrow and pandas (the command line starts faster), and the
artifact readers, which build models and methods, cause no import cycle.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "COLUMNS": "schema",
    "SCHEMA": "schema",
    "SCHEMA_VERSION": "schema",
    "finished_trials": "store",
    "load": "store",
    "read_table": "store",
    "write_trial": "store",
    "load_student": "artifacts",
    "load_synthetic": "artifacts",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"kdbench.results.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'kdbench.results' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
