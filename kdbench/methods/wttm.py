"""``wttm``: weighted transformed teacher matching (Zheng & Yang 2024, "Knowledge Distillation
Based on Transformed Teacher Matching", ICLR 2024, §4).

TTM (see ``ttm``) with a sample-adaptive weight: the power sum of the teacher's probabilities,
U_γ(p_t) = Σ_j p_{t,j}^γ with γ = 1/T, which is large where the teacher is uncertain (eq. 12):

    L_wttm = mean over the batch of U_γ(p_t) · KL(p̃_t ‖ softmax(s)),

the KL summed over the classes, no T². L = γ_ce·CE + β·L_wttm. As the reference computes it
(zkxufo/TTM, ``distiller_zoo/wttm.py``, commit fe457b33): the weight is the same sum that
renormalises p_t^γ, taken from the teacher (no gradient). Defaults are the README's only WTTM
run (``--add wttm --ttm_l 0.2 -a 4``, there added to CRD): T = 1/0.2 = 5, β = 4, γ = 1. The
paper's per-pair values (appendix A.4) could not be read here.

Deliberate differences: the exponent is exposed as the temperature ``T`` (γ = 1/T).
``logit_std`` (kdbench's extension, not in the reference) z-scores both networks' logits
before the transform, so the weight is taken from the standardised teacher too.
"""

from __future__ import annotations

import torch

from kdbench.methods.base import Method, Needs, Step, beta, gamma, temperature
from kdbench.methods.kd import distilled_logits, logit_std
from kdbench.methods.ttm import ttm_per_sample


def wttm_loss(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """WTTM: mean over the batch of Σ_j p_{t,j}^{1/T} · KL(p̃_t ‖ softmax(s))."""
    kl, norm = ttm_per_sample(s, t, T)
    return (norm * kl).mean()


class WTTM(Method):
    """Weighted TTM: γ·CE + β·Σ_j p_t,j^{1/T} · KL(softmax(t)^{1/T}/Σ ‖ softmax(s))."""

    hparams = (gamma(1.0), beta(4.0), temperature(5.0), logit_std())
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        s, t = distilled_logits(step, self.hp)
        return {"wttm": self.hp["beta"] * wttm_loss(s, t.detach(), self.hp["T"])}
