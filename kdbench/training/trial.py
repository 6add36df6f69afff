"""One trial: a spec goes in, one result row (and its curve, and any weights) comes out.

Two entry points, one per kind of trial: ``run_teacher`` (train a teacher, or load the
user's checkpoint, and score it) and ``run_student`` (the method's stage, if it has one, then
the student's training; a final trial is then scored on the test split).

Runs anywhere: inside a Ray task on any node, or in-process in tests. Everything it needs
arrives as arguments (the data set and the teacher's weights by Ray reference); it writes no
files, so workers need no storage shared with the driver.
"""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

from kdbench import provenance
from kdbench._version import __version__
from kdbench.data import DataBundle
from kdbench.methods import MethodContext, method_class
from kdbench.models import KDModel, build_model, count_macs, count_params
from kdbench.plan import PrerequisiteSpec, StudentSpec, TeacherSpec, TrialSpec
from kdbench.results.layout import ArtifactKey, student_artifact
from kdbench.training.loop import EpochStats, accuracy, fit, predict
from kdbench.training.stage import prepare
from kdbench.training.trajectory import train_trajectory
from kdbench.training.weights import dump_student, dump_weights, load_into, load_weights


@dataclass(frozen=True)
class RunInfo:
    """What the driver knows about the run and passes to every trial."""

    run_id: str
    suite: str
    git_sha: str | None = None


@dataclass
class TrialOutcome:
    row: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    weights: bytes | None = None
    """A teacher's state dict (torch.save bytes), for the students that distil from it."""
    artifacts: dict[ArtifactKey, bytes] = field(default_factory=dict)
    """Files for the result writer to keep, by key (the layout knows their paths)."""
    seconds: float = 0.0
    """Wall time of the whole trial where it ran, set-up and evaluation included."""


