"""kdbench: compare knowledge-distillation methods under one fair, tuned, multi-seed protocol.

``kdbench.run(suite)`` runs a suite (a file, a shipped suite's name or a mapping) and returns
its results as DataFrames; ``kdbench.results.load(DIR)`` reads a results directory. Importing
``kdbench`` is instant: torch, Ray and pandas load when a run needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdbench._version import __version__
from kdbench.errors import KdbenchError, SuiteError

__all__ = ["KdbenchError", "RunResult", "SuiteError", "__version__", "run"]

if TYPE_CHECKING:
    from kdbench.api import RunResult, run


def __getattr__(name: str) -> Any:
    if name in ("run", "RunResult"):
        from kdbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'kdbench' has no attribute {name!r}")
