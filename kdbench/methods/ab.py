"""``ab``: activation boundaries (Heo, Lee, Yun & Choi 2019, "Knowledge Transfer via
Distillation of Activation Boundaries Formed by Hidden Neurons", AAAI), as RepDistiller
(HobbitLong/RepDistiller, ``distiller_zoo/AB.py`` ``ABLoss``, ``models/util.py``
``Connector``/``ConvReg``, ``train_student.py`` and ``helper/pretrain.py`` for ``abound``)
runs it.

A stage before training (see ``kdbench.methods.stage``) trains a connector r and the
student's layers to put the student's pre-activation maps on the same side of the neurons'
activation boundaries as the teacher's (the paper's alternative loss, eq. 4, with margin m):
per paired block i of n, with s = r_i(p_s), t = p_t (the blocks' values before their last
ReLU, ``ModelOutput.preact``),

    ℓ_i = Σ over b, c, h, w of (s + m)²·[s > −m ∧ t ≤ 0] + (s − m)²·[s ≤ m ∧ t > 0],
    L_stage = Σ_i 2^(i − n + 1) · ℓ_i / B · 3/1000,

the deepest block weighted 1, each shallower one half the next; B the batch size. The stage
trains r and every layer of the student (its classifier gets no gradient from L_stage, the
same as RepDistiller's ``get_feat_modules()``), SGD at the suite's learning rate, momentum and
weight decay, no schedule. Afterwards RepDistiller's ``abound`` loss term is 0: the student
trains on γ·CE alone (with ``-a 0``), the connector unused. So here ``terms`` is empty, and
the teacher is not run while the student trains (``with_teacher`` False).

The connector, per pair: the identity when the channel counts and heights agree; otherwise
``ConvReg`` without its ReLU: a convolution then BatchNorm, the convolution 3×3 stride 2 when
the student's map is twice the teacher's height, a 4×4 stride-2 transposed convolution when it
is half, of kernel (1 + H_s − H_t, 1 + W_s − W_t) when it is larger otherwise.
Blocks are paired from the deepest down, the last k of each network (RepDistiller zips
``feat[1:-1]``, kdbench's blocks, from the first: the same when the counts agree).
Defaults (RepDistiller): γ = 1, margin 1, stage 30 of 240 epochs (``init_share`` 0.125); its
``-b 1`` multiplies the main-phase term, which is 0, so there is no β.
Deliberate differences: a student map smaller than the teacher's by other than a factor of 2
(RepDistiller raises) is upsampled bilinearly to the teacher's size, then a 1×1 convolution;
``ab`` cannot be combined (``A+B`` would skip its stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.at import paired_blocks
from kdbench.methods.base import HParam, MethodContext, Needs, Step, gamma, missing_maps
from kdbench.methods.stage import StagedMethod, init_share
from kdbench.models.base import ModelOutput


class ConvReg(nn.Module):
    """A student map onto a teacher map's channels and size: convolution + BatchNorm."""

    def __init__(self, s_shape: torch.Size, t_shape: torch.Size) -> None:
        super().__init__()
        (cs, hs, ws), (ct, ht, wt) = tuple(s_shape[1:]), tuple(t_shape[1:])
        self.upsample: tuple[int, int] | None = None
        if hs == 2 * ht:
            self.conv: nn.Module = nn.Conv2d(cs, ct, 3, stride=2, padding=1)
        elif 2 * hs == ht:
            self.conv = nn.ConvTranspose2d(cs, ct, 4, stride=2, padding=1)
        elif hs >= ht:
            self.conv = nn.Conv2d(cs, ct, (1 + hs - ht, 1 + ws - wt))
        else:  # RepDistiller raises here
            self.upsample = (ht, wt)
            self.conv = nn.Conv2d(cs, ct, 1)
        self.bn = nn.BatchNorm2d(ct)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            f = F.interpolate(f, size=self.upsample, mode="bilinear", align_corners=False)
        return self.bn(self.conv(f))


def connector(s_shape: torch.Size, t_shape: torch.Size) -> nn.Module:
    if s_shape[1] == t_shape[1] and s_shape[2] == t_shape[2]:
        return nn.Identity()
    return ConvReg(s_shape, t_shape)


def ab_block(s: torch.Tensor, t: torch.Tensor, margin: float) -> torch.Tensor:
    """Σ (s + m)²·[s > −m ∧ t ≤ 0] + (s − m)²·[s ≤ m ∧ t > 0] over every element."""
    off = ((s > -margin) & (t <= 0)).to(s.dtype)
    on = ((s <= margin) & (t > 0)).to(s.dtype)
    return ((s + margin).pow(2) * off + (s - margin).pow(2) * on).sum()


def ab_loss(g_s: list[torch.Tensor], g_t: list[torch.Tensor], margin: float) -> torch.Tensor:
    """Σ_i 2^(i − n + 1) · ab_block_i / B · 3/1000, the deepest block weighted 1."""
    n = len(g_s)
    total = g_s[0].new_zeros(())
    for i, (s, t) in enumerate(zip(g_s, g_t, strict=True)):
        total = total + 2.0 ** (i - n + 1) * ab_block(s, t, margin) / s.shape[0] / 1000 * 3
    return total


class AB(StagedMethod):
    """Activation boundaries: stage Σ_i 2^(i−n+1)·ℓ_m(r_i(p_s), p_t)/B·3/1000, then γ·CE."""

    hparams = (
        gamma(1.0),
        HParam("margin", 1.0, low=0.0, doc="margin m of the activation-boundary loss"),
        init_share(),
    )
    needs = Needs(teacher=True)
    trains_with_teacher = False

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s, t = ctx.probe()
        assert t is not None, "ab needs a teacher"
        reason = self.pairing(s, t, self.hp)
        if reason:
            raise ValueError(f"ab: {reason}")
        self.connectors = nn.ModuleList(
            connector(ps.shape, pt.shape) for ps, pt in paired_blocks(s.preact, t.preact)
        )

    @classmethod
    def pairing(
        cls, student: ModelOutput, teacher: ModelOutput | None, hp: Mapping[str, Any]
    ) -> str | None:
        return missing_maps(student, teacher, preact=True)

    def stage_loss(self, student: ModelOutput | None, teacher: ModelOutput) -> torch.Tensor:
        assert student is not None
        pairs = paired_blocks(student.preact, teacher.preact)
        g_s = [r(ps) for r, (ps, _) in zip(self.connectors, pairs, strict=True)]
        g_t = [pt.detach() for _, pt in pairs]
        return ab_loss(g_s, g_t, float(self.hp["margin"]))

    def stage_params(self) -> list[nn.Parameter]:
        student = self._models[0]
        return [*self.connectors.parameters(), *student.parameters()]

    def stage_modules(self) -> list[nn.Module]:
        return [self.connectors, self._models[0]]

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        """RepDistiller's main-phase ``abound`` term is 0: γ·CE alone."""
        return {}
