"""``ofd``: overhaul of feature distillation (Heo, Kim, Yun, Park, Kwak & Choi 2019, "A
Comprehensive Overhaul of Feature Distillation", ICCV), as mdistiller computes it
(megvii-research/mdistiller, ``mdistiller/distillers/OFD.py``, commit a08d46f; the margins as
its ``OFD.init_ofd_modules`` computes them, the ``get_margin_from_BN`` of the authors' code).

Features are taken *before* the ReLU (``preact``) in both networks. Each student block goes
through a connector r (conv k×k without bias, C_s → C_t, then BatchNorm2d; conv weights
N(0, 2/(k·k·C_t)), BN γ = 1, β = 0) and is compared with the teacher's block, average-pooled
(adaptive) to the student's spatial size and detached, by the partial L2 distance with a
per-channel margin m_c (eq. 5–6 of the paper):

    d(s, t) = (s − m)²·[s > m ∧ t ≤ m] + (s − t)²·[s > t ∧ m < t ≤ 0] + (s − t)²·[t > 0],

summed over C, H, W and averaged over the batch (``abs(loss).mean(dim=0).sum()``). With k
paired blocks, block i (0 = shallowest paired) is weighted 1 / 2^(k − 1 − i): the deepest
counts 1, the one before ½, and so on. loss = γ·CE + β·Σ_i d_i / 2^(k−1−i).

Margin (eq. 4): the expectation of the teacher's pre-ReLU response where it is negative,
for a response ~ N(μ, σ²) per channel, read from the BatchNorm the response comes out of
(σ = |γ_BN|, μ = β_BN, as ``init_ofd_modules``): with Φ, φ the standard normal cdf and pdf,
m = μ − σ·φ(μ/σ) / Φ(−μ/σ) where Φ(−μ/σ) > 0.001, else m = −3σ. The margins are float32,
as there. Which BN: ``KDModel.bn_before_relu()`` (mdistiller's ``get_bn_before_relu``; for a
CIFAR ResNet the last block's ``bn2`` of each stage, whose output is summed with the shortcut
before the ReLU, so the margin ignores the shortcut, as there).

Defaults (mdistiller ``cfg.py``: ``OFD.LOSS.CE_WEIGHT = 1``, ``OFD.LOSS.FEAT_WEIGHT = 0.001``,
``OFD.CONNECTOR.KERNEL_SIZE = 1``; ``configs/cifar100/ofd.yaml`` keeps them, the ImageNet
one uses 0.0001): γ = 1, β = 0.001, kernel 1. Blocks: kdbench's ``preact`` are mdistiller's
``preact_feats[1:]``, paired from the deepest down (the last k of each), as there
(``_align_list``). The connectors are trained with the student.

Deliberate differences:

- A teacher with no ``bn_before_relu`` (ShuffleNets, which mdistiller refuses as OFD
  teachers; timm and torchvision models; a model without BN) is not refused: its margins come
  from the same formula with μ and σ the per-channel mean and (population) standard deviation
  of its pre-activation features, measured in ``prepare`` over the training split
  (normalised, not augmented, teacher in eval mode). That is the distribution the BN
  parameters stand for; the stage's seconds are counted in the trial's time. In a
  combination ``ofd+B`` (whose ``prepare`` is the identity) they are measured on the first
  training batch instead. ``pairing`` can only see outputs, not the model, so it could not
  refuse such a teacher before the run.
- mdistiller indexes its margins from the teacher's first block while pairing the *last* k
  blocks; here a margin goes with the teacher block it is paired with (the same when the
  block counts agree).
- The teacher stays in eval mode (running BN statistics), as for every kdbench method;
  mdistiller's ``OFD.train`` overrides the base class and leaves the teacher in training mode
  (batch statistics) while it distils.
- σ = 0 (the reference divides by zero there): m = min(μ, 0), the limit of the formula.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.base import (
    HParam,
    Method,
    MethodContext,
    Needs,
    Reused,
    Step,
    TrainingSet,
    beta,
    gamma,
    missing_maps,
)
from kdbench.models.base import ModelOutput

CDF_FLOOR = 0.001
"""Below this Φ(−μ/σ) the channel is almost never negative: its margin is −3σ."""


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def margin_of(std: float, mean: float) -> float:
    """E[x | x < 0] for x ~ N(mean, std²), or −3·|std| where P(x < 0) ≤ 0.001."""
    s, m = abs(std), mean
    if s == 0.0:
        return min(m, 0.0)
    cdf = normal_cdf(-m / s)
    if cdf > CDF_FLOOR:
        return -s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / cdf + m
    return -3 * s


def margins_from(std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """One margin per channel, float32 (mdistiller's ``torch.FloatTensor``)."""
    values = [margin_of(s, m) for s, m in zip(std.tolist(), mean.tolist(), strict=True)]
    return torch.tensor(values, dtype=torch.float32, device=std.device)


def bn_margins(bn: nn.BatchNorm2d) -> torch.Tensor:
    """mdistiller's margins: σ = |γ|, μ = β of the BatchNorm before the ReLU."""
    return margins_from(bn.weight.detach(), bn.bias.detach())


def partial_l2(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """The partial L2 distance, summed over C, H, W and averaged over the batch."""
    m = margin.to(source).view(1, -1, 1, 1)
    loss = (
        (source - m) ** 2 * ((source > m) & (target <= m)).to(source.dtype)
        + (source - target) ** 2
        * ((source > target) & (target > m) & (target <= 0)).to(source.dtype)
        + (source - target) ** 2 * (target > 0).to(source.dtype)
    )
    return loss.abs().mean(dim=0).sum()


def connector(c_s: int, c_t: int, kernel: int) -> nn.Sequential:
    """Conv k×k (no bias) → BN, initialised as mdistiller's ``ConnectorConvBN``."""
    conv = nn.Conv2d(c_s, c_t, kernel, stride=1, padding=(kernel - 1) // 2, bias=False)
    bn = nn.BatchNorm2d(c_t)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel * kernel * c_t)))
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn)


