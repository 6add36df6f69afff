"""``nkd``: normalized KD (Yang et al. 2023, "From Knowledge Distillation to Self-Knowledge
Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels", ICCV).

KD split at the target class y (eq. 8 of the paper), as ``NKDLoss`` in yzd-v/cls_KD
(``mmcls/models/dis_losses/nkd.py``) computes it:

- target term: −t_y · log s_y, with t = softmax(t) and s = softmax(s) at temperature 1 (no
  T, no T²), averaged over the batch;
- non-target term: −T² · Σ_{i≠y} t̂_i · log ŝ_i, where t̂ and ŝ are the softmax at T of the
  logits with the target class removed (the non-target probabilities renormalised to sum to
  1), summed over classes and averaged over the batch. A cross-entropy, not a KL: it includes
  the teacher's entropy, a constant for the student.

L = γ·CE + α·target + β·non-target; the paper's γ (weight of the non-target term) is β here.
Defaults are cls_KD's CIFAR-100 ones (``configs/distillers/cifar100/res34_distill_res18_cifar.py``:
temp 3, gamma 3.5; ImageNet: temp 1, gamma 1.5), CE weight 1 and target-term weight 1 as its
distiller adds them. ``logit_std`` z-scores both networks' logits before both terms (see ``kd``);
the CE on the labels keeps the raw logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.base import HParam, Method, Needs, Step, beta, gamma, temperature
from kdbench.methods.kd import distilled_logits, logit_std


def nkd_terms(
    s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, non-target): −t_y·log s_y at temperature 1, and −T²·Σ_{i≠y} t̂_i·log ŝ_i at T
    over the non-target classes; each a mean over the batch."""
    label = y.view(-1, 1)
    log_s_y = F.log_softmax(s, dim=1).gather(1, label)
    t_y = F.softmax(t, dim=1).gather(1, label).detach()
    target = -(t_y * log_s_y).mean()
    n, c = s.shape
    others = torch.ones_like(s, dtype=torch.bool).scatter_(1, label, False)
    s_non, t_non = s[others].view(n, c - 1), t[others].view(n, c - 1)
    cross = (F.softmax(t_non / T, dim=1) * F.log_softmax(s_non / T, dim=1)).sum(1).mean()
    return target, -cross * T * T


class NKD(Method):
    """Normalized KD: γ·CE + α·(−t_y log s_y) + β·T²·CE(t̂ ‖ ŝ) over the non-target classes."""

    hparams = (
        gamma(1.0),
        HParam("alpha", 1.0, low=0.0, doc="weight of the target term"),
        beta(3.5),
        temperature(3.0),
        logit_std(),
    )
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        s, t = distilled_logits(step, self.hp)
        target, non_target = nkd_terms(s, t, step.y, self.hp["T"])
        return {
            "nkd_target": self.hp["alpha"] * target,
            "nkd_non_target": self.hp["beta"] * non_target,
        }
