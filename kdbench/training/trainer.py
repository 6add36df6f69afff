"""The one trainer: what every training in kdbench shares, whatever it trains.

A ``Trainer`` owns the optimiser, the precision and memory layout of the networks, the
batches (a fresh permutation of the training split each epoch, normalised and augmented on
tensors, from the trial's generator), the teacher (in eval mode by construction, its outputs
computed once when the images never change), the step (named loss terms summed, one backward,
one optimiser step) and the divergence check. ``fit`` (a trial's training), a method's
pre-training stage (``training.stage``) and a trajectory a method needs first
(``training.trajectory``: dd_mtt's experts) are
each a short loop over it. A streamed data set's training split (an ``ImageStream``) is fed
by ``StreamedBatches`` instead of ``Batches``: read, decoded and augmented in worker
processes, normalised on the device; everything else is the same. A data-parallel step
plugs in here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import torch

from kdbench.data import DataBundle, augment_batch
from kdbench.data.stream import ImageStream, batches, is_stream
from kdbench.models.base import KDModel, ModelOutput, count_macs
from kdbench.spec import Budget
from kdbench.training import compiled
from kdbench.training.compiled import Forward


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def make_optimizer(params: list[torch.nn.Parameter], budget: Budget) -> torch.optim.Optimizer:
    # One fused kernel per update where PyTorch has one (CPU and CUDA), else the multi-tensor
    # one; PyTorch's default on a CPU is a loop over parameters. The same update either way;
    # fused is the fastest of the three and the per-parameter loop the slowest.
    devices = {p.device.type for p in params}
    kind = {"fused": True} if devices <= {"cpu", "cuda"} else {"foreach": True}
    if budget.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=budget.lr, momentum=budget.momentum, weight_decay=budget.weight_decay, **kind
        )
    if budget.optimizer == "adam":
        return torch.optim.Adam(params, lr=budget.lr, weight_decay=budget.weight_decay, **kind)
    return torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay, **kind)


def lr_at(budget: Budget, epoch: int, epochs: int) -> float:
    """The learning rate of an epoch (0-based) under the budget's schedule."""
    s = budget.schedule
    if s.kind == "cosine":
        return budget.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if s.kind == "half":  # as the dataset-distillation references evaluate a set
        return budget.lr * (s.gamma if epoch >= epochs // 2 else 1.0)
    if s.kind == "step":
        return budget.lr * s.gamma ** sum(epoch >= m for m in s.milestones)
    return budget.lr


COMPUTE_BOUND_MACS = 20_000_000
"""MACs per image above which a model's step is compute-bound (resnet8x4: 177M; cnn_tiny: 0.05M)."""


def fast_bf16(device: torch.device) -> bool:
    """Whether the device computes in bf16 faster than in fp32 (a GPU that supports it; a CPU
    with AVX-512 BF16 or AMX, where oneDNN runs bf16 convolutions natively)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return _cpu_has_bf16()


@cache
def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpu_layout_ok(model: torch.nn.Module) -> bool:
    """Whether channels_last pays on a CPU: not for a network with GroupNorm layers (ConvNet-D's
    instance norm), whose CPU kernel is far slower in that layout. Measured on this project's
    2-core CPU (AVX-512 BF16), a convnet3 training step of 256 Fashion-MNIST-sized images on
    one thread: 1,401 ms fp32, 783 ms bf16, 2,555 ms bf16 + channels_last."""
    return not any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


@dataclass(frozen=True)
class Precision:
    """How a trial computes: bf16 autocast of the networks' forward passes (losses stay in
    fp32), and channels_last memory format for the convolutions."""

    bf16: bool = False
    channels_last: bool = False

    @classmethod
    def resolve(
        cls, choice: str, macs: int, device: torch.device, model: torch.nn.Module
    ) -> Precision:
        """``budget.precision`` for ``model``, of ``macs`` MACs per image, on ``device``.

        ``auto`` uses channels_last, and bf16 where ``fast_bf16``, only for a compute-bound
        network (``COMPUTE_BOUND_MACS``): on a CPU with AVX-512 BF16 channels_last speeds up
        the training step of a model like resnet8x4 and bf16 speeds it up further, while a
        memory-bound model such as cnn_tiny gains nothing from either. On a CPU a network with
        GroupNorm layers keeps the default layout (``_cpu_layout_ok``).
        """
        if choice == "fp32":
            return cls()
        layout = device.type != "cpu" or _cpu_layout_ok(model)
        if choice == "bf16":
            return cls(bf16=True, channels_last=layout)
        heavy = macs >= COMPUTE_BOUND_MACS
        return cls(bf16=heavy and fast_bf16(device), channels_last=heavy and layout)

    def autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def precisions(
    choice: str,
    device: torch.device,
    data: DataBundle,
    model: torch.nn.Module,
    macs: int | None = None,
    teacher: torch.nn.Module | None = None,
) -> tuple[Precision, Precision]:
    """``budget.precision`` for the trained ``model`` (of ``macs`` MACs an image when counted
    already) and for the ``teacher`` whose outputs the loss reads (the model's when None).
    The teacher computes at its own precision: a heavy teacher of a light student
    (resnet32x4 → mobilenetv2) runs in bf16 where that is fast, though the student does not;
    its outputs reach the losses in fp32 either way."""
    own = Precision.resolve(
        choice, count_macs(model, data.input_shape) if macs is None else macs, device, model
    )
    if teacher is None:
        return own, own
    return own, Precision.resolve(choice, count_macs(teacher, data.input_shape), device, teacher)


def as_fp32(out: ModelOutput) -> ModelOutput:
    """A network's outputs in fp32, for the losses (autocast leaves them in bf16)."""
    return out if out.logits.dtype == torch.float32 else out.map(lambda t: t.float())


TEACHER_CACHE_BYTES = 2 * 2**30
"""The most memory the teacher's cached outputs may take; above it, the teacher runs every step."""


NORMALIZED_SPLIT_BYTES = 64 * 2**20
"""The largest training split (as float32) normalised once per trial rather than per batch."""


@dataclass
class TeacherCache:
    """The teacher's outputs for every training image, in eval mode (what it gives every step)."""

    out: ModelOutput

    def take(self, idx: torch.Tensor) -> ModelOutput:
        return CachedRows(self.out, idx)


class CachedRows(ModelOutput):
    """A batch's rows of the cached outputs, each field sliced when a method first reads it.

    crd reads the embedding alone, kd the logits: slicing every block map of cnn_wide on digits
    each step (eight gathers, 1.3 MB) copied data the method never read, a noticeable share of
    a crd step.
    """

    def __init__(self, out: ModelOutput, idx: torch.Tensor) -> None:  # no dataclass fields set
        self._out, self._idx = out, idx

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, self._idx)  # faster than t[idx] on a CPU

    @cached_property
    def logits(self) -> torch.Tensor:  # type: ignore[override]
        return self._rows(self._out.logits)

    @cached_property
    def feats(self) -> list[torch.Tensor]:  # type: ignore[override]
        return [self._rows(t) for t in self._out.feats]

    @cached_property
    def embedding(self) -> torch.Tensor | None:  # type: ignore[override]
        return None if self._out.embedding is None else self._rows(self._out.embedding)

    @cached_property
    def preact(self) -> list[torch.Tensor]:  # type: ignore[override]
        return [self._rows(t) for t in self._out.preact]


