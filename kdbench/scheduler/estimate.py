"""What a plan will cost, before it runs: trial counts, images, MACs, and measured step times.

The time estimate is measured, not guessed: a few training steps of every distinct
(student, teacher, method) shape on random inputs of the data set's shape, timed on this
machine at the suite's thread count and the trial's precision (bf16 autocast and
channels_last where ``budget.precision`` gives them) on a batch of up to 16 scaled to the
suite's batch size, times the steps the plan will take. Evaluation passes (`val` at every
validated epoch, a final's test split after each) count a third of a step's time an image;
Ray's overhead is not included. What a trial trains on, for how many
epochs, and the time of a method's own stage come from the method (``Method.cost``): a
dataset-distillation trial trains on its synthetic set and synthesises for at most its time
budget, counted whole; a stage without a time bound is counted apart, as not estimated.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from kdbench.data import dataset_info, is_streamed
from kdbench.methods import MethodContext, method_class
from kdbench.methods.base import CostBasis, Step
from kdbench.models import ModelOutput, build_model, count_macs
from kdbench.plan import Plan, TrialSpec
from kdbench.training.trainer import Precision, as_fp32

PROBE_BATCH = 16


@dataclass
class Estimate:
    trials: dict[str, int]
    images: int
    """Training images all trials together will see."""
    macs: float
    """Multiply-accumulates of all training steps (forward + backward ≈ 3× forward)."""
    cpu_seconds: float
    """Measured step time × steps, summed over trials, times the CPUs each trial holds."""
    wall_seconds: float
    """cpu_seconds spread over ``cpus_available`` (idealised: perfect packing)."""
    cpus_available: int
    unbudgeted: int = 0
    """Trials whose method's own stage has no time bound: that stage is not in the estimate."""
    eval_seconds: float = 0.0
    """The part of ``cpu_seconds`` that is evaluation (val, and the test split of finals)."""


class _Probes:
    """What the step-time probes of one estimate share: each architecture built once (a probe
    trains a copy), and each teacher's forward pass timed once on one fixed batch, its outputs
    reused by every method distilled from it. A suite of 6 pairs × 15 methods built and ran
    each teacher 90 times over; its forward pass is the largest part of a CIFAR probe."""

    def __init__(self) -> None:
        self.models: dict[tuple, torch.nn.Module] = {}
        self.teachers: dict[tuple, tuple[torch.nn.Module, torch.Tensor, ModelOutput, float]] = {}

    def model(self, arch: str, classes: int, shape: tuple[int, ...]) -> torch.nn.Module:
        key = (arch, classes, shape)
        if key not in self.models:
            self.models[key] = build_model(arch, num_classes=classes, input_shape=shape)
        return copy.deepcopy(self.models[key])

    def teacher(
        self, spec: TrialSpec, batch: int, steps: int
    ) -> tuple[torch.nn.Module, torch.Tensor, ModelOutput, float]:
        """(The teacher in eval mode, the probe batch, its outputs on it, seconds a forward),
        at the teacher's own precision, as ``fit`` runs it."""
        info = dataset_info(spec.dataset, spec.data.root)
        key = (
            spec.dataset,
            spec.teacher.arch,
            batch,
            spec.budget.precision,
            torch.get_num_threads(),
        )
        if key not in self.teachers:
            teacher = self.model(spec.teacher.arch, info.num_classes, info.input_shape).eval()
            macs = count_macs(teacher, info.input_shape)
            precision = Precision.resolve(spec.budget.precision, macs, torch.device("cpu"), teacher)
            if precision.channels_last:
                teacher.to(memory_format=torch.channels_last)
            x = precision.layout(torch.randn(batch, *info.input_shape))
            times = []
            for _ in range(steps + 1):
                t0 = time.perf_counter()
                with torch.no_grad(), precision.autocast(x.device):
                    out = as_fp32(teacher.forward_features(x))
                times.append(time.perf_counter() - t0)
            self.teachers[key] = (teacher, x, out, min(times[1:]))
        return self.teachers[key]


