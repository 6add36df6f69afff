"""A method's pre-training stage, run by the trainer before the student's training.

A method declares its stage in ``prepare`` (``methods.base.Stage``: the loss, the parameters
and modules it trains, its epochs); ``prepare`` here asks the method and runs the stage it
declares, so that the stage trains on the very batches the student's training will see: the
trial's training split, normalised and augmented as ``fit`` feeds it (augmentation when
``spec.data.augment``, the teacher's outputs computed once when nothing is augmented), at the
precision of the network it runs, from a generator seeded with ``spec.seed``.

As RepDistiller's ``init`` (``helper/pretrain.py``): plain SGD at the suite's learning rate ×
the stage's ``lr_scale``, its momentum, weight decay and batch size, without a schedule,
whatever ``budget.optimizer`` says; the teacher in eval mode, the student in eval mode except
the modules the stage trains; the loss unweighted. Every module's mode and every parameter's
``requires_grad`` are restored afterwards.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from kdbench.methods.base import Method, Reused, Stage, TrainingSet
from kdbench.training.trainer import Trainer, as_fp32, precisions


def prepare(
    method: Method, data: Any, *, spec: Any, device: torch.device, reused: Reused
) -> TrainingSet:
    """What the student trains on, as ``method.prepare`` decides, with the stage it declares
    run (its wall seconds added to the training set's)."""
    training = method.prepare(data, spec=spec, device=device, reused=reused)
    if training.stage is not None:
        training.seconds += run_stage(training.stage, data, spec=spec, device=device)
    return training


def run_stage(stage: Stage, data: Any, *, spec: Any, device: torch.device) -> float:
    """Train the stage's parameters for its epochs over ``data``'s training split; the wall
    seconds it took."""
    start = time.perf_counter()
    params = list(stage.params)
    if stage.epochs <= 0 or not params:
        return 0.0
    student, teacher = stage.student, stage.teacher
    modules = [m for m in (student, teacher, *stage.train) if m is not None]
    modes = [(m, m.training) for mod in modules for m in mod.modules()]
    grads = [(p, p.requires_grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        if student is not None:  # the teacher: the trainer puts it in eval mode
            student.eval()
        for m in stage.train:
            m.train()
        budget = spec.budget
        sgd = replace(budget, optimizer="sgd", lr=budget.lr * stage.lr_scale)
        probe = student if student is not None else teacher
        precision, _ = precisions(budget.precision, device, data, probe)
        trainer = Trainer(
            data,
            data.train_x.to(device),
            data.train_y.to(device),
            params=params,
            budget=sgd,
            seed=spec.seed,
            augment=bool(spec.data.augment),
            precision=precision,
            modules=[m for m in (student, *stage.train) if m is not None],
            teacher=teacher,
        )

        def loss_of(idx, x, y, t_out):
            s_out = None
            if student is not None:
                with precision.autocast(device):
                    s_out = as_fp32(student.forward_features(x))
            return {"stage": stage.loss(s_out, t_out)}

        for epoch in range(stage.epochs):
            trainer.epoch(
                loss_of,
                what="the pre-training stage's loss",
                at=f"epoch {epoch + 1} of {stage.epochs}",
            )
    finally:
        for m, was in modes:
            m.train(was)
        for p, was in grads:
            p.requires_grad_(was)
    return time.perf_counter() - start
