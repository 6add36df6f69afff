"""The Python entry point: ``kdbench.run(suite)`` does what ``kdbench run SUITE`` does and
hands back DataFrames.

It takes a suite file, a shipped suite's name or a mapping (the suite's YAML as Python data),
runs or resumes it exactly as the command line does (same results directory, same resume,
same refusals: a ``KdbenchError`` with the message the command prints), and returns a
``RunResult``: the run's counts, the trials it ran, every row of the directory, and the
leaderboard's tables. In a Jupyter notebook the progress is one status line updated in place
and the result shows itself as the leaderboard's Markdown.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdbench.errors import KdbenchError

if TYPE_CHECKING:
    import pandas as pd

    from kdbench.results.leaderboard import Leaderboard
    from kdbench.spec import Suite


@dataclass
class RunResult:
    """What one ``kdbench.run`` did and what the results directory now holds."""

    run_id: str
    results_dir: Path
    """Where the rows are (for results at a URI: its local mirror)."""
    summary: pd.DataFrame
    """One row: run_id, results_dir, planned, skipped, ran, failed, tasks, seconds."""
    trials: pd.DataFrame
    """The rows this run wrote (none when everything was already finished)."""
    rows: pd.DataFrame
    """Every row of the results directory, as ``kdbench.results.load`` reads it."""
    board: Leaderboard
    """The leaderboard, for ``kdbench.results.render.render(board, fmt)``."""

    @property
    def leaderboard(self) -> pd.DataFrame:
        """The per-pair table: one row per (data set, teacher, student, method)."""
        return self.board.pairs

    @property
    def overall(self) -> pd.DataFrame:
        """Each method across pairs: mean rank, wins, mean gap closed."""
        return self.board.overall

    @property
    def cost(self) -> pd.DataFrame:
        """What each method cost: trials, CPU- and GPU-hours of tuning and finals."""
        return self.board.cost

    def markdown(self) -> str:
        from kdbench.results.render import render

        return render(self.board, "markdown")

    def _repr_markdown_(self) -> str:  # a notebook shows the result as its leaderboard
        s = self.summary.iloc[0]
        head = (
            f"**run {self.run_id}**: {s['ran']} trials in {s['seconds']:.1f} s "
            f"({s['failed']} failed, {s['skipped']} already finished) → `{self.results_dir}`\n\n"
        )
        return head + self.markdown()


def run(
    suite: str | os.PathLike[str] | Mapping[str, Any] | Suite,
    *,
    results: str | os.PathLike[str] | None = None,
    address: str | None = None,
    retry_failed: bool = False,
    progress: bool | None = None,
    mlflow: str | None = None,
) -> RunResult:
    """Run (or resume) a suite and return its results.

    ``suite``: a path, a shipped suite's name (``"quickstart"``; ``kdbench list suites``), a
    mapping with the suite's keys, or a loaded ``Suite``. ``results``: a directory or a URI
    (``s3://bucket/prefix``); default ``results/<suite name>``. ``address``: an existing Ray
    cluster (default: a private local one, shut down afterwards; a Ray already initialised
    in this process is used as it is). ``progress``: None shows it (in place in a notebook,
    a line per trial elsewhere), False keeps quiet. ``mlflow``: a tracking URI every trial
    is logged to as it finishes (``kdbench.results.mlflow``).

    Raises ``KdbenchError`` (``SuiteError`` for the suite) with the command line's message.
    """
    from kdbench.results import store
    from kdbench.results.leaderboard import leaderboard
    from kdbench.results.reference import load_reference
    from kdbench.scheduler.driver import run_suite

    loaded = load(suite)
    where = results_location(loaded, results)
    summary = run_suite(
        loaded,
        where,
        address=address,
        retry_failed=retry_failed,
        progress=_progress(progress),
        mlflow=mlflow,
    )
    import pandas as pd

    rows = store.load(summary.results_dir)
    counts = {
        "run_id": summary.run_id,
        "results_dir": str(summary.results_dir),
        "planned": summary.planned,
        "skipped": summary.skipped,
        "ran": summary.ran,
        "failed": summary.failed,
        "tasks": summary.tasks,
        "seconds": summary.seconds,
    }
    return RunResult(
        run_id=summary.run_id,
        results_dir=Path(summary.results_dir),
        summary=pd.DataFrame([counts]),
        trials=rows[rows["run_id"] == summary.run_id].reset_index(drop=True),
        rows=rows,
        board=leaderboard(rows, load_reference()),
    )


def load(suite: str | os.PathLike[str] | Mapping[str, Any] | Suite) -> Suite:
    """A suite from a path, a shipped suite's name, a mapping, or a ``Suite`` as it is."""
    from kdbench.spec import Suite
    from kdbench.validation import load_suite, parse_suite

    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, Mapping):
        return parse_suite(dict(suite), source="<mapping>", base_dir=Path.cwd())
    if isinstance(suite, (str, os.PathLike)):
        return load_suite(suite)
    raise KdbenchError(
        f"suite: expected a path, a shipped suite's name, a mapping or a Suite, "
        f"got {type(suite).__name__}"
    )


def results_location(suite: Suite, results: str | os.PathLike[str] | None) -> str | Path:
    """``--results`` as given (a directory or a URI), else ``results/<suite name>``; a file
    standing there is refused before anything runs."""
    from kdbench.results.remote import is_uri
    from kdbench.scheduler.driver import default_results_dir

    where: str | Path = default_results_dir(suite) if results is None else os.fspath(results)
    if not is_uri(str(where)) and Path(where).exists() and not Path(where).is_dir():
        raise KdbenchError(
            f"--results {where}: is a file, not a directory; give a directory "
            "(it is made if it does not exist)"
        )
    return where


def _progress(show: bool | None) -> Any:
    from kdbench.scheduler.progress import NotebookProgress, Progress, in_notebook

    if show is False:
        return Progress(0, stream=io.StringIO(), live=False)
    if in_notebook():
        return NotebookProgress()
    return None  # the command line's: a live line on a terminal, a line per trial otherwise
