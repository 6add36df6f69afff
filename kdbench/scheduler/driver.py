"""The driver: plans a suite, runs what is not finished as Ray tasks, writes every row.

Workers write nothing: the data set and each teacher's weights go to them by Ray reference,
and their rows, curves and weights come back to the driver, which alone touches the results
directory. So a cluster needs no storage shared between the driver and the workers. Results
at a URI are written through a local mirror (``kdbench.results.remote``).
"""

from __future__ import annotations

import io
import math
import secrets
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import torch
import yaml

from kdbench import provenance
from kdbench.data import dataset_info
from kdbench.errors import KdbenchError
from kdbench.plan import (
    Plan,
    StudyPlan,
    TrialSpec,
    expand,
    final_spec,
    resolve_hparams,
    tune_spec,
)
from kdbench.results import store
from kdbench.results.remote import Mirror, is_uri
from kdbench.results.store import RUNS, RunLock
from kdbench.scheduler.progress import Progress
from kdbench.suite import Suite
from kdbench.training.trial import (
    RunInfo,
    TrialOutcome,
    describe_error,
    failed_row,
    synthetic_artifact,
)
from kdbench.tuning.space import contains
from kdbench.tuning.studies import StudyBook, StudySpec

CACHE = "_cache"
COMPACT_EVERY = 500
"""During a long run, fold the per-trial files into the run's file after this many rows."""


@dataclass
class RunSummary:
    run_id: str
    results_dir: Path
    planned: int
    skipped: int
    ran: int = 0
    failed: int = 0
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def default_results_dir(suite: Suite) -> Path:
    return Path("results") / suite.name


def teacher_cache_path(results_dir: Path, teacher_id: str) -> Path:
    return results_dir / CACHE / "teachers" / f"{teacher_id}.pt"


def record_run(results_dir: Path, run_id: str, suite: Suite) -> Path:
    """_runs/<run_id>/: the resolved suite, its hash, and every installed package's version."""
    run_dir = results_dir / RUNS / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(suite.to_dict(), sort_keys=False))
    (run_dir / "suite.sha256").write_text(suite.sha256() + "\n")
    store.write_json_atomic(
        {
            "source": suite.source,
            "git_sha": provenance.git_sha(),
            "started_at": provenance.now(),
            "host": provenance.host(),
            "packages": provenance.package_versions(),
        },
        run_dir / "run.json",
    )
    return run_dir


def write_curve(run_dir: Path, trial_id: str, curve: list[dict[str, Any]]) -> list[Path]:
    if not curve:
        return []
    table = pa.Table.from_pandas(
        pd.DataFrame(curve).assign(trial_id=trial_id), preserve_index=False
    )
    return [store.write_atomic(table, run_dir / "curves" / f"{trial_id}.parquet")]


def read_checkpoint(path: str) -> bytes:
    """A user's teacher checkpoint, loaded safely (weights only) and normalised to a state dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KdbenchError(
            f"{path}: not a loadable weights-only checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KdbenchError(f"{path}: expected a state dict (parameter name -> tensor)")
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@dataclass
class Item:
    """A trial ready to submit; ``study`` names the study a tuning trial belongs to."""

    spec: TrialSpec
    study: str | None = None


@dataclass
class Work:
    queue: deque[Item]
    active: list[str]
    """Studies that still ask or have trials running."""
    expected: int
    """Trials this run expects to finish (an upper bound: a study may stop early on time)."""


class _Compactor:
    """Folds the loose trial files in a thread while the driver goes on (500 files took
    0.57 s here: longer than the trials in flight last at 0.2 s each, so slots idled)."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir
        self._thread: threading.Thread | None = None
        self._names: set[str] = set()
        self._error: BaseException | None = None

    def start(self) -> None:
        self.wait()
        files = store.loose_trials(self.results_dir)
        self._names = {p.name for p in files}
        self._thread = threading.Thread(
            target=self._compact, args=(files,), name="kdbench-compact", daemon=True
        )
        self._thread.start()

    def _compact(self, files: list[Path]) -> None:
        try:
            store.compact(self.results_dir, files)
        except BaseException as exc:  # raised in the driver's thread, by ``wait``
            self._error = exc

    def folding(self, trial_id: str) -> bool:
        """Whether the running compaction folds (and will delete) this trial's file."""
        return self._thread is not None and f"{trial_id}.parquet" in self._names

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


