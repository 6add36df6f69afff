"""Result rows into MLflow: ``kdbench export DIR --mlflow URI``, and ``kdbench run --mlflow URI``.

What goes where, in the experiment ``kdbench/<suite name>`` (or the one named):

- one **parent run per suite run** (per ``run_id``: every ``kdbench run`` that trained
  something, a resume or a ``--retry-failed`` included), named ``<suite> <run_id>``: tags
  ``kdbench.suite``, ``kdbench.suite_sha256``, ``kdbench.run_id``; params: the resolved suite's
  settings (``budget.epochs``, ``tuning.trials``, ...); artifacts: ``suite.yaml`` and
  ``run.json`` from ``_runs/<run_id>/``;
- one **child run per trial** (nested: tag ``mlflow.parentRunId``), named by its trial id:
  params: the trial's hyperparameters and its dataset, teacher, student, method, seed;
  metrics: every numeric column of the row that is set (``test_acc``, ``val_acc``,
  ``best_test_acc``, ``teacher_test_acc``, ``train_seconds``, ...), and its per-epoch curve
  as ``epoch/<name>`` histories (``epoch/val_acc``, ``epoch/train_loss``, ...) at step =
  epoch; tags ``kdbench.trial_id``, ``kdbench.run_id``, ``kdbench.cell``, ``kdbench.phase``,
  ``kdbench.status``, ``kdbench.seed``, ``kdbench.error`` (also the run's description) and
  the row's provenance; the run's times are the row's ``started_at`` and ``finished_at``, its
  status FINISHED (ok), FAILED (failed) or KILLED (pruned).

Idempotent: a trial is found again by its ``kdbench.trial_id`` tag and the row it came from
(``kdbench.run_id`` and ``kdbench.finished_at``), so exporting twice creates nothing. A trial
written again (``--retry-failed``) has a newer row, under a later run: its old child run is
deleted (MLflow's soft delete: ``mlflow gc`` purges it, ``mlflow runs restore`` brings it
back) and the new row gets a child run under its own run's parent, as the results directory
itself keeps only the newer row. A child run left unfinished (an export killed half-way) is
replaced the same way. Only runs of the directory's own history (the run ids in its
``_runs/``) are replaced: another results directory of the same suite, exported into the
same experiment, has the same trial ids, and its runs are left as they are.

A parent run's status: FINISHED once exported; a ``kdbench run --mlflow`` makes its parent
RUNNING, and FINISHED at the run's end (FAILED or KILLED when the run fails or is stopped; a
driver killed outright leaves it RUNNING, and a later export leaves it so too, as it cannot
tell that from a run going on).

mlflow is imported only here, and only when exporting: ``pip install 'kdbench[mlflow]'``. For
a server (``http(s)://``), unless the environment says otherwise, MLflow's client retries a
request twice with a 30 s timeout (its own defaults: 7 times, 120 s) and prints no run URLs,
and the server is first reached once without retries: an unreachable one is said in one
line, at once.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import queue
import re
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbench.errors import KdbenchError, first_line, one_line
from kdbench.results.layout import RUNS, Layout

INSTALL_HINT = "pip install 'kdbench[mlflow]'"
CURVE_PREFIX = "epoch/"
"""Per-epoch metrics are ``epoch/<name>`` (step = epoch), beside the row's own ``<name>``."""
_NOT_METRICS = {"schema_version", "seed"}
"""Numeric columns that are not measurements (the seed is a param and a tag)."""
_ROW_TAGS = (
    "kdbench_version",
    "torch_version",
    "git_sha",
    "node_id",
    "host",
    "device",
    "artifact",
    "started_at",
)


class Unreachable(KdbenchError):
    """The tracking server did not answer."""


_STATUS = {"ok": "FINISHED", "failed": "FAILED", "pruned": "KILLED"}
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # a line and a request per run ended
}
_PROBE_TIMEOUT_S = 10.0
_PAGE = 1000
_KEY = re.compile(r"[^\w.\-]+")


