"""``ttm``: transformed teacher matching (Zheng & Yang 2024, "Knowledge Distillation Based on
Transformed Teacher Matching", ICLR 2024).

KD with the temperature dropped on the student side (eq. 9 of the paper): the teacher's
probabilities are power-transformed, p̃_t = p_t^γ / Σ_j p_{t,j}^γ with the exponent γ = 1/T
(the same as softmax(t/T)), and matched by the student's plain softmax at temperature 1:

    L_ttm = mean over the batch of KL(p̃_t ‖ softmax(s)), summed over the classes, no T².

L = γ_ce·CE + β·L_ttm. As the reference (zkxufo/TTM, ``distiller_zoo/ttm.py``, commit
fe457b33) computes it: ``softmax(t) ** l`` renormalised by its sum (not ``softmax(t·l)``, so
that ``wttm`` can reuse the same sum as its weight), ``kl_div(log_softmax(s), p̃_t,
reduction="none").sum(1).mean()``. Defaults are the README's example run of TTM (vgg13 →
vgg8 on CIFAR-100): ``--ttm_l 0.1 -r 1 -b 45``, so T = 1/l = 10, γ = 1, β = 45. The paper's
appendix A.4 lists T and β per teacher–student pair; it could not be read here, so the
defaults are the README's rather than a per-pair table.

Deliberate differences: the exponent is exposed as the temperature ``T`` (γ = 1/T), the name
every logit method here uses, instead of the reference's ``l``. ``logit_std`` (not in the
reference; kdbench's extension, as Sun et al. apply it to other logit losses) z-scores both
networks' logits before the transform (see ``kd``); the CE on the labels keeps the raw logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.base import Method, Needs, Step, beta, gamma, temperature
from kdbench.methods.kd import distilled_logits, logit_std


def transformed_teacher(t: torch.Tensor, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(p̃_t, Σ_j p_{t,j}^{1/T}): the teacher's probabilities at temperature 1 raised to the
    power 1/T and renormalised, and the per-sample sum they were divided by (B,)."""
    powered = torch.pow(F.softmax(t, dim=1), 1.0 / T)
    norm = powered.sum(dim=1)
    return powered / norm.unsqueeze(1), norm


def ttm_per_sample(s: torch.Tensor, t: torch.Tensor, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL(p̃_t ‖ softmax(s)) per sample, summed over classes; the power sum per sample)."""
    p_t, norm = transformed_teacher(t, T)
    kl = F.kl_div(F.log_softmax(s, dim=1), p_t, reduction="none").sum(dim=1)
    return kl, norm


def ttm_loss(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """TTM: KL(p̃_t ‖ softmax(s)) summed over classes, mean over the batch."""
    kl, _ = ttm_per_sample(s, t, T)
    return kl.mean()


class TTM(Method):
    """Transformed teacher matching: γ·CE + β·KL(softmax(t)^{1/T}/Σ ‖ softmax(s))."""

    hparams = (gamma(1.0), beta(45.0), temperature(10.0), logit_std())
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        s, t = distilled_logits(step, self.hp)
        return {"ttm": self.hp["beta"] * ttm_loss(s, t.detach(), self.hp["T"])}
