"""``cc``: correlation congruence (Peng et al. 2019, "Correlation Congruence for Knowledge
Distillation"), as the reference implementation (RepDistiller) computes it.

Linear embedding heads (no normalisation, RepDistiller's ``LinearEmbed``) map each network's
pooled penultimate feature to ``feat_dim`` (128) dimensions: e_s = W_s·f_s + b_s,
e_t = W_t·f_t + b_t. With δ_i = |e_s,i − e_t,i| (elementwise) for sample i of the batch, in
batch order, L_cc = 1/(B − 1) · Σ_{i<B−1} Σ_d δ_i,d · δ_i+1,d: the products of the discrepancy
vectors of consecutive samples, as RepDistiller's ``Correlation`` (the authors' code)
computes it. Both heads are trained with the student; the teacher's pooled feature is
detached, so the teacher itself never is.

Differences from the paper, all RepDistiller's: the paper's L_CC is
(1/B²)·‖ψ(F_t) − ψ(F_s)‖², ψ the B × B correlation matrix of a Gaussian RBF kernel
approximated by its P-order Taylor expansion, on mini-batches built by class-uniform or
superclass sampling; here the loss looks only at consecutive pairs of a randomly drawn batch,
on the difference of the embeddings. A batch of one sample has no pair: its term is 0.
Defaults (RepDistiller, ``scripts/run_cifar_distill.sh``): γ = 1, β = 0.02, feat_dim = 128.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kdbench.methods.base import Method, MethodContext, Needs, Step, beta, feat_dim, gamma


def cc_loss(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """Mean over consecutive pairs (i, i+1) of Σ_d |e_s − e_t|_i,d · |e_s − e_t|_i+1,d."""
    delta = (e_s - e_t).abs()
    if len(delta) < 2:
        return delta.sum() * 0.0
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


class CC(Method):
    """Correlation congruence: γ·CE + β·mean_i Σ_d δ_i,d·δ_i+1,d on embedded features."""

    hparams = (
        gamma(1.0),
        beta(0.02),
        feat_dim(128),
    )
    needs = Needs(teacher=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s, t = ctx.probe()
        assert t is not None and s.embedding is not None and t.embedding is not None
        dim = int(self.hp["feat_dim"])
        self.embed_s = nn.Linear(s.embedding.shape[1], dim)
        self.embed_t = nn.Linear(t.embedding.shape[1], dim)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        e_s = self.embed_s(step.student.embedding.flatten(1))
        e_t = self.embed_t(step.teacher.embedding.detach().flatten(1))
        return {"cc": self.hp["beta"] * cc_loss(e_s, e_t)}
