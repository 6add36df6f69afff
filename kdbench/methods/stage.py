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

``StagedMethod`` is the base of a method with such a stage: its ``prepare`` declares it (a
``Stage``: the loss, what it trains, ``stage_epochs`` = round(``init_share`` × the suite's
epochs) epochs, at least 1 when ``init_share`` > 0; 0.125 = RepDistiller's 30 of 240) and the
trainer runs it (``kdbench.training.stage``) batch for batch as it feeds the student's
training, before the student trains the suite's full epochs, as RepDistiller's 240 follow its
30; its ``cost`` counts the stage's epochs as epochs over the training split.

Deliberate differences: the student's classifier is handed to the optimiser with the rest of
the student, but the stage's losses never reach it, so (``zero_grad(set_to_none=True)``) SGD
leaves it, and its weight decay, alone: the same as RepDistiller's ``get_feat_modules()``.
The stage is always SGD (RepDistiller's), whatever ``budget.optimizer`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    Stage,
    TrainingSet,
)
from kdbench.models.base import ModelOutput


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


class StagedMethod(Method):
    """A method with a pre-training stage, declared by ``prepare`` and run by the trainer.

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
        stage = None
        if epochs:
            self.check_stage()
            student, teacher = self._models
            if teacher is None:
                raise RuntimeError(f"{self.name}'s pre-training stage needs a teacher")
            stage = Stage(
                loss=self.stage_loss,
                params=self.stage_params(),
                train=self.stage_modules(),
                student=student if self.stage_uses_student else None,
                teacher=teacher,
                epochs=epochs,
                lr_scale=self.stage_lr_scale(),
            )
        return TrainingSet(data, spec.epochs, with_teacher=self.trains_with_teacher, stage=stage)

    @classmethod
    def cost(cls, hp: Mapping[str, Any], basis: CostBasis) -> Cost:
        """The suite's epochs and the stage's, each over the whole training split."""
        return Cost(basis.n_train, basis.epochs + stage_epochs(hp, basis.epochs))