def _reset_peak_rss() -> bool:
    """Reset the kernel's record of this process's peak resident set (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """The peak resident set since the last reset, in bytes (0 where the kernel says nothing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak memory during a block: the process's resident set, or CUDA's allocator.

    Measured per trial, from the trial's own start, not over a reused worker's whole life. On
    Linux the kernel keeps the peak (``VmHWM``) and resets it on request (``clear_refs``):
    exact, and free. Elsewhere a thread samples the resident set every ``interval`` seconds.
    """

    def __init__(self, device: torch.device, interval: float = 0.02) -> None:
        self.device = device
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._kernel = _reset_peak_rss()
        if not self._kernel:
            self._proc = psutil.Process()
            self.peak = self._proc.memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._proc.memory_info().rss)
        else:  # the kernel's peak since the reset, the resident set at the end included
            self.peak = _peak_rss()

    @property
    def mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self.peak / 2**20


def pick_device(gpus: float) -> torch.device:
    return torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


def seed_torch(seed: int, device: torch.device) -> None:
    """Seed the generator the trial's models draw from. ``torch.manual_seed`` seeds every
    accelerator backend too, through lazy calls that each format a stack trace while no GPU is
    in use: costly next to a short trial on a CPU, whose generator is the only one drawn from."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


_MACS: dict[tuple[str, int, tuple[int, ...]], int] = {}


def macs_of(arch: str, model: torch.nn.Module, num_classes: int, shape: tuple[int, ...]) -> int:
    """``count_macs`` once per architecture and input in a process (a worker runs many trials
    of the same models; counting takes a forward pass)."""
    key = (arch, num_classes, tuple(shape))
    if key not in _MACS:
        _MACS[key] = count_macs(model, shape)
    return _MACS[key]


def base_row(spec: TrialSpec, info: RunInfo) -> dict[str, Any]:
    return {
        "run_id": info.run_id,
        "suite": info.suite,
        "trial_id": spec.trial_id,
        "phase": spec.phase,
        "dataset": spec.dataset,
        "teacher": spec.teacher.arch,
        "student": spec.student,
        "method": spec.label,
        "seed": spec.seed,
        "hparams": json.dumps(dict(spec.hparams), sort_keys=True),
        "epochs": spec.epochs,
        "cpus": spec.resources.cpus,
        "gpus": spec.resources.gpus,
        "kdbench_version": __version__,
        "torch_version": torch.__version__,
        "git_sha": info.git_sha,
        "host": provenance.host(),
        "node_id": _node_id(),
    }


def _node_id() -> str | None:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:
        pass
    return None


def failed_row(spec: TrialSpec, info: RunInfo, error: str, **extra: Any) -> dict[str, Any]:
    row = base_row(spec, info)
    row.update(status="failed", error=error, **extra)
    return row


def describe_error(exc: BaseException) -> str:
    """One line: the exception, and where in kdbench or the user's code it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno})" if frames else ""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return (text[:480] + "…" if len(text) > 480 else text) + where


Reporter = Callable[[int, float], bool]
"""(epoch, validation accuracy) -> whether to stop the trial now (its study's pruner)."""


def run_teacher(
    spec: TeacherSpec, data: DataBundle, info: RunInfo, checkpoint: bytes | None = None
) -> TrialOutcome:
    """Train a teacher (or load the user's ``checkpoint``) and score it on val and test; an
    exception becomes a ``failed`` row with its reason, never a crash."""
    if isinstance(spec, PrerequisiteSpec):
        return _guarded(spec, info, lambda device: _prerequisite_trial(spec, data, info, device))
    return _guarded(spec, info, lambda device: _teacher_trial(spec, data, info, device, checkpoint))


def _prerequisite_trial(
    spec: PrerequisiteSpec, data: DataBundle, info: RunInfo, device: torch.device
) -> TrialOutcome:
    """What a method declared it needs first, made by the recipe the method gives back for
    it: a trajectory (the only kind of training a method declares today), scored on val and
    test; the trajectory is the outcome's ``weights`` (cached and handed out as a teacher's
    are)."""
    recipe = method_class(spec.maker).prerequisite_recipe(spec.phase, dict(spec.hparams))
    seed_torch(spec.seed, device)
    traj = train_trajectory(data, recipe, seed=spec.seed, device=device)
    row = base_row(spec, info)
    row.update(
        status="ok",
        val_acc=traj.val_acc,
        test_acc=traj.test_acc,
        student_params=int(traj.params[0].numel()),
        images_seen=recipe.epochs * len(data.train_y),
        stage_epochs=0,
        epoch_reported=recipe.epochs,
        train_seconds=traj.seconds,
    )
    return TrialOutcome(row=row, weights=traj.to_bytes())


def run_student(
    spec: StudentSpec,
    data: DataBundle,
    info: RunInfo,
    teacher_weights: bytes | None = None,
    reporter: Reporter | None = None,
    reused: Mapping[ArtifactKey, bytes] | None = None,
) -> TrialOutcome:
    """Run one tuning or final trial; an exception becomes a ``failed`` row, never a crash.

    A tuning trial reports its validation accuracy after every epoch through ``reporter``;
    when the pruner says stop, training ends there and the row says ``pruned``.
    ``reused``: what earlier trials made under the method's ``reusable`` keys (the driver
    reads it from the results directory).
    """
    return _guarded(
        spec,
        info,
        lambda device: _student_trial(
            spec, data, info, device, teacher_weights, reporter, reused or {}
        ),
    )


def _guarded(
    spec: TrialSpec, info: RunInfo, body: Callable[[torch.device], TrialOutcome]
) -> TrialOutcome:
    """What every trial shares: threads, device, memory share and peak, timing, failure."""
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    device = pick_device(spec.resources.gpus)
    if device.type == "cuda" and 0 < spec.resources.gpus < 1:
        # Several trials share the GPU (gpus_per_trial 0.25: four): each is held to its share
        # of the memory, so one trial's peak cannot crash its neighbours.
        torch.cuda.set_per_process_memory_fraction(spec.resources.gpus, device)
    started = provenance.now()
    t0 = time.perf_counter()
    try:
        with PeakMemory(device) as mem:
            outcome = body(device)
        outcome.row["peak_mem_mb"] = mem.mb
    except Exception as exc:
        outcome = TrialOutcome(
            failed_row(spec, info, describe_error(exc), train_seconds=time.perf_counter() - t0)
        )
    outcome.row.update(
        started_at=started, finished_at=provenance.now(), device=provenance.device_name(device)
    )
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _curve_rows(curve: list[EpochStats]) -> list[dict[str, Any]]:
    return [
        {
            "epoch": s.epoch,
            "lr": s.lr,
            "train_loss": s.train_loss,
            "val_acc": s.val_acc,
            "test_acc": s.test_acc,
            "seconds": s.seconds,
            **{f"loss_{k}": v for k, v in s.terms.items()},
        }
        for s in curve
    ]


def _teacher_trial(
    spec: TeacherSpec,
    data: DataBundle,
    info: RunInfo,
    device: torch.device,
    checkpoint: bytes | None,
) -> TrialOutcome:
    seed_torch(spec.seed, device)
    model = build_model(
        spec.teacher.arch, num_classes=data.num_classes, input_shape=data.input_shape
    ).to(device)
    row = base_row(spec, info)
    curve: list[EpochStats] = []
    seconds = 0.0
    seen = 0
    macs = macs_of(spec.teacher.arch, model, data.num_classes, data.input_shape)
    if checkpoint is not None:
        try:
            load_into(model, load_weights(checkpoint))
        except RuntimeError as exc:
            raise ValueError(
                f"checkpoint {spec.teacher.checkpoint} does not fit "
                f"{spec.teacher.arch}: {str(exc).splitlines()[0]}"
            ) from None
    else:
        ctx = MethodContext.for_data(model, None, data, device)
        result = fit(
            model,
            data,
            method=method_class(spec.trains_method)({}, ctx).to(device),
            budget=spec.budget,
            epochs=spec.epochs,
            seed=spec.seed,
            augment=spec.data.augment,
            device=device,
            macs=macs,
        )
        curve, seconds, seen = result.curve, result.train_seconds, result.images_seen
        row["skipped_images"] = result.skipped
    val_logits = predict(model, data, data.val_x.to(device))
    test_logits = predict(model, data, data.test_x.to(device))
    test_y = data.test_y.to(device)
    row.update(
        status="ok",
        val_acc=accuracy(val_logits, data.val_y.to(device)),
        test_acc=accuracy(test_logits, test_y),
        test_top5=accuracy(test_logits, test_y, k=5),
        student_params=count_params(model),
        student_macs=macs,
        images_seen=seen,
        stage_epochs=0,
        epoch_reported=spec.epochs,
        train_seconds=seconds,
    )
    return TrialOutcome(row=row, curve=_curve_rows(curve), weights=dump_weights(model))


def _frozen_teacher(
    spec: StudentSpec, data: DataBundle, device: torch.device, weights: bytes | None
) -> KDModel | None:
    """The trial's teacher in eval mode without gradients, or None when not given."""
    if weights is None:
        if method_class(spec.method).uses_teacher(dict(spec.hparams)):
            raise RuntimeError(
                f"teacher {spec.teacher.arch} for {spec.dataset} is not available "
                f"(its trial {spec.teacher_id} failed)"
            )
        return None
    teacher = build_model(
        spec.teacher.arch, num_classes=data.num_classes, input_shape=data.input_shape
    )
    teacher.load_state_dict(load_weights(weights))
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _student_trial(
    spec: StudentSpec,
    data: DataBundle,
    info: RunInfo,
    device: torch.device,
    teacher_weights: bytes | None,
    reporter: Reporter | None,
    reused: Mapping[ArtifactKey, bytes],
) -> TrialOutcome:
    teacher = _frozen_teacher(spec, data, device, teacher_weights)
    seed_torch(spec.seed, device)
    student = build_model(
        spec.student, num_classes=data.num_classes, input_shape=data.input_shape
    ).to(device)
    macs = macs_of(spec.student, student, data.num_classes, data.input_shape)
    ctx = MethodContext.for_data(student, teacher, data, device)
    method = method_class(spec.method)(dict(spec.hparams), ctx).to(device)
    # The method's own stage, if it has one: it may replace the training set and the epochs
    # (dataset distillation trains the student on a synthetic set alone).
    training = prepare(method, data, spec=spec, device=device, reused=reused)
    epochs = training.epochs
    result = fit(
        student,
        training.data,
        method=method,
        budget=spec.budget,
        epochs=epochs,
        seed=spec.seed,
        augment=spec.data.augment,
        teacher=teacher if training.with_teacher else None,
        device=device,
        # The last epoch's accuracy reaches the study with the driver's tell: asking whether
        # to stop a trial that is ending anyway would cost a round trip to the study actor.
        on_epoch=(lambda s: s.epoch < epochs and reporter(s.epoch, s.val_acc))
        if reporter
        else None,
        val_every=max(1, epochs // spec.epochs),
        macs=macs,
        report_test=spec.phase == "final",
        transform=training.transform,
    )
    row = base_row(spec, info)
    row.update(
        status="pruned" if result.stopped_early else "ok",
        val_acc=result.val_acc,
        student_params=count_params(student),
        student_macs=macs,
        images_seen=result.images_seen,
        epochs=epochs,
        stage_epochs=training.stage_epochs,
        epoch_reported=result.curve[-1].epoch if result.curve else 0,
        train_seconds=training.seconds + result.train_seconds,
        skipped_images=result.skipped,
    )
    artifacts = dict(training.artifacts)
    if training.artifact is not None:
        row["artifact"] = training.artifact.relative
    if spec.phase == "final":
        _score_final(row, artifacts, spec, data, device, student, teacher)
        _best_epoch(row, result.curve)
    return TrialOutcome(row=row, curve=_curve_rows(result.curve), artifacts=artifacts)


def _best_epoch(row: dict[str, Any], curve: list[EpochStats]) -> None:
    """The best test accuracy over the scored epochs and its epoch (the first on a tie): what
    best-epoch reporting would have said. The row's ``test_acc`` stays the last epoch's."""
    if curve:
        curve[-1].test_acc = row["test_acc"]  # the last epoch, scored once by _score_final
    scored = [s for s in curve if not math.isnan(s.test_acc)]
    if scored:
        best = max(scored, key=lambda s: (s.test_acc, -s.epoch))
        row.update(best_test_acc=best.test_acc, best_epoch=best.epoch)


def _score_final(
    row: dict[str, Any],
    artifacts: dict[ArtifactKey, bytes],
    spec: StudentSpec,
    data: DataBundle,
    device: torch.device,
    student: KDModel,
    teacher: KDModel | None,
) -> None:
    """A final trial's score on the test split, after training ends. The test split is read
    here, by ``fit`` for a final's per-epoch reporting (``report_test``: never used to choose
    anything), and by the scoring of a teacher or a prerequisite; never by tuning."""
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    logits = predict(student, data, test_x)
    row.update(test_acc=accuracy(logits, test_y), test_top5=accuracy(logits, test_y, k=5))
    if teacher is not None:
        t_logits = predict(teacher, data, test_x)
        row.update(
            teacher_test_acc=accuracy(t_logits, test_y),
            agreement=(logits.argmax(1) == t_logits.argmax(1)).float().mean().item(),
        )
    # The distilled student, to take home: see ``kdbench.results.load_student``.
    key = student_artifact(spec.trial_id)
    artifacts[key] = dump_student(student, spec, data)
    row.setdefault("artifact", key.relative)  # a dd_* row's artifact is its synthetic set
