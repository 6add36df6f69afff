"""``fsp``: the flow of solution procedure (Yim, Joo, Bae & Kim 2017, "A Gift from Knowledge
Distillation: Fast Optimization, Network Minimization and Transfer Learning", CVPR), as
RepDistiller (HobbitLong/RepDistiller, ``distiller_zoo/FSP.py`` ``FSP``, ``train_student.py``
and ``helper/pretrain.py`` for ``fsp``) runs it.

The FSP matrix of two consecutive blocks of one network, bottom f_i (C_i × H × W) and top
f_{i+1} (C_{i+1} × H × W): G_i[j, k] = mean over the positions of f_{i+1}[j] · f_i[k] (eq. 1 of
the paper, a C_{i+1} × C_i matrix per sample); when the two maps differ in size the larger is
average-pooled to the smaller (adaptive pooling) first, as RepDistiller. A stage before
training (see ``kdbench.methods.stage``) trains the student's layers on

    L_stage = Σ_i mean over b, j, k of (G_i^s − G_i^t)²,

the sum over the consecutive pairs of its paired blocks, at the suite's learning rate,
momentum and weight decay, no schedule; the student's classifier gets no gradient from it
(RepDistiller trains ``get_feat_modules()``). Afterwards RepDistiller's ``fsp`` term is 0: the
student trains on γ·CE alone, so here ``terms`` is empty and the teacher is not run while the
student trains (``with_teacher`` False).
G^s and G^t compare only where the student's and teacher's blocks have the same channel
counts, and there must be two blocks: ``pairing`` refuses other pairs (RepDistiller's table
says "n/a" for wrn_40_2 → wrn_40_1). Blocks are paired from the deepest down, the last k of
each network (the same as RepDistiller's order when the counts agree).
Defaults (RepDistiller): γ = 1, stage 30 of 240 epochs (``init_share`` 0.125); its ``-b 50``
multiplies the main-phase term, which is 0, so there is no β.
Deliberate differences: RepDistiller's ``feat[:-1]`` includes the stem's output (the first
convolution's, before any block), so its first FSP matrix is stem → first block; kdbench's
models expose their blocks alone, so that matrix is not in L_stage (one pair fewer). Pooling
goes by H·W rather than by H alone, so non-square maps work. ``fsp`` cannot be combined
(``A+B`` would skip its stage).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kdbench.methods.at import match_spatial, paired_blocks
from kdbench.methods.base import MethodContext, Needs, Step, gamma, missing_maps
from kdbench.methods.stage import StagedMethod, init_share
from kdbench.models.base import ModelOutput


def fsp_matrices(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per consecutive pair (bottom, top): (B, C_top, C_bottom), the mean over positions of
    top[j] · bottom[k]."""
    out = []
    for bot, top in itertools.pairwise(feats):
        bot, top = match_spatial(bot, top)
        out.append(torch.einsum("bkp,bjp->bjk", bot.flatten(2), top.flatten(2)) / bot[0, 0].numel())
    return out


def fsp_loss(s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
    """Σ over consecutive paired blocks of mean((G^s − G^t)²)."""
    pairs = paired_blocks(s_feats, t_feats)
    g_s = fsp_matrices([fs for fs, _ in pairs])
    g_t = fsp_matrices([ft.detach() for _, ft in pairs])
    total = s_feats[0].new_zeros(())
    for a, b in zip(g_s, g_t, strict=True):
        total = total + (a - b).pow(2).mean()
    return total


class FSP(StagedMethod):
    """Flow of solution procedure: stage Σ_i mean((G_i^s − G_i^t)²) on the student, then γ·CE."""

    hparams = (gamma(1.0), init_share())
    needs = Needs(teacher=True)
    trains_with_teacher = False

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s, t = ctx.probe()
        # Refused when the stage runs rather than here: the main phase (γ·CE) runs on any pair.
        self._refusal = self.pairing(s, t, self.hp)

    @classmethod
    def pairing(
        cls, student: ModelOutput, teacher: ModelOutput | None, hp: Mapping[str, Any]
    ) -> str | None:
        missing = missing_maps(student, teacher, blocks=2)  # an FSP matrix joins two blocks
        if missing or teacher is None:
            return missing
        pairs = paired_blocks(student.feats, teacher.feats)
        for i, (fs, ft) in enumerate(pairs):
            if fs.shape[1] != ft.shape[1]:
                return (
                    f"the student's and the teacher's paired block {i + 1} of {len(pairs)} "
                    f"(shallow to deep) differ in channels ({fs.shape[1]} vs {ft.shape[1]}): "
                    "fsp compares matrices of equal channel counts"
                )
        return None

    def check_stage(self) -> None:
        if self._refusal:
            raise ValueError(f"fsp: {self._refusal}")

    def stage_loss(self, student: ModelOutput | None, teacher: ModelOutput) -> torch.Tensor:
        assert student is not None
        return fsp_loss(student.feats, teacher.feats)

    def stage_params(self) -> list[nn.Parameter]:
        return list(self._models[0].parameters())

    def stage_modules(self) -> list[nn.Module]:
        return [self._models[0]]

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        """RepDistiller's main-phase ``fsp`` term is 0: γ·CE alone."""
        return {}
