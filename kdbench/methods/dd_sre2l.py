"""``dd_sre2l``: Squeeze, Recover and Relabel (Yin, Xing & Shen, "Squeeze, Recover and
Relabel: Dataset Condensation at ImageNet Scale From A New Perspective", NeurIPS 2023).

*Squeeze* is the suite's teacher, trained on the data by kdbench. *Recover* (this file) makes
images from the teacher alone, no real image: starting from Gaussian noise in the normalised
space, it minimises for a batch X with one image of each class y

    L(X) = CE(f(J(X)), y) + r_bn · Σ_l m_l (‖σ²_l(J(X)) − σ²_l,run‖₂ + ‖μ_l(J(X)) − μ_l,run‖₂)

where f is the frozen teacher in eval mode, J a random jitter (a circular shift, optionally
a horizontal flip) drawn afresh each iteration, μ_l and σ²_l the per-channel mean and biased
variance, over the batch and the pixels, of the *input* of the l-th ``BatchNorm2d`` (a
forward hook, the reference's ``BNFeatureHook``), μ_l,run and σ²_l,run that layer's running
statistics, and m_l = ``first_bn_multiplier`` for the first BN layer (in ``modules()``
order), 1 for the others. The norms are plain L2 norms, not squared, summed over the layers.
Adam (betas 0.5, 0.9; eps 1e-8) with the cosine schedule lr_t = ½(1 + cos(π t / T))·lr, no
warm-up, over the T = ``iterations``; after each step the images are clipped to the range of
[0, 1] images after normalisation, (0 − mean)/std ≤ x ≤ (1 − mean)/std per channel. The
images after the last step are the set. *Relabel* is the student's training on the set with
the teacher's soft labels on every batch (``labels: soft``, the default here: kd's loss,
``kdbench.methods.synthetic.labels``); ``labels: hard`` scores the same set on its own labels.

The reference code and the settings taken from it (github:VILA-Lab/SRe2L, the small data-set
variant ``SRe2L/*small_dataset/``, as the images here are CIFAR-sized or smaller):

- BN distance: ``utils.py`` 36-45 (``torch.norm(running_var − var, 2) + torch.norm(running_mean
  − mean, 2)``, ``var(unbiased=False)`` of the BN layer's input); hooks on every
  ``nn.BatchNorm2d``: ``recover_cifar.py`` 51-54; first-layer multiplier and sum over layers:
  91-97 (``--first-bn-multiplier`` 10, line 216); total loss CE + r_bn · BN: 88-101.
- Adam(lr, betas (0.5, 0.9), eps 1e-8): ``recover_cifar.py`` 69; cosine without warm-up:
  70, 76 and ``utils.py`` 60-68. ``recover_cifar.sh``: lr 0.25, 1,000 iterations, r_bn 0.01,
  batch 100 (the defaults here). ImageNet (``recover/recover.sh``): lr 0.25, 4,000
  iterations, r_bn 0.01; Tiny ImageNet (``recover_tiny.sh``): lr 0.1, 4,000, r_bn 1.
- Initialisation ``torch.randn`` in the normalised space: ``recover_cifar.py`` 64; clipping
  after each step: 133 (``clip_cifar``, 18-28); the last images are kept: 139.
- Jitter: ``torch.roll`` of the batch by (Δh, Δw), each drawn uniformly from {0, …, jitter},
  once per iteration: 79-81, jitter 4 pixels at 32 px (line 211). No flip and no crop on
  CIFAR ("we discard the Multi-crop Optimization", ``README_CIFAR.md``); ImageNet adds
  ``RandomResizedCrop`` + ``RandomHorizontalFlip`` before a roll of up to 32 px at 224
  (``recover/data_synthesis.py`` 55-64, 177), Tiny ImageNet the same with a roll in
  [−4, 4] at 64 px (``recover_tiny.py`` 49-58).
- Batches: the targets are the classes in order, cut into batches of ``--batch-size`` 100
  (``recover_cifar.py`` 58-61); each ipc index is a separate run with its own noise,
  optimiser and schedule (249-252; ``--ipc-start``/``--ipc-end``), so a batch holds one
  image of each of up to 100 classes and the BN statistics are taken over it.

How this file batches it: every (ipc index, chunk of ``batch_classes`` classes) is one of
the reference's batches, a *group*; the groups go through the teacher side by side, up to
``PASS_IMAGES`` images per forward pass, and the hook takes the BN statistics of each group
over its own images. The teacher is in eval mode (each image's output does not depend on the
others), Adam and the clipping act per pixel and the summed loss Σ_groups L gives each group
the gradient of its own L, so this is the reference's sequence of runs done side by side: the
same images up to the random draws (each group still gets its own jitter each iteration),
in one pass per iteration instead of one per ipc index and class chunk.

Where this differs on purpose:

- ``jitter`` is a fraction of the image side, not pixels, so one setting serves every image
  size: round(jitter · side) pixels, 0.125 by default (the CIFAR reference's 4 of 32; 1 pixel
  on digits' 8×8; the ImageNet reference's 32 of 224 is 0.143).
- ``flip`` (off by default, as in the CIFAR reference) mirrors each group with probability
  ½ each iteration, as the ImageNet one does; the random resized crop is left out, as in the
  CIFAR reference.
- The set is kept as floats in [0, 1], not saved as 8-bit JPEG files as the reference does.
- The ImageNet variant's image priors (total variation, L2; ``data_synthesis.py`` 78-86)
  are not implemented: its own ``recover.sh`` and the small data-set variant set them to 0.
- ``time_budget_s`` (60 s) caps the synthesis: it stops after the last iteration that fits,
  for all groups at once, leaving the cosine schedule unfinished; the set records the
  iterations it got. For the reference run: ``params: {time_budget_s: 0}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.base import HParam, Needs
from kdbench.methods.synthetic import (
    Deadline,
    SyntheticSet,
    SyntheticSetMethod,
    image_lr,
    ipc,
    labels,
    time_budget,
    to_stored,
    train_epochs,
)

ADAM_BETAS = (0.5, 0.9)
ADAM_EPS = 1e-8
PASS_IMAGES = 1024
"""At most this many images (whole recover batches, at least one) go through the teacher in
one forward pass: it bounds the memory of a large set (CIFAR-100 at ipc 50 is 5,000 images)
and does not change the result, the groups being independent."""


def batchnorm_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The model's ``BatchNorm2d`` layers that keep running statistics, in ``modules()`` order."""
    return [
        m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None
    ]


