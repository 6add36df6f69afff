"""Result rows: the schema, the writer, the reader (``load``) and the leaderboard."""

from __future__ import annotations

from kdbench.results.artifacts import load_student, load_synthetic
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
