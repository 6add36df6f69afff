"""``dd_herding``: a real subset chosen by herding (Welling 2009, "Herding Dynamical Weights to
Learn"; as the coreset baseline of Zhao et al. 2021, Table 1, and of iCaRL, Rebuffi et al. 2017,
Algorithm 4).

Per class c with embeddings f_i of its training images and their mean μ_c, images are picked
greedily: at step k, p_k = argmin_i ‖μ_c − (1/k)(f_i + Σ_{j<k} f_{p_j})‖₂, without repetition,
until ipc are chosen. The embedding is the teacher's pooled penultimate feature: the reference
herds in the feature space of a network trained on the full data, which is what the suite's
teacher is. Deterministic: the seed does not change the choice.
"""

from __future__ import annotations

import torch

from kdbench.methods.base import Needs
from kdbench.methods.synthetic import (
    SyntheticSet,
    SyntheticSetMethod,
    class_indices,
    dsa,
    ipc,
    labels,
    real_set,
    train_epochs,
)


def herding(features: torch.Tensor, k: int) -> list[int]:
    """Row indices of ``features`` chosen by herding towards their mean, in order of choice."""
    mu = features.mean(dim=0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for step in range(1, k + 1):
        dist = ((mu - (total + features) / step) ** 2).sum(dim=1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        total += features[i]
    return chosen


class DDHerding(SyntheticSetMethod):
    """``ipc`` real images per class chosen by herding in the teacher's embedding space."""

    hparams = (ipc(10), train_epochs(), dsa(False), *labels())
    training_hparams = (
        *SyntheticSetMethod.training_hparams,
        "dsa",
    )  # a real subset: DSA only at evaluation
    needs = Needs(teacher=True, synthetic_set=True)

    @torch.no_grad()
    def synthesize(self, data, *, seed: int, device: torch.device) -> SyntheticSet:
        teacher = self.ctx.teacher
        assert teacher is not None
        teacher.eval()
        picks = []
        for idx in class_indices(data.train_y, data.num_classes, self.hp["ipc"]):
            feats = torch.cat(
                [
                    teacher.forward_features(data.normalize(data.train_x[b].to(device))).embedding
                    for b in idx.split(512)
                ]
            )
            picks.append(idx[torch.tensor(herding(feats, self.hp["ipc"]))])
        return real_set(data, torch.cat(picks))