@dataclass
class ExportSummary:
    """What an export did: child (trial) runs and parent (suite run) runs, by what happened."""

    tracking_uri: str
    experiments: list[str] = field(default_factory=list)
    created: int = 0
    """Trial runs created."""
    replaced: int = 0
    """Trial runs created for a trial written again (the old run deleted)."""
    existing: int = 0
    """Trial runs already there."""
    parents_created: int = 0
    parents_existing: int = 0

    @property
    def runs_created(self) -> int:
        return self.created + self.replaced + self.parents_created

    @property
    def runs_existing(self) -> int:
        return self.existing + self.parents_existing

    def line(self) -> str:
        """``MLflow URI, experiment 'kdbench/x': 8 runs created (1 suite run, 7 trials), 0
        already there``."""
        where = ", ".join(f"'{e}'" for e in self.experiments) or "none (no rows)"
        trials = self.created + self.replaced
        replaced = f", {self.replaced} replacing older runs" if self.replaced else ""
        return (
            f"MLflow {self.tracking_uri}, experiment {where}: {_n(self.runs_created, 'run')} "
            f"created ({_n(self.parents_created, 'suite run')}, {_n(trials, 'trial')}"
            f"{replaced}), {self.runs_existing} already there"
        )


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def export(
    results_dir: str | os.PathLike[str],
    tracking_uri: str,
    *,
    experiment: str | None = None,
    finish: str | None = None,
) -> ExportSummary:
    """Export a results directory (or URI) to the MLflow tracking store at ``tracking_uri``.

    ``experiment``: the experiment's name (default ``kdbench/<suite name>``, one per suite the
    directory holds). ``finish``: a run id whose parent run is marked finished (the end of a
    ``kdbench run --mlflow``). Raises a one-line KdbenchError when mlflow is missing or the
    tracking store cannot be used.
    """
    from kdbench.results import store
    from kdbench.results.remote import is_uri, pulled

    root = pulled(str(results_dir)) if is_uri(str(results_dir)) else Path(results_dir)
    table = store.read_table(root)  # a missing or unreadable directory: one line
    frame = store.latest(table.to_pandas())  # one row per trial: the one that finished last
    rows = table.take(frame.index.to_numpy()).to_pylist()
    layout = Layout(root)
    runs = directory_runs(layout) | {str(r["run_id"]) for r in rows if r.get("run_id")}
    exporter = Exporter(tracking_uri)
    summary = ExportSummary(tracking_uri)
    by_experiment: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = experiment or f"kdbench/{row.get('suite') or 'unknown'}"
        by_experiment.setdefault(name, []).append(row)
    with exporter.errors():
        for name, exp_rows in by_experiment.items():
            summary.experiments.append(name)
            target = exporter.experiment(name)
            by_run: dict[str, list[dict[str, Any]]] = {}
            for row in exp_rows:
                by_run.setdefault(str(row.get("run_id") or "unknown"), []).append(row)
            for run_id, run_rows in sorted(by_run.items()):
                record = RunRecord.read(layout, run_id, run_rows[0].get("suite"))
                end = max((_ms(r.get("finished_at")) or 0 for r in run_rows), default=0) or None
                parent, created = target.parent(record, end)
                if created:
                    summary.parents_created += 1
                else:
                    summary.parents_existing += 1
                for row in run_rows:
                    what = target.trial(parent, row, read_curve(layout, row), runs)
                    setattr(summary, what, getattr(summary, what) + 1)
                if not created:
                    target.update_parent(run_id, end, finish=run_id == finish)
    return summary


# ----------------------------------------------------------------------------- what is read


@dataclass
class RunRecord:
    """What a parent run shows of a suite run: its ``_runs/<run_id>/`` record."""

    run_id: str
    suite: str
    sha256: str | None = None
    yaml_text: str | None = None
    run_json: dict[str, Any] | None = None
    started_ms: int | None = None

    @classmethod
    def read(cls, layout: Layout, run_id: str, suite: str | None) -> RunRecord:
        record = cls(run_id, suite or "unknown")
        run_dir = layout.run_dir(run_id)
        if not layout.inside(run_dir) or not run_dir.is_dir():  # a run id comes from a row
            return record
        record.yaml_text = _text(run_dir / "suite.yaml")
        record.sha256 = (_text(run_dir / "suite.sha256") or "").strip() or None
        try:
            run_json = json.loads(_text(run_dir / "run.json") or "null")
        except ValueError:
            run_json = None
        if isinstance(run_json, dict):
            record.run_json = run_json
            record.started_ms = _ms(run_json.get("started_at"))
        return record

    @classmethod
    def of_suite(cls, suite: Any, run_id: str) -> RunRecord:
        """A running suite's record, as ``ResultWriter.record_run`` writes it."""
        import yaml

        from kdbench import provenance

        return cls(
            run_id,
            suite.name,
            sha256=suite.sha256(),
            yaml_text=yaml.safe_dump(suite.to_dict(), sort_keys=False),
            started_ms=_ms(provenance.now()),
        )


