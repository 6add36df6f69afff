"""The results directory: one typed schema, atomic writes, and reading back with and without kdbench."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from kdbench.errors import KdbenchError
from kdbench.results import COLUMNS, SCHEMA, load, store
from kdbench.results.schema import SCHEMA_VERSION


def row(trial_id: str, **over):
    base = {
        "run_id": "r1",
        "suite": "s",
        "trial_id": trial_id,
        "phase": "final",
        "status": "ok",
        "dataset": "digits",
        "teacher": "cnn_wide",
        "student": "cnn_tiny",
        "method": "kd",
        "seed": 0,
        "hparams": json.dumps({"T": 4.0, "alpha": 0.9}),
        "val_acc": 0.9,
        "test_acc": 0.91,
        "test_top5": 0.99,
        "teacher_test_acc": 0.98,
        "agreement": 0.93,
        "student_params": 1030,
        "student_macs": 9296,
        "images_seen": 32340,
        "epochs": 30,
        "epoch_reported": 30,
        "train_seconds": 2.5,
        "cpus": 1.0,
        "gpus": 0.0,
        "peak_mem_mb": 800.0,
        "kdbench_version": "0.1.0",
        "torch_version": "2.14.0",
    }
    base.update(over)
    return base


def test_plain_pandas_reads_exactly_the_rows_with_typed_columns(tmp_path):
    # The teacher row has null student/test columns; the failed row has nulls almost everywhere.
    store.write_trial(tmp_path, row("a"))
    store.write_trial(
        tmp_path,
        row(
            "b",
            phase="teacher",
            method="teacher",
            student=None,
            teacher_test_acc=None,
            agreement=None,
        ),
    )
    store.write_trial(
        tmp_path,
        row(
            "c",
            status="failed",
            error="TrialDiverged: loss became nan",
            val_acc=None,
            test_acc=None,
            test_top5=None,
            student_params=None,
            student_macs=None,
            images_seen=None,
            agreement=None,
        ),
    )
    (tmp_path / "_runs" / "x").mkdir(parents=True)
    (tmp_path / "_runs" / "x" / "suite.yaml").write_text("name: s\n")
    (tmp_path / "_cache").mkdir()
    (tmp_path / "_cache" / "t.pt").write_bytes(b"\x00" * 10)

    df = pd.read_parquet(tmp_path)  # no kdbench involved
    assert sorted(df["trial_id"]) == ["a", "b", "c"]
    assert list(df.columns) == list(COLUMNS)
    assert df["test_acc"].dtype == "float64"
    assert str(df["student_params"].dtype) in ("Int64", "int64[pyarrow]", "float64")
    assert df.loc[df.trial_id == "c", "test_acc"].isna().all()
    assert df.loc[df.trial_id == "c", "error"].item().startswith("TrialDiverged")
    assert df["schema_version"].eq(SCHEMA_VERSION).all()
    # Every file carries the one schema, null columns typed rather than 'null'.
    for path in (tmp_path / "trials").glob("*.parquet"):
        assert pq.read_schema(path).equals(SCHEMA, check_metadata=False)


def test_an_interrupted_write_leaves_nothing_readable_behind(tmp_path, monkeypatch):
    store.write_trial(tmp_path, row("a"))

    def crash(table, where, **kw):
        where.write(b"PAR1 half a file")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(store.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_trial(tmp_path, row("b"))
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == ["a.parquet"]
    assert list(pd.read_parquet(tmp_path)["trial_id"]) == ["a"]


def test_a_temporary_file_left_by_a_killed_process_is_not_read(tmp_path):
    store.write_trial(tmp_path, row("a"))
    (tmp_path / "trials" / ".b.parquet.1234.tmp").write_bytes(b"PAR1 truncated")
    assert list(pd.read_parquet(tmp_path)["trial_id"]) == ["a"]
    assert list(load(tmp_path)["trial_id"]) == ["a"]


def test_rewriting_a_trial_replaces_its_row(tmp_path):
    store.write_trial(tmp_path, row("a", status="failed", error="x"))
    store.write_trial(tmp_path, row("a", status="ok"))
    assert store.finished_trials(tmp_path) == {"a": "ok"}


def test_load_filters_and_expands_hparams(tmp_path):
    store.write_trial(tmp_path, row("a", method="kd", seed=0))
    store.write_trial(
        tmp_path, row("b", method="kd", seed=1, hparams=json.dumps({"T": 8.0, "alpha": 0.5}))
    )
    store.write_trial(tmp_path, row("c", method="scratch", hparams="{}"))
    store.write_trial(tmp_path, row("d", method="kd", dataset="synthetic"))
    df = load(tmp_path, dataset="digits", method="kd")
    assert sorted(df["trial_id"]) == ["a", "b"]
    assert sorted(df["hp_T"]) == [4.0, 8.0]
    assert sorted(load(tmp_path, method=["scratch", "kd"], seed=0)["trial_id"]) == ["a", "c", "d"]
    with pytest.raises(KdbenchError, match=r"unknown column 'metod'.*did you mean 'method'"):
        load(tmp_path, metod="kd")


def test_unreadable_file_is_skipped_with_a_warning_naming_it(tmp_path):
    store.write_trial(tmp_path, row("a"))
    (tmp_path / "trials" / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.warns(UserWarning, match="broken.parquet"):
        df = load(tmp_path)
    assert list(df["trial_id"]) == ["a"]


def test_a_row_with_a_column_outside_the_schema_is_refused(tmp_path):
    with pytest.raises(ValueError, match="outside the schema"):
        store.write_trial(tmp_path, row("a", accuracy=0.5))


def test_compaction_folds_trials_into_one_file_per_run_and_loses_nothing(tmp_path):
    for i in range(5):
        store.write_trial(
            tmp_path, row(f"a{i}", run_id="r1", seed=i, finished_at=f"2026-01-01T00:0{i}")
        )
    for i in range(3):
        store.write_trial(
            tmp_path, row(f"b{i}", run_id="r2", seed=i, finished_at=f"2026-01-02T00:0{i}")
        )
    before = pd.read_parquet(tmp_path).sort_values("trial_id").reset_index(drop=True)
    assert store.compact(tmp_path) == {"r1": 5, "r2": 3}
    assert not list((tmp_path / "trials").glob("*.parquet"))
    assert sorted(p.name for p in (tmp_path / "compacted").iterdir()) == [
        "r1.parquet",
        "r2.parquet",
    ]
    after = pd.read_parquet(tmp_path).sort_values("trial_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    # more rows of a compacted run, and a failed trial retried by a later run
    store.write_trial(tmp_path, row("a5", run_id="r1", finished_at="2026-01-01T00:09"))
    store.write_trial(tmp_path, row("b0", run_id="r3", status="ok", finished_at="2026-01-03T00:00"))
    mid = load(tmp_path)  # both copies of b0 exist now: load keeps the newer
    assert len(mid) == 9 and mid.set_index("trial_id").loc["b0", "run_id"] == "r3"
    store.compact(tmp_path)
    raw = pd.read_parquet(tmp_path)
    assert raw["trial_id"].is_unique and len(raw) == 9  # the old b0 left r2's file
    assert raw.set_index("trial_id").loc["b0", "run_id"] == "r3"


def test_files_written_by_an_older_schema_still_load(tmp_path):
    import pyarrow as pa

    old = pa.table(
        {
            "schema_version": pa.array([0], pa.int32()),
            "trial_id": ["old"],
            "run_id": ["r0"],
            "phase": ["final"],
            "status": ["ok"],
            "dataset": ["digits"],
            "teacher": ["cnn_wide"],
            "student": ["cnn_tiny"],
            "method": ["kd"],
            "seed": pa.array([3], pa.int32()),
            "hparams": ['{"T": 2.0}'],
            "test_acc": [0.9],
        }
    )
    (tmp_path / "trials").mkdir()
    pq.write_table(old, tmp_path / "trials" / "old.parquet")
    store.write_trial(tmp_path, row("new"))
    df = load(tmp_path).set_index("trial_id")
    assert df.loc["old", "seed"] == 3 and df["seed"].dtype.kind == "i"
    assert pd.isna(df.loc["old", "agreement"]) and df.loc["old", "hp_T"] == 2.0
    assert df.loc["new", "schema_version"] == SCHEMA_VERSION
    assert pd.isna(df.loc["old", "best_test_acc"]) and pd.isna(df.loc["old", "best_epoch"])


def test_loading_while_a_run_writes_sees_whole_rows_only(tmp_path):
    import threading

    stop = threading.Event()

    def writer():
        for i in range(150):
            store.write_trial(tmp_path, row(f"w{i:03d}", seed=i))
        stop.set()

    store.write_trial(tmp_path, row("first"))
    t = threading.Thread(target=writer)
    t.start()
    counts = []
    while not stop.is_set():
        df = load(tmp_path)
        assert df["trial_id"].is_unique and df["test_acc"].notna().all()
        counts.append(len(df))
    t.join()
    assert counts == sorted(counts) and len(load(tmp_path)) == 151