def missing_batchnorm(teacher: nn.Module | None) -> str | None:
    """Why SRe2L cannot recover images from ``teacher``, or None when it can."""
    if teacher is None:
        return "it recovers the images from a teacher, and there is none"
    if not batchnorm_layers(teacher):
        return (
            "the teacher has no BatchNorm layers, whose running statistics SRe2L recovers "
            "the images from"
        )
    return None


def group_average(groups: torch.Tensor) -> torch.Tensor:
    """(G, N): row g averages over the images of group g, given each image's group 0..G−1."""
    member = F.one_hot(groups).T.float()
    return member / member.sum(dim=1, keepdim=True)


def bn_distance(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    average: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per group g of the images of ``x`` (N, C, H, W), ‖σ²_g − running_var‖₂ + ‖μ_g −
    running_mean‖₂, with μ_g and σ²_g the per-channel mean and biased variance over the
    group's images and their pixels: a (G,) tensor. ``average`` is ``group_average`` of the
    images' groups (None: one group, the whole batch)."""
    if average is None:
        average = x.new_full((1, len(x)), 1.0 / len(x))
    average = average.to(x.dtype)
    # every image has as many pixels: the mean of its per-image means is the group's mean
    mean = average @ x.mean(dim=(2, 3))
    own_mean = (average.T > 0).to(x.dtype) @ mean  # (N, C): each image's group's mean
    var = average @ (x - own_mean[:, :, None, None]).pow(2).mean(dim=(2, 3))
    return (var - running_var).norm(dim=1) + (mean - running_mean).norm(dim=1)


class BNStatistics:
    """Forward hooks on every ``BatchNorm2d`` of ``model`` (with running statistics): each
    forward pass records, per layer, ``bn_distance`` of the layer's input, per group of
    images (``groups``: each image's group 0..G−1; None: the whole batch is one). A context
    manager: the hooks are removed on leaving, also on an error."""

    def __init__(self, model: nn.Module, groups: torch.Tensor | None = None) -> None:
        self.layers = batchnorm_layers(model)
        self.groups = groups
        self.distances: list[torch.Tensor | None] = [None] * len(self.layers)
        self.handles = [
            layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)
        ]

    @property
    def groups(self) -> torch.Tensor | None:
        return self._groups

    @groups.setter
    def groups(self, groups: torch.Tensor | None) -> None:
        # once per assignment, not per layer and pass (one_hot reads the tensor's maximum)
        self._groups = groups
        self._average = None if groups is None else group_average(groups)

    def _hook(self, i: int) -> Any:
        def record(module: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], _: Any) -> None:
            assert module.running_mean is not None and module.running_var is not None
            self.distances[i] = bn_distance(
                inputs[0], module.running_mean, module.running_var, self._average
            )

        return record

    def loss(self, first_multiplier: float = 1.0) -> torch.Tensor:
        """Σ_l m_l · distance_l of the last forward pass, per group (G,): m_l is
        ``first_multiplier`` for the first layer, 1 for the others. Reading it clears the
        record, so a layer the next pass skips does not count twice."""
        recorded = [(i, d) for i, d in enumerate(self.distances) if d is not None]
        if not recorded:
            raise RuntimeError("no BatchNorm layer ran since the last read")
        self.distances = [None] * len(self.layers)
        return torch.stack([d * (first_multiplier if i == 0 else 1.0) for i, d in recorded]).sum(
            dim=0
        )

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> BNStatistics:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def draw_jitter(
    groups: int, max_shift: int, flip: bool, gen: torch.Generator
) -> tuple[list[list[int]], list[bool]]:
    """One iteration's jitter for each group: its (Δh, Δw), each uniform in {0, …, max_shift},
    and, with ``flip``, whether it is mirrored (probability ½)."""
    shifts = torch.randint(0, max_shift + 1, (groups, 2), generator=gen).tolist()
    mirror = (torch.rand(groups, generator=gen) < 0.5).tolist() if flip else [False] * groups
    return shifts, mirror


