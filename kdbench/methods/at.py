"""``at``: attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention").

For each paired block output f: a(f) = normalise₂(mean over channels of f², flattened per
sample) (the paper's F²_mean with p = 2, eq. 2); L_at = Σ_blocks mean((a(f_s) − a(f_t))²), the
RepDistiller form of eq. 2 (squared difference of the normalised maps, averaged). When a
student block and its teacher block differ in spatial size, the larger *feature map* is
average-pooled to the smaller size before a(f) is taken. Blocks are paired from the deepest
down: the last k of each network, k the smaller block count.

The mean over map entries makes the loss scale as 1/(H·W): RepDistiller's β = 1000 was set
for 32×32 inputs, and on 8×8 digits the same β acts 16 times stronger (measured: the student
diverged, 41% against 96% for scratch). So the loss is multiplied by (H_in·W_in)/(32·32), the
input's resolution relative to CIFAR's: identical to RepDistiller on 32×32 images, and β means
the same strength at any resolution.
Defaults (RepDistiller): γ = 1, β = 1000.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from kdbench.methods.base import Method, MethodContext, Needs, Step, beta, gamma


def attention_map(f: torch.Tensor) -> torch.Tensor:
    """normalise₂(mean_c f²), one flattened map per sample."""
    return F.normalize(f.pow(2).mean(dim=1).flatten(1), dim=1)


def match_spatial(fs: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the larger of two feature maps to the other's spatial size."""
    hs, ht = fs.shape[-2:], ft.shape[-2:]
    if hs == ht:
        return fs, ft
    if hs[0] * hs[1] > ht[0] * ht[1]:
        return F.adaptive_avg_pool2d(fs, ht), ft
    return fs, F.adaptive_avg_pool2d(ft, hs)


def paired_blocks(
    s: list[torch.Tensor], t: list[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    k = min(len(s), len(t))
    return list(zip(s[len(s) - k :], t[len(t) - k :], strict=True))


def over_blocks(
    s_feats: list[torch.Tensor],
    t_feats: list[torch.Tensor],
    block_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Σ over the paired blocks of ``block_loss(f_s, f_t)``, the two maps at one size."""
    total = s_feats[0].new_zeros(())
    for fs, ft in paired_blocks(s_feats, t_feats):
        total = total + block_loss(*match_spatial(fs, ft))
    return total


def at_loss(s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
    return over_blocks(
        s_feats, t_feats, lambda fs, ft: (attention_map(fs) - attention_map(ft)).pow(2).mean()
    )


class AT(Method):
    """Attention transfer: γ·CE + β·Σ_blocks mean((a(f_s) − a(f_t))²)."""

    hparams = (gamma(1.0), beta(1000.0))
    needs = Needs(teacher=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        self.resolution = ctx.input_shape[-2] * ctx.input_shape[-1] / REFERENCE_PIXELS

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        loss = at_loss(step.student.feats, step.teacher.feats) * self.resolution
        return {"at": self.hp["beta"] * loss}


REFERENCE_PIXELS = 32 * 32
"""The input size RepDistiller's β = 1000 was set for (CIFAR)."""
