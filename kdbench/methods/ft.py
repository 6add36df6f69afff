"""``ft``: factor transfer (Kim, Park & Kwak 2018, "Paraphrasing Complex Network: Network
Compression via Factor Transfer", NeurIPS), as RepDistiller (HobbitLong/RepDistiller,
``distiller_zoo/FT.py`` ``FactorTransfer``, ``models/util.py`` ``Paraphraser``/``Translator``,
``train_student.py`` and ``helper/pretrain.py`` for ``factor``) runs it.

A paraphraser P (an encoder of three 3×3 convolutions C_t → C_t → k·C_t → k·C_t and a decoder
of three 3×3 transposed convolutions back, each followed by LeakyReLU(0.1), no BatchNorm) is
first trained, alone, to reconstruct the teacher's deepest block f_t (see
``kdbench.methods.stage``): L_stage = mean((P(f_t) − f_t)²) over every element. Then the
student trains with a translator T (three 3×3 convolutions C_s → C_s → k·C_t → k·C_t, each with
BatchNorm and LeakyReLU(0.1)) on its deepest block f_s, and the factor loss (RepDistiller's
``p1 = 2``, ``p2 = 1``): with a(f) = normalise₂(mean over channels of f², flattened per sample)
(the attention map of ``at``),

    L_ft = mean over b and positions of |a(T(f_s)) − a(E(f_t))|,

E the paraphraser's encoder, frozen (RepDistiller keeps it out of the optimiser; here no
gradient reaches it). When the two factors differ in spatial size, the larger is
average-pooled to the smaller (adaptive pooling) before a(·), as RepDistiller.
Loss = γ·CE + β·L_ft. The translator trains with the student (it is not counted in
``student_params``).
Defaults (RepDistiller, ``-a 0 -b 200``): γ = 1, β = 200, k = 0.5 (factor channels
int(k·C_t)); the stage 30 of 240 epochs (``init_share`` 0.125) at 0.01 = 0.2 × the learning
rate of 0.05 (``init_lr_scale``; RepDistiller uses 0.01 when the student is a CIFAR ResNet or
WRN, its learning rate otherwise), the training's momentum and weight decay, no schedule.
Deliberate differences: pooling goes by H·W rather than by H alone, so non-square maps work;
the stage's learning rate is a share of the suite's rather than fixed by the student's
architecture; ``ft`` cannot be combined (``A+B`` would skip its stage).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.at import attention_map, match_spatial
from kdbench.methods.base import HParam, MethodContext, Needs, Step, beta, gamma, missing_maps
from kdbench.methods.stage import StagedMethod, init_share
from kdbench.models.base import ModelOutput


def _convs(channels: list[int], conv: type[nn.Module], bn: bool) -> nn.Sequential:
    """3×3 (transposed) convolutions, stride 1, padding 1, between ``channels``, each with
    BatchNorm (or a parameterless placeholder) and LeakyReLU(0.1): RepDistiller's layout, so
    its modules' state dicts load into these."""
    layers: list[nn.Module] = []
    for c_in, c_out in itertools.pairwise(channels):
        layers += [
            conv(c_in, c_out, 3, 1, 1),
            nn.BatchNorm2d(c_out) if bn else nn.Identity(),
            nn.LeakyReLU(0.1),
        ]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """The teacher's factor: encoder C_t → k·C_t, decoder back (no BatchNorm)."""

    def __init__(self, c_t: int, c_f: int) -> None:
        super().__init__()
        self.encoder = _convs([c_t, c_t, c_f, c_f], nn.Conv2d, bn=False)
        self.decoder = _convs([c_f, c_f, c_t, c_t], nn.ConvTranspose2d, bn=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``f`` (the stage's target)."""
        return self.decoder(self.encoder(f))


class Translator(nn.Module):
    """The student's factor: C_s → k·C_t (BatchNorm after each convolution)."""

    def __init__(self, c_s: int, c_f: int) -> None:
        super().__init__()
        self.encoder = _convs([c_s, c_s, c_f, c_f], nn.Conv2d, bn=True)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.encoder(f)


def factor_loss(factor_s: torch.Tensor, factor_t: torch.Tensor) -> torch.Tensor:
    """mean |a(F_s) − a(F_t)|, the larger factor pooled to the other's size first."""
    factor_s, factor_t = match_spatial(factor_s, factor_t)
    return (attention_map(factor_s) - attention_map(factor_t)).abs().mean()


class FT(StagedMethod):
    """Factor transfer: stage mean((P(f_t) − f_t)²); then γ·CE + β·mean|a(T(f_s)) − a(E(f_t))|."""

    hparams = (
        gamma(1.0),
        beta(200.0),
        HParam(
            "rate", 0.5, low=0.0, low_open=True, doc="factor channels as a share k of the teacher's"
        ),
        init_share(),
        HParam(
            "init_lr_scale",
            0.2,
            low=0.0,
            low_open=True,
            doc="the stage's learning rate as a share of the suite's (RepDistiller: 0.01 / 0.05)",
        ),
    )
    needs = Needs(teacher=True)
    stage_uses_student = False  # the paraphraser reads the teacher alone

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s, t = ctx.probe()
        assert t is not None, "ft needs a teacher"
        reason = self.pairing(s, t, self.hp)
        if reason:
            raise ValueError(f"ft: {reason}")
        c_s, c_t = s.feats[-1].shape[1], t.feats[-1].shape[1]
        c_f = int(c_t * float(self.hp["rate"]))
        if c_f < 1:
            raise ValueError(f"ft: rate {self.hp['rate']} leaves no factor channel of {c_t}")
        self.paraphraser = Paraphraser(c_t, c_f)
        self.paraphraser.requires_grad_(False)  # trained by the stage alone
        self.translator = Translator(c_s, c_f)

    @classmethod
    def pairing(
        cls, student: ModelOutput, teacher: ModelOutput | None, hp: Mapping[str, Any]
    ) -> str | None:
        return missing_maps(student, teacher)

    def stage_loss(self, student: ModelOutput | None, teacher: ModelOutput) -> torch.Tensor:
        f_t = teacher.feats[-1].detach()
        return F.mse_loss(self.paraphraser(f_t), f_t)

    def stage_params(self) -> list[nn.Parameter]:
        return list(self.paraphraser.parameters())

    def stage_modules(self) -> list[nn.Module]:
        return [self.paraphraser]

    def stage_lr_scale(self) -> float:
        return float(self.hp["init_lr_scale"])

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        factor_s = self.translator(step.student.feats[-1])
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(step.teacher.feats[-1])
        return {"ft": self.hp["beta"] * factor_loss(factor_s, factor_t)}
