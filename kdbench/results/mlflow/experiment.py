"""One MLflow experiment: the parent and child runs kdbench put in it, found by their tags,
and the new ones.

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
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.results.mlflow.client import Exporter
from kdbench.results.mlflow.mapping import (
    TAG_MAX,
    cut,
    ms,
    row_key,
    short,
    suite_params,
    trial_metrics,
    trial_params,
    trial_status,
    trial_tags,
)
from kdbench.results.runs import RunRecord

_PAGE = 1000


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
        """The row it holds, as ``row_key`` says it."""
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

    @classmethod
    def open(cls, exporter: Exporter, name: str) -> Experiment:
        """The experiment of that name, made if it is not there, and what kdbench put in it."""
        client = exporter.client
        with exporter.errors():
            found = client.get_experiment_by_name(name)
            if found is not None and found.lifecycle_stage != "active":
                raise KdbenchError(
                    f"MLflow {exporter.uri}: experiment '{name}' is deleted; restore it "
                    "(mlflow experiments restore) or give another --experiment"
                )
            exp_id = found.experiment_id if found is not None else client.create_experiment(name)
            return cls(exporter, name, exp_id)

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
                tags[f"kdbench.{key}"] = cut(str(value), TAG_MAX)
        run = self.client.create_run(
            self.id,
            start_time=ms(record.started_at),
            tags=tags,
            run_name=f"{record.suite} {record.run_id}",
        )
        run_id = run.info.run_id
        params = suite_params(record.yaml_text)
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
                f"not uploaded as artifacts ({short(exc)})"
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
        keep = next((r for r in done if r.key >= row_key(row)), None)
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
        start, end = ms(row.get("started_at")), ms(row.get("finished_at"))
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
        status = trial_status(row)
        self.client.set_terminated(run_id, status, end_time=end)
        return Known(run_id, status, end, tags)
