"""``fitnet``: feature hints (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets").

A regressor r (conv + BatchNorm + ReLU) maps the student's hint block onto the teacher's
(eq. 3 of the paper): L_hint = mean((r(f_s) − f_t)²) over all elements. The regressor is
1×1 when the spatial sizes match; a larger student map is reduced by a valid convolution of
kernel (1 + H_s − H_t); a smaller one is upsampled (bilinear) to the teacher's size first.
Trained jointly with the student in one stage, as RepDistiller does (the paper pretrains the
hint first). The regressor's parameters are not counted in ``student_params``.
Defaults (RepDistiller): γ = 1, β = 100; ``hint_layer`` picks the block (from the deepest
paired blocks, like ``at``): 0 = the first of them, default the middle one (the earlier of
two middles: the second stage, RepDistiller's ``hint_layer=2``, of 3- and 4-stage models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.at import paired_blocks
from kdbench.methods.base import HParam, Method, MethodContext, Needs, Step, beta, gamma


class Regressor(nn.Module):
    def __init__(self, s_shape: torch.Size, t_shape: torch.Size) -> None:
        super().__init__()
        (cs, hs, ws), (ct, ht, wt) = s_shape[1:], t_shape[1:]
        self.upsample = (ht, wt) if hs < ht or ws < wt else None
        if self.upsample:
            conv = nn.Conv2d(cs, ct, 1)
        else:
            conv = nn.Conv2d(cs, ct, (1 + hs - ht, 1 + ws - wt))
        self.body = nn.Sequential(conv, nn.BatchNorm2d(ct), nn.ReLU(inplace=True))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            f = F.interpolate(f, size=self.upsample, mode="bilinear", align_corners=False)
        return self.body(f)


class FitNet(Method):
    """Hints: γ·CE + β·mean((r(f_s) − f_t)²) on one block."""

    hparams = (
        gamma(1.0),
        beta(100.0),
        HParam("hint_layer", -1, kind="int", low=-1, doc="paired block index; -1: the middle one"),
    )
    needs = Needs(teacher=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s, t = ctx.probe()
        assert t is not None, "fitnet needs a teacher"
        pairs = paired_blocks(s.feats, t.feats)
        layer = int(self.hp["hint_layer"])
        # RepDistiller's hint_layer=2 is the second stage of the ResNets, WRNs and VGGs alike.
        self.layer = (len(pairs) - 1) // 2 if layer < 0 else layer
        if self.layer >= len(pairs):
            raise ValueError(
                f"hint_layer {layer} is out of range: the pair has {len(pairs)} paired blocks"
            )
        fs, ft = pairs[self.layer]
        self.regressor = Regressor(fs.shape, ft.shape)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        fs, ft = paired_blocks(step.student.feats, step.teacher.feats)[self.layer]
        return {"hint": self.hp["beta"] * F.mse_loss(self.regressor(fs), ft)}