def _probe(
    spec: TrialSpec, batch: int, shared: _Probes | None = None, steps: int = 2
) -> tuple[float, int, int]:
    """(Seconds per training step of this spec's student and teacher, measured; the student's
    MACs per image; the teacher's, 0 without one)."""
    shared = shared or _Probes()
    info = dataset_info(spec.dataset, spec.data.root)
    torch.set_num_threads(max(1, min(int(spec.resources.cpus), os.cpu_count() or 1)))
    model = shared.model(spec.trains, info.num_classes, info.input_shape)
    macs = count_macs(model, info.input_shape)
    # As the trial will compute: bf16 autocast and channels_last where its precision says so.
    precision = Precision.resolve(spec.budget.precision, macs, torch.device("cpu"), model)
    cls = method_class(spec.trains_method)
    teacher, t_out, teacher_s, teacher_macs = None, None, 0.0, 0
    if cls.uses_teacher(dict(spec.hparams)):  # a teacher's own training (scratch) needs none
        teacher, x, t_out, teacher_s = shared.teacher(spec, batch, steps)
        teacher_macs = count_macs(teacher, info.input_shape)
        x = precision.layout(x)
    else:
        x = precision.layout(torch.randn(batch, *info.input_shape))
    # Balanced stand-in labels: methods that need the training labels (crd) size themselves.
    labels = torch.arange(info.train) % info.num_classes
    ctx = MethodContext(
        student=model,
        teacher=teacher,
        num_classes=info.num_classes,
        n_train=info.train,
        input_shape=info.input_shape,
        train_labels=labels,
    )
    method = cls(dict(spec.hparams) or cls.defaults(), ctx)
    opt = torch.optim.SGD(list(model.parameters()) + list(method.parameters()), lr=1e-3)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
        method.to(memory_format=torch.channels_last)
    idx = torch.arange(batch)
    y = labels[idx]
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with precision.autocast(x.device):
            s_out = model.forward_features(x)
        terms = method.loss(Step(x=x, y=y, student=as_fp32(s_out), teacher=t_out, index=idx))
        opt.zero_grad()
        torch.stack(list(terms.values())).sum().backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return min(times) + teacher_s, macs, teacher_macs


def _eval_seconds(spec: TrialSpec, step_s: float, batch: int, epochs: int, n_val: int) -> float:
    """The trial's evaluation passes, at a third of a training step's time an image (a
    forward pass, no backward): `val` at every validated epoch, and a final's (or a
    teacher's) test split, after every validated epoch for a final."""
    info = dataset_info(spec.dataset, spec.data.root)
    validated = min(epochs, spec.epochs) if spec.epochs else 0
    images = validated * n_val
    if spec.phase == "final":
        images += validated * info.test
    elif spec.phase == "teacher":
        images += info.test + n_val
    return images * step_s / batch / 3.0


def estimate(
    plan: Plan, specs: list[TrialSpec] | None = None, *, cpus_available: int | None = None
) -> Estimate:
    specs = list(plan.trials) if specs is None else specs
    batch = plan.suite.budget.batch_size
    probes: dict[tuple, tuple[float, int, int]] = {}
    shared = _Probes()
    counts: dict[str, int] = {}
    images = 0
    macs = 0.0
    cpu_s = 0.0
    unbudgeted = 0
    evaluation = 0.0
    for spec in specs:
        counts[spec.phase] = counts.get(spec.phase, 0) + 1
        if spec.epochs == 0:  # a teacher loaded from a checkpoint: evaluation only
            continue
        info = dataset_info(spec.dataset, spec.data.root)
        n_train, n_val = info.split_sizes(spec.data.val_fraction)
        if spec.refit:
            n_train, n_val = n_train + n_val, 0
        cpus = spec.resources.cpus
        cls = method_class(spec.trains_method)
        cost = cls.cost(
            dict(spec.hparams), CostBasis(n_train, info.num_classes, spec.epochs, batch)
        )
        unbudgeted += cost.stage_unbounded
        cpu_s += cost.stage_seconds * cpus
        n_train, epochs = cost.images_per_epoch, cost.epochs
        n = n_train * epochs
        images += n
        key = (spec.dataset, spec.student, spec.teacher.arch, spec.method, int(cpus))
        step_batch = min(batch, n_train)
        if key not in probes:
            # Timed on a small batch and scaled: the step time of a CNN grows linearly with
            # the batch, and a full batch of a CIFAR teacher takes seconds a step on a CPU.
            probe_batch = min(step_batch, PROBE_BATCH)
            step_s, model_macs, teacher_macs = _probe(spec, probe_batch, shared)
            probes[key] = (step_s * step_batch / probe_batch, model_macs, teacher_macs)
        step_s, model_macs, teacher_macs = probes[key]
        cpu_s += step_s * math.ceil(n_train / batch) * epochs * cpus
        eval_s = _eval_seconds(spec, step_s, step_batch, epochs, n_val) * cpus
        cpu_s += eval_s
        evaluation += eval_s
        macs += 3.0 * model_macs * n
        if teacher_macs and (spec.data.augment or is_streamed(spec.dataset)):
            # Every view is new (augmentation, or images read anew from files each epoch): the
            # teacher's forward runs on every step, not once for the split.
            macs += teacher_macs * n
    cpus = cpus_available or os.cpu_count() or 1
    return Estimate(
        trials=counts,
        images=images,
        macs=macs,
        cpu_seconds=cpu_s,
        wall_seconds=cpu_s / cpus,
        cpus_available=cpus,
        unbudgeted=unbudgeted,
        eval_seconds=evaluation,
    )


