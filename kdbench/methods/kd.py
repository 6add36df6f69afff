"""``kd``: soft targets (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

L = γ·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T)), the KL summed over classes and
averaged over the batch (eq. 2 of the paper with the T² gradient correction of §2.1).
Defaults are RepDistiller's: γ=0.1, α=0.9, T=4.

``logit_std`` (Sun et al. 2024, "Logit Standardization in Knowledge Distillation", CVPR;
sunshangquan/logit-standardization-KD, ``mdistiller/distillers/KD.py``, ``normalize``): each
sample's student and teacher logits are z-scored over the classes, (z − mean) / (std + 1e-7)
with Bessel's correction (``torch.std``'s default), before the division by T; the T² factor
stays. Cross-entropy on the labels keeps the raw logits. ``standardize`` and
``distilled_logits`` are shared by kd, dkd, dist and nkd. The reference runs it with a base
temperature of 2 and a KD weight of 9 (γ=0.1): ``{logit_std: true, T: 2, alpha: 9}``; the
defaults here stay KD's, so ``logit_std: true`` alone changes only the standardisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from kdbench.methods.base import HParam, Method, Needs, Step, alpha, gamma, temperature


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Each row z-scored over the classes: (z − mean) / (std + ε), std with Bessel's
    correction, as ``normalize`` in logit-standardization-KD."""
    mean = logits.mean(dim=1, keepdim=True)
    return (logits - mean) / (logits.std(dim=1, keepdim=True) + eps)


def logit_std() -> HParam:
    """The switch of logit standardisation: off, it is not in a trial's hyperparameters (the
    results of kd and dkd from before it keep their identity); not searched unless a suite
    asks (``search: {logit_std: {choices: [false, true]}}``)."""
    return HParam(
        "logit_std",
        False,
        kind="categorical",
        choices=(False, True),
        optional=True,
        doc="z-score each sample's student and teacher logits before the softmax (Sun et al.)",
    )


def distilled_logits(step: Step, hp: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (student, teacher) logits a logit-based loss sees: standardised when
    ``hp["logit_std"]``, as they are otherwise."""
    assert step.teacher is not None
    s, t = step.student.logits, step.teacher.logits
    if hp.get("logit_std", False):
        return standardize(s), standardize(t)
    return s, t


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², summed over classes, mean over the batch."""
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)


class KD(Method):
    """Soft targets: γ·CE + α·T²·KL(p_t^T ‖ p_s^T)."""

    hparams = (gamma(0.1), alpha(0.9), temperature(4.0), logit_std())
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        s, t = distilled_logits(step, self.hp)
        return {"kd": self.hp["alpha"] * kd_loss(s, t, self.hp["T"])}
