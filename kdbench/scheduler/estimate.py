"""What a plan will cost, before it runs: trial counts, images, MACs, and measured step times.

The time estimate is measured, not guessed: a few training steps of every distinct
(student, teacher, method) shape on random inputs of the data set's shape, timed on this
machine at the suite's thread count on a batch of up to 16 scaled to the suite's batch size,
times the steps the plan will take.
Evaluation passes and Ray's overhead are not included. A ``dd_*`` trial trains on its
synthetic set (``ipc`` × classes images) and synthesises for at most its ``time_budget_s``,
counted whole; a synthesis without a budget is counted apart, as not estimated.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from kdbench.data import dataset_info
from kdbench.methods import MethodContext, method_class
from kdbench.methods.base import Step
from kdbench.models import build_model, count_macs
from kdbench.plan import Plan, TrialSpec

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
    """dd_* trials whose synthesis has no time budget: their synthesis is not in the estimate."""


def _probe(spec: TrialSpec, batch: int, steps: int = 2) -> tuple[float, int]:
    """(Seconds per training step of this spec's student and teacher, measured; the student's MACs)."""
    info = dataset_info(spec.dataset, spec.data.root)
    torch.set_num_threads(max(1, int(spec.cpus)))
    name = spec.student or spec.teacher.arch
    model = build_model(name, num_classes=info.num_classes, input_shape=info.input_shape)
    cls = method_class(spec.method if spec.student else "scratch")
    teacher = None
    if cls.needs.teacher and spec.student:
        teacher = build_model(
            spec.teacher.arch, num_classes=info.num_classes, input_shape=info.input_shape
        ).eval()
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
    x = torch.randn(batch, *info.input_shape)
    idx = torch.arange(batch)
    y = labels[idx]
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            t_out = teacher.forward_features(x) if teacher is not None else None
        terms = method.loss(
            Step(x=x, y=y, student=model.forward_features(x), teacher=t_out, index=idx)
        )
        opt.zero_grad()
        torch.stack(list(terms.values())).sum().backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return min(times), count_macs(model, info.input_shape)


def estimate(
    plan: Plan, specs: list[TrialSpec] | None = None, *, cpus_available: int | None = None
) -> Estimate:
    specs = list(plan.trials) if specs is None else specs
    batch = plan.suite.budget.batch_size
    probes: dict[tuple, tuple[float, int]] = {}
    counts: dict[str, int] = {}
    images = 0
    macs = 0.0
    cpu_s = 0.0
    unbudgeted = 0
    for spec in specs:
        counts[spec.phase] = counts.get(spec.phase, 0) + 1
        if spec.epochs == 0:  # a teacher loaded from a checkpoint: evaluation only
            continue
        info = dataset_info(spec.dataset, spec.data.root)
        n_train, _ = info.split_sizes(spec.data.val_fraction)
        epochs = spec.epochs
        cls = method_class(spec.method) if spec.student else None
        if cls is not None and cls.needs.synthetic_set:
            hp = dict(spec.hparams)
            n_syn = int(hp["ipc"]) * info.num_classes
            epochs = cls.student_epochs(hp, spec.epochs, n_train, n_syn, batch)
            n_train = n_syn
            budget = float(hp.get("time_budget_s", 0.0))
            if "time_budget_s" in hp and budget <= 0:
                unbudgeted += 1
            cpu_s += budget * spec.cpus
        n = n_train * epochs
        images += n
        key = (spec.dataset, spec.student, spec.teacher.arch, spec.method, int(spec.cpus))
        step_batch = min(batch, n_train)
        if key not in probes:
            # Timed on a small batch and scaled: the step time of a CNN grows linearly with
            # the batch, and a full batch of a CIFAR teacher takes seconds a step on a CPU.
            probe_batch = min(step_batch, PROBE_BATCH)
            step_s, model_macs = _probe(spec, probe_batch)
            probes[key] = (step_s * step_batch / probe_batch, model_macs)
        step_s, model_macs = probes[key]
        cpu_s += step_s * math.ceil(n_train / batch) * epochs * spec.cpus
        macs += 3.0 * model_macs * n
    cpus = cpus_available or os.cpu_count() or 1
    return Estimate(
        trials=counts,
        images=images,
        macs=macs,
        cpu_seconds=cpu_s,
        wall_seconds=cpu_s / cpus,
        cpus_available=cpus,
        unbudgeted=unbudgeted,
    )
