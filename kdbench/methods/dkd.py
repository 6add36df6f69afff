"""``dkd``: decoupled knowledge distillation (Zhao et al. 2022, "Decoupled Knowledge Distillation").

KD splits into target-class KD (TCKD: the binary distribution target vs. the rest) and
non-target-class KD (NCKD: the distribution over the other classes), eq. 5:
L = α·TCKD + β·NCKD, each a KL(teacher ‖ student) at temperature T, × T², summed over classes
and averaged over the batch. As in mdistiller, the loss is ramped in linearly over the first
``warmup`` share of the epochs (20 of 240 there). Defaults: γ = 1, α = 1, β = 8 (mdistiller's
resnet32x4 → resnet8x4 value; 2 for resnet56 → resnet20, 6 for wrn and vgg pairs), T = 4.
``logit_std`` z-scores both networks' logits first (see ``kd``); logit-standardization-KD
(``mdistiller/distillers/DKD.py``) runs it with T = 2 and α, β each × 9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.base import HParam, Method, Needs, SearchSpace, Step, beta, gamma, temperature
from kdbench.methods.kd import distilled_logits, logit_std


def dkd_terms(
    s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each × T², summed over classes, mean over the batch."""
    gt = F.one_hot(y, s.shape[1]).bool()
    p_s, p_t = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)
    tckd = F.kl_div(b_s.clamp_min(1e-12).log(), b_t, reduction="batchmean") * T * T
    # Non-target distribution: the target logit pushed to -inf before the softmax.
    masked = -1000.0 * gt
    nckd = (
        F.kl_div(
            F.log_softmax(s / T + masked, dim=1),
            F.softmax(t / T + masked, dim=1),
            reduction="batchmean",
        )
        * T
        * T
    )
    return tckd, nckd


class DKD(Method):
    """Decoupled KD: γ·CE + ramp·(α·TCKD + β·NCKD)."""

    hparams = (
        gamma(1.0),
        HParam("alpha", 1.0, low=0.0, search=SearchSpace(0.1, 4.0, log=True), doc="weight of TCKD"),
        beta(8.0),
        temperature(4.0),
        HParam(
            "warmup", 20 / 240, low=0.0, high=1.0, doc="share of the epochs the loss ramps in over"
        ),
        logit_std(),
    )
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        s, t = distilled_logits(step, self.hp)
        tckd, nckd = dkd_terms(s, t, step.y, self.hp["T"])
        warm = self.hp["warmup"] * step.epochs
        ramp = min((step.epoch + 1) / warm, 1.0) if warm > 0 else 1.0
        return {"tckd": ramp * self.hp["alpha"] * tckd, "nckd": ramp * self.hp["beta"] * nckd}
