"""``dist``: DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher", NeurIPS).

Relations instead of exact matches: with Y_s = softmax(s/τ) and Y_t = softmax(t/τ) (B × C),
the inter-class relation is 1 − the Pearson correlation of each sample's row, averaged over
the batch (eq. 4–5), the intra-class relation the same on the columns: each class across the
batch (eq. 6–7). L = γ·CE + β·τ²·(w_inter·L_inter + w_intra·L_intra) (eq. 8–9). Pearson is
the cosine of the mean-centred vectors with ε = 1e-8 added to the product of their norms, as
the reference computes it (hunto/image_classification_sota ``lib/models/losses/dist_kd.py``,
``DIST(beta, gamma, tau)``, which the DIST_KD repository links to; its ``kd_loss.py`` wraps it
with ``ori_loss_weight`` and ``kd_loss_weight``). The paper's β and γ are ``w_inter`` and
``w_intra`` here (γ and β already name the CE and method weights). Defaults are its CIFAR-100
ones (``configs/strategies/distill/dist_cifar.yaml``: ``kd: dist_t4``, ``ori_loss_weight: 1``,
``kd_loss_weight: 2``): γ = 1, β = 2, w_inter = w_intra = 1, τ = 4 (ImageNet: τ = 1).
``logit_std`` z-scores both networks' logits before the softmax (see ``kd``).
"""

from __future__ import annotations

import torch

from kdbench.methods.base import HParam, Method, Needs, Step, beta, gamma, temperature
from kdbench.methods.kd import distilled_logits, logit_std


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_terms(s: torch.Tensor, t: torch.Tensor, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra), each 1 − mean Pearson correlation of softmax(·/T), × T²."""
    p_s, p_t = (s / T).softmax(dim=1), (t / T).softmax(dim=1)
    inter = 1.0 - pearson(p_s, p_t).mean()
    intra = 1.0 - pearson(p_s.t(), p_t.t()).mean()
    return inter * T * T, intra * T * T


class DIST(Method):
    """DIST: γ·CE + β·τ²·(w_inter·(1 − ρ̄ per sample) + w_intra·(1 − ρ̄ per class))."""

    hparams = (
        gamma(1.0),
        beta(2.0),
        temperature(4.0),
        HParam("w_inter", 1.0, low=0.0, doc="weight of the inter-class relation (paper's β)"),
        HParam("w_intra", 1.0, low=0.0, doc="weight of the intra-class relation (paper's γ)"),
        logit_std(),
    )
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        s, t = distilled_logits(step, self.hp)
        inter, intra = dist_terms(s, t, self.hp["T"])
        b = self.hp["beta"]
        return {
            "dist_inter": b * self.hp["w_inter"] * inter,
            "dist_intra": b * self.hp["w_intra"] * intra,
        }
