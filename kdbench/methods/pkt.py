"""``pkt``: probabilistic knowledge transfer (Passalis & Tefas 2018, "Learning Deep
Representations with Probabilistic Knowledge Transfer").

On the pooled embeddings: cosine similarities within the batch, mapped to [0, 1], each row
normalised into a conditional distribution p(j | i) (the cosine kernel of eq. 12); the loss is
the KL divergence of teacher from student (eq. 9), averaged over all entries with ε = 1e-7 as
RepDistiller computes it. Defaults: γ = 1, β = 30000.
"""

from __future__ import annotations

import torch

from kdbench.methods.base import Method, Needs, Step, beta, gamma


def similarity_distribution(e: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    e = e / (e.norm(dim=1, keepdim=True) + eps)
    sim = (e @ e.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


def pkt_loss(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    p_s, p_t = similarity_distribution(s, eps), similarity_distribution(t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


class PKT(Method):
    """Probabilistic knowledge transfer: γ·CE + β·KL(P_t ‖ P_s) of batch similarity distributions."""

    hparams = (gamma(1.0), beta(30000.0))
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        return {"pkt": self.hp["beta"] * pkt_loss(step.student.embedding, step.teacher.embedding)}