def directory_runs(layout: Layout) -> set[str]:
    """The ids of every run a results directory has had (its ``_runs/`` folders)."""
    runs = layout.root / RUNS
    return {p.name for p in runs.iterdir() if p.is_dir()} if runs.is_dir() else set()


def read_curve(layout: Layout, row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A row's per-epoch curve (none when its run wrote none, as for failed trials)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_id, trial_id = row.get("run_id"), row.get("trial_id")
    if not run_id or not trial_id:
        return []
    path = layout.curve(run_id, trial_id)
    if not layout.inside(path) or not path.is_file():
        return []
    try:
        return pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException):
        return []


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


# ----------------------------------------------------------------------------- what is written


class Exporter:
    """An MLflow client for kdbench's runs: mlflow imported, the tracking store reached."""

    def __init__(self, tracking_uri: str) -> None:
        self.uri = tracking_uri
        self.mlflow = _import_mlflow()
        if _is_http(tracking_uri):
            for name, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
            probe(tracking_uri)
        with self.errors():
            self.client = self.mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
        self.warned: set[str] = set()

    def errors(self) -> _MlflowErrors:
        """A context in which MLflow's errors become one-line KdbenchErrors naming the URI."""
        return _MlflowErrors(self)

    def experiment(self, name: str) -> Experiment:
        """The experiment of that name, made if it is not there, and what kdbench put in it."""
        with self.errors():
            found = self.client.get_experiment_by_name(name)
            if found is not None and found.lifecycle_stage != "active":
                raise KdbenchError(
                    f"MLflow {self.uri}: experiment '{name}' is deleted; restore it "
                    "(mlflow experiments restore) or give another --experiment"
                )
            exp_id = (
                found.experiment_id if found is not None else self.client.create_experiment(name)
            )
            return Experiment(self, name, exp_id)

    def warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            print(f"kdbench: warning: {one_line(message)}", file=sys.stderr)


class _MlflowErrors:
    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if exc is None or isinstance(exc, (KdbenchError, KeyboardInterrupt, SystemExit)):
            return False
        if _store_error(self.exporter.mlflow, exc):
            raise KdbenchError(f"MLflow {self.exporter.uri}: {_short(exc)}") from None
        return False


def _store_error(mlflow: Any, exc: BaseException) -> bool:
    """Whether a tracking store's error is no bug of kdbench's: MLflow's own, the system's,
    or one its database or HTTP layer let through (a database file that cannot be made, a
    connection reset), known by its module (those packages are MLflow's, not kdbench's)."""
    if isinstance(exc, (mlflow.exceptions.MlflowException, OSError)):
        return True
    layers = ("sqlalchemy", "requests", "urllib3")
    return any(kind.__module__.split(".")[0] in layers for kind in type(exc).__mro__)


@dataclass
class Known:
    """What an export needs to know of a run already in MLflow."""

    run_id: str
    status: str
    end_time: int | None
    tags: dict[str, str]

    @classmethod
    def of(cls, run: Any) -> Known:
        return cls(run.info.run_id, run.info.status, run.info.end_time, dict(run.data.tags))

    @property
    def key(self) -> tuple[str, str]:
        """The row it holds, as ``_row_key`` says it."""
        return self.tags.get("kdbench.finished_at", ""), self.tags.get("kdbench.run_id", "")