def jitter(
    x: torch.Tensor, sizes: list[int], shifts: list[list[int]], mirror: list[bool]
) -> torch.Tensor:
    """Each group of ``sizes`` consecutive images of ``x`` mirrored (where ``mirror``) and then
    rolled circularly by its ``shifts`` (the reference's ``torch.roll``)."""
    out = []
    for part, shift, flipped in zip(x.split(sizes), shifts, mirror, strict=True):
        out.append(torch.roll(part.flip(dims=(3,)) if flipped else part, shift, dims=(2, 3)))
    return torch.cat(out)


def passes(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive runs of groups, (first, end), of at most ``limit`` images each (at least one
    group): what goes through the teacher in one forward pass."""
    spans: list[tuple[int, int]] = []
    start, images = 0, 0
    for g, n in enumerate(sizes):
        if images and images + n > limit:
            spans.append((start, g))
            start, images = g, 0
        images += n
    spans.append((start, len(sizes)))
    return spans


class DDSRe2L(SyntheticSetMethod):
    """SRe2L's recover: images from noise matching the teacher's BatchNorm statistics and
    classes; relabelled by the teacher's soft labels when the student trains on them."""

    hparams = (
        ipc(10),
        HParam(
            "iterations",
            1000,
            kind="int",
            low=1,
            doc="recover iterations per image (reference 1,000 on CIFAR, 4,000 on ImageNet)",
        ),
        replace(
            image_lr(0.25),
            doc="learning rate of the synthetic images (Adam, betas 0.5, 0.9; cosine "
            "schedule); not searched by default: each tuning trial would be a whole synthesis",
        ),
        HParam(
            "r_bn",
            0.01,
            low=0.0,
            doc="weight of the BatchNorm statistics loss (reference 0.01 on CIFAR-100)",
        ),
        HParam(
            "first_bn_multiplier",
            10.0,
            low=0.0,
            doc="extra weight of the first BatchNorm layer's statistics (reference 10)",
        ),
        HParam(
            "jitter",
            0.125,
            low=0.0,
            high=1.0,
            doc="largest random shift each iteration, as a fraction of the image side "
            "(reference 4 px at 32 px)",
        ),
        HParam(
            "flip",
            False,
            kind="categorical",
            choices=(True, False),
            doc="random horizontal flip each iteration (the ImageNet reference's; not CIFAR's)",
        ),
        HParam(
            "batch_classes",
            100,
            kind="int",
            low=1,
            doc="classes per recover batch, one image each: the batch the BN statistics are "
            "taken over (reference 100)",
        ),
        time_budget(60.0),
        train_epochs(),
        *labels("soft"),
    )
    needs = Needs(teacher=True, synthetic_set=True)

    @classmethod
    def in_memory(cls) -> str | None:
        return None  # recovered from the teacher alone: no training image is read

    @classmethod
    def pairing_models(
        cls, student: nn.Module, teacher: nn.Module | None, hp: Mapping[str, Any]
    ) -> str | None:
        return missing_batchnorm(teacher)

    def synthesize(self, data: Any, *, seed: int, device: torch.device) -> SyntheticSet:
        teacher = self.ctx.teacher
        reason = missing_batchnorm(teacher)
        if reason:
            raise ValueError(f"dd_sre2l cannot recover images: {reason}")
        assert teacher is not None
        hp = self.hp
        n_ipc, k = int(hp["ipc"]), data.num_classes
        gen = torch.Generator().manual_seed(seed)
        # Group layout: ipc index i, then classes in chunks of batch_classes; one image each.
        chunks = [
            torch.arange(k)[s : s + hp["batch_classes"]] for s in range(0, k, hp["batch_classes"])
        ]
        sizes = [len(c) for _ in range(n_ipc) for c in chunks]
        targets = torch.cat([c for _ in range(n_ipc) for c in chunks]).to(device)
        groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)
        per_image = (1.0 / torch.tensor(sizes, dtype=torch.float32))[groups.cpu()].to(device)
        first = [0, *torch.tensor(sizes).cumsum(0).tolist()]  # each group's first image
        # (first group, end group, the pass's images' groups numbered from 0)
        spans = [
            (g0, g1, groups[first[g0] : first[g1]] - g0) for g0, g1 in passes(sizes, PASS_IMAGES)
        ]

        syn = torch.randn((len(targets), *data.input_shape), generator=gen).to(device)
        syn.requires_grad_(True)
        mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        low, high = (0.0 - mean) / std, (1.0 - mean) / std
        max_shift = round(hp["jitter"] * min(data.input_shape[-2:]))
        opt = torch.optim.Adam([syn], lr=hp["lr_img"], betas=ADAM_BETAS, eps=ADAM_EPS)

        was_training = teacher.training
        teacher.eval()  # the running statistics are the targets: they must not move
        deadline = Deadline(hp["time_budget_s"])
        done, first_bn = 0, math.nan
        ce = bn = torch.zeros(())
        try:
            with BNStatistics(teacher) as stats:
                for it in range(hp["iterations"]):
                    lr = 0.5 * (1 + math.cos(math.pi * it / hp["iterations"])) * hp["lr_img"]
                    for group in opt.param_groups:
                        group["lr"] = lr
                    shifts, mirror = draw_jitter(len(sizes), max_shift, hp["flip"], gen)
                    grad = torch.zeros_like(syn)
                    ce, bn = syn.new_zeros(()), syn.new_zeros(())
                    for g0, g1, pass_groups in spans:
                        a, b = first[g0], first[g1]
                        if stats.groups is not pass_groups:  # one pass: set once
                            stats.groups = pass_groups
                        logits = teacher(
                            jitter(syn[a:b], sizes[g0:g1], shifts[g0:g1], mirror[g0:g1])
                        )
                        # each group's mean cross-entropy, as each reference batch has
                        ce_pass = (
                            F.cross_entropy(logits, targets[a:b], reduction="none") * per_image[a:b]
                        ).sum()
                        bn_pass = stats.loss(hp["first_bn_multiplier"]).sum()
                        # the images' gradient only: the teacher's parameters take no part
                        (g,) = torch.autograd.grad(ce_pass + hp["r_bn"] * bn_pass, [syn])
                        grad += g
                        ce, bn = ce + ce_pass.detach(), bn + bn_pass.detach()
                    syn.grad = grad
                    opt.step()
                    with torch.no_grad():
                        syn.clamp_(low, high)
                    if it == 0:
                        first_bn = float(bn) / len(sizes)
                    done += 1
                    if deadline.tick():
                        break
        finally:
            teacher.train(was_training)
        # ipc-major to class-major: the set's labels are grouped by class
        order = torch.argsort(targets.cpu(), stable=True)
        return SyntheticSet(
            to_stored(syn.detach(), data).cpu()[order],
            targets.cpu()[order],
            iterations=done,
            seconds=deadline.elapsed,
            meta={
                # per recover batch (the reference's logged values), the BN loss unweighted
                # by r_bn; the first on the jittered Gaussian noise, the last before the last
                # step
                "first_bn_loss": first_bn,
                "last_bn_loss": float(bn) / len(sizes),
                "last_ce_loss": float(ce) / len(sizes),
                "jitter_px": max_shift,
                "bn_layers": len(batchnorm_layers(teacher)),
            },
        )
