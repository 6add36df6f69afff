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
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
BATCH_S = 2.0
"""Student trials shorter than this go to Ray several to a task, about this long together. Ray
spends milliseconds between one task and the next on a worker (9 ms at the median, measured on
2 cores): a few percent of a 0.2 s trial, nothing next to a real one, which keeps a task of its
own."""
MAX_BATCH = 16


@dataclass
class RunSummary:
    run_id: str
    results_dir: Path
    planned: int
    skipped: int
    ran: int = 0
    failed: int = 0
    tasks: int = 0
    """Ray tasks the trials went out in (fewer than trials when short ones shared a task)."""
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
    keys = list(dict.fromkeys(k for epoch in curve for k in epoch))  # pandas took 10 ms here
    table = pa.table(
        {**{k: [e.get(k) for e in curve] for k in keys}, "trial_id": [trial_id] * len(curve)}
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
    alone: bool = False
    """Run in a task of its own (its batch's task died: only the culprit should fail)."""


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
        self.written: dict[Path, pa.Table] = {}
        """This run's trial files not folded yet, and what they hold: not read back."""
        self._thread: threading.Thread | None = None
        self._names: set[str] = set()
        self._error: BaseException | None = None

    def start(self) -> None:
        self.wait()
        files = store.loose_trials(self.results_dir)
        self._names = {p.name for p in files}
        known = {p: self.written.pop(p) for p in files if p in self.written}
        self._thread = threading.Thread(
            target=self._compact, args=(files, known), name="kdbench-compact", daemon=True
        )
        self._thread.start()

    def _compact(self, files: list[Path], known: dict[Path, pa.Table]) -> None:
        try:
            store.compact(self.results_dir, files, known=known)
        except BaseException as exc:  # raised in the driver's thread, by ``wait``
            self._error = exc

    def final(self) -> None:
        """The last fold, in the driver's thread, once the run's trials are all written."""
        self.wait()
        store.compact(self.results_dir, known=self.written)
        self.written = {}

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
        from kdbench.scheduler.tasks import StudentTrial, options, student_task, teacher_task
        from kdbench.tuning.broker import Reporter, start_broker

        t0 = time.monotonic()
        run_dir = self.results_dir / RUNS / self.run_id
        recorded = False
        progress = self.progress or Progress(work.expected, live=self.live, slots=slots)
        data_refs: dict[str, Any] = {}
        weights: dict[str, Any] = {}
        teachers_running: set[str] = set()
        inflight: dict[Any, list[Item]] = {}
        """Tasks in flight and their trials (several, for a batch of short ones)."""
        durations: dict[tuple[str, ...], deque[float]] = {}
        """Wall seconds of each cell's latest trials: how many fit in a batch."""
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

        def room() -> bool:
            """Whether another task may go out: a slot's spare is free, and no more than
            ``cap`` trials wait for a teacher (more would ask a study's whole budget of
            samplers that have seen no result, while a long teacher trains)."""
            return runnable() < cap and sum(waiting.values()) < cap

        def waits_for_teacher(spec: TrialSpec) -> bool:
            return spec.teacher_id in teachers_running and teacher_weights(spec) is not None

        def batchable(item: Item) -> bool:
            """Short student trials whose inputs are ready may share a task."""
            return (
                item.spec.phase != "teacher" and not item.alone and not waits_for_teacher(item.spec)
            )

        def shape(spec: TrialSpec) -> tuple[Any, ...]:
            opts = options(spec)
            opts.pop("name")
            return (spec.dataset, sorted(opts.items(), key=lambda kv: kv[0]))

        def cell(spec: TrialSpec) -> tuple[str, ...]:
            return (spec.dataset, spec.teacher.arch, spec.student or "", spec.label)

        def typical(item: Item) -> float | None:
            """A trial's expected wall time: its cell's median so far (None: not known yet)."""
            seen = durations.get(cell(item.spec))
            return statistics.median(seen) if seen and len(seen) >= 2 else None

        def trials_left() -> int:
            """Trials still to submit: the queue's, the studies' and their finals."""
            left = len(work.queue)
            for name in work.active:
                assert book is not None
                done, running = book.counts(name)
                left += max(self.studies[name].budget - done - running, 0) + len(self.suite.seeds)
            return left

        def take() -> list[Item] | None:
            """The next task's trials: one, or short ones of the same shape that together last
            about ``BATCH_S``."""
            item = next_item()
            if item is None:
                return None
            batch = [item]
            total = typical(item) if batchable(item) else None
            # Toward the end, the trials left are spread over every task in flight, so that the
            # run does not end with one slot working through a batch while the others idle.
            most = min(MAX_BATCH, math.ceil((trials_left() + 1) / cap))
            while total is not None and total < BATCH_S and len(batch) < most:
                more = next_item()
                if more is None:
                    break
                t = typical(more)
                if (
                    t is None
                    or total + t > BATCH_S
                    or not batchable(more)
                    or shape(more.spec) != shape(item.spec)
                ):
                    work.queue.appendleft(more)  # the first of the next task
                    break
                batch.append(more)
                total += t
            return batch

        def submit(batch: list[Item]) -> None:
            spec = batch[0].spec
            if spec.phase == "teacher":
                ckpt = read_checkpoint(spec.teacher.checkpoint) if spec.teacher.checkpoint else None
                ref, weights[spec.trial_id] = teacher_task.options(**options(spec)).remote(
                    spec, data(spec.dataset), self.info, ckpt
                )
                teachers_running.add(spec.trial_id)
            else:
                teachers: list[Any] = []
                index: dict[str, int] = {}
                trials = []
                for item in batch:
                    needed = teacher_weights(item.spec)
                    at = None
                    if needed is not None:
                        assert item.spec.teacher_id is not None
                        if item.spec.teacher_id not in index:
                            index[item.spec.teacher_id] = len(teachers)
                            teachers.append(needed)
                        at = index[item.spec.teacher_id]
                        if waits_for_teacher(item.spec):  # only a trial alone waits
                            waiting[item.spec.teacher_id] = waiting.get(item.spec.teacher_id, 0) + 1
                    trials.append(
                        StudentTrial(
                            item.spec, at, reporter_for(item), self._cached_synthetic(item.spec)
                        )
                    )
                name = spec.trial_id + (f" +{len(batch) - 1}" if len(batch) > 1 else "")
                ref = student_task.options(**{**options(spec), "name": name}).remote(
                    trials, data(spec.dataset), self.info, *teachers
                )
            inflight[ref] = batch
            summary.tasks += 1

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
            """A finished task: each of its trials' outcomes."""
            batch = inflight.pop(ref)
            try:
                got = ray.get(ref)
            except ray.exceptions.RayError as exc:
                if len(batch) == 1:  # a task that could not run still becomes a `failed` row
                    record(batch[0], self._failed(batch[0].spec, exc))
                    return
                # The task died (its node, its memory) after Ray's retries: every trial of it
                # again in a task of its own, so that only the one at fault fails.
                for item in reversed(batch):
                    item.alone = True
                    work.queue.appendleft(item)
                return
            outcomes = [got] if batch[0].spec.phase == "teacher" else got
            for item, outcome in zip(batch, outcomes, strict=True):
                record(item, outcome)

        def record(item: Item, outcome: TrialOutcome) -> None:
            """A trial's outcome: its files, its row, then its study."""
            nonlocal loose
            spec = item.spec
            row = outcome.row
            if spec.phase != "teacher":
                durations.setdefault(cell(spec), deque(maxlen=16)).append(outcome.seconds)
            else:
                teachers_running.discard(spec.trial_id)
                waiting.pop(spec.trial_id, None)
                weights[spec.trial_id] = self._keep_teacher(spec, outcome, weights[spec.trial_id])
            if compactor.folding(spec.trial_id):  # a failed trial retried: its old file
                compactor.wait()
            # Files first, then the row that names them, then the study: a driver killed in
            # between finds the row and tells the study from it instead of rerunning.
            artifacts = self._write_artifacts(outcome)
            table = store.to_table([row])
            path = store.write_trial_table(self.results_dir, table)
            compactor.written[path] = table
            self._publish(*artifacts, path, *write_curve(run_dir, spec.trial_id, outcome.curve))
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
            running = sum(len(b) for b in inflight.values())
            progress.total = max(progress.total, progress.done + 1 + running)
            progress.finished(row)

        try:
            while True:
                settle()
                while room() and (batch := take()) is not None:
                    submit(batch)
                if not recorded:  # while the first trials run (the package list took 0.2 s)
                    record_run(self.results_dir, self.run_id, self.suite)
                    self._publish(*sorted(p for p in run_dir.iterdir() if p.is_file()))
                    recorded = True
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                progress.set_running(int(min(runnable(), slots)))
                for ref in ready:
                    finish(ref)
            compactor.final()  # one file per run; the lock is still held
        finally:
            compactor.wait()  # the lock is released only after it
            if broker is not None:
                ray.kill(broker)
        progress.close()
        summary.seconds = time.monotonic() - t0

    def _failed(self, spec: TrialSpec, exc: Exception) -> TrialOutcome:
        """The outcome of a trial whose task could not run at all (Ray's error)."""
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