class Experiment:
    """One experiment: the kdbench runs already in it (found by their tags), and new ones."""

    def __init__(self, exporter: Exporter, name: str, experiment_id: str) -> None:
        self.exporter = exporter
        self.client = exporter.client
        self.name = name
        self.id = experiment_id
        self.parents: dict[str, Known] = {}
        """kdbench run_id -> its parent run."""
        self.trials: dict[str, list[Known]] = {}
        """trial_id -> the active child runs of that trial (one, but for a race)."""
        for run in self._search():
            known = Known.of(run)
            kind = known.tags.get("kdbench.kind")
            if kind == "run" and "kdbench.run_id" in known.tags:
                self.parents.setdefault(known.tags["kdbench.run_id"], known)
            elif kind == "trial" and "kdbench.trial_id" in known.tags:
                self.trials.setdefault(known.tags["kdbench.trial_id"], []).append(known)

    def _search(self) -> Iterable[Any]:
        """Every active run kdbench made in the experiment: a search a page at a time."""
        token = None
        while True:
            page = self.client.search_runs(
                [self.id],
                filter_string="tags.`kdbench.kind` != ''",
                max_results=_PAGE,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    # -- parents
    def parent(self, record: RunRecord, end_ms: int | None = None) -> tuple[str, bool]:
        """The MLflow run id of a suite run's parent run, and whether it was made now: made
        FINISHED at ``end_ms`` (an export), or RUNNING without it (a run logging live)."""
        found = self.parents.get(record.run_id)
        if found is not None:
            return found.run_id, False
        tags = {
            "kdbench.kind": "run",
            "kdbench.run_id": record.run_id,
            "kdbench.suite": record.suite,
            "mlflow.source.name": "kdbench",
        }
        if record.sha256:
            tags["kdbench.suite_sha256"] = record.sha256
        for key in ("git_sha", "host", "source"):
            value = (record.run_json or {}).get(key)
            if value:
                tags[f"kdbench.{key}"] = _cut(str(value), _TAG_MAX)
        run = self.client.create_run(
            self.id,
            start_time=record.started_ms,
            tags=tags,
            run_name=f"{record.suite} {record.run_id}",
        )
        run_id = run.info.run_id
        params = _suite_params(record.yaml_text)
        if params:
            param = self.exporter.mlflow.entities.Param
            self.client.log_batch(run_id, params=[param(k, v) for k, v in params.items()])
        self._artifacts(run_id, record)
        status = "RUNNING"
        if end_ms is not None:
            status = "FINISHED"
            self.client.set_terminated(run_id, status, end_time=end_ms)
        self.parents[record.run_id] = Known(run_id, status, end_ms, tags)
        return run_id, True

    def _artifacts(self, run_id: str, record: RunRecord) -> None:
        try:
            if record.yaml_text:
                self.client.log_text(run_id, record.yaml_text, "suite.yaml")
            if record.run_json:
                self.client.log_dict(run_id, record.run_json, "run.json")
        except Exception as exc:  # the runs matter more than the files: say it, go on
            self.exporter.warn(
                f"MLflow {self.exporter.uri}: the suite's files of run {record.run_id} were "
                f"not uploaded as artifacts ({_short(exc)})"
            )

    def update_parent(self, run_id: str, end_ms: int | None, *, finish: bool) -> None:
        """A parent run found there, after its suite run's rows went in: one still RUNNING
        is left so (its run logs live now) unless ``finish`` (that run's end) marks it
        FINISHED; a finished one's end time follows its run's last row."""
        found = self.parents.get(run_id)
        if found is None:
            return
        if found.status == "RUNNING":
            if not finish:
                return
            found.status = "FINISHED"
        elif end_ms is None or end_ms <= (found.end_time or 0):
            return
        self.client.set_terminated(found.run_id, found.status, end_time=end_ms)
        found.end_time = end_ms

    def close_parent(self, parent_id: str, status: str) -> None:
        """A live run's end: its parent run FINISHED, FAILED or KILLED now."""
        self.client.set_terminated(parent_id, status)

    # -- trials
    def trial(
        self,
        parent_id: str,
        row: Mapping[str, Any],
        curve: list[dict[str, Any]],
        runs: Collection[str] | None = None,
    ) -> str:
        """Log one row (and its curve) as a child run of ``parent_id``, unless it is there.

        ``runs``: the run ids of the row's results directory (its ``_runs/``): a child run of
        the same trial from another directory of the same suite (its trial ids are the same)
        is another trial's, and left alone. Returns ``"created"``, ``"replaced"`` (an older
        row of the trial, from this directory, had a run: it is deleted) or ``"existing"``.
        What is there is kept when it holds this row or a newer one (the row that finished
        last wins, as in the directory); a run left RUNNING (an export killed half-way) is
        never kept.
        """
        trial_id = str(row["trial_id"])
        known = self.trials.get(trial_id, [])
        ours = [r for r in known if runs is None or r.tags.get("kdbench.run_id") in runs]
        others = [r for r in known if r not in ours]
        done = [r for r in ours if r.status != "RUNNING"]
        keep = next((r for r in done if r.key >= _row_key(row)), None)
        if keep is not None:
            for r in ours:
                if r is not keep:  # a duplicate from a race, or a half-made one
                    self.client.delete_run(r.run_id)
            self.trials[trial_id] = [*others, keep]
            return "existing"
        for r in ours:
            self.client.delete_run(r.run_id)
        self.trials[trial_id] = [*others, self._create(parent_id, row, curve)]
        return "replaced" if done else "created"

    def _create(self, parent_id: str, row: Mapping[str, Any], curve: list[dict[str, Any]]) -> Known:
        """A child run: made with its tags, its params and metrics in one ``log_batch`` (MLflow
        splits one past its limits), then ended with the row's status at its end time."""
        entities = self.exporter.mlflow.entities
        start, end = _ms(row.get("started_at")), _ms(row.get("finished_at"))
        tags = trial_tags(row, parent_id)
        run = self.client.create_run(
            self.id, start_time=start, tags=tags, run_name=str(row["trial_id"])
        )
        run_id = run.info.run_id
        params = [entities.Param(k, v) for k, v in trial_params(row).items()]
        metrics = [
            entities.Metric(k, v, timestamp, step)
            for k, v, timestamp, step in trial_metrics(row, curve)
        ]
        self.client.log_batch(run_id, metrics=metrics, params=params)
        status = _STATUS.get(str(row.get("status")), "FINISHED")
        self.client.set_terminated(run_id, status, end_time=end)
        return Known(run_id, status, end, tags)


# ----------------------------------------------------------------------------- a row's fields

_PARAM_MAX = 6000  # MLflow's limits on a param's and a tag's value
_TAG_MAX = 8000
_NAME_MAX = 250


def cell(row: Mapping[str, Any]) -> str:
    """The row's cell, as the plan names it (``digits/cnn_wide->cnn_tiny/kd``); a teacher's
    row: its data set and teacher."""
    if row.get("phase") == "teacher" or not row.get("student"):
        return f"{row.get('dataset')}/{row.get('teacher')}"
    return f"{row.get('dataset')}/{row.get('teacher')}->{row.get('student')}/{row.get('method')}"


def trial_tags(row: Mapping[str, Any], parent_id: str) -> dict[str, str]:
    tags = {
        "mlflow.parentRunId": parent_id,
        "mlflow.source.name": "kdbench",
        "kdbench.kind": "trial",
        "kdbench.trial_id": str(row["trial_id"]),
        "kdbench.run_id": str(row.get("run_id") or ""),
        "kdbench.finished_at": str(row.get("finished_at") or ""),
        "kdbench.suite": str(row.get("suite") or ""),
        "kdbench.cell": cell(row),
        "kdbench.phase": str(row.get("phase") or ""),
        "kdbench.status": str(row.get("status") or ""),
        "kdbench.seed": "" if row.get("seed") is None else str(row["seed"]),
    }
    for name in _ROW_TAGS:
        if row.get(name) is not None:
            tags[f"kdbench.{name}"] = _cut(str(row[name]), _TAG_MAX)
    if row.get("error"):
        tags["kdbench.error"] = _cut(str(row["error"]), _TAG_MAX)
        tags["mlflow.note.content"] = tags["kdbench.error"]  # the run's description
    return tags


def trial_params(row: Mapping[str, Any]) -> dict[str, str]:
    """The trial's hyperparameters, then what it is (which win a clash of names)."""
    params: dict[str, str] = {}
    try:
        hparams = json.loads(row.get("hparams") or "{}")
    except ValueError:
        hparams = {}
    for name, value in (hparams if isinstance(hparams, dict) else {}).items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        params[_name(str(name))] = _cut(text, _PARAM_MAX)
    for name in ("dataset", "teacher", "student", "method", "seed"):
        if row.get(name) is not None:
            params[name] = str(row[name])
    return params


def trial_metrics(
    row: Mapping[str, Any], curve: list[dict[str, Any]]
) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp in ms, step) of every number the row and its curve hold."""
    start = _ms(row.get("started_at"))
    end = _ms(row.get("finished_at")) or start or int(time.time() * 1000)
    out = []
    for name in numeric_columns():
        value = _number(row.get(name))
        if value is not None:
            out.append((name, value, end, 0))
    elapsed = 0.0
    for epoch in curve:
        step = _number(epoch.get("epoch"))
        if step is None:
            continue
        elapsed += _number(epoch.get("seconds")) or 0.0
        at = min(end, int((start or end) + elapsed * 1000))
        for key, raw in epoch.items():
            value = _number(raw)
            if key in ("epoch", "trial_id") or value is None:
                continue
            out.append((CURVE_PREFIX + _name(key), value, at, int(step)))
    return out


@functools.cache
def numeric_columns() -> tuple[str, ...]:
    """The schema's columns that are measurements: each row's metrics."""
    import pyarrow as pa

    from kdbench.results.schema import SCHEMA

    return tuple(
        f.name
        for f in SCHEMA
        if f.name not in _NOT_METRICS
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    )


def _suite_params(yaml_text: str | None) -> dict[str, str]:
    """The resolved suite's settings as params: ``budget.epochs``, ``tuning.trials``, ...;
    lists (datasets, pairs, methods, seeds) as JSON."""
    if not yaml_text:
        return {}
    import yaml

    try:
        suite = yaml.safe_load(yaml_text)
    except yaml.YAMLError:
        return {}
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif prefix and value is not None:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[_name(prefix)] = _cut(text, _PARAM_MAX)

    walk("", suite if isinstance(suite, dict) else {})
    return out


def _row_key(row: Mapping[str, Any]) -> tuple[str, str]:
    """Which of two rows of a trial is newer: the one that finished last (``store.latest``)."""
    return str(row.get("finished_at") or ""), str(row.get("run_id") or "")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _name(text: str) -> str:
    """A param's or metric's name MLflow takes: letters, digits, ``_ . -`` (others ``_``)."""
    name = _KEY.sub("_", text).strip(".") or "_"
    return name[:_NAME_MAX]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(iso: Any) -> int | None:
    if not isinstance(iso, str) or not iso:
        return None
    try:
        when = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return int(when.timestamp() * 1000)


def _short(exc: BaseException) -> str:
    return _cut(one_line(first_line(exc)), 600)


# ----------------------------------------------------------------------------- reaching MLflow


def _import_mlflow() -> Any:
    try:
        import mlflow
        import mlflow.entities
        import mlflow.exceptions
        import mlflow.tracking
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "mlflow":
            raise KdbenchError(f"exporting to MLflow needs mlflow: {INSTALL_HINT}") from None
        why = first_line(exc)  # installed, but broken (a dependency missing or too old)
        raise KdbenchError(f"mlflow cannot be imported ({why}); {INSTALL_HINT}") from None
    return mlflow


def _is_http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def probe(uri: str, timeout: float = _PROBE_TIMEOUT_S) -> None:
    """Reach a tracking server once, without MLflow's retries: any answer will do (its
    credentials are MLflow's to check); none is a one-line KdbenchError."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return  # TLS is MLflow's to settle (MLFLOW_TRACKING_INSECURE_TLS, a CA bundle)
        reason = exc.reason
    except (OSError, ValueError) as exc:  # a timeout, a malformed URL
        reason = exc
    why = _short(reason) if isinstance(reason, BaseException) else one_line(str(reason))
    raise Unreachable(f"MLflow {uri}: cannot reach the tracking server ({why})")