@torch.no_grad()  # not inference_mode: its tensors could not be saved for the student's backward
def teacher_outputs(
    teacher: KDModel,
    data: DataBundle,
    train_x: torch.Tensor,
    batch_size: int = 512,
    precision: Precision | None = None,
) -> TeacherCache | None:
    """All of the teacher's outputs on ``train_x``, or None when they would not fit the cap."""
    precision = precision or Precision()

    def run(x: torch.Tensor) -> ModelOutput:
        with precision.autocast(x.device):
            return as_fp32(teacher.forward_features(precision.layout(data.normalize(x))))

    probe = run(train_x[:1])
    tensors = [probe.logits, *probe.feats, *probe.preact]
    if probe.embedding is not None:
        tensors.append(probe.embedding)
    per_image = sum(t.numel() * t.element_size() for t in tensors)
    if per_image * len(train_x) > TEACHER_CACHE_BYTES:
        return None
    parts = [run(train_x[i : i + batch_size]) for i in range(0, len(train_x), batch_size)]

    def cat(get):
        return torch.cat([get(p) for p in parts])

    return TeacherCache(
        ModelOutput(
            logits=cat(lambda p: p.logits),
            feats=[cat(lambda p, i=i: p.feats[i]) for i in range(len(probe.feats))],
            embedding=None if probe.embedding is None else cat(lambda p: p.embedding),
            preact=[cat(lambda p, i=i: p.preact[i]) for i in range(len(probe.preact))],
        )
    )


