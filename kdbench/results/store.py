"""Result rows on disk: atomic Parquet files, reading them back, and compaction.

Paths come from ``kdbench.results.layout``. Readers skip names starting with '.' or '_'
(pyarrow's default), so an interrupted write (a '.'-prefixed temporary file) and the '_'
folders are never read as results.

A results directory is shared, so what its files hold is untrusted: a Parquet file that is
not a kdbench result file (another schema, a wrongly typed column, a schema version this
kdbench does not know) is skipped with a warning naming it, and never folded, moved or
deleted.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from kdbench.errors import KdbenchError, choices_hint, first_line
from kdbench.results.files import atomic_file, sweep_temporary
from kdbench.results.layout import COMPACTED, ROW_FOLDERS, TRIALS, Layout
from kdbench.results.remote import is_uri, list_files, open_uri
from kdbench.results.schema import COLUMNS, SCHEMA, SCHEMA_VERSION

REQUIRED = ("schema_version", "trial_id", "phase", "status")
"""The columns every kdbench result file has had, whatever its schema version."""

_RELISTS = 3
"""Reads of a directory that a compaction changes under them before one is taken as it is."""
_PARQUET = ds.ParquetFileFormat()


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


# ----------------------------------------------------------------------------- reading


def _fits(actual: pa.DataType, wanted: pa.DataType) -> bool:
    """Whether a column of type ``actual`` reads as the schema's ``wanted``: the same type, a
    narrower one of its kind (int32 for int64, as older files hold), or integers for floats."""
    if actual == wanted or pa.types.is_null(actual):
        return True
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if pa.types.is_string(wanted):
        kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
        return any(is_kind(actual) for is_kind in kinds)
    if pa.types.is_floating(wanted):
        return pa.types.is_floating(actual) or pa.types.is_integer(actual)
    return pa.types.is_integer(wanted) and pa.types.is_integer(actual)


def _not_ours(fragment: ds.ParquetFileFragment) -> str | None:
    """Why a file, by its footer, is not a kdbench result file; None when it is one."""
    schema = fragment.physical_schema
    problem = _schema_problem(schema)
    if problem is not None:
        return problem
    lo, hi, nulls = _versions(fragment, schema.get_field_index("schema_version"))
    if nulls:
        return "schema_version missing on some rows"
    if lo is not None and (lo < 0 or hi > SCHEMA_VERSION):
        return f"schema_version {hi if hi > SCHEMA_VERSION else lo}, not 0 to {SCHEMA_VERSION}"
    return None


@functools.lru_cache(maxsize=64)  # the files of a directory share a handful of schemas
def _schema_problem(schema: pa.Schema) -> str | None:
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        return f"no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}"
    extra = [c for c in schema.names if c not in COLUMNS]
    if extra:
        more = ", ..." if len(extra) > 5 else ""
        return f"columns kdbench does not write: {', '.join(extra[:5])}{more}"
    if len(set(schema.names)) < len(schema.names):
        return "a column twice"
    for field in schema:
        wanted = SCHEMA.field(field.name).type
        if not _fits(field.type, wanted):
            return f"column {field.name} is {field.type}, kdbench writes {wanted}"
    return None


def _versions(fragment: ds.ParquetFileFragment, column: int) -> tuple[Any, Any, int]:
    """min, max and null count of a file's schema_version: from its footer's statistics, or
    from the column itself where a writer left them out. ``column``: a flat schema's index."""
    md = fragment.metadata
    groups = [md.row_group(i) for i in range(md.num_row_groups)]
    stats = [g.column(column).statistics for g in groups if g.num_rows]
    if all(s is not None and s.has_min_max and s.has_null_count for s in stats):
        if not stats:
            return None, None, 0
        return (
            min(s.min for s in stats),
            max(s.max for s in stats),
            sum(s.null_count for s in stats),
        )
    values = fragment.to_table(columns=["schema_version"]).column(0)
    return pc.min(values).as_py(), pc.max(values).as_py(), values.null_count


_GONE = "gone"


def _verdict(fragment: ds.ParquetFileFragment) -> str | None:
    """None for a kdbench result file; ``_GONE`` for one removed since it was listed (a
    compaction folded it); else why it is skipped. Reads the footer, which the scan reuses."""
    try:
        reason = _not_ours(fragment)
    except FileNotFoundError:
        return _GONE
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable result file ({first_line(exc)})"
    return None if reason is None else f"not a kdbench result file ({reason}); left as it is"


def _skip(path: Path, why: str) -> None:
    # Once per file and reason in a process: a command reads a directory several times (a
    # run: what is finished, the folds, the leaderboard), and pandas resets the registry
    # that would make Python's own filter show a warning once.
    name = str(path) if str(path).isprintable() else repr(str(path))  # names are untrusted too
    message = f"skipping {name}: {why}"
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


