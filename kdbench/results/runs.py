"""A suite run's record, ``_runs/<run_id>/``: the resolved suite (``suite.yaml``), its hash
(``suite.sha256``) and ``run.json`` (where the suite came from, the git commit, the start, the
host, every installed package's version). ``RunRecord`` is the one type that writes it (the
result writer) and reads it (the report, the MLflow export)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdbench.results.layout import RUN_JSON, SUITE_SHA256, SUITE_YAML, Layout


@dataclass
class RunRecord:
    """One suite run's record; a part that is missing or unreadable is None."""

    run_id: str
    suite: str
    sha256: str | None = None
    yaml_text: str | None = None
    """The resolved suite, as YAML."""
    run_json: dict[str, Any] | None = None
    started_at: str | None = None
    """ISO 8601, UTC."""

    @classmethod
    def read(cls, layout: Layout, run_id: str, suite: str | None = None) -> RunRecord:
        """The record of ``run_id`` (a run id comes from a row: one that leads outside the
        results directory reads as an empty record)."""
        record = cls(run_id, suite or "unknown")
        run_dir = layout.run_dir(run_id)
        if not layout.inside(run_dir) or not run_dir.is_dir():
            return record
        record.yaml_text = _text(run_dir / SUITE_YAML)
        record.sha256 = (_text(run_dir / SUITE_SHA256) or "").strip() or None
        try:
            run_json = json.loads(_text(run_dir / RUN_JSON) or "null")
        except ValueError:
            run_json = None
        if isinstance(run_json, dict):
            record.run_json = run_json
            started = run_json.get("started_at")
            record.started_at = started if isinstance(started, str) else None
        return record

    @classmethod
    def of_suite(cls, suite: Any, run_id: str, *, with_provenance: bool = False) -> RunRecord:
        """A running suite's record; ``with_provenance``: with the ``run.json`` the result
        writer keeps (its source, git commit, start, host and packages)."""
        from kdbench import provenance  # torch: only where a run is recorded

        record = cls(
            run_id,
            suite.name,
            sha256=suite.sha256(),
            yaml_text=yaml.safe_dump(suite.to_dict(), sort_keys=False),
            started_at=provenance.now(),
        )
        if with_provenance:
            record.run_json = {
                "source": suite.source,
                "git_sha": provenance.git_sha(),
                "started_at": record.started_at,
                "host": provenance.host(),
                "packages": provenance.package_versions(),
            }
        return record

    def write(self, layout: Layout) -> list[Path]:
        """The record's files under ``_runs/<run_id>/`` (``run.json`` atomically)."""
        from kdbench.results import store  # pyarrow: only where a run is recorded

        run_dir = layout.run_dir(self.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        files = [run_dir / SUITE_YAML, run_dir / SUITE_SHA256, run_dir / RUN_JSON]
        files[0].write_text(self.yaml_text or "")
        files[1].write_text((self.sha256 or "") + "\n")
        store.write_json_atomic(self.run_json or {}, files[2])
        return files


def run_records(layout: Layout) -> list[RunRecord]:
    """Every run that wrote its ``run.json``, oldest first (run ids start with their UTC
    start time)."""
    return [RunRecord.read(layout, path.parent.name) for path in layout.run_records()]


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
