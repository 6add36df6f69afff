"""Result rows on disk: atomic Parquet files, reading them back, and compaction.

Paths come from ``kdbench.results.layout``. Readers skip names starting with '.' or '_'
(pyarrow's default), so an interrupted write (a '.'-prefixed temporary file) and the '_'
folders are never read as results.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kdbench.errors import KdbenchError, choices_hint
from kdbench.results.layout import COMPACTED, ROW_FOLDERS, TRIALS, Layout
from kdbench.results.schema import COLUMNS, SCHEMA, SCHEMA_VERSION


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


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file that readers see whole or not at all: written to a '.'-prefixed temporary file
    beside ``path`` (never read as a result), fsynced, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(table: pa.Table, path: Path) -> Path:
    """A Parquet file, written atomically."""
    with atomic_file(path) as f:
        pq.write_table(table, f)
    return path


def write_trial(results_dir: str | os.PathLike[str], row: Mapping[str, Any]) -> Path:
    return write_trial_table(results_dir, to_table([row]))


def write_trial_table(results_dir: str | os.PathLike[str], table: pa.Table) -> Path:
    """A trial's row, already made a table (one row of the schema), as its file in trials/."""
    (trial_id,) = table.column("trial_id").to_pylist()
    return write_atomic(table, Layout.of(results_dir).trial_file(trial_id))


def write_json_atomic(obj: Any, path: Path) -> None:
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)


def result_files(results_dir: str | os.PathLike[str]) -> list[Path]:
    files: list[Path] = []
    for folder in Layout.of(results_dir).row_folders():
        if folder.is_dir():
            files.extend(
                sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
            )
    return files


def _scan(
    paths: list[Path],
    columns: list[str] | None,
    filter: ds.Expression | None,
    why: str,
    filesystem: Any = None,
) -> tuple[pa.Table, list[Path]]:
    """Read many result files in one scan; on a bad file, find it, warn once, read the rest.

    Returns the table and the files it came from. The fast path opens every file once; only
    when the scan fails is each footer checked, to name the unreadable file. ``filesystem``:
    a pyarrow file system the paths are on (a results URI), else the local one.
    """
    empty = SCHEMA.empty_table().select(columns or list(COLUMNS))
    if not paths:
        return empty, []

    def scan(files: list[Path]) -> pa.Table:
        return ds.dataset(
            [str(p) for p in files], format="parquet", schema=SCHEMA, filesystem=filesystem
        ).to_table(columns=columns, filter=filter)

    try:
        return scan(paths), paths
    except (OSError, pa.ArrowException):
        pass
    good = []
    for path in paths:
        try:
            pq.read_metadata(str(path), filesystem=filesystem)
            good.append(path)
        except Exception as exc:
            warnings.warn(f"{why} unreadable result file {path}: {exc}", stacklevel=3)
    if not good:
        return empty, []
    return scan(good), good


def read_table(
    results_dir: str | os.PathLike[str],
    columns: list[str] | None = None,
    filter: ds.Expression | None = None,
) -> pa.Table:
    """Every result row of a directory or URI (filtered in pyarrow); unreadable files are skipped."""
    from kdbench.results.remote import is_uri

    if is_uri(results_dir):
        return _read_uri(str(results_dir), columns, filter)
    root = Path(results_dir)
    if not root.is_dir():
        raise KdbenchError(f"{root}: no such results directory")
    return _scan(result_files(root), columns, filter, "skipping")[0]


