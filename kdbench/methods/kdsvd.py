"""``kdsvd``: knowledge distillation by singular value decomposition (Lee, Kim & Song 2018,
"Self-supervised Knowledge Distillation Using Singular Value Decomposition", ECCV), as
mdistiller computes it (megvii-research/mdistiller, ``mdistiller/distillers/KDSVD.py``,
commit a08d46f; a port of RepDistiller's ``distiller_zoo/KDSVD.py``, itself a port of the
authors' TensorFlow code, sseung0703/SSKD_SVD).

For each block output f (B × C × H × W), seen as B matrices of (C·H) rows and W columns
(mdistiller's ``feat.view(B, C*H, W)``), take its thin SVD and keep the first n right singular
vectors V[:, :n] and singular values σ[:n], each renormalised: the columns of V to unit norm
(over W), σ[:n] to unit norm. The teacher keeps n = K, the student n = K + 3. Each teacher
vector j is matched with the student vector of largest |cosine| (ties: all of them), whose
sign is flipped to a positive cosine (``align_rsv``): ṽ_s = V_s · M, M_ij = sign(c_ij) where
|c_ij| = max_i |c_ij|, c = V_sᵀ V_t, else 0. Both are then scaled by the teacher's σ:
v_t = V_t · diag(σ_t), v_s = ṽ_s · diag(σ_t). Between consecutive blocks l−1, l the relation
is an RBF kernel on every pair of rows (a, b) of each vector j:
R_l[a, b, j] = exp(−(v_l[a, j] − v_{l−1}[b, j])² / 8), and

    L_kdsvd = (1/B) Σ_l Σ_{batch, a, b, j} (R^s_l − R^t_l)²,

non-finite entries of the squared difference set to 0 (so are non-finite SVD outputs), the
teacher's relation detached. loss = γ·CE + β·L_kdsvd.

Defaults (mdistiller ``cfg.py``: ``KDSVD.K = 1``, ``LOSS.CE_WEIGHT = 1``,
``LOSS.FEAT_WEIGHT = 1``; the CIFAR config ``configs/cifar100/kdsvd.yaml`` keeps them):
γ = 1, β = 1, K = 1. With K = 1 the normalised σ is 1 and drops out.

Blocks: kdbench's ``feats`` are mdistiller's ``feats[1:]`` (the stage outputs, after their
ReLU; the stem is not one). Where the two networks have different block counts they are
paired from the deepest down (the last k of each), as kdbench's other block methods;
mdistiller zips them from the first, the same when the counts agree.

Sign: the teacher's singular vectors keep the sign LAPACK gives (``torch.linalg.svd``), as in
the reference; only the student's are aligned to the teacher's. The relation R^t between
blocks therefore depends on that convention, as the reference's does.

Deliberate differences:

- mdistiller casts the features to float32 before the SVD (``.float()``); here the SVD runs in
  the features' own dtype, float32 or wider (bf16 is raised to float32, which is what the
  trainer hands a loss anyway), so a float64 check is exact. In float32 it is the same.
- ``torch.linalg.svd`` (thin) replaces the deprecated ``torch.svd``: the same factorisation
  (``torch.svd`` calls it); the left singular vectors, unused by the loss, are not kept.
- RepDistiller reshapes f to (B, H·W, C) instead, so its vectors run over the *channels*
  (the TensorFlow original's NHWC layout) and it needs equal channel counts; mdistiller's, the
  one followed here, run over the width W and need equal widths in each paired block.

Pairing: at least two paired blocks (the loss is over consecutive pairs), 4-D block outputs,
and the same width W in the student's and teacher's blocks of a pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kdbench.methods.at import paired_blocks
from kdbench.methods.base import HParam, Method, Needs, Step, beta, gamma, missing_maps
from kdbench.models.base import ModelOutput

STUDENT_EXTRA = 3
"""The student keeps K + 3 singular vectors, from which each teacher vector picks its match."""
RBF_SCALE = 8.0
"""The RBF kernel's denominator: exp(−d² / 8)."""


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x / max(‖x‖₂, 1e-12) along ``dim`` (``F.normalize``'s definition)."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)


def right_singular(feat: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ[:, :n] normalised, V[:, :, :n] with unit columns) of each sample's (C·H) × W matrix,
    non-finite values zeroed first."""
    b, c, h, w = feat.shape
    x = feat.reshape(b, c * h, w)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    s, v = _finite(s), _finite(vh.transpose(-2, -1))
    return _unit(s[:, :n], dim=1), _unit(v[:, :, :n], dim=1)


def align_to(v_s: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """For each teacher vector, the student vector(s) of largest |cosine|, sign-flipped to a
    positive cosine: V_s · M (``align_rsv``)."""
    cosine = v_s.transpose(-2, -1) @ v_t
    best = cosine.abs().amax(dim=1, keepdim=True)
    mask = torch.where(best == cosine.abs(), torch.sign(cosine), torch.zeros_like(cosine))
    return v_s @ mask


def rbf(v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
    """exp(−(v[a, j] − v_prev[b, j])² / 8): B × W_l × W_{l−1} × K."""
    return torch.exp(-(v.unsqueeze(2) - v_prev.unsqueeze(1)).pow(2) / RBF_SCALE)


def kdsvd_loss(s_feats: list[torch.Tensor], t_feats: list[torch.Tensor], k: int) -> torch.Tensor:
    """(1/B) Σ over consecutive block pairs of Σ (R^s − R^t)², the blocks given paired."""
    total = s_feats[0].new_zeros((), dtype=torch.promote_types(s_feats[0].dtype, torch.float32))
    prev: tuple[torch.Tensor, torch.Tensor] | None = None
    for fs, ft in zip(s_feats, t_feats, strict=True):
        sig_t, v_t = right_singular(ft.detach(), k)
        _, v_s = right_singular(fs, k + STUDENT_EXTRA)
        v_s = align_to(v_s, v_t)
        v_t, v_s = v_t * sig_t.unsqueeze(1), v_s * sig_t.unsqueeze(1)
        if prev is not None:
            s_prev, t_prev = prev
            sq = (rbf(v_s, s_prev) - rbf(v_t, t_prev).detach()).pow(2)
            total = total + _finite(sq).sum()
        prev = (v_s, v_t)
    return total / s_feats[0].shape[0]


class KDSVD(Method):
    """SVD distillation: γ·CE + β·(1/B)·Σ_l ‖RBF(v_s,l, v_s,l−1) − RBF(v_t,l, v_t,l−1)‖²."""

    hparams = (
        gamma(1.0),
        beta(1.0),
        HParam(
            "K",
            1,
            kind="int",
            low=1,
            doc="teacher singular vectors kept per block (the student keeps K + 3)",
        ),
    )
    needs = Needs(teacher=True)

    @classmethod
    def pairing(
        cls, student: ModelOutput, teacher: ModelOutput | None, hp: Mapping[str, Any]
    ) -> str | None:
        missing = missing_maps(student, teacher, blocks=2)  # it relates consecutive blocks
        if missing or teacher is None:
            return missing
        for i, (fs, ft) in enumerate(paired_blocks(student.feats, teacher.feats)):
            if fs.shape[-1] != ft.shape[-1]:
                return (
                    f"paired block {i} (from the shallowest paired) has width {fs.shape[-1]} in "
                    f"the student but {ft.shape[-1]} in the teacher (the SVD runs over the width)"
                )
        return None

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        pairs = paired_blocks(step.student.feats, step.teacher.feats)
        loss = kdsvd_loss([p[0] for p in pairs], [p[1] for p in pairs], int(self.hp["K"]))
        return {"kdsvd": self.hp["beta"] * loss}