def _last(items: Sequence[Any], k: int) -> list[Any]:
    return list(items[len(items) - k :])


class OFD(Method):
    """Overhaul of FD: γ·CE + β·Σ_i 2^−(k−1−i)·d_partial-L2(r(s_i^pre), pool(t_i^pre); m)."""

    hparams = (
        gamma(1.0),
        beta(0.001),
        HParam(
            "kernel_size",
            1,
            kind="categorical",
            choices=(1, 3),
            doc="kernel of the connector's convolution",
        ),
    )
    needs = Needs(teacher=True)

    @classmethod
    def pairing(
        cls, student: ModelOutput, teacher: ModelOutput | None, hp: Mapping[str, Any]
    ) -> str | None:
        return missing_maps(student, teacher, preact=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s, t = ctx.probe()
        reason = self.pairing(s, t, self.hp)
        if reason:
            raise ValueError(f"ofd: {reason}")
        assert t is not None and ctx.teacher is not None
        self.k = min(len(s.preact), len(t.preact))
        kernel = int(self.hp["kernel_size"])
        self.connectors = nn.ModuleList(
            connector(fs.shape[1], ft.shape[1], kernel)
            for fs, ft in zip(_last(s.preact, self.k), _last(t.preact, self.k), strict=True)
        )
        self._teacher = (ctx.teacher,)  # not a submodule: its parameters are not the method's
        self._t_channels = [ft.shape[1] for ft in _last(t.preact, self.k)]
        self.margin_source = "bn"
        bns = self._teacher_bns(ctx.teacher, len(t.preact))
        if bns is None:
            self.margin_source = "statistics"  # measured in prepare
        else:
            self._set_margins([bn_margins(bn) for bn in _last(bns, self.k)])

    def _teacher_bns(self, teacher: nn.Module, blocks: int) -> list[nn.BatchNorm2d] | None:
        get = getattr(teacher, "bn_before_relu", None)
        bns = get() if callable(get) else None
        if bns is None:
            return None
        if len(bns) != blocks:
            raise ValueError(f"ofd: the teacher gives {len(bns)} BatchNorms for {blocks} blocks")
        for bn, c in zip(_last(bns, self.k), self._t_channels, strict=True):
            if not isinstance(bn, nn.BatchNorm2d) or not bn.affine or bn.num_features != c:
                raise ValueError(f"ofd: the teacher's BN before ReLU does not match {c} channels")
        return bns

    def _set_margins(self, margins: list[torch.Tensor]) -> None:
        for i, m in enumerate(margins):
            self.register_buffer(f"margin{i}", m, persistent=False)

    def margins(self, step: Step | None = None) -> list[torch.Tensor]:
        """The per-channel margins of the paired teacher blocks, shallow to deep. Where they
        are to be measured and ``prepare`` has not run (a combination ``ofd+B``, whose
        ``prepare`` is the identity), from the teacher's features on ``step``, the first batch."""
        if not hasattr(self, "margin0"):
            if step is None or step.teacher is None:
                raise RuntimeError("ofd: the teacher's margins have not been measured")
            self._set_margins(self.measure_margins([step.teacher.preact]))
        return [getattr(self, f"margin{i}") for i in range(self.k)]

    @torch.no_grad()
    def measure_margins(self, preacts: Iterable[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        """Margins from the per-channel mean and (population) standard deviation, in float64,
        of the teacher's paired pre-activation features, over ``preacts`` (one list of the
        teacher's ``preact`` per batch)."""
        sums: list[torch.Tensor] = []
        squares: list[torch.Tensor] = []
        count = [0] * self.k
        for preact in preacts:
            for i, f in enumerate(_last(preact, self.k)):
                f = f.detach().double()
                if len(sums) <= i:
                    sums.append(torch.zeros(f.shape[1], dtype=torch.float64, device=f.device))
                    squares.append(torch.zeros_like(sums[-1]))
                sums[i] += f.sum(dim=(0, 2, 3))
                squares[i] += f.pow(2).sum(dim=(0, 2, 3))
                count[i] += f.shape[0] * f.shape[2] * f.shape[3]
        margins = []
        for total, sq, n in zip(sums, squares, count, strict=True):
            mean = total / n
            std = (sq / n - mean.pow(2)).clamp_min(0.0).sqrt()
            margins.append(margins_from(std, mean))
        return margins

    def prepare(self, data: Any, *, spec: Any, device: torch.device, reused: Reused) -> TrainingSet:
        if self.margin_source != "statistics" or hasattr(self, "margin0"):
            return TrainingSet(data, spec.epochs)
        start = time.perf_counter()
        (teacher,) = self._teacher
        was = teacher.training
        teacher.eval()
        batch = 512
        with torch.no_grad():
            preacts = (
                teacher.forward_features(
                    data.normalize(data.train_x[i : i + batch].to(device))
                ).preact
                for i in range(0, len(data.train_x), batch)
            )
            margins = self.measure_margins(preacts)
        teacher.train(was)
        self._set_margins([m.to(device) for m in margins])
        return TrainingSet(data, spec.epochs, seconds=time.perf_counter() - start)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        s_pre = _last(step.student.preact, self.k)
        t_pre = _last(step.teacher.preact, self.k)
        total = step.student.logits.new_zeros(())
        for i, (conv, fs, ft, m) in enumerate(
            zip(self.connectors, s_pre, t_pre, self.margins(step), strict=True)
        ):
            source = conv(fs)
            target = F.adaptive_avg_pool2d(ft, source.shape[-2:]).detach()
            total = total + partial_l2(source, target, m) / 2 ** (self.k - i - 1)
        return {"ofd": self.hp["beta"] * total}
