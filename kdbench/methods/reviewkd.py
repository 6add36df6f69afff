"""``reviewkd``: knowledge review (Chen, Liu, Zhao & Jia 2021, "Distilling Knowledge via
Knowledge Review", CVPR), as mdistiller computes it.

The student's stages, deepest first, are fused by attention-based fusion (ABF) into one
prediction per teacher stage, and the predictions are compared with the teacher's stages by
the hierarchical context loss (HCL):

- stages: the student's last k block outputs plus its pooled embedding as a 1×1 map
  (s_1 … s_k, s_{k+1}), the teacher's last k block *pre-activation* maps plus its pooled
  embedding (t_1 … t_{k+1}), k the smaller block count; paired from the deepest down;
- ABF of stage i (one per stage): x = BN(conv1×1(s_i)) to a common width
  m = min(max_mid_channel, D_s) (D_s the student's embedding width); except at the deepest
  stage it is fused with the residual r_{i+1} of the deeper stage, upsampled (nearest) to
  s_i's size: [a, b] = σ(conv1×1([x, r])), x ← a·x + b·r (a, b per position);
  x is resized (nearest) to t_i's size when it differs, r_i = x, and the prediction is
  p_i = BN(conv3×3(x)) with t_i's channel count;
- HCL (eq. 6 with the pyramid of sec. 3.3): for each stage,
  L_i = (mse(p_i, t_i) + Σ_{l ∈ (4, 2, 1), l < h_i} 2^{-j}·mse(P_l p_i, P_l t_i)) / (1 + Σ 2^{-j}),
  j = 1, 2, 3 the index of the level among those kept, P_l adaptive average pooling to l × l,
  mse the mean over all entries, h_i the prediction's height; L_hcl = Σ_i L_i;
- loss = γ·CE + β·ramp·L_hcl, ramp = min((epoch + 1) / (warmup·epochs), 1), mdistiller's
  min(epoch / WARMUP_EPOCHS, 1) with its 1-based epochs (20 of 240).

Reference: megvii-research/mdistiller ``mdistiller/distillers/ReviewKD.py`` (``ABF``,
``hcl_loss``, ``ReviewKD.forward_train``) and ``mdistiller/engine/cfg.py`` (``CFG.REVIEWKD``),
commit a08d46f; the authors' dvlab-research/ReviewKD ``CIFAR-100/model/reviewkd.py`` and
``CIFAR-100/train.py`` (commit cede6ea) compute the same. Defaults: γ = 1 (CE_WEIGHT),
β = 5 (REVIEWKD_WEIGHT of ``configs/cifar100/reviewkd.yaml``, resnet32x4 → resnet8x4; the
authors' ``--kd-loss-weight`` is 5 for the wrn, resnet8x4 and shufflev1 pairs, 8 for
shufflev2, 0.6 for resnet56 → resnet20, 1 for resnet110 → resnet32; ``cfg.py``'s own default
is 1), warmup = 20/240 (WARMUP_EPOCHS of 240 epochs), max_mid_channel = 512 (the 512 of
``min(512, in_channels[-1])``), student_preact = False (STU_PREACT), teacher_preact = True
(the teacher's ``preact_feats``). ABF convolutions 1×1 and 3×3 without bias, initialised
Kaiming-uniform with a = 1, BatchNorm and the attention convolution at PyTorch's defaults;
the teacher's maps are detached (mdistiller runs the teacher under ``no_grad``).

How this maps onto mdistiller's tables: kdbench's ``feats`` (and ``preact``) are the block
outputs without the stem, i.e. mdistiller's ``feats[1:]`` (``preact_feats[1:]``); mdistiller's
student list also holds the stem ``feats[0]``, but its zip with the ABFs drops it, so both use
the same student stages. Its IN_CHANNELS are the student stages' channels shallow → deep
(the last one the embedding width), OUT_CHANNELS the teacher's, SHAPES the student stages'
sizes deep → shallow and OUT_SHAPES the teacher's; here all four are read from the two
models' outputs (``ctx.probe()`` for the channels, each step's tensors for the sizes), so any
pair of the zoo works, with different sizes and channel counts per stage.

Deliberate differences: sizes are (H, W) pairs rather than one side (mdistiller compares and
resizes by width alone, so only square maps work there); when the block counts differ the
deepest k blocks of each are paired (mdistiller's configs always give equal counts, and its
zip would pair them from the shallow end); the warmup is a share of the epochs, so that it
scales with the budget. The authors' repository counts epochs from 0, so its first epoch has
no review loss; mdistiller's (followed here) starts the ramp at 1/20.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.methods.base import HParam, Method, MethodContext, Needs, Step, beta, gamma
from kdbench.models.base import ModelOutput

HCL_LEVELS = (4, 2, 1)
"""The pyramid of HCL: each stage is also compared average-pooled to 4×4, 2×2 and 1×1."""


def hcl_loss(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over stages of the weighted mean of the MSE at full size and pooled to 4, 2, 1
    (levels below the map's height only), weights 1, ½, ¼, ⅛, normalised by their sum."""
    total = preds[0].new_zeros(())
    for p, t in zip(preds, targets, strict=True):
        h = p.shape[2]
        loss = F.mse_loss(p, t)
        weight, norm = 1.0, 1.0
        for level in HCL_LEVELS:
            if level >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(
                F.adaptive_avg_pool2d(p, level), F.adaptive_avg_pool2d(t, level)
            )
            norm += weight
        total = total + loss / norm
    return total


