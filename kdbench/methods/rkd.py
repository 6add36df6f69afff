"""``rkd``: relational KD (Park et al. 2019, "Relational Knowledge Distillation").

On the pooled embeddings. Distance term (eq. 4–5): pairwise Euclidean distances, each
network's divided by its mean over distinct pairs; smooth-L1 between student's and teacher's.
Angle term (eq. 6–7): cosines of the angles every triplet forms, smooth-L1 between the two.
L_rkd = w_dist·L_dist + w_angle·L_angle with the paper's weights 25 and 50.
Defaults (RepDistiller): γ = 1, β = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.base import HParam, Method, Needs, Step, beta, gamma


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def distance_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        d_t = pairwise_distances(t)
        d_t = d_t / d_t[d_t > 0].mean()
    d_s = pairwise_distances(s)
    d_s = d_s / d_s[d_s > 0].mean()
    return F.smooth_l1_loss(d_s, d_t)


def angles(e: torch.Tensor) -> torch.Tensor:
    """cos∠(e_j − e_i, e_k − e_i) for every i, j, k, flattened."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def angle_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        a_t = angles(t)
    return F.smooth_l1_loss(angles(s), a_t)


class RKD(Method):
    """Relational KD: γ·CE + β·(w_dist·L_dist + w_angle·L_angle)."""

    hparams = (
        gamma(1.0),
        beta(1.0),
        HParam("w_dist", 25.0, low=0.0, doc="weight of the distance term"),
        HParam("w_angle", 50.0, low=0.0, doc="weight of the angle term"),
    )
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        s, t = step.student.embedding, step.teacher.embedding
        return {
            "rkd_dist": self.hp["beta"] * self.hp["w_dist"] * distance_loss(s, t),
            "rkd_angle": self.hp["beta"] * self.hp["w_angle"] * angle_loss(s, t),
        }
