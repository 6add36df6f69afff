"""The result writer: the one place a run writes into its results directory.

The driver hands it what trials return (rows, curves, artifacts, teachers' weights) and the
run's record; it writes each file atomically at the path ``Layout`` gives, uploads it at once
when the results live at a URI, and folds per-trial files into the run's file as the run
goes (in a thread, so slots do not wait) and at its end.

Order matters for resuming: a trial's files are written before the row that names them, and
the row before its study hears of the trial, so a driver killed in between finds the row
and tells the study from it instead of running the trial again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from kdbench.results import store
from kdbench.results.files import atomic_file
from kdbench.results.layout import ArtifactKey, Layout
from kdbench.results.remote import Mirror
from kdbench.results.runs import RunRecord

COMPACT_EVERY = 500
"""During a long run, fold the per-trial files into the run's file after this many rows:
readers open every file, so many loose files make every read slow."""


class Compactor:
    """Folds the loose trial files in a thread while the driver goes on."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir
        self.written: dict[Path, pa.Table] = {}
        """This run's trial files not folded yet, and what they hold: not read back."""
        self._thread: threading.Thread | None = None
        self._names: set[str] = set()
        self._error: BaseException | None = None

    def start(self) -> None:
        self.wait()
        files = store.loose_trials(self.results_dir)
        self._names = {p.name for p in files}
        known = {p: self.written.pop(p) for p in files if p in self.written}
        self._thread = threading.Thread(
            target=self._compact, args=(files, known), name="kdbench-compact", daemon=True
        )
        self._thread.start()

    def _compact(self, files: list[Path], known: dict[Path, pa.Table]) -> None:
        try:
            store.compact(self.results_dir, files, known=known)
        except BaseException as exc:  # raised in the driver's thread, by ``wait``
            self._error = exc

    def final(self) -> None:
        """The last fold, in the driver's thread, once the run's trials are all written."""
        self.wait()
        store.compact(self.results_dir, known=self.written)
        self.written = {}

    def folding(self, name: str) -> bool:
        """Whether the running compaction folds (and will delete) the file of this name."""
        return self._thread is not None and name in self._names

    def finished(self) -> bool:
        """True once after a compaction ended (its errors raised here)."""
        if self._thread is None or self._thread.is_alive():
            return False
        self.wait()
        return True

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread, self._names = None, set()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class ResultWriter:
    """Writes one run's files into a results directory (or the local mirror of a URI)."""

    def __init__(
        self,
        layout: Layout,
        run_id: str,
        *,
        mirror: Mirror | None = None,
        on_trial: Callable[[Mapping[str, Any], list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.layout = layout
        self.run_id = run_id
        self.mirror = mirror
        self.on_trial = on_trial
        """Called with each trial's row and curve once they are written (``kdbench run
        --mlflow`` logs them); it must not raise, nor take long (the driver waits)."""
        self.compactor = Compactor(layout.root)
        self._loose = 0

    # -- what a trial leaves
    def trial(
        self,
        row: Mapping[str, Any],
        curve: list[dict[str, Any]] = (),  # type: ignore[assignment]
        artifacts: Mapping[ArtifactKey, bytes] | None = None,
    ) -> Path:
        """A finished trial: its artifacts, its curve, then its row (which names them)."""
        trial_id = row["trial_id"]
        path = self.layout.trial_file(trial_id)
        if self.compactor.folding(path.name):  # a failed trial retried: its old file
            self.compactor.wait()
        written = self._artifacts(artifacts or {})
        written += self._curve(trial_id, list(curve))
        table = store.to_table([row])
        store.write_atomic(table, path)
        self.compactor.written[path] = table
        self._publish(*written, path)
        if self.on_trial is not None:  # the row as written (every column, typed)
            self.on_trial(table.to_pylist()[0], list(curve))
        self._loose += 1
        if self._loose >= COMPACT_EVERY:
            self.compactor.start()
            self._loose = 0
        if self.compactor.finished():
            self.sync()
        elif self.mirror is not None:
            self.mirror.sync_now_and_then()  # the studies' journal goes up with it
        return path

    def _artifacts(self, artifacts: Mapping[ArtifactKey, bytes]) -> list[Path]:
        written = []
        for key, blob in artifacts.items():
            path = self.layout.artifact(key)
            if path.exists():  # content-addressed or per trial: the file is already right
                continue
            with atomic_file(path) as f:
                f.write(blob)
            written.append(path)
        return written

    def _curve(self, trial_id: str, curve: list[dict[str, Any]]) -> list[Path]:
        if not curve:
            return []
        # pyarrow directly: the driver writes one of these per trial, and pandas is slow here
        keys = list(dict.fromkeys(k for epoch in curve for k in epoch))
        table = pa.table(
            {**{k: [e.get(k) for e in curve] for k in keys}, "trial_id": [trial_id] * len(curve)}
        )
        return [store.write_atomic(table, self.layout.curve(self.run_id, trial_id))]

    def teacher_weights(self, teacher_id: str, blob: bytes) -> Path:
        path = self.layout.teacher_weights(teacher_id)
        with atomic_file(path) as f:
            f.write(blob)
        self._publish(path)
        return path

    # -- the run
    def record_run(self, suite: Any) -> Path:
        """_runs/<run_id>/: the resolved suite, its hash, and every installed package's version."""
        files = RunRecord.of_suite(suite, self.run_id, with_provenance=True).write(self.layout)
        self._publish(*files)
        return files[0].parent

    def finish(self) -> None:
        """The last fold (one file per run); the caller still holds the directory's lock."""
        self.compactor.final()

    def close(self) -> None:
        """Wait for a fold in flight: the lock may be released only after it."""
        self.compactor.wait()

    def sync(self) -> None:
        if self.mirror is not None:
            self.mirror.sync()

    def _publish(self, *paths: Path) -> None:
        """Results at a URI: upload what was just written, before the study hears of it."""
        if self.mirror is not None and paths:
            self.mirror.push(*paths)