class ABF(nn.Module):
    """Attention-based fusion of one student stage with the residual of the deeper stages."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, c_mid, 1, bias=False), nn.BatchNorm2d(c_mid))
        self.conv2 = nn.Sequential(
            nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)
        )
        self.att_conv = nn.Sequential(nn.Conv2d(2 * c_mid, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None, out_size: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the prediction of the teacher's stage, the residual passed to the next stage)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            assert residual is not None
            r = F.interpolate(residual, size=tuple(x.shape[-2:]), mode="nearest")
            att = self.att_conv(torch.cat([x, r], dim=1))
            x = x * att[:, 0:1] + r * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _blocks(out: ModelOutput, preact: bool) -> list[torch.Tensor]:
    return list(out.preact if preact else out.feats)


def stages(
    student: ModelOutput, teacher: ModelOutput, hp: Mapping[str, Any]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The paired stages, shallow → deep: the deepest k blocks of each, then the embedding."""
    s = _blocks(student, hp["student_preact"])
    t = _blocks(teacher, hp["teacher_preact"])
    k = min(len(s), len(t))
    assert student.embedding is not None and teacher.embedding is not None
    s = [*s[len(s) - k :], student.embedding[:, :, None, None]]
    t = [*t[len(t) - k :], teacher.embedding[:, :, None, None]]
    return s, t


class ReviewKD(Method):
    """Knowledge review: γ·CE + β·ramp·Σ_stages HCL(ABF-fused student stages, teacher stages)."""

    hparams = (
        gamma(1.0),
        beta(5.0),
        HParam(
            "warmup", 20 / 240, low=0.0, high=1.0, doc="share of the epochs the loss ramps in over"
        ),
        HParam(
            "max_mid_channel",
            512,
            kind="int",
            low=1,
            doc="cap on the ABF width, min(cap, the student's embedding width)",
        ),
        HParam(
            "student_preact",
            False,
            kind="categorical",
            choices=(False, True),
            doc="fuse the student's pre-activation block maps rather than its block outputs",
        ),
        HParam(
            "teacher_preact",
            True,
            kind="categorical",
            choices=(True, False),
            doc="distil the teacher's pre-activation block maps rather than its block outputs",
        ),
    )
    needs = Needs(teacher=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        s_out, t_out = ctx.probe()
        assert t_out is not None, "reviewkd needs a teacher"
        reason = self.pairing(s_out, t_out, self.hp)
        if reason:
            raise ValueError(f"reviewkd: {reason}")
        s, t = stages(s_out, t_out, self.hp)
        mid = min(int(self.hp["max_mid_channel"]), s[-1].shape[1])
        # Deepest first, as the chain runs (mdistiller's ``abfs[::-1]``): abfs[0] has no fusion.
        self.abfs = nn.ModuleList(
            ABF(fs.shape[1], mid, ft.shape[1], fuse=i > 0)
            for i, (fs, ft) in enumerate(zip(s[::-1], t[::-1], strict=True))
        )

    @classmethod
    def pairing(
        cls, student: ModelOutput, teacher: ModelOutput | None, hp: Mapping[str, Any]
    ) -> str | None:
        if teacher is None:
            return "it needs a teacher"
        for role, out, pre in (
            ("student", student, hp.get("student_preact", False)),
            ("teacher", teacher, hp.get("teacher_preact", True)),
        ):
            if not out.feats and not out.preact:
                return f"the {role} exposes no block features"
            if pre and not out.preact:
                return (
                    f"the {role} exposes no pre-activation features "
                    f"({role}_preact: false distils its block outputs)"
                )
            blocks = out.preact if pre else out.feats
            if not blocks:
                return f"the {role} exposes no block outputs (only pre-activation features)"
            if any(f.ndim != 4 for f in blocks):
                return f"the {role}'s block features are not (batch, channels, H, W) maps"
            if out.embedding is None or out.embedding.ndim != 2:
                return f"the {role} exposes no pooled (batch, dim) embedding"
        return None

    def review(
        self, s_stages: Sequence[torch.Tensor], out_sizes: Sequence[Sequence[int]]
    ) -> list[torch.Tensor]:
        """The ABF chain from the deepest stage up: one prediction per stage, shallow → deep."""
        preds: list[torch.Tensor] = []
        residual = None
        for abf, fs, size in zip(self.abfs, s_stages[::-1], out_sizes[::-1], strict=True):
            pred, residual = abf(fs, residual, size)
            preds.insert(0, pred)
        return preds

    def ramp(self, step: Step) -> float:
        warm = self.hp["warmup"] * step.epochs
        return min((step.epoch + 1) / warm, 1.0) if warm > 0 else 1.0

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        s, t = stages(step.student, step.teacher, self.hp)
        t = [f.detach() for f in t]
        preds = self.review(s, [f.shape[-2:] for f in t])
        loss = hcl_loss(preds, t)
        return {"reviewkd": self.hp["beta"] * self.ramp(step) * loss}
