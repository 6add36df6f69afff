"""``crd``: contrastive representation distillation (Tian, Krishnan & Isola 2020, "Contrastive
Representation Distillation"), as the reference implementation (RepDistiller) computes it.

Linear embedding heads map each network's pooled penultimate feature to ``feat_dim`` (128)
dimensions, L2-normalised. Two memory banks of N × feat_dim hold an embedding of every
training sample, student's and teacher's, updated with momentum ``nce_m`` (0.5) and
re-normalised. For each sample, K negatives are drawn from samples of *other classes*, the
positive being the sample's own index. Scores are exp(v · m / τ) with τ = ``nce_t`` (0.07),
divided by a constant Z fixed on the first batch (mean score × N). The NCE loss (eq. 18–19)
with noise distribution 1/N is applied symmetrically: the student's embedding against the
teacher's bank, and the teacher's against the student's.

Memory: 2 × N × feat_dim floats (CIFAR-100: 2 × 50,000 × 128 × 4 B = 51 MB; ImageNet's 1.28 M
images: 1.3 GB). K adapts to small data sets: at most the reference's share of the data
(16384 / 50,000 ≈ 0.33 N) and the number of samples outside the largest class (digits: 353). ``memory: queue`` replaces the banks by two queues of the last K
embeddings (MoCo style; 2 × K × feat_dim floats), whose negatives are not filtered by class.
Runs on any device (the reference code hard-codes CUDA).
Defaults (RepDistiller): γ = 1, β = 0.8, K = 16384.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.base import HParam, Method, MethodContext, Needs, Step, beta, gamma
from kdbench.methods.registry import METHODS

REFERENCE_K_SHARE = 16384 / 50000
"""Negatives per sample over the training-set size in the reference (CIFAR-100)."""


def nce_loss(scores: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """NCE with noise 1/N: column 0 holds the positive's score, the rest K negatives'."""
    k = scores.shape[1] - 1
    noise = k / n_data
    pos = scores[:, 0]
    neg = scores[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + eps))
    log_d0 = torch.log(noise / (neg + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class OtherClassSampler:
    """Draws, for each anchor, K indices of samples whose class differs from the anchor's.

    Vectorised: with the samples sorted by class, class c holding positions [start_c, end_c),
    a uniform draw r from the N − n_c others is position r, or r + n_c past the class's block.
    """

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels.long()
        self.order = torch.argsort(self.labels, stable=True)
        classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.count = torch.bincount(self.labels, minlength=classes)
        self.start = torch.cumsum(self.count, 0) - self.count
        present = self.count > 0
        self._max = int((len(self.labels) - self.count[present]).min()) if present.any() else 0

    def max_negatives(self) -> int:
        return self._max

    def __call__(
        self, index: torch.Tensor, k: int, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        c = self.labels[index.cpu()]
        n_c, start = self.count[c][:, None], self.start[c][:, None]
        r = (torch.rand((len(index), k), generator=gen) * (len(self.labels) - n_c)).long()
        r = torch.where(r >= start, r + n_c, r)
        return self.order[r].to(index.device)


@METHODS.register("crd")
class CRD(Method):
    """Contrastive representation distillation: γ·CE + β·(NCE_s + NCE_t)."""

    name = "crd"
    hparams = (
        gamma(1.0),
        beta(0.8),
        HParam("feat_dim", 128, kind="int", low=1, doc="embedding dimension"),
        HParam(
            "nce_k", 16384, kind="int", low=1, doc="negatives per sample (memory: queue length)"
        ),
        HParam("nce_t", 0.07, low=0.0, low_open=True, doc="temperature τ of the scores"),
        HParam("nce_m", 0.5, low=0.0, high=1.0, doc="momentum of the memory-bank update"),
        HParam(
            "memory",
            "bank",
            kind="categorical",
            choices=("bank", "queue"),
            doc="bank: N × feat_dim per network; queue: the last nce_k embeddings",
        ),
    )
    needs = Needs(teacher=True, indices=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s, t = ctx.probe()
        assert t is not None and s.embedding is not None and t.embedding is not None
        dim = int(self.hp["feat_dim"])
        self.embed_s = nn.Linear(s.embedding.shape[1], dim)
        self.embed_t = nn.Linear(t.embedding.shape[1], dim)
        self.n_data = ctx.n_train
        self.queue = self.hp["memory"] == "queue"
        stdv = 1.0 / math.sqrt(dim / 3)
        if self.queue:
            self.k = int(self.hp["nce_k"])
            slots = self.k
        else:
            if ctx.train_labels is None:
                raise ValueError(
                    "crd needs the training labels to draw negatives from other classes"
                )
            self.sampler = OtherClassSampler(ctx.train_labels.cpu())
            # The reference draws 16384 of CIFAR-100's 50,000: on a smaller set, the same share.
            share = max(1, round(ctx.n_train * REFERENCE_K_SHARE))
            self.k = min(int(self.hp["nce_k"]), share, self.sampler.max_negatives())
            slots = ctx.n_train
        gen = torch.Generator().manual_seed(0)
        for name in ("memory_s", "memory_t"):
            init = torch.rand(slots, dim, generator=gen).mul_(2 * stdv).add_(-stdv)
            self.register_buffer(name, F.normalize(init, dim=1) if self.queue else init)
        self.register_buffer("z", torch.full((2,), -1.0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def _scores(
        self, anchor: torch.Tensor, memory: torch.Tensor, cidx: torch.Tensor
    ) -> torch.Tensor:
        """exp(m_j · anchor / τ) for the rows j = cidx[b] of ``memory``: (B, K+1).

        One (B, D) × (D, N) product then a gather, rather than gathering B·(K+1) rows of D
        floats and a batched product: the same numbers, but the gather moved B·(K+1)·D
        floats a step (536 MB on CIFAR-100 with K = 16384), the product reads N·D once.
        """
        return torch.exp((anchor @ memory.t()).gather(1, cidx) / self.hp["nce_t"])

    def _scores_queue(
        self, anchor: torch.Tensor, positive: torch.Tensor, memory: torch.Tensor
    ) -> torch.Tensor:
        """exp of [positive · anchor, memory · anchor] / τ: (B, 1 + K)."""
        pos = (anchor * positive).sum(dim=1, keepdim=True)
        return torch.exp(torch.cat([pos, anchor @ memory.t()], dim=1) / self.hp["nce_t"])

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None and step.index is not None
        v_s = F.normalize(self.embed_s(step.student.embedding), dim=1)
        v_t = F.normalize(self.embed_t(step.teacher.embedding), dim=1)
        if self.queue:
            # The positive is the other network's embedding of the same sample, now.
            out_s = self._scores_queue(v_s, v_t.detach(), self.memory_t)
            out_t = self._scores_queue(v_t, v_s.detach(), self.memory_s)
        else:
            cidx = torch.cat([step.index[:, None], self.sampler(step.index, self.k)], dim=1)
            out_s = self._scores(v_s, self.memory_t, cidx)  # student anchor, teacher memory
            out_t = self._scores(v_t, self.memory_s, cidx)  # teacher anchor, student memory
        with torch.no_grad():
            if self.z[0] < 0:
                self.z[0] = out_s.mean() * self.n_data
                self.z[1] = out_t.mean() * self.n_data
            self._update(step.index, v_s.detach(), v_t.detach())
        loss = nce_loss(out_s / self.z[0], self.n_data) + nce_loss(out_t / self.z[1], self.n_data)
        return {"crd": self.hp["beta"] * loss}

    def _update(self, index: torch.Tensor, v_s: torch.Tensor, v_t: torch.Tensor) -> None:
        if self.queue:
            n = min(len(v_s), self.k)
            slots = (self.ptr + torch.arange(n, device=v_s.device)) % self.k
            self.memory_s = self.memory_s.index_copy(0, slots, v_s[:n])
            self.memory_t = self.memory_t.index_copy(0, slots, v_t[:n])
            self.ptr.copy_((self.ptr + n) % self.k)
            return
        # Out of place: this step's scores read the banks, and autograd keeps them for backward.
        m = self.hp["nce_m"]
        new_s = F.normalize(self.memory_s[index] * m + v_s * (1 - m), dim=1)
        new_t = F.normalize(self.memory_t[index] * m + v_t * (1 - m), dim=1)
        self.memory_s = self.memory_s.index_copy(0, index, new_s)
        self.memory_t = self.memory_t.index_copy(0, index, new_t)
