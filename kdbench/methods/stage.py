"""A method's own stage before the student trains: pre-training some parameters (a connector,
a paraphraser, the student's layers) on a loss of the method's, RepDistiller's ``init``.

RepDistiller (HobbitLong/RepDistiller, ``helper/pretrain.py`` ``init``, called from
``train_student.py``) runs, for ``abound``, ``factor`` and ``fsp``, ``init_epochs`` (30, for
240 epochs of training) epochs over the training loader (the same augmented batches as
training) before the student's training: plain SGD at the training's initial learning rate
(0.01 for ``factor`` with a CIFAR ResNet or WRN student), its momentum and weight decay,
without a schedule; the teacher in eval mode under ``no_grad``; the student in eval mode
except the modules the stage trains, which are in train mode (for ``abound`` and ``fsp`` the
student's feature modules, ``get_feat_modules()``: every layer but the classifier). The
stage's loss is unweighted (β multiplies the main-phase term alone).

``pretrain`` is that loop over a kdbench trial's training split, batch for batch as
``kdbench.training.loop.fit`` feeds one (``data.normalize``, ``augment_batch`` when
``spec.data.augment``, the teacher's outputs cached when nothing is augmented, the budget's
precision for the networks' forward passes), seeded from ``spec.seed``; it returns its wall
seconds. ``StagedMethod`` is the base of a method with such a stage: its ``prepare`` runs
``stage_epochs`` = round(``init_share`` × the suite's epochs) epochs (at least 1 when
``init_share`` > 0; 0.125 = RepDistiller's 30 of 240), then the student trains the suite's
full epochs, as RepDistiller's 240 follow its 30; its ``cost`` counts the stage's epochs as
epochs over the training split. The trainer never knows: everything goes through
``Method.prepare``.

Deliberate differences: the student's classifier is handed to the optimiser with the rest of
the student, but the stage's losses never reach it, so (``zero_grad(set_to_none=True)``) SGD
leaves it, and its weight decay, alone: the same as RepDistiller's ``get_feat_modules()``.
The stage is always SGD (RepDistiller's), whatever ``budget.optimizer`` says.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import nn

from kdbench.methods.base import (
    Cost,
    CostBasis,
    HParam,
    Method,
    MethodContext,
    Reused,
    TrainingSet,
)
from kdbench.models.base import ModelOutput

StageLoss = Callable[[ModelOutput | None, ModelOutput], torch.Tensor]
"""The stage's loss of one batch: (the student's outputs, or None when the stage does not run
the student; the teacher's outputs) -> a scalar."""


def init_share(default: float = 0.125) -> HParam:
    """The stage's length as a share of the suite's epochs: 0.125 = RepDistiller's 30 of 240."""
    return HParam(
        "init_share",
        default,
        low=0.0,
        high=1.0,
        doc="epochs of the pre-training stage, as a share of the suite's epochs "
        "(rounded; at least 1 when above 0; RepDistiller: 30 of 240)",
    )


def stage_epochs(hp: Mapping[str, Any], epochs: int) -> int:
    """round(init_share × epochs), at least 1 when init_share > 0; 0 without a stage."""
    share = float(hp.get("init_share", 0.0))
    if share <= 0:
        return 0
    return max(1, round(share * epochs))