class Batches:
    """A training split fed as ``fit`` feeds it, epoch after epoch: a fresh permutation from
    ``gen`` each epoch, batches of ``batch_size`` (a last batch of one skipped, which BatchNorm
    cannot train on), normalised (the whole split once, when its float copy is small: a
    batch's slice of the normalised split is the normalised slice), augmented from ``gen``
    when ``augment``, in the precision's memory layout. ``drop_single=False`` keeps a last
    batch of one (a network without BatchNorm, as MTT's trajectories are trained)."""

    skipped = 0
    """Images that could not be read: none, from memory (``StreamedBatches`` counts them)."""

    def __init__(
        self,
        data: DataBundle,
        train_x: torch.Tensor,
        *,
        batch_size: int,
        augment: bool,
        gen: torch.Generator,
        precision: Precision,
        drop_single: bool = True,
    ) -> None:
        self.data, self.batch_size, self.augment = data, batch_size, augment
        self.drop_single = drop_single
        self.gen, self.precision = gen, precision
        self.n = len(train_x)
        self.normalized = train_x.numel() * 4 <= NORMALIZED_SPLIT_BYTES
        self.x = data.normalize(train_x) if self.normalized else train_x

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(sample indices, images) of each batch of one epoch."""
        order = torch.randperm(self.n, generator=self.gen).to(self.x.device)
        for i in range(0, self.n, self.batch_size):
            idx = order[i : i + self.batch_size]
            if self.drop_single and len(idx) < 2 and self.n >= 2:  # BatchNorm cannot train on one
                continue
            x = self.x.index_select(0, idx)  # faster than x[idx] on a CPU
            if not self.normalized:
                x = self.data.normalize(x)
            if self.augment:
                x = augment_batch(x, self.data.augment, self.gen)
            yield idx, self.precision.layout(x)


class StreamedBatches:
    """A streamed training split fed as ``Batches`` feeds an in-memory one: each epoch a
    permutation and each image's augmentation drawn from ``gen``, read by ``workers`` loader
    processes (``kdbench.data.stream.batches``), moved to ``device``, normalised, in the
    precision's layout. Files that could not be decoded are left out and counted in
    ``skipped``."""

    def __init__(
        self,
        data: DataBundle,
        stream: ImageStream,
        *,
        batch_size: int,
        augment: bool,
        gen: torch.Generator,
        precision: Precision,
        device: torch.device,
        drop_single: bool = True,
        workers: int | None = None,
    ) -> None:
        self.data, self.stream, self.batch_size, self.augment = data, stream, batch_size, augment
        self.gen, self.precision, self.device, self.drop_single = (
            gen,
            precision,
            device,
            drop_single,
        )
        self.workers = loader_workers() if workers is None else workers
        self.n = len(stream)
        self.skipped = 0

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cuda = self.device.type == "cuda"
        for read in batches(
            self.stream,
            batch_size=self.batch_size,
            gen=self.gen,
            augment=self.augment,
            workers=self.workers,
            pin_memory=cuda,
        ):
            self.skipped += read.skipped
            if len(read.index) == 0 or (self.drop_single and len(read.index) < 2 and self.n >= 2):
                continue
            x = read.images.to(self.device, non_blocking=cuda)
            yield read.index.to(self.device), self.precision.layout(self.data.normalize(x))


def loader_workers() -> int:
    """Loader processes for a streamed split: one per CPU the trial holds (``torch``'s thread
    count is set to it), so decoding runs beside the step."""
    return max(1, torch.get_num_threads())


def augments(data: DataBundle, augment: bool) -> bool:
    """Whether augmentation changes the images (else the teacher sees the same ones every
    epoch, and its outputs are computed once)."""
    if is_stream(data.train_x):
        return augment and data.train_x.recipe.augments
    return augment and (data.augment.pad > 0 or data.augment.flip)


def teacher_batch(
    teacher: KDModel,
    cached: TeacherCache | None,
    idx: torch.Tensor,
    x: torch.Tensor,
    precision: Precision,
    forward: Forward | None = None,
) -> ModelOutput:
    """The teacher's outputs on a batch: its cached rows, or a forward pass without gradient
    (``forward``: the teacher's ``forward_features`` as ``budget.compile`` compiled it)."""
    if cached is not None:
        return cached.take(idx)
    with torch.no_grad(), precision.autocast(x.device):
        return as_fp32((forward or teacher.forward_features)(precision.layout(x)))


LossOf = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, ModelOutput | None], dict[str, Any]]
"""A training's loss on one batch: (sample indices, images, labels, the teacher's outputs or
None) -> named terms, each a scalar tensor, already weighted; the step sums them."""


