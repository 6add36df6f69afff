"""The one schema every result file carries: one row per trial, the columns below.

Written explicitly into every file, so a column that is null in one file and filled in
another reads back as one typed column, with any Parquet reader.
"""

from __future__ import annotations

from typing import Literal, get_args

import pyarrow as pa

SCHEMA_VERSION = 4
"""2: ``best_test_acc`` and ``best_epoch``, and the ``confirm`` phase.
3: ``stage_epochs``, the epochs of a method's own stage (ab, ft, fsp).
4: ``skipped_images``, files of a streamed data set that could not be decoded."""

_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("schema_version", pa.int32(), ""),
    ("run_id", pa.string(), "the execution of the suite that wrote the row"),
    ("suite", pa.string(), ""),
    ("trial_id", pa.string(), "unique per row, derived from the spec, phase and seed"),
    ("phase", pa.string(), "teacher | expert | tune | confirm | final"),
    ("status", pa.string(), "ok | failed | pruned"),
    ("dataset", pa.string(), ""),
    ("teacher", pa.string(), ""),
    ("student", pa.string(), "null on teacher rows"),
    ("method", pa.string(), "'teacher' on teacher rows"),
    ("seed", pa.int64(), ""),
    ("hparams", pa.string(), "JSON object of every hyperparameter"),
    ("val_acc", pa.float64(), "top-1 on the validation split, in [0, 1]"),
    ("test_acc", pa.float64(), "top-1 on the test split (final and teacher rows)"),
    ("test_top5", pa.float64(), "top-5 on the test split (final and teacher rows)"),
    (
        "best_test_acc",
        pa.float64(),
        "final rows: the best test top-1 over the scored epochs, for reporting only",
    ),
    ("best_epoch", pa.int64(), "final rows: the epoch of best_test_acc (the first, on a tie)"),
    ("teacher_test_acc", pa.float64(), "the teacher's test accuracy (final rows)"),
    ("agreement", pa.float64(), "top-1 agreement of student and teacher on test (final rows)"),
    ("student_params", pa.int64(), "parameters of the student alone"),
    ("student_macs", pa.int64(), "multiply-accumulates per image of the student alone"),
    ("images_seen", pa.int64(), "training images the student saw"),
    ("epochs", pa.int64(), ""),
    (
        "stage_epochs",
        pa.int64(),
        "epochs of the method's own stage before training (ab, ft, fsp: pre-training the "
        "connector or paraphraser); 0 for none",
    ),
    ("epoch_reported", pa.int64(), "the epoch whose accuracies the row gives (the last)"),
    ("train_seconds", pa.float64(), "wall time of the trial's training"),
    ("cpus", pa.float64(), "CPUs the trial held"),
    ("gpus", pa.float64(), "GPUs the trial held"),
    ("peak_mem_mb", pa.float64(), "peak memory of the trial"),
    (
        "skipped_images",
        pa.int64(),
        "training files of a streamed data set that could not be decoded, left out",
    ),
    ("artifact", pa.string(), "path, relative to the results directory, of what the trial saved"),
    ("error", pa.string(), "the reason, when status is failed"),
    ("kdbench_version", pa.string(), ""),
    ("torch_version", pa.string(), ""),
    ("git_sha", pa.string(), ""),
    ("node_id", pa.string(), ""),
    ("host", pa.string(), ""),
    ("device", pa.string(), ""),
    ("started_at", pa.string(), "ISO 8601, UTC"),
    ("finished_at", pa.string(), "ISO 8601, UTC"),
]

SCHEMA = pa.schema(
    [pa.field(name, typ, metadata={"doc": doc} if doc else None) for name, typ, doc in _FIELDS],
    metadata={"kdbench.schema_version": str(SCHEMA_VERSION)},
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)

Phase = Literal["teacher", "expert", "tune", "confirm", "final"]
"""A row's ``phase``: a teacher, an expert trajectory (dd_mtt's), a tuning trial, a tuning
setting rerun at a further seed, or a final trial scored on test."""
PHASES: tuple[Phase, ...] = get_args(Phase)
TUNING_PHASES: tuple[Phase, ...] = ("tune", "confirm")
"""The phases scored on `val` alone, inside a study."""
Status = Literal["ok", "failed", "pruned"]
"""A row's ``status``: trained to the end, failed with its ``error``, or stopped by the pruner."""
STATUSES: tuple[Status, ...] = get_args(Status)