# ----------------------------------------------------------------------------- a run going on

_STOP = object()


class LiveLogger:
    """Logs each trial of a running suite to MLflow as its row is written.

    Made before the run starts: a missing mlflow or a store that cannot be used (an unknown
    scheme, a refused login) stops the run before anything trains; an unreachable server is
    warned of and the run goes on. Rows are logged in a thread of the driver (one
    ``log_batch`` per trial), so a slow server never holds a trial back; the first failure
    is warned of once and logging stops for the rest of the run. ``catch_up`` (the run's end)
    exports the whole directory again, idempotently: whatever was missed goes in then.
    """

    def __init__(
        self, tracking_uri: str, suite: Any, run_id: str, results_dir: str | os.PathLike[str]
    ) -> None:
        self.uri = tracking_uri
        self.record = RunRecord.of_suite(suite, run_id)
        self.layout = Layout(Path(results_dir))
        self.experiment_name = f"kdbench/{suite.name}"
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.failed: str | None = None
        self.logged = 0
        try:
            self.exporter: Exporter | None = Exporter(tracking_uri)
            with self.exporter.errors():
                self.experiment: Experiment | None = self.exporter.experiment(self.experiment_name)
        except Unreachable as exc:  # the run goes on; its end tries again
            self.exporter = self.experiment = None
            self._fail(str(exc))

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            print(
                f"kdbench: warning: {one_line(reason)}; the run goes on without logging to "
                "MLflow, and its end tries to export every row again",
                file=sys.stderr,
            )
        self._stopped.set()

    def trial(self, row: Mapping[str, Any], curve: Iterable[Mapping[str, Any]] = ()) -> None:
        """A row was written (``ResultWriter``'s callback): queue it. Never raises."""
        if self._stopped.is_set() or self.experiment is None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="kdbench-mlflow", daemon=True)
            self._thread.start()
        self._queue.put((dict(row), [dict(e) for e in curve]))

    def _work(self) -> None:
        assert self.experiment is not None
        parent, runs = None, {self.record.run_id}
        while True:
            item = self._queue.get()
            if item is _STOP or self._stopped.is_set():
                return
            try:
                if isinstance(item, tuple) and item[0] == "close":
                    if parent is not None:
                        self.experiment.close_parent(parent, item[1])
                    return
                if parent is None:  # the directory is there now (a URI's mirror: pulled)
                    runs |= directory_runs(self.layout)
                    parent, _ = self.experiment.parent(self.record)
                row, curve = item
                self.experiment.trial(parent, row, curve, runs)
                self.logged += 1
            except Exception as exc:
                self._fail(f"MLflow {self.uri}: logging a trial failed ({_short(exc)})")
                return

    def close(self, error: BaseException | None = None, timeout: float = 60.0) -> None:
        """Wait for the rows queued; with ``error`` (the run failed or was interrupted),
        mark its parent run FAILED or KILLED and wait less."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if error is not None:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self._queue.put(("close", status))
            timeout = min(timeout, 5.0)
        else:
            self._queue.put(_STOP)
        thread.join(timeout)
        self._stopped.set()

    def catch_up(self, shown: str | os.PathLike[str] | None = None) -> ExportSummary | None:
        """The run's end: export the whole directory (what was logged is found again) and mark
        this run's parent FINISHED; a failure is a warning, and the run's result stands.
        ``shown``: the results location as the user gave it (a URI, not its mirror)."""
        self.close()
        try:
            summary = export(self.layout.root, self.uri, finish=self.record.run_id)
        except KdbenchError as exc:
            print(
                f"kdbench: warning: {one_line(str(exc))}; export later with: kdbench export "
                f"{shown or self.layout.root} --mlflow {self.uri}",
                file=sys.stderr,
            )
            return None
        where = ", ".join(f"'{e}'" for e in summary.experiments) or "none (no rows)"
        print(
            f"MLflow {self.uri}, experiment {where}: {_n(self.logged, 'trial')} logged as "
            f"{'they' if self.logged != 1 else 'it'} finished; at the end "
            f"{summary.runs_created} runs created, {summary.runs_existing} already there",
            file=sys.stderr,
        )
        return summary