# --------------------------------------------------------------------- accelerator time

RATES_ENV = "KDBENCH_GPU_RATES"


def rates_path() -> Path:
    """Where ``benchmarks/gpu_check.py`` records what it measured on a GPU, and where
    ``--dry-run`` reads it: ``$KDBENCH_GPU_RATES``, else ``~/.cache/kdbench/gpu_rates.json``."""
    return Path(os.environ.get(RATES_ENV) or Path.home() / ".cache" / "kdbench" / "gpu_rates.json")


@dataclass(frozen=True)
class DeviceRates:
    """Training throughput measured on one accelerator by ``benchmarks/gpu_check.py``: real
    trials (resnet32x4 → resnet8x4, scratch, kd and crd on CIFAR-shaped images) packed
    ``k`` to a GPU, in training FLOPs a second per GPU, all packed trials together."""

    device: str
    measured_at: str
    gflops: dict[int, float]
    """Trials per GPU -> GFLOP/s of training per GPU."""

    def at(self, trials_per_gpu: int) -> tuple[int, float]:
        """The measured packing nearest ``trials_per_gpu``, and its rate."""
        k = min(self.gflops, key=lambda m: (abs(m - trials_per_gpu), m))
        return k, self.gflops[k]

    def save(self, path: Path | None = None) -> Path:
        path = path or rates_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"device": self.device, "measured_at": self.measured_at, "gflops": self.gflops}
        path.write_text(json.dumps(payload, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> DeviceRates | None:
        """The recorded rates, or None where nothing (readable) was recorded."""
        path = path or rates_path()
        try:
            raw = json.loads(path.read_text())
            return cls(
                device=str(raw["device"]),
                measured_at=str(raw["measured_at"]),
                gflops={int(k): float(v) for k, v in raw["gflops"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


@cache
def arch_macs(arch: str, classes: int, shape: tuple[int, ...]) -> int:
    """MACs of one image through a registered architecture, sized on PyTorch's meta device
    (no memory, no initialisation)."""
    with torch.device("meta"):
        model = build_model(arch, num_classes=classes, input_shape=shape)
    return count_macs(model, shape)


def image_flops(student_macs: int, teacher_macs: int = 0) -> float:
    """Training FLOPs of one image: the student's forward and backward pass (3× its MACs) and
    the teacher's forward pass (0 where the method does not read it); 2 FLOPs a MAC."""
    return 2.0 * (3 * student_macs + teacher_macs)


def training_flops(specs: list[TrialSpec]) -> float:
    """FLOPs of the trials' training (``image_flops`` of every image the student trains on).
    Evaluation and a method's own synthesis stage are not counted."""
    total = 0.0
    for spec in specs:
        if spec.epochs == 0:
            continue
        info = dataset_info(spec.dataset, spec.data.root)
        n_train, n_val = info.split_sizes(spec.data.val_fraction)
        if spec.refit:
            n_train += n_val
        cls = method_class(spec.trains_method)
        batch = spec.budget.batch_size
        cost = cls.cost(
            dict(spec.hparams), CostBasis(n_train, info.num_classes, spec.epochs, batch)
        )
        student = arch_macs(spec.trains, info.num_classes, info.input_shape)
        reads = cls.uses_teacher(dict(spec.hparams))
        teacher = arch_macs(spec.teacher.arch, info.num_classes, info.input_shape) if reads else 0
        total += image_flops(student, teacher) * cost.images_per_epoch * cost.epochs
    return total


def gpu_hours(specs: list[TrialSpec], rates: DeviceRates) -> tuple[float, int]:
    """GPU-hours of the trials' training at the measured rate of the packing their
    ``gpus_per_trial`` gives (0.25: four trials a GPU), and that packing."""
    gpus = [s.resources.gpus for s in specs if s.resources.gpus > 0]
    share = min(gpus) if gpus else 1.0
    k, gflops = rates.at(max(1, round(1 / share)) if share < 1 else 1)
    return training_flops(specs) / (gflops * 1e9) / 3600.0, k
