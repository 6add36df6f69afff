"""``kd``: soft targets (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

L = γ·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T)), the KL summed over classes and
averaged over the batch (eq. 2 of the paper with the T² gradient correction of §2.1).
Defaults are RepDistiller's: γ=0.1, α=0.9, T=4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.base import Method, Needs, Step, alpha, gamma, temperature
from kdbench.methods.registry import METHODS


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T², summed over classes, mean over the batch."""
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)


@METHODS.register("kd")
class KD(Method):
    """Soft targets: γ·CE + α·T²·KL(p_t^T ‖ p_s^T)."""

    name = "kd"
    hparams = (gamma(0.1), alpha(0.9), temperature(4.0))
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        return {
            "kd": self.hp["alpha"] * kd_loss(step.student.logits, step.teacher.logits, self.hp["T"])
        }
