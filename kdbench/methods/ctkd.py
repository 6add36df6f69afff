"""``ctkd``: curriculum temperature for KD (Li et al. 2023, "Curriculum Temperature for
Knowledge Distillation", AAAI 2023), the global-temperature variant.

KD whose temperature is learned adversarially: a single parameter θ gives
τ = t_start + t_range · sigmoid(θ) (so τ ∈ (t_start, t_start + t_range)), and the KD loss
α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) (summed over classes, mean over the batch, τ in both
softmaxes and in τ²) is minimised by the student and *maximised* by θ through a gradient
reversal layer (GRL): forward the identity, backward the gradient times −λ. λ follows an
easy-to-hard cosine curriculum over the epochs (eq. 8):

    λ(e) = λ_start·(1 + cos(π·min(e, L)/L))/2 + λ_end·(1 − cos(π·min(e, L)/L))/2,

e the 1-based epoch, L the curriculum length. L = γ·CE + α·KD(τ).

Reference: zhengli97/CTKD (commit 7d525224), ``models/temp_global.py`` (``Global_T``: θ =
``torch.ones(1)``, ``GradientReversalFunction``: backward ``lambda_ * grads``),
``train_student.py`` (``CosineDecay``, evaluated with the 1-based epoch, and
``temp = t_start + t_end * sigmoid(θ)``), ``distiller_zoo/KD.py`` (``DistillKL``: batchmean
KL × T²), ``scripts/run_cifar_distill.sh`` (the defaults here): ``-r 0.1 -a 0.9 --t_start 1
--t_end 20 --cosine_decay 1 --decay_max 0 --decay_min -1 --decay_loops 10`` over 240 epochs.
The reference's ``lambda_`` is the signed cosine value, from −decay_max = 0 to −decay_min =
1 reversed; here λ_start = −decay_max = 0, λ_end = −decay_min = 1 and the reversal's sign is
in the GRL, the same gradients. θ starts at 1 (τ₀ = 1 + 20·sigmoid(1) ≈ 15.6) and is trained
by the trial's optimiser with the student (with its weight decay, as the reference's SGD).

``logit_std`` (Sun et al. 2024; sunshangquan/logit-standardization-KD, ``CTKD/``): both
networks' logits are z-scored (see ``kd``) before the division by τ; that repository's script
runs it with ``-a 9`` (γ = 0.1). Its ``train_student.py`` picks the criterion with the test
inverted (``DistillKL() if opt.logit_stand else DistillKL_logit_stand()``), so its runs without
``--logit_stand`` are the standardised ones; here the switch means what it says.

Deliberate differences: the curriculum length is a share of the budget's epochs
(``lambda_warmup``, 10/240 of them as the reference's 10 of 240) rather than a number of
epochs; with 240 epochs λ is the reference's exactly. The reference's ``LinearDecay``
alternative (``--cosine_decay 0``) and its instance-wise temperature are not implemented.
The temperature is not a loss term, so it is not in the logged terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.base import HParam, Method, MethodContext, Needs, Step, alpha, gamma
from kdbench.methods.kd import distilled_logits, logit_std


class _Reverse(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by −λ."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float) -> torch.Tensor:
    """The gradient reversal layer (Ganin & Lempitsky 2015) with strength λ."""
    return _Reverse.apply(x, lam)


def curriculum(epoch: int, epochs: int, share: float, start: float, end: float) -> float:
    """λ at the 0-based ``epoch`` of ``epochs``: cosine from ``start`` (before the first epoch)
    to ``end`` (reached after ``share``·epochs epochs and kept), evaluated at the 1-based epoch
    as the reference's ``CosineDecay.get_value(epoch)``."""
    loops = share * epochs
    if loops <= 0:
        return end
    i = min(max(epoch + 1, 0), loops)
    c = (math.cos(i * math.pi / loops) + 1.0) * 0.5
    return start * c + end * (1.0 - c)


def kd_at(s: torch.Tensor, t: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², summed over classes, mean over the batch; T a
    0-d tensor that gradients flow into."""
    kl = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean")
    return kl * T * T


class CTKD(Method):
    """Curriculum temperature: γ·CE + α·τ²·KL(p_t^τ ‖ p_s^τ), τ learned through a GRL (−λ)."""

    hparams = (
        gamma(0.1),
        alpha(0.9),
        HParam("t_start", 1.0, low=0.0, low_open=True, doc="lowest temperature τ can take"),
        HParam("t_range", 20.0, low=0.0, low_open=True, doc="τ = t_start + t_range·sigmoid(θ)"),
        HParam("lambda_start", 0.0, low=0.0, doc="reversal strength λ before the first epoch"),
        HParam("lambda_end", 1.0, low=0.0, doc="reversal strength λ at the curriculum's end"),
        HParam(
            "lambda_warmup",
            10 / 240,
            low=0.0,
            high=1.0,
            doc="share of the epochs λ rises over (cosine)",
        ),
        logit_std(),
    )
    needs = Needs(teacher=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        self.theta = nn.Parameter(torch.ones(1, device=ctx.device))

    def lam(self, step: Step) -> float:
        return curriculum(
            step.epoch,
            step.epochs,
            self.hp["lambda_warmup"],
            self.hp["lambda_start"],
            self.hp["lambda_end"],
        )

    def temperature(self, lam: float = 0.0) -> torch.Tensor:
        """τ as a 0-d tensor, its gradient into θ reversed with strength ``lam``."""
        theta = reverse_gradient(self.theta, lam).squeeze(0)
        return self.hp["t_start"] + self.hp["t_range"] * torch.sigmoid(theta)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        s, t = distilled_logits(step, self.hp)
        T = self.temperature(self.lam(step)).to(s.dtype)
        return {"kd": self.hp["alpha"] * kd_at(s, t.detach(), T)}