_WARNED: set[str] = set()


@dataclass
class _Scan:
    table: pa.Table
    files: list[Path]
    """The files the rows came from: the kdbench result files read."""
    gone: bool = False
    """A file listed was removed before it was read (a compaction moved its rows): list again."""


def _own(
    paths: list[Path], filesystem: pafs.FileSystem | None = None
) -> tuple[list[tuple[Path, ds.ParquetFileFragment]], bool]:
    """The kdbench result files among ``paths``, with their fragments (footers read), and
    whether one was gone; every other file is named in a warning."""
    fs = filesystem or pafs.LocalFileSystem()
    fragments = [_PARQUET.make_fragment(str(p), fs) for p in paths]
    if filesystem is None:  # local footers: threads would only contend for the interpreter
        verdicts = [_verdict(f) for f in fragments]
    else:  # each footer a round trip to the store: many at once, as a scan reads them
        with ThreadPoolExecutor(max(1, min(16, len(fragments)))) as pool:
            verdicts = list(pool.map(_verdict, fragments))
    own, gone = [], False
    for path, fragment, why in zip(paths, fragments, verdicts, strict=True):
        if why is None:
            own.append((path, fragment))
        elif why == _GONE:
            gone = True
        else:
            _skip(path, why)
    return own, gone


def _scan(
    paths: list[Path],
    columns: list[str] | None,
    filter: ds.Expression | None,
    filesystem: pafs.FileSystem | None = None,
) -> _Scan:
    """Read the kdbench result files among ``paths`` in one scan; warn once for each other.

    Each footer is checked first (the scan then reuses it): a file of another schema would be
    cast silently, and one with a wrongly typed column fails the whole scan. Only when the
    scan still fails (a file damaged past its footer, or removed) is each file read alone.
    ``filesystem``: a pyarrow file system the paths are on (a results URI), else the local one.
    """
    empty = SCHEMA.empty_table().select(columns or list(COLUMNS))
    if not paths:
        return _Scan(empty, [])
    own, gone = _own(paths, filesystem)
    if not own:
        return _Scan(empty, [], gone)
    fs = filesystem or pafs.LocalFileSystem()
    dataset = ds.FileSystemDataset([f for _, f in own], SCHEMA, _PARQUET, fs)
    try:
        return _Scan(dataset.to_table(columns=columns, filter=filter), [p for p, _ in own], gone)
    except (OSError, pa.ArrowException):
        pass
    tables, files = [], []
    for path, fragment in own:
        read = _read_alone(fragment, fs, columns, filter)
        if isinstance(read, pa.Table):
            tables.append(read)
            files.append(path)
        elif read == _GONE:
            gone = True
        else:
            _skip(path, read)
    return _Scan(pa.concat_tables([empty, *tables]), files, gone)


def _read_alone(
    fragment: ds.ParquetFileFragment,
    fs: pafs.FileSystem,
    columns: list[str] | None,
    filter: ds.Expression | None,
) -> pa.Table | str:
    """One file's rows, or ``_GONE``, or why it is skipped. A file that fails is opened
    afresh once: a compaction may have replaced it since its footer was read."""
    try:
        return fragment.to_table(schema=SCHEMA, columns=columns, filter=filter)
    except FileNotFoundError:
        return _GONE
    except (OSError, pa.ArrowException):
        pass
    fresh = _PARQUET.make_fragment(fragment.path, fs)
    why = _verdict(fresh)
    if why is not None:
        return why
    try:
        return fresh.to_table(schema=SCHEMA, columns=columns, filter=filter)
    except FileNotFoundError:
        return _GONE
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable result file ({first_line(exc)})"


def read_table(
    results_dir: str | os.PathLike[str],
    columns: list[str] | None = None,
    filter: ds.Expression | None = None,
) -> pa.Table:
    """Every result row of a directory or URI (filtered in pyarrow); files that are not
    kdbench result files, or cannot be read, are skipped with a warning naming them."""
    if is_uri(results_dir):
        return _read_uri(str(results_dir), columns, filter)
    root = Path(results_dir)
    if not root.is_dir():
        raise KdbenchError(f"{root}: no such results directory")
    return _settled(lambda: _scan(result_files(root), columns, filter))


def _settled(read: Callable[[], _Scan]) -> pa.Table:
    """What ``read`` returns once no file vanished under it: a compaction that removes trial
    files after folding them could otherwise hide rows from a read that listed both."""
    for _ in range(_RELISTS):
        scan = read()
        if not scan.gone:
            break
    return scan.table


