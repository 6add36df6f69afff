"""A trial's training: one loop over the trainer, whatever the method.

``fit`` trains a network on a split with a method's named loss terms (``Method.loss``),
validates after every epoch (or every ``val_every``), reports to a study (``on_epoch``) and,
for a final trial, keeps each validated epoch's test accuracy for best-versus-last reporting.
Everything it shares with the other trainings (optimiser, precision, batches, the teacher's
outputs, the step) is the ``Trainer``'s. Nothing here depends on a method's name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kdbench.data import DataBundle
from kdbench.data.stream import ImageStream, batches, is_stream
from kdbench.methods.base import Method, Step
from kdbench.models.base import KDModel
from kdbench.spec import Budget
from kdbench.training import compiled
from kdbench.training.trainer import (
    Precision,
    Trainer,
    as_fp32,
    loader_workers,
    lr_at,
    precisions,
)


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
    skipped: int = 0
    """Training files of a streamed split that could not be decoded (left out of their
    batches), counted each time they were read."""

    @property
    def val_acc(self) -> float:
        return self.curve[-1].val_acc if self.curve else float("nan")


@torch.no_grad()
def predict(
    model: KDModel,
    data: DataBundle,
    x: torch.Tensor | ImageStream,
    batch_size: int = 1024,
    precision: Precision | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Logits of a whole split, in eval mode, in large batches, without autograd. A streamed
    split is read in its evaluation view onto ``device`` (the model's by default); an image
    that could not be decoded gets a row of NaN, which ``accuracy`` counts as wrong."""
    precision = precision or Precision()
    if is_stream(x):
        return _predict_stream(model, data, x, precision, device)
    was_training = model.training
    model.eval()
    with precision.autocast(x.device):
        out = [
            model(precision.layout(data.normalize(x[i : i + batch_size]))).float()
            for i in range(0, len(x), batch_size)
        ]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def _predict_stream(
    model: KDModel,
    data: DataBundle,
    stream: ImageStream,
    precision: Precision,
    device: torch.device | None,
) -> torch.Tensor:
    device = device or next(model.parameters()).device
    out = torch.full((len(stream), data.num_classes), math.nan, device=device)
    was_training = model.training
    model.eval()
    cuda = device.type == "cuda"
    for read in batches(stream, batch_size=256, workers=loader_workers(), pin_memory=cuda):
        if len(read.index) == 0:
            continue
        x = data.normalize(read.images.to(device, non_blocking=cuda))
        with precision.autocast(device):
            out[read.index.to(device)] = model(precision.layout(x)).float()
    model.train(was_training)
    return out


def accuracy(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    """Top-``k`` accuracy; NaN for an empty split (no `val` under ``data.refit``). A row of
    NaN (an image that could not be read) counts as wrong."""
    if len(y) == 0:
        return math.nan
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    right = (top == y[:, None]).any(dim=1)
    if logits.dtype.is_floating_point:
        right &= ~logits.isnan().any(dim=1)
    return right.float().mean().item()


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
    if method.needs.transfer_set:  # the training images + the unlabeled pool (label -1)
        train_x, train_y = data.transfer_set(device)
    else:
        train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    val_x, val_y = data.val_x.to(device), data.val_y.to(device)
    if report_test:
        test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    reads_teacher = teacher is not None and method.uses_teacher(method.hp)
    precision, teacher_precision = precisions(
        budget.precision, device, data, model, macs, teacher if reads_teacher else None
    )
    trainer = Trainer(
        data,
        train_x,
        train_y,
        params=list(model.parameters()) + list(method.parameters()),
        budget=budget,
        seed=seed,
        augment=augment,
        precision=precision,
        modules=(model, method),
        teacher=teacher,
        teacher_precision=teacher_precision,
        reads_teacher=reads_teacher,
        compile=budget.compile,
        transform=transform,
    )
    student_forward = compiled.forward(model, budget.compile)

    def loss_of(idx, x, y, t_out):
        with precision.autocast(device):
            s_out = student_forward(x)
        return method.loss(
            Step(
                x=x,
                y=y,
                student=as_fp32(s_out),
                teacher=t_out,
                index=idx if method.needs.indices else None,
                epoch=epoch,
                epochs=epochs,
            )
        )

    model.train()
    method.train()
    curve: list[EpochStats] = []
    start = time.perf_counter()
    seen = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        lr = lr_at(budget, epoch, epochs)
        done = trainer.epoch(loss_of, lr=lr, at=f"epoch {epoch + 1} of {epochs}")
        seen += done.images
        validate = (epoch + 1) % val_every == 0 or epoch + 1 == epochs
        val_acc = (
            accuracy(predict(model, data, val_x, precision=precision), val_y)
            if validate
            else math.nan
        )
        stats = EpochStats(
            epoch=epoch + 1,
            lr=lr,
            train_loss=done.loss,
            val_acc=val_acc,
            seconds=time.perf_counter() - t0,
            terms=done.terms,
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
                return FitResult(curve, seen, time.perf_counter() - start, True, trainer.skipped)
    return FitResult(curve, seen, time.perf_counter() - start, skipped=trainer.skipped)