class Driver:
    def __init__(
        self,
        plan: Plan,
        results_dir: Path,
        *,
        retry_failed: bool = False,
        progress: Progress | None = None,
        live: bool | None = None,
        mirror: Mirror | None = None,
    ) -> None:
        self.plan = plan
        self.mirror = mirror
        """When the results live at a URI: ``results_dir`` is its local mirror."""
        self.suite = plan.suite
        self.results_dir = results_dir
        self.retry_failed = retry_failed
        self.live = live
        self.progress = progress
        self.run_id = new_run_id()
        self.info = RunInfo(run_id=self.run_id, suite=self.suite.name, git_sha=provenance.git_sha())
        self.studies = {s.name: s for s in plan.studies}
        self.finished: dict[str, str] = {}
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ planning

    def pending(self, spec: TrialSpec) -> bool:
        status = self.finished.get(spec.trial_id)
        return status is None or (self.retry_failed and status == "failed")

    def study_specs(self) -> list[StudySpec]:
        t = self.suite.tuning
        return [
            StudySpec(
                s.name,
                s.space,
                s.budget,
                self.suite.budget.epochs,
                t.timeout_s,
                t,
                start=start_point(s),
                n_val=dataset_info(s.cell.dataset, self.suite.data.root).split_sizes(
                    self.suite.data.val_fraction
                )[1],
            )
            for s in self.plan.studies
        ]

    def book_args(self) -> tuple[Any, ...]:
        """StudyBook's arguments, for a local book or the study actor."""
        t = self.suite.tuning
        return (
            str(self.results_dir),
            t.storage,
            self.study_specs(),
            t.total_trials,
            t.total_timeout_s,
        )

    def finals_of(self, name: str, book: Any) -> list[TrialSpec]:
        """A finished study's final trials: its best hyperparameters, every seed."""
        study = self.studies[name]
        best = book.best(name)
        if best is None and name not in self._warned:
            self._warned.add(name)
            print(
                f"kdbench: no tuning trial of {study.cell.key} completed; its finals use the "
                "defaults",
                file=sys.stderr,
            )
        hp = resolve_hparams(study.cell.method, best[0] if best else None)
        return [
            final_spec(self.suite, study.cell, study.teacher, seed, hp) for seed in self.suite.seeds
        ]

    def prepare(self, book: Any) -> Work:
        """What is left: unfinished teachers and finals, interrupted and new tuning trials."""
        self.finished = store.finished_trials(self.results_dir)
        finals = [Item(s) for s in self.plan.finals if self.pending(s)]
        tune_rows: dict[str, tuple[str, float | None, int | None]] = {}
        if self.plan.studies:
            rows = store.read_table(
                self.results_dir,
                columns=["trial_id", "status", "val_acc", "epoch_reported"],
                filter=store.ds.field("phase") == "tune",
            ).to_pylist()
            tune_rows = {
                r["trial_id"]: (r["status"], r["val_acc"], r["epoch_reported"]) for r in rows
            }
        active, expected = [], 0
        for name, study in self.studies.items():
            for number, params in book.interrupted(name):
                spec = tune_spec(
                    self.suite,
                    study.cell,
                    study.teacher,
                    number,
                    resolve_hparams(study.cell.method, params),
                )
                if spec.trial_id in tune_rows:  # its row was written before the driver died
                    book.tell(name, number, *tune_rows[spec.trial_id])
                else:
                    finals.append(Item(spec, name))
                    expected += 1
            if book.done(name):
                finals += [Item(s) for s in self.finals_of(name, book) if self.pending(s)]
            else:
                active.append(name)
                done, running = book.counts(name)
                expected += max(study.budget - done - running, 0) + len(self.suite.seeds)
        wanted = {i.spec.teacher_id for i in finals} | {
            self.studies[n].teacher.trial_id for n in active
        }
        teachers = [
            Item(t)
            for t in self.plan.teachers
            if self.pending(t)
            or (
                t.trial_id in wanted
                and self.finished.get(t.trial_id) == "ok"
                and not teacher_cache_path(self.results_dir, t.trial_id).exists()
            )
        ]
        queue = deque(teachers + finals)
        return Work(queue=queue, active=active, expected=expected + len(queue))

    # ------------------------------------------------------------------ running

    def run(self, address: str | None = None) -> RunSummary:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(self.results_dir):
            if self.mirror is not None:
                self.mirror.pull()
            # The study book lives in the driver: asking, telling and choosing are local calls
            # (the sampler runs here), and a finished run needs no Ray at all.
            book = StudyBook(*self.book_args()) if self.plan.studies else None
            work = self.prepare(book)
            summary = RunSummary(
                run_id=self.run_id, results_dir=self.results_dir, planned=work.expected, skipped=0
            )
            if not work.queue and not work.active:
                summary.skipped = len(self.finished)
                return summary
            import ray

            from kdbench.scheduler.cluster import check_feasible, cluster_slots, init_ray

            started_ray = init_ray(address)
            try:
                check_feasible(self.suite.resources)
                slots = cluster_slots(self.suite.resources)
                summary.skipped = len(self.finished)
                self._execute(work, book, summary, slots)
                store.compact(self.results_dir)  # one file per run; the lock is still held
            finally:
                if self.mirror is not None:
                    self.mirror.sync()  # also after an error: what was written goes up
                if started_ray:
                    ray.shutdown()
        return summary

    def _execute(
        self, work: Work, book: StudyBook | None, summary: RunSummary, slots: float
    ) -> None:
        import ray

        from kdbench.data import load_dataset
        from kdbench.methods import method_class
        from kdbench.scheduler.tasks import options, student_task, teacher_task
        from kdbench.tuning.broker import Reporter, start_broker

        t0 = time.monotonic()
        run_dir = record_run(self.results_dir, self.run_id, self.suite)
        self._publish(*sorted(p for p in run_dir.iterdir() if p.is_file()))
        progress = self.progress or Progress(work.expected, live=self.live, slots=slots)
        data_refs: dict[str, Any] = {}
        weights: dict[str, Any] = {}
        teachers_running: set[str] = set()
        inflight: dict[Any, Item] = {}
        waiting: dict[str, int] = {}
        """Trials in flight that wait for a running teacher's weights, per teacher: they hold
        no slot, so they do not count against ``cap``."""
        # A spare in flight per slot: a slot whose trial ends takes the next at once, even when
        # several end together, or while the driver is busy writing rows.
        cap = 2 * math.ceil(slots)
        turn = 0
        loose = 0
        broker: Any = None
        """The study actor trials report their epochs to, started with the first trial that
        reports (none in a suite of one-epoch trials or without tuning)."""

        def data(name: str) -> Any:
            if name not in data_refs:
                data_refs[name] = ray.put(
                    load_dataset(
                        name, root=self.suite.data.root, val_fraction=self.suite.data.val_fraction
                    )
                )
            return data_refs[name]

        def teacher_weights(spec: TrialSpec) -> Any:
            if spec.phase == "tune" and not method_class(spec.method).needs.teacher:
                return None  # nothing to wait for: the tuning row reports no agreement
            assert spec.teacher_id is not None
            if spec.teacher_id not in weights:
                weights[spec.teacher_id] = self._cached_teacher(spec.teacher_id)
            return weights[spec.teacher_id]

        def runnable() -> int:
            return len(inflight) - sum(waiting.values())

        def submit(item: Item) -> None:
            spec = item.spec
            if spec.phase == "teacher":
                ckpt = read_checkpoint(spec.teacher.checkpoint) if spec.teacher.checkpoint else None
                ref, weights[spec.trial_id] = teacher_task.options(**options(spec)).remote(
                    spec, data(spec.dataset), self.info, ckpt
                )
                teachers_running.add(spec.trial_id)
            else:
                reporter = reporter_for(item)
                needed = teacher_weights(spec)
                ref = student_task.options(**options(spec)).remote(
                    spec,
                    data(spec.dataset),
                    self.info,
                    needed,
                    reporter,
                    self._cached_synthetic(spec),
                )
                if needed is not None and spec.teacher_id in teachers_running:
                    waiting[spec.teacher_id] = waiting.get(spec.teacher_id, 0) + 1
            inflight[ref] = item

        def reporter_for(item: Item) -> Reporter | None:
            """A tuning trial's line to its study's pruner. A trial of one epoch has nothing to
            report: its last epoch's accuracy goes with the driver's tell."""
            nonlocal broker
            if not item.study or item.spec.epochs <= 1:
                return None
            if broker is None:
                # Its own book on the same storage, which it only reads and adds epochs to.
                broker = start_broker(*self.book_args())
            return Reporter(broker, item.study, item.spec.number)

        def next_item() -> Item | None:
            """The next trial: the queue's, else a new tuning trial (round robin over studies)."""
            nonlocal turn
            if work.queue:
                return work.queue.popleft()
            if not work.active:
                return None
            assert book is not None
            start = turn % len(work.active)
            order = work.active[start:] + work.active[:start]
            got = book.ask_next(order)
            if got is None:  # no study may ask now (none will again: only finishing frees none)
                return None
            name, number, params = got
            turn = start + order.index(name) + 1
            study = self.studies[name]
            hp = resolve_hparams(study.cell.method, params)
            return Item(tune_spec(self.suite, study.cell, study.teacher, number, hp), name)

        def settle() -> None:
            """Studies that are done hand their finals to the queue."""
            if not work.active:
                return
            assert book is not None
            for name in book.done_of(list(work.active)):
                work.active.remove(name)
                work.queue.extend(Item(s) for s in self.finals_of(name, book) if self.pending(s))

        compactor = _Compactor(self.results_dir)

        def finish(ref: Any) -> None:
            """A trial's outcome: its files, its row, then its study."""
            nonlocal loose
            item = inflight.pop(ref)
            spec = item.spec
            outcome = self._collect(ref, spec)
            row = outcome.row
            if spec.phase == "teacher":
                teachers_running.discard(spec.trial_id)
                waiting.pop(spec.trial_id, None)
                weights[spec.trial_id] = self._keep_teacher(spec, outcome, weights[spec.trial_id])
            if compactor.folding(spec.trial_id):  # a failed trial retried: its old file
                compactor.wait()
            # Files first, then the row that names them, then the study: a driver killed in
            # between finds the row and tells the study from it instead of rerunning.
            self._publish(
                *self._write_artifacts(outcome),
                store.write_trial(self.results_dir, row),
                *write_curve(run_dir, spec.trial_id, outcome.curve),
            )
            loose += 1
            if loose >= COMPACT_EVERY:  # reading costs ~1 ms per file: keep few loose
                compactor.start()
                loose = 0
            if compactor.finished() and self.mirror is not None:
                self.mirror.sync()
            elif self.mirror is not None:
                self.mirror.sync_now_and_then()  # the studies' journal, every 30 s
            if item.study:
                assert book is not None
                book.tell(
                    item.study,
                    spec.number,
                    row["status"],
                    row.get("val_acc"),
                    row.get("epoch_reported"),  # its last epoch, which it did not report
                )
            summary.ran += 1
            summary.failed += row["status"] == "failed"
            summary.rows.append(row)
            progress.total = max(progress.total, progress.done + 1 + len(inflight))
            progress.finished(row)

        try:
            while True:
                settle()
                while runnable() < cap and (item := next_item()) is not None:
                    submit(item)
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                progress.set_running(int(min(runnable(), slots)))
                for ref in ready:
                    finish(ref)
        finally:
            compactor.wait()  # the lock is released only after it
            if broker is not None:
                ray.kill(broker)
        progress.close()
        summary.seconds = time.monotonic() - t0

    def _collect(self, ref: Any, spec: TrialSpec) -> TrialOutcome:
        """The task's outcome; a task that could not run at all still becomes a `failed` row."""
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            return TrialOutcome(
                failed_row(
                    spec,
                    self.info,
                    describe_error(cause),
                    started_at=provenance.now(),
                    finished_at=provenance.now(),
                )
            )

    def _keep_teacher(self, spec: TrialSpec, outcome: TrialOutcome, weights_ref: Any) -> Any:
        """Cache a finished teacher's weights and hand them out from the driver's node from now
        on: the node that trained the teacher may leave the cluster, and with it its copy (Ray
        would then train the teacher again to rebuild it)."""
        import ray

        blob = ray.get(weights_ref) if outcome.row["status"] == "ok" else None
        if blob is not None:
            path = teacher_cache_path(self.results_dir, spec.trial_id)
            with store.atomic_file(path) as f:
                f.write(blob)
            self._publish(path)
        return ray.put(blob)

    def _publish(self, *paths: Path) -> None:
        """Results at a URI: upload what was just written, before the study hears of it."""
        if self.mirror is not None and paths:
            self.mirror.push(*paths)

    def _write_artifacts(self, outcome: TrialOutcome) -> list[Path]:
        written = []
        for rel, blob in outcome.artifacts.items():
            path = self.results_dir / rel
            if path.exists():  # content-addressed or per trial: the file is already right
                continue
            with store.atomic_file(path) as f:
                f.write(blob)
            written.append(path)
        return written

    def _cached_synthetic(self, spec: TrialSpec) -> bytes | None:
        """A ``dd_*`` trial's synthetic set, when one with its content key was made before."""
        from kdbench.methods import method_class

        if not method_class(spec.method).needs.synthetic_set:
            return None
        path = self.results_dir / synthetic_artifact(spec.synthetic_key)
        return path.read_bytes() if path.exists() else None

    def _cached_teacher(self, teacher_id: str) -> Any:
        """A finished teacher's weights from the cache (None when its trial failed)."""
        import ray

        path = teacher_cache_path(self.results_dir, teacher_id)
        return ray.put(path.read_bytes() if path.exists() else None)


def start_point(study: StudyPlan) -> dict[str, Any] | None:
    """The defaults (with params) of a study's searched hyperparameters, if all lie in its ranges."""
    defaults = dict(resolve_hparams(study.cell.method))
    start = {k: defaults[k] for k in study.space}
    inside = all(contains(d, start[k]) for k, d in study.space.items())
    return start if inside else None


def run_suite(
    suite: Suite,
    results_dir: str | Path | None = None,
    *,
    address: str | None = None,
    retry_failed: bool = False,
    live: bool | None = None,
) -> RunSummary:
    """Run (or resume) a suite; finished trials in ``results_dir`` (a directory, or a URI such
    as ``s3://bucket/prefix``) are skipped."""
    mirror = None
    if results_dir is not None and is_uri(str(results_dir)):
        mirror = Mirror(str(results_dir))
        root = mirror.local  # pulled under the run's lock
    else:
        root = Path(results_dir) if results_dir else default_results_dir(suite)
        root.mkdir(parents=True, exist_ok=True)
    driver = Driver(expand(suite), root, retry_failed=retry_failed, live=live, mirror=mirror)
    return driver.run(address)
