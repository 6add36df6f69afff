"""The training loop every trial uses: one loop, whatever the method.

Data live as tensors on the trial's device; each step slices a batch, normalises and augments
it on tensors, runs the student (and the teacher, when the method needs it, without
autograd), and sums the method's named loss terms. Nothing here depends on a method's name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import torch

from kdbench.data import DataBundle, augment_batch
from kdbench.methods.base import Method, Step
from kdbench.models.base import KDModel, ModelOutput, count_macs
from kdbench.spec import Budget
from kdbench.training import compiled
from kdbench.training.compiled import Forward


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class EpochStats:
    epoch: int
    lr: float
    train_loss: float
    val_acc: float
    seconds: float
    terms: dict[str, float] = field(default_factory=dict)
    test_acc: float = math.nan
    """Final trials only, for reporting (best versus last epoch): nothing is chosen by it."""


@dataclass
class FitResult:
    curve: list[EpochStats]
    images_seen: int
    train_seconds: float
    stopped_early: bool = False
    """``on_epoch`` asked to stop (a pruned tuning trial)."""

    @property
    def val_acc(self) -> float:
        return self.curve[-1].val_acc if self.curve else float("nan")


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


def as_fp32(out: ModelOutput) -> ModelOutput:
    """A network's outputs in fp32, for the losses (autocast leaves them in bf16)."""
    return out if out.logits.dtype == torch.float32 else out.map(lambda t: t.float())


@torch.no_grad()
def predict(
    model: KDModel,
    data: DataBundle,
    x: torch.Tensor,
    batch_size: int = 1024,
    precision: Precision | None = None,
) -> torch.Tensor:
    """Logits of a whole split, in eval mode, in large batches, without autograd."""
    precision = precision or Precision()
    was_training = model.training
    model.eval()
    with precision.autocast(x.device):
        out = [
            model(precision.layout(data.normalize(x[i : i + batch_size]))).float()
            for i in range(0, len(x), batch_size)
        ]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    """Top-``k`` accuracy; NaN for an empty split (no `val` under ``data.refit``)."""
    if len(y) == 0:
        return math.nan
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == y[:, None]).any(dim=1).float().mean().item()


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
    when ``augment``, in the precision's memory layout. A method's own stage
    (``kdbench.methods.stage``) trains on the same batches."""

    def __init__(
        self,
        data: DataBundle,
        train_x: torch.Tensor,
        *,
        batch_size: int,
        augment: bool,
        gen: torch.Generator,
        precision: Precision,
    ) -> None:
        self.data, self.batch_size, self.augment = data, batch_size, augment
        self.gen, self.precision = gen, precision
        self.n = len(train_x)
        self.normalized = train_x.numel() * 4 <= NORMALIZED_SPLIT_BYTES
        self.x = data.normalize(train_x) if self.normalized else train_x

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(sample indices, images) of each batch of one epoch."""
        order = torch.randperm(self.n, generator=self.gen).to(self.x.device)
        for i in range(0, self.n, self.batch_size):
            idx = order[i : i + self.batch_size]
            if len(idx) < 2 and self.n >= 2:  # BatchNorm cannot train on a batch of one
                continue
            x = self.x.index_select(0, idx)  # faster than x[idx] on a CPU
            if not self.normalized:
                x = self.data.normalize(x)
            if self.augment:
                x = augment_batch(x, self.data.augment, self.gen)
            yield idx, self.precision.layout(x)


def augments(data: DataBundle, augment: bool) -> bool:
    """Whether augmentation changes the images (else the teacher sees the same ones every
    epoch, and its outputs are computed once)."""
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


