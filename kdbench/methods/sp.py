"""``sp``: similarity-preserving KD (Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation").

On the last block's output F (B × C·H·W): G = row-L2-normalise(F·Fᵀ) for student and teacher
(eq. 1–2); L_sp = ‖G_t − G_s‖²_F / B² (eq. 3). Defaults (RepDistiller): γ = 1, β = 3000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.base import Method, Needs, Step, beta, gamma


def similarity(f: torch.Tensor) -> torch.Tensor:
    f = f.flatten(1)
    return F.normalize(f @ f.t(), dim=1)


def sp_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    b = fs.shape[0]
    return (similarity(ft) - similarity(fs)).pow(2).sum() / (b * b)


class SP(Method):
    """Similarity preserving: γ·CE + β·‖G_t − G_s‖² / B²."""

    hparams = (gamma(1.0), beta(3000.0))
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        return {"sp": self.hp["beta"] * sp_loss(step.student.feats[-1], step.teacher.feats[-1])}