def _read_uri(uri: str, columns: list[str] | None, filter: ds.Expression | None) -> pa.Table:
    """The rows at a results URI, read where they lie (no copy to this machine)."""
    fs, base = open_uri(uri)

    def read() -> _Scan:
        found = {sub: list_files(fs, base, sub) for sub in ROW_FOLDERS}
        if not any(found.values()) and not list_files(fs, base):
            raise KdbenchError(f"{uri}: no results there")
        paths = [
            Path(f"{base}/{rel}")
            for sub in ROW_FOLDERS
            for rel in sorted(found[sub])
            if rel.endswith(".parquet") and not Path(rel).name.startswith((".", "_"))
        ]
        return _scan(paths, columns, filter, filesystem=fs)

    return _settled(read)


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
        hp = pd.DataFrame([_hparams(h) for h in df["hparams"]], index=df.index)
        df = pd.concat([df, hp.add_prefix("hp_")], axis=1)
    return df


def _hparams(text: object) -> dict[str, Any]:
    """A row's hyperparameters; none for a row whose ``hparams`` is not a JSON object."""
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def finished_trials(results_dir: str | os.PathLike[str]) -> dict[str, str]:
    """trial_id -> status of every row already written."""
    root = Path(results_dir)
    if not root.is_dir():
        return {}
    table = read_table(root, columns=["trial_id", "status"])
    return dict(
        zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist(), strict=True)
    )


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
    read back (reading a file back is the slow part of a fold). A file that is not a kdbench
    result file is skipped with a warning, and stays where it is.

    Order, so that a plain Parquet reader never misses a row: each run's file is rewritten
    atomically with its new rows added (a trial written again replaces its older row), then
    older copies of those rows leave other runs' files, and only then are the folded trial
    files removed. A plain reader (``pandas.read_parquet(DIR)``) that runs between the first
    rewrite and the last removal sees the folded rows twice (and one that listed a trial file
    just before its removal fails to open it); if the compaction is killed in that window the
    rows stand twice until the next compaction (``kdbench compact``, or the end of the next
    run that runs trials). ``load`` keeps one row per trial and lists
    again when a file vanished under it. A temporary file that a killed compaction left in
    ``compacted/`` is removed here (no other writer writes there).

    The caller holds the directory's RunLock, and writes none of ``files`` again until this
    returns.
    """
    root = Path(results_dir)
    layout = Layout(root)
    sweep_temporary([root / COMPACTED])
    files = loose_trials(root) if files is None else files
    wanted = set(files)
    known = {p: t for p, t in (known or {}).items() if p in wanted}
    scan = _scan([p for p in files if p not in known], None, None)
    table, readable = scan.table, scan.files
    if known:
        table = pa.concat_tables([table, *known.values()])
        readable = [*readable, *known]
    if not readable:
        return {}
    new = latest(table.to_pandas())
    new_ids = set(new["trial_id"])
    folded: dict[str, int] = {}
    written: set[Path] = set()
    for run_id, rows in new.groupby("run_id", dropna=False):
        name = str(run_id) if isinstance(run_id, str) else "unknown-run"
        path = _run_file(layout, name)
        old = pq.read_table(path, schema=SCHEMA).to_pandas() if path.exists() else None
        merged = rows if old is None else pd.concat([old[~old["trial_id"].isin(new_ids)], rows])
        _write_frame(merged, path)
        folded[name] = len(rows)
        written.add(path)
    # A row folded into its run's file supersedes an older copy in another run's file.
    for path in _compacted_files(root):
        if path in written:
            continue
        ids = pq.read_table(path, columns=["trial_id"]).column("trial_id").to_pylist()
        if new_ids.intersection(ids):
            old = pq.read_table(path, schema=SCHEMA).to_pandas()
            _write_frame(old[~old["trial_id"].isin(new_ids)], path)
    for path in readable:
        path.unlink(missing_ok=True)
    return folded


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), path)


def _compacted_files(root: Path) -> list[Path]:
    """The kdbench result files in ``compacted/`` (any other file is named in a warning)."""
    paths = [p for p in result_files(root) if p.parent.name == COMPACTED]
    return [p for p, _ in _own(paths)[0]]


def _run_file(layout: Layout, name: str) -> Path:
    """Where a run's rows are folded: its file, or, where a file that is not kdbench's took
    that name, the first free ``<name>-<n>`` (that file is never read, rewritten or removed)."""
    path, n = layout.compacted_file(name), 1
    while path.exists() and not _own([path])[0]:
        n += 1
        path = layout.compacted_file(f"{name}-{n}")
    return path
