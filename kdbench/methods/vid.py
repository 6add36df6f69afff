"""``vid``: variational information distillation (Ahn et al. 2019, "Variational Information
Distillation for Knowledge Transfer"), as the reference implementation (RepDistiller's
``VIDLoss``, the authors' code) computes it.

For each paired block: a regressor μ of three 1×1 convolutions without bias (C_s → C_t →
C_t → C_t, ReLU between) predicts the teacher's map from the student's; the teacher's value is
modelled as Gaussian with mean μ(f_s) and a learned variance per teacher channel,
σ²_c = softplus(α_c) + ε, α_c initialised so that σ²_c = 5 (``init_pred_var``), ε = 1e-5.
The loss is the negative log-likelihood of the teacher's map, without its constant:
L_vid = mean over b, c, h, w of ½·((t_c − μ_c(s))² / σ²_c + log σ²_c), summed over the paired
blocks. When the spatial sizes differ, the larger map is average-pooled to the smaller
(adaptive pooling, before the regressor, as RepDistiller). Blocks are paired from the deepest
down, the last k of each network, as ``at`` does; RepDistiller zips its ``feat[1:-1]``
(kdbench's ``feats``) from the first, the same when the counts agree. The regressors and the
α_c are trained with the student (they are not counted in ``student_params``).
Defaults (RepDistiller): γ = 1, β = 1, init_pred_var = 5, ε = 1e-5. Deliberate difference:
pooling goes by H·W rather than by H alone, so non-square maps work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.at import match_spatial, paired_blocks
from kdbench.methods.base import HParam, Method, MethodContext, Needs, Step, beta, gamma


class VIDHead(nn.Module):
    """One block pair's regressor μ and per-channel log-scale α (σ² = softplus(α) + ε)."""

    def __init__(self, c_s: int, c_t: int, init_pred_var: float, eps: float) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(c_s, c_t, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(c_t, c_t, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(c_t, c_t, 1, bias=False),
        )
        # softplus⁻¹(init_pred_var − eps), so that σ² starts at init_pred_var
        init = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((c_t,), init))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        fs, ft = match_spatial(fs, ft)
        mean = self.regressor(fs)
        var = self.variance().view(1, -1, 1, 1).to(mean.dtype)
        return (0.5 * ((mean - ft) ** 2 / var + torch.log(var))).mean()


class VID(Method):
    """Variational information distillation: γ·CE + β·Σ_blocks NLL of f_t under N(μ(f_s), σ²)."""

    hparams = (
        gamma(1.0),
        beta(1.0),
        HParam(
            "init_pred_var",
            5.0,
            low=0.0,
            low_open=True,
            doc="initial variance σ² of every teacher channel",
        ),
        HParam("eps", 1e-5, low=0.0, low_open=True, doc="floor ε added to the variance"),
    )
    needs = Needs(teacher=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s, t = ctx.probe()
        assert t is not None, "vid needs a teacher"
        init, eps = float(self.hp["init_pred_var"]), float(self.hp["eps"])
        if init <= eps:
            raise ValueError(f"init_pred_var {init} must exceed eps {eps}")
        self.heads = nn.ModuleList(
            VIDHead(fs.shape[1], ft.shape[1], init, eps)
            for fs, ft in paired_blocks(s.feats, t.feats)
        )

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        pairs = paired_blocks(step.student.feats, step.teacher.feats)
        total = step.student.logits.new_zeros(())
        for head, (fs, ft) in zip(self.heads, pairs, strict=True):
            total = total + head(fs, ft.detach())
        return {"vid": self.hp["beta"] * total}