def _read_uri(uri: str, columns: list[str] | None, filter: ds.Expression | None) -> pa.Table:
    """The rows at a results URI, read where they lie (no copy to this machine)."""
    from kdbench.results.remote import list_files, open_uri

    fs, base = open_uri(uri)
    found = {sub: list_files(fs, base, sub) for sub in ROW_FOLDERS}
    if not any(found.values()) and not list_files(fs, base):
        raise KdbenchError(f"{uri}: no results there")
    paths = [
        Path(f"{base}/{rel}")
        for sub in ROW_FOLDERS
        for rel in sorted(found[sub])
        if rel.endswith(".parquet") and not Path(rel).name.startswith((".", "_"))
    ]
    return _scan(paths, columns, filter, "skipping", filesystem=fs)[0]


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per trial_id: the one that finished last.

    A trial's row can stand twice for a moment: in ``trials/`` and in ``compacted/`` while a
    compaction runs, or rewritten by ``--retry-failed`` after an earlier run was compacted.
    """
    if frame.empty or frame["trial_id"].is_unique:
        return frame
    order = frame["finished_at"].fillna("").to_numpy().argsort(kind="stable")
    return frame.iloc[order].drop_duplicates("trial_id", keep="last").sort_index()


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
    df = latest(read_table(results_dir, filter=expr).to_pandas()).reset_index(drop=True)
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


class RunLock:
    """One driver per results directory: a kernel lock that dies with its process.

    Held for the whole run; a second ``kdbench run`` on the same directory is refused rather
    than interleaving writes. A driver killed with SIGKILL releases it with its life.
    """

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.path = Layout.of(results_dir).lock()

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise KdbenchError(
                f"{self.path.parent.parent} is being written by another kdbench run (pid {holder}); "
                "wait for it to finish or give another --results directory"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def loose_trials(results_dir: str | os.PathLike[str]) -> list[Path]:
    """The per-trial files that ``compact`` would fold now."""
    return [p for p in result_files(results_dir) if p.parent.name == TRIALS]


def compact(
    results_dir: str | os.PathLike[str],
    files: list[Path] | None = None,
    *,
    known: Mapping[Path, pa.Table] | None = None,
) -> dict[str, int]:
    """Fold ``trials/*.parquet`` (or those of them in ``files``) into
    ``compacted/<run_id>.parquet`` (rows per run returned). ``known``: what some of the files
    hold, as the writer still has it (the driver, for its own run's files): those are not
    read back (reading a file back is the slow part of a fold).

    Each run's file is rewritten atomically with its new rows added (a trial written again
    replaces its older row, wherever that stood); only then are the folded trial files
    removed. A reader in between sees a row twice, and ``load`` keeps one. The caller holds
    the directory's RunLock, and writes none of ``files`` again until this returns.
    """
    root = Path(results_dir)
    files = loose_trials(root) if files is None else files
    wanted = set(files)
    known = {p: t for p, t in (known or {}).items() if p in wanted}
    table, readable = _scan([p for p in files if p not in known], None, None, "not compacting")
    if known:
        table = pa.concat_tables([table, *known.values()])
        readable = [*readable, *known]
    if not readable:
        return {}
    new = latest(table.to_pandas())
    new_ids = set(new["trial_id"])
    folded: dict[str, int] = {}
    for run_id, rows in new.groupby("run_id", dropna=False):
        name = str(run_id) if isinstance(run_id, str) else "unknown-run"
        path = Layout(root).compacted_file(name)
        old = pq.read_table(path, schema=SCHEMA).to_pandas() if path.exists() else None
        merged = rows if old is None else pd.concat([old[~old["trial_id"].isin(new_ids)], rows])
        write_atomic(pa.Table.from_pandas(merged, schema=SCHEMA, preserve_index=False), path)
        folded[name] = len(rows)
    # A row folded into its run's file supersedes an older copy in another run's file.
    for path in sorted((root / COMPACTED).glob("*.parquet")):
        if path.stem in folded:
            continue
        ids = pq.read_table(path, columns=["trial_id"]).column("trial_id").to_pylist()
        if new_ids.intersection(ids):
            old = pq.read_table(path, schema=SCHEMA).to_pandas()
            write_atomic(
                pa.Table.from_pandas(
                    old[~old["trial_id"].isin(new_ids)], schema=SCHEMA, preserve_index=False
                ),
                path,
            )
    for path in readable:
        path.unlink(missing_ok=True)
    return folded
