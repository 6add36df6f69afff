"""The results directory: atomic per-trial Parquet files, and reading them back.

    DIR/trials/<trial_id>.parquet     one file per trial (temp file + rename)
    DIR/compacted/<run_id>.parquet    after `kdbench compact`
    DIR/_studies, _cache, _artifacts  everything that is not a result row
    DIR/_runs/<run_id>/               resolved suite + hash, package versions, per-epoch curves

Readers skip names starting with '.' or '_' (pyarrow's default), so an interrupted write (a
'.'-prefixed temporary file) and the '_' folders are never read as results.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kdbench.errors import KdbenchError, choices_hint
from kdbench.results.schema import COLUMNS, SCHEMA, SCHEMA_VERSION

TRIALS = "trials"
COMPACTED = "compacted"


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) -> a table of the schema; a key not in the schema is a programming error."""
    rows = list(rows)
    for row in rows:
        extra = set(row) - set(COLUMNS)
        if extra:
            raise ValueError(f"result row has columns outside the schema: {sorted(extra)}")
    full = [
        {
            "schema_version": SCHEMA_VERSION,
            **{c: row.get(c) for c in COLUMNS if c != "schema_version"},
        }
        for row in rows
    ]
    return pa.Table.from_pylist(full, schema=SCHEMA)


def write_atomic(table: pa.Table, path: Path) -> Path:
    """Write a Parquet file so that readers see all of it or nothing: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_trial(results_dir: str | os.PathLike[str], row: Mapping[str, Any]) -> Path:
    return write_atomic(to_table([row]), Path(results_dir) / TRIALS / f"{row['trial_id']}.parquet")


def write_json_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def result_files(results_dir: str | os.PathLike[str]) -> list[Path]:
    root = Path(results_dir)
    files: list[Path] = []
    for sub in (TRIALS, COMPACTED):
        folder = root / sub
        if folder.is_dir():
            files.extend(
                sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
            )
    return files


def _dataset(results_dir: Path) -> ds.Dataset | None:
    """The readable result files as one dataset; an unreadable file is skipped with a warning."""
    good: list[str] = []
    for path in result_files(results_dir):
        try:
            pq.read_metadata(path)
        except Exception as exc:
            warnings.warn(f"skipping unreadable result file {path}: {exc}", stacklevel=3)
            continue
        good.append(str(path))
    if not good:
        return None
    return ds.dataset(good, format="parquet", schema=SCHEMA)


def read_table(
    results_dir: str | os.PathLike[str],
    columns: list[str] | None = None,
    filter: ds.Expression | None = None,
) -> pa.Table:
    root = Path(results_dir)
    if not root.is_dir():
        raise KdbenchError(f"{root}: no such results directory")
    dataset = _dataset(root)
    if dataset is None:
        return SCHEMA.empty_table().select(columns or list(COLUMNS))
    return dataset.to_table(columns=columns, filter=filter)


def load(
    results_dir: str | os.PathLike[str], *, expand_hparams: bool = True, **filters: Any
) -> pd.DataFrame:
    """The result rows of a directory as a DataFrame, filtered in pyarrow before pandas sees them.

    ``load(DIR, dataset="digits", method=["kd", "scratch"], phase="final")``: a value keeps rows
    equal to it, a list or tuple keeps rows equal to any of them. With ``expand_hparams``, each
    hyperparameter also gets its own ``hp_<name>`` column.
    """
    expr = None
    for column, value in filters.items():
        if column not in COLUMNS:
            raise KdbenchError(
                f"load(): unknown column '{column}'; {choices_hint(column, COLUMNS)}"
            )
        term = (
            ds.field(column).isin(list(value))
            if isinstance(value, (list, tuple, set))
            else ds.field(column) == value
        )
        expr = term if expr is None else expr & term
    df = read_table(results_dir, filter=expr).to_pandas()
    if expand_hparams and len(df):
        hp = pd.DataFrame([json.loads(h) if h else {} for h in df["hparams"]], index=df.index)
        df = pd.concat([df, hp.add_prefix("hp_")], axis=1)
    return df


def finished_trials(results_dir: str | os.PathLike[str]) -> dict[str, str]:
    """trial_id -> status of every row already written."""
    root = Path(results_dir)
    if not root.is_dir():
        return {}
    table = read_table(root, columns=["trial_id", "status"])
    return dict(
        zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist(), strict=True)
    )