def fit(
    model: KDModel,
    data: DataBundle,
    *,
    method: Method,
    budget: Budget,
    epochs: int,
    seed: int,
    augment: bool,
    teacher: KDModel | None = None,
    device: torch.device | None = None,
    on_epoch: Callable[[EpochStats], bool | None] | None = None,
    val_every: int = 1,
    macs: int | None = None,
    report_test: bool = False,
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` on ``data.train`` with ``method``'s loss; validate after every epoch.

    ``on_epoch`` sees each validated epoch's statistics; returning True stops training there
    (pruning). ``val_every``: validate every that many epochs and after the last (a student
    on a 100-image synthetic set runs hundreds of short epochs; validating each would cost
    more than training); the other epochs' ``val_acc`` is NaN. ``macs``: the model's MACs per
    image, when the caller counted them already (they choose its precision).
    ``report_test``: a final trial's test accuracy too, at every validated epoch but the last
    (which the caller scores itself), kept in the curve for best-versus-last reporting; never
    read by training, and not counted in ``train_seconds``. ``transform``: applied to every
    normalised batch after the suite's augmentation, from the trial's generator (DSA on a
    synthetic set); the teacher then sees each transformed batch.
    """
    device = device or torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    if method.needs.transfer_set:  # the training images + the unlabeled pool (label -1)
        train_x, train_y = data.transfer_set(device)
    else:
        train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    val_x, val_y = data.val_x.to(device), data.val_y.to(device)
    if report_test:
        test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    params = list(model.parameters()) + list(method.parameters())
    opt = make_optimizer(params, budget)
    if macs is None:
        macs = count_macs(model, data.input_shape)
    precision = Precision.resolve(budget.precision, macs, device, model)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
        method.to(memory_format=torch.channels_last)
    uses_teacher = method.needs.teacher and teacher is not None
    teacher_precision = precision
    if teacher is not None:
        teacher.eval()
        if uses_teacher:
            # The teacher computes at its own precision: a heavy teacher of a light student
            # (resnet32x4 → mobilenetv2) runs in bf16 where that is fast, though the student
            # does not; its outputs reach the losses in fp32 either way.
            teacher_macs = count_macs(teacher, data.input_shape)
            teacher_precision = Precision.resolve(budget.precision, teacher_macs, device, teacher)
        if teacher_precision.channels_last:
            teacher.to(memory_format=torch.channels_last)
    cached = None
    if uses_teacher and not augments(data, augment) and transform is None:
        # The teacher sees the same images every epoch: compute its outputs once.
        cached = teacher_outputs(teacher, data, train_x, precision=teacher_precision)
    batches = Batches(
        data, train_x, batch_size=budget.batch_size, augment=augment, gen=gen, precision=precision
    )
    student_forward = compiled.forward(model, budget.compile)
    teacher_forward = (
        compiled.forward(teacher, budget.compile) if uses_teacher and cached is None else None
    )
    model.train()
    method.train()
    curve: list[EpochStats] = []
    start = time.perf_counter()
    seen = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        lr = lr_at(budget, epoch, epochs)
        for group in opt.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        term_sums: dict[str, torch.Tensor] = {}
        steps = 0
        for idx, x in batches.epoch():
            if transform is not None:
                x = precision.layout(transform(x, gen))
            y = train_y.index_select(0, idx)
            t_out = (
                teacher_batch(teacher, cached, idx, x, teacher_precision, teacher_forward)
                if uses_teacher
                else None
            )
            with precision.autocast(device):
                s_out = student_forward(x)
            s_out = as_fp32(s_out)
            terms = method.loss(
                Step(
                    x=x,
                    y=y,
                    student=s_out,
                    teacher=t_out,
                    index=idx if method.needs.indices else None,
                    epoch=epoch,
                    epochs=epochs,
                )
            )
            loss = torch.stack(list(terms.values())).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # Accumulate on the device; read back once per epoch, not once per step.
            loss_sum += loss.detach()
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + v.detach()
            steps += 1
            seen += len(idx)
        mean_loss = (loss_sum / max(steps, 1)).item()
        if not math.isfinite(mean_loss):
            raise TrialDiverged(f"loss became {mean_loss} in epoch {epoch + 1} of {epochs}")
        validate = (epoch + 1) % val_every == 0 or epoch + 1 == epochs
        val_acc = (
            accuracy(predict(model, data, val_x, precision=precision), val_y)
            if validate
            else math.nan
        )
        stats = EpochStats(
            epoch=epoch + 1,
            lr=lr,
            train_loss=mean_loss,
            val_acc=val_acc,
            seconds=time.perf_counter() - t0,
            terms={k: float(v / max(steps, 1)) for k, v in term_sums.items()},
        )
        curve.append(stats)
        if validate and report_test and epoch + 1 < epochs:
            scored = time.perf_counter()
            # as the final score is taken (fp32), so that best and last compare like for like
            stats.test_acc = accuracy(predict(model, data, test_x), test_y)
            start += time.perf_counter() - scored
        if validate and on_epoch is not None:
            asked = time.perf_counter()
            stop = on_epoch(stats)  # a tuning trial's report to its study: not training time
            start += time.perf_counter() - asked
            if stop:
                return FitResult(curve, seen, time.perf_counter() - start, stopped_early=True)
    return FitResult(curve=curve, images_seen=seen, train_seconds=time.perf_counter() - start)
