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
images: 1.3 GB), held twice during training (one copy read by a step's backward while the other
takes its update). K adapts to small data sets: at most the reference's share of the data
(16384 / 50,000 ≈ 0.33 N) and the number of samples outside the largest class (digits: 353). ``memory: queue`` replaces the banks by two queues of the last K
embeddings (MoCo style; 2 × K × feat_dim floats), whose negatives are not filtered by class.
Runs on any device (the reference code hard-codes CUDA).
Defaults (RepDistiller): γ = 1, β = 0.8, K = 16384.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.base import (
    HParam,
    Method,
    MethodContext,
    Needs,
    Step,
    beta,
    feat_dim,
    gamma,
)

REFERENCE_K_SHARE = 16384 / 50000
"""Negatives per sample over the training-set size in the reference (CIFAR-100)."""


def nce_loss(scores: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """NCE with noise 1/N: column 0 of the last dimension holds the positive's score, the rest
    K negatives'. Scores of shape (..., B, 1 + K): the sum over the leading dimensions of each
    set's loss (the mean over its B anchors).

    Eq. 19's terms −log(P₀ / (P₀ + c)) and −log(n / (P_k + c)), c = n + eps, n = K / N, are
    computed as log((P + c) / n) over every column, minus log(P₀ / n) for the positive: the
    same values, one pass over the scores instead of separate ones for the positive and the
    negatives (not log1p: PyTorch's CPU log1p is not vectorised, so it is slower than log).
    """
    k = scores.shape[-1] - 1
    noise = k / n_data
    pos = scores[..., 0]
    total = torch.log((scores + (noise + eps)) * (1 / noise)).sum() - torch.log(pos).sum()
    return (total + pos.numel() * math.log(noise)) / scores.shape[-2]


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
        # Per sample, of its class: the others' count N − n_c, the block's start, its size n_c
        # (one lookup a step instead of three).
        per_class = torch.stack([len(self.labels) - self.count, self.start, self.count], dim=1)
        self.per_sample = per_class[self.labels]

    def max_negatives(self) -> int:
        return self._max

    def __call__(
        self, index: torch.Tensor, k: int, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        others, start, n_c = self.per_sample.index_select(0, index.cpu()).T[:, :, None]
        r = (torch.rand((len(index), k), generator=gen) * others).long()
        r += (r >= start) * n_c
        # index_select on the flat draws: faster on a CPU than advanced indexing (order[r]).
        return self.order.index_select(0, r.view(-1)).view(r.shape).to(index.device)


@dataclass
class _Alternate:
    """``CRD._write``'s state: the memory before the last update, that update's rows and
    slots, and the memory it installed (and its version, to notice a write from outside).
    Plain attributes: a tensor attribute of an ``nn.Module`` is slow to write (every write
    goes through ``nn.Module.__setattr__``), and these change every step."""

    spare: torch.Tensor | None = None
    slots: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    installed: torch.Tensor | None = None
    installed_version: int = -1


class CRD(Method):
    """Contrastive representation distillation: γ·CE + β·(NCE_s + NCE_t)."""

    hparams = (
        gamma(1.0),
        beta(0.8),
        feat_dim(128),
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
        banks = []
        for _ in range(2):
            init = torch.rand(slots, dim, generator=gen).mul_(2 * stdv).add_(-stdv)
            banks.append(F.normalize(init, dim=1) if self.queue else init)
        # Both networks' memories in one (2, slots, dim) tensor: the student's, then the
        # teacher's. Every step's scores, loss and update then run once over both sides.
        self.register_buffer("memory", torch.stack(banks))
        # Z of the teacher's anchors (scored against the student's memory), then the student's.
        self.register_buffer("z", torch.full((2,), -1.0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self._z_fixed = False
        self._alternate = _Alternate()

    @property
    def memory_s(self) -> torch.Tensor:
        """The student's memory (slots × feat_dim), a view of ``memory``."""
        return self.memory[0]

    @property
    def memory_t(self) -> torch.Tensor:
        """The teacher's memory (slots × feat_dim), a view of ``memory``."""
        return self.memory[1]

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None and step.index is not None
        # Row 0: the teacher's anchors, scored against the student's memory (memory[0]);
        # row 1: the student's, against the teacher's (memory[1]).
        anchors = F.normalize(
            torch.stack(
                [self.embed_t(step.teacher.embedding), self.embed_s(step.student.embedding)]
            ),
            dim=2,
        )
        # Each network's embeddings of this batch, in the order of ``memory``.
        own = anchors.detach().flip(0)
        scaled = anchors / self.hp["nce_t"]
        if self.queue:
            # The positive is the other network's embedding of the same sample, now.
            pos = (scaled * own).sum(dim=2, keepdim=True)
            logits = torch.cat([pos, scaled @ self.memory.transpose(1, 2)], dim=2)
        else:
            # One (B, D) × (D, N) product per side, then a gather, rather than gathering
            # B·(K+1) rows of D floats for a batched product: the same numbers, but the gather
            # moved B·(K+1)·D floats a step (536 MB on CIFAR-100 with K = 16384), the product
            # reads N·D once.
            cidx = torch.cat([step.index[:, None], self.sampler(step.index, self.k)], dim=1)
            logits = (scaled @ self.memory.transpose(1, 2)).gather(2, cidx.expand(2, -1, -1))
        out = torch.exp(logits)
        with torch.no_grad():
            if not self._z_fixed:  # a host read on the first step only, not every step
                if bool((self.z < 0).any()):
                    self.z.copy_(out.mean(dim=(1, 2)) * self.n_data)
                self._z_fixed = True
            self._update(step.index, own)
        loss = nce_loss(out / self.z[:, None, None], self.n_data)  # NCE_t + NCE_s
        return {"crd": self.hp["beta"] * loss}

    def _update(self, index: torch.Tensor, own: torch.Tensor) -> None:
        if self.queue:
            n = min(own.shape[1], self.k)
            slots = (self.ptr + torch.arange(n, device=own.device)) % self.k
            self._write(slots, own[:, :n])
            self.ptr.copy_((self.ptr + n) % self.k)
            return
        m = self.hp["nce_m"]
        moved = self.memory.index_select(1, index).mul_(m).add_(own, alpha=1 - m)
        self._write(index, F.normalize(moved, dim=2))

    def _write(self, slots: torch.Tensor, rows: torch.Tensor) -> None:
        """``memory`` with ``rows`` at ``slots``, without copying the whole memory each step.

        This step's scores read ``memory`` and autograd keeps it for their backward, so it
        cannot change in place. Two memories alternate instead: the new one is the one the
        previous step read, brought up to date by the previous step's rows and this step's
        (2·B rows written rather than 2·N copied: the update's cost follows the batch, not the
        data set's size). That one's backward has run by now; if it had not, autograd would
        refuse it (the memory it saved was modified in place), not compute a wrong gradient.
        """
        current, alt = self.memory, self._alternate
        if (
            alt.spare is None
            or current is not alt.installed
            or current._version != alt.installed_version
        ):
            spare = current.clone()  # first step, or ``memory`` was replaced or loaded
        else:
            spare = alt.spare
            spare.index_copy_(1, alt.slots, alt.rows)
        spare.index_copy_(1, slots, rows)
        self.memory = spare
        alt.spare, alt.slots, alt.rows = current, slots, rows
        alt.installed, alt.installed_version = spare, spare._version