def pretrain(
    *,
    loss: StageLoss,
    params: Iterable[nn.Parameter],
    train: Sequence[nn.Module],
    student: nn.Module | None,
    teacher: nn.Module,
    data: Any,
    spec: Any,
    device: torch.device,
    epochs: int,
    lr_scale: float = 1.0,
) -> float:
    """Train ``params`` for ``epochs`` epochs over ``data``'s training split on ``loss``; the
    wall seconds it took.

    ``train``: the modules in train mode during the stage (the rest of the student, when it
    runs, is in eval mode, as RepDistiller's ``init``); ``student``: the network whose outputs
    ``loss`` reads first, or None when the stage needs only the teacher's (it is not run).
    SGD at ``spec.budget.lr × lr_scale``, constant, with the budget's momentum, weight decay
    and batch size. Every module's mode and every parameter's ``requires_grad`` are restored
    afterwards.
    """
    from kdbench.models.base import count_macs
    from kdbench.training.loop import (
        Batches,
        Precision,
        TrialDiverged,
        as_fp32,
        augments,
        make_optimizer,
        teacher_batch,
        teacher_outputs,
    )

    start = time.perf_counter()
    params = list(params)
    budget = spec.budget
    if epochs <= 0 or not params:
        return 0.0
    modules = [m for m in (student, teacher, *train) if m is not None]
    modes = [(m, m.training) for mod in modules for m in mod.modules()]
    grads = [(p, p.requires_grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        teacher.eval()
        if student is not None:
            student.eval()
        for m in train:
            m.train()
        opt = make_optimizer(params, replace(budget, optimizer="sgd", lr=budget.lr * lr_scale))
        probe = student if student is not None else teacher
        macs = count_macs(probe, data.input_shape)
        precision = Precision.resolve(budget.precision, macs, device, probe)
        if precision.channels_last:  # as ``fit`` will convert them, for the same kernels
            for m in modules:
                m.to(memory_format=torch.channels_last)
        train_x = data.train_x.to(device)
        augment = bool(spec.data.augment)
        cached = None
        if not augments(data, augment):
            cached = teacher_outputs(teacher, data, train_x, precision=precision)
        batches = Batches(
            data,
            train_x,
            batch_size=budget.batch_size,
            augment=augment,
            gen=torch.Generator().manual_seed(spec.seed),
            precision=precision,
        )
        for epoch in range(epochs):
            total = torch.zeros((), device=device)
            steps = 0
            for idx, x in batches.epoch():
                t_out = teacher_batch(teacher, cached, idx, x, precision)
                s_out = None
                if student is not None:
                    with precision.autocast(device):
                        s_out = as_fp32(student.forward_features(x))
                value = loss(s_out, t_out)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                total += value.detach()
                steps += 1
            mean = (total / max(steps, 1)).item()
            if not math.isfinite(mean):
                raise TrialDiverged(
                    f"the pre-training stage's loss became {mean} in epoch {epoch + 1} of {epochs}"
                )
    finally:
        for m, was in modes:
            m.train(was)
        for p, was in grads:
            p.requires_grad_(was)
    return time.perf_counter() - start


class StagedMethod(Method):
    """A method with a pre-training stage (``pretrain``) run by ``prepare``.

    Subclasses write ``stage_loss`` and say what the stage trains (``stage_params``,
    ``stage_modules``) and whether it runs the student (``stage_uses_student``). The student
    and the teacher are kept in a plain tuple, never as submodules (their parameters would
    become the method's)."""

    combinable: ClassVar[bool] = False
    """A combination does not run its parts' ``prepare``, so the stage would be skipped."""
    stage_uses_student: ClassVar[bool] = True
    """Whether the stage runs the student (its loss reads the student's outputs)."""
    trains_with_teacher: ClassVar[bool] = True
    """Whether the teacher's outputs reach the main-phase loss (ab and fsp: no, their
    main-phase term is 0), so that the trainer does not run the teacher for nothing."""

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        self._models = (ctx.student, ctx.teacher)

    def stage_loss(self, student: ModelOutput | None, teacher: ModelOutput) -> torch.Tensor:
        raise NotImplementedError

    def stage_params(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def stage_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def stage_lr_scale(self) -> float:
        return 1.0

    def check_stage(self) -> None:
        """Raise when the stage cannot run on this pair (the trainer's last line of defence;
        validation refuses such a pair first, through ``pairing``)."""

    def prepare(self, data: Any, *, spec: Any, device: torch.device, reused: Reused) -> TrainingSet:
        """The stage, then the student's training on the data, for the suite's epochs."""
        epochs = stage_epochs(self.hp, spec.epochs)
        seconds = 0.0
        if epochs:
            self.check_stage()
            student, teacher = self._models
            if teacher is None:
                raise RuntimeError(f"{self.name}'s pre-training stage needs a teacher")
            seconds = pretrain(
                loss=self.stage_loss,
                params=self.stage_params(),
                train=self.stage_modules(),
                student=student if self.stage_uses_student else None,
                teacher=teacher,
                data=data,
                spec=spec,
                device=device,
                epochs=epochs,
                lr_scale=self.stage_lr_scale(),
            )
        return TrainingSet(
            data,
            spec.epochs,
            seconds=seconds,
            with_teacher=self.trains_with_teacher,
            stage_epochs=epochs,
        )

    @classmethod
    def cost(cls, hp: Mapping[str, Any], basis: CostBasis) -> Cost:
        """The suite's epochs and the stage's, each over the whole training split."""
        return Cost(basis.n_train, basis.epochs + stage_epochs(hp, basis.epochs))
