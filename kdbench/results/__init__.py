"""Result rows: the schema, the reader (``load``), the layout and writer, the leaderboard."""

from __future__ import annotations

from typing import Any

from kdbench.results.schema import COLUMNS, SCHEMA, SCHEMA_VERSION
from kdbench.results.store import finished_trials, load, read_table, write_trial

__all__ = [
    "COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "finished_trials",
    "load",
    "load_student",
    "load_synthetic",
    "read_table",
    "write_trial",
]


def __getattr__(name: str) -> Any:
    # The artifact readers build models and methods: imported when first asked for, so that
    # methods may use the results layout without an import cycle.
    if name in ("load_student", "load_synthetic"):
        from kdbench.results import artifacts

        return getattr(artifacts, name)
    raise AttributeError(f"module 'kdbench.results' has no attribute {name!r}")
