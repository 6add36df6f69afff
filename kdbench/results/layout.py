"""Where everything lives in a results directory: the one module that builds its paths.

    DIR/trials/<trial_id>.parquet             one result row per file (temp file + rename)
    DIR/compacted/<run_id>.parquet            rows folded by `kdbench compact` or a run's end
    DIR/_studies/journal.log                  the Optuna studies (unless tuning.storage is set)
    DIR/_cache/teachers/<trial_id>.pt         trained teachers' weights (and dd_mtt's expert
                                              trajectories), shared by the trials that need them
    DIR/_artifacts/students/<trial_id>.pt     every final trial's distilled student
    DIR/_artifacts/<kind>/<key>.pt            what a method made, by content key (synthetic sets)
    DIR/_runs/<run_id>/                       suite.yaml, suite.sha256, run.json, curves/<trial_id>.parquet
    DIR/_runs/.lock                           one driver at a time

Everything that is not a result row sits under a name that starts with '_', so Parquet
readers (pyarrow skips '_' and '.' names) see the rows and nothing else. Paths *relative* to
the directory (``artifact`` in a row, a method's artifact key) are what trials and rows hold:
a results directory can move, or live at a URI, and its rows stay right.

What a row holds is untrusted (results directories are shared): a path taken from a row must
resolve inside the directory (``Layout.inside``), and a run id becomes a file name only when
it is a plain one (``Layout.compacted_file``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kdbench.errors import KdbenchError

TRIALS = "trials"
COMPACTED = "compacted"
STUDIES = "_studies"
CACHE = "_cache"
ARTIFACTS = "_artifacts"
RUNS = "_runs"
SUITE_YAML, SUITE_SHA256, RUN_JSON = "suite.yaml", "suite.sha256", "run.json"
"""A run's record under ``_runs/<run_id>/`` (``results.runs.RunRecord`` reads and writes it)."""
ROW_FOLDERS = (TRIALS, COMPACTED)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ArtifactKey:
    """A file a trial leaves beside its row: ``kind`` names its folder under ``_artifacts/``
    (``students``, ``synthetic``, ...), ``name`` the file in it (a trial id or content key)."""

    kind: str
    name: str

    @property
    def relative(self) -> str:
        """The path relative to the results directory, as a row's ``artifact`` column holds it."""
        return f"{ARTIFACTS}/{self.kind}/{self.name}.pt"


def student_artifact(trial_id: str) -> ArtifactKey:
    """Where a final trial's distilled student is saved."""
    return ArtifactKey("students", trial_id)


@dataclass(frozen=True)
class Layout:
    """The paths of one results directory (a local directory, or the local mirror of a URI)."""

    root: Path

    @classmethod
    def of(cls, results_dir: str | os.PathLike[str]) -> Layout:
        return cls(Path(results_dir))

    # -- result rows
    def trial_file(self, trial_id: str) -> Path:
        return self.root / TRIALS / f"{trial_id}.parquet"

    def compacted_file(self, run_id: str) -> Path:
        """A run's compacted file. The run id comes from rows, so one that is not a plain file
        name (a '/', a leading '.') is replaced by its digest: a row cannot choose where
        compaction writes."""
        if not _PLAIN_NAME.fullmatch(run_id):
            run_id = "run-" + hashlib.sha256(run_id.encode()).hexdigest()[:16]
        return self.root / COMPACTED / f"{run_id}.parquet"

    def row_folders(self) -> list[Path]:
        return [self.root / sub for sub in ROW_FOLDERS]

    # -- everything else
    def journal(self) -> Path:
        return self.root / STUDIES / "journal.log"

    def teacher_weights(self, teacher_id: str) -> Path:
        return self.root / CACHE / "teachers" / f"{teacher_id}.pt"

    def artifact(self, key: ArtifactKey | str) -> Path:
        """An artifact's file, from its key or from a row's relative ``artifact`` path.

        Refused (a KdbenchError) when it resolves outside the directory: an absolute path, a
        '..' that climbs out, or a symlink that points out.
        """
        path = self.root / (key.relative if isinstance(key, ArtifactKey) else key)
        if not self.inside(path):
            raise KdbenchError(f"{path}: outside the results directory {self.root}; refused")
        return path

    def inside(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` resolves, every symlink followed, to the directory or below it."""
        try:
            return Path(path).resolve().is_relative_to(self.root.resolve())
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL: no file there
            return False

    def run_dir(self, run_id: str) -> Path:
        return self.root / RUNS / run_id

    def run_records(self) -> list[Path]:
        """Every run's ``run.json``, oldest first (run ids start with their UTC start time)."""
        return sorted((self.root / RUNS).glob(f"*/{RUN_JSON}"))

    def curve(self, run_id: str, trial_id: str) -> Path:
        return self.run_dir(run_id) / "curves" / f"{trial_id}.parquet"

    def lock(self) -> Path:
        return self.root / RUNS / ".lock"

    def written_folders(self) -> list[Path]:
        """Every folder files are written into (atomically, through a temporary file)."""
        folders = [*self.row_folders(), self.root / STUDIES, self.root / CACHE / "teachers"]
        folders += _subfolders(self.root / ARTIFACTS)
        for run in _subfolders(self.root / RUNS):
            folders += [run, run / "curves"]
        return folders


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
