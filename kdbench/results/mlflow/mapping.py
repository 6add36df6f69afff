"""A result row as MLflow takes it: a trial's tags, params and metrics, the suite's settings
as params, and MLflow's limits on names, values and times."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from kdbench.errors import first_line, one_line

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
_STATUS = {"ok": "FINISHED", "failed": "FAILED", "pruned": "KILLED"}
_KEY = re.compile(r"[^\w.\-]+")
PARAM_MAX = 6000  # MLflow's limits on a param's and a tag's value
TAG_MAX = 8000
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
            tags[f"kdbench.{name}"] = cut(str(row[name]), TAG_MAX)
    if row.get("error"):
        tags["kdbench.error"] = cut(str(row["error"]), TAG_MAX)
        tags["mlflow.note.content"] = tags["kdbench.error"]  # the run's description
    return tags


def trial_status(row: Mapping[str, Any]) -> str:
    """The trial's run status: FINISHED (ok), FAILED (failed) or KILLED (pruned)."""
    return _STATUS.get(str(row.get("status")), "FINISHED")


def trial_params(row: Mapping[str, Any]) -> dict[str, str]:
    """The trial's hyperparameters, then what it is (which win a clash of names)."""
    params: dict[str, str] = {}
    try:
        hparams = json.loads(row.get("hparams") or "{}")
    except ValueError:
        hparams = {}
    for name, value in (hparams if isinstance(hparams, dict) else {}).items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        params[_name(str(name))] = cut(text, PARAM_MAX)
    for name in ("dataset", "teacher", "student", "method", "seed"):
        if row.get(name) is not None:
            params[name] = str(row[name])
    return params


def trial_metrics(
    row: Mapping[str, Any], curve: list[dict[str, Any]]
) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp in ms, step) of every number the row and its curve hold."""
    start = ms(row.get("started_at"))
    end = ms(row.get("finished_at")) or start or int(time.time() * 1000)
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

    from kdbench.results.schema import SCHEMA  # pyarrow's types: only when exporting

    return tuple(
        f.name
        for f in SCHEMA
        if f.name not in _NOT_METRICS
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    )


def suite_params(yaml_text: str | None) -> dict[str, str]:
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
            out[_name(prefix)] = cut(text, PARAM_MAX)

    walk("", suite if isinstance(suite, dict) else {})
    return out


def row_key(row: Mapping[str, Any]) -> tuple[str, str]:
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


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ms(iso: Any) -> int | None:
    """An ISO time (a row's ``started_at``, ``finished_at``) as MLflow's milliseconds; a
    time without a zone is UTC."""
    if not isinstance(iso, str) or not iso:
        return None
    try:
        when = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return int(when.timestamp() * 1000)


def short(exc: BaseException) -> str:
    """An error in one line, cut short: for the messages and warnings that name it."""
    return cut(one_line(first_line(exc)), 600)