@dataclass
class EpochLoss:
    """One epoch's mean loss and mean terms over its steps, and the images it saw."""

    loss: float
    terms: dict[str, float] = field(default_factory=dict)
    images: int = 0


class Trainer:
    """Trains ``params`` on one training split (see the module's docstring).

    ``precision`` is the trained network's; ``modules`` (the student, a method's heads) are
    put in its memory layout. The ``teacher``, when given, is put in eval mode and in
    ``teacher_precision``'s layout (the student's by default); its outputs reach the loss only
    with ``reads_teacher``, computed once for the whole split when neither augmentation nor
    ``transform`` changes the images and the split is in memory, else on each batch without
    autograd (compiled as ``compile`` says). ``train_x`` may be a streamed split. ``transform`` is applied to every batch after the split's augmentation,
    from the trainer's generator (DSA). ``drop_single``: see ``Batches``.
    """

    def __init__(
        self,
        data: DataBundle,
        train_x: torch.Tensor | ImageStream,
        train_y: torch.Tensor,
        *,
        params: list[torch.nn.Parameter],
        budget: Budget,
        seed: int,
        augment: bool,
        precision: Precision,
        modules: Sequence[torch.nn.Module] = (),
        teacher: KDModel | None = None,
        teacher_precision: Precision | None = None,
        reads_teacher: bool = True,
        compile: str = "none",
        transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        drop_single: bool = True,
    ) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = make_optimizer(params, budget)
        self.precision = precision
        if precision.channels_last:
            for m in modules:
                m.to(memory_format=torch.channels_last)
        self.teacher = teacher if reads_teacher else None
        self.teacher_precision = teacher_precision or precision
        if teacher is not None:
            teacher.eval()
            if self.teacher_precision.channels_last:
                teacher.to(memory_format=torch.channels_last)
        self.cached: TeacherCache | None = None
        streamed = is_stream(train_x)
        if (
            self.teacher is not None
            and not augments(data, augment)
            and transform is None
            and not streamed
        ):
            # The teacher sees the same images every epoch: compute its outputs once.
            self.cached = teacher_outputs(
                self.teacher, data, train_x, precision=self.teacher_precision
            )
        self.train_y = train_y
        self.transform = transform
        feed = dict(
            batch_size=budget.batch_size,
            augment=augment,
            gen=self.gen,
            precision=precision,
            drop_single=drop_single,
        )
        self.batches: Batches | StreamedBatches = (
            StreamedBatches(data, train_x, device=train_y.device, **feed)
            if streamed
            else Batches(data, train_x, **feed)
        )
        self._teacher_forward = (
            compiled.forward(self.teacher, compile)
            if self.teacher is not None and self.cached is None
            else None
        )

    def epoch(
        self, loss_of: LossOf, *, lr: float | None = None, what: str = "loss", at: str = ""
    ) -> EpochLoss:
        """One epoch of steps at ``lr`` (the optimiser's own when None); raises
        ``TrialDiverged`` (``what`` became NaN ``at``...) when the mean loss is not finite."""
        if lr is not None:
            for group in self.opt.param_groups:
                group["lr"] = lr
        loss_sum = torch.zeros((), device=self.train_y.device)
        term_sums: dict[str, torch.Tensor] = {}
        steps = images = 0
        for idx, x in self.batches.epoch():
            if self.transform is not None:
                x = self.precision.layout(self.transform(x, self.gen))
            y = self.train_y.index_select(0, idx)
            t_out = (
                teacher_batch(
                    self.teacher,
                    self.cached,
                    idx,
                    x,
                    self.teacher_precision,
                    self._teacher_forward,
                )
                if self.teacher is not None
                else None
            )
            terms = loss_of(idx, x, y, t_out)
            loss = torch.stack(list(terms.values())).sum()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            # Accumulate on the device; read back once per epoch, not once per step.
            loss_sum += loss.detach()
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + v.detach()
            steps += 1
            images += len(idx)
        mean = (loss_sum / max(steps, 1)).item()
        if not math.isfinite(mean):
            raise TrialDiverged(f"{what} became {mean} in {at}")
        return EpochLoss(mean, {k: float(v / max(steps, 1)) for k, v in term_sums.items()}, images)

    @property
    def skipped(self) -> int:
        """Training files that could not be decoded so far (a streamed split's)."""
        return self.batches.skipped
