"""``nst``: neuron selectivity transfer (Huang & Wang 2017, "Like What You Like: Knowledge
Distill via Neuron Selectivity Transfer"), as the reference implementation (RepDistiller)
computes it.

For each paired block output f (B × C × H × W): each channel's map is flattened and
L2-normalised over its H·W positions, f̂_c = f_c / ‖f_c‖. With the polynomial kernel of degree
2 and c = 0, k(x, y) = (xᵀy)², the loss is the squared MMD between the student's and the
teacher's channels (the paper's MMD² expanded with the kernel trick):
L_nst = mean_{b,i,i'} k(t̂_i, t̂_i') + mean_{b,j,j'} k(ŝ_j, ŝ_j') − 2·mean_{b,i,j} k(ŝ_j, t̂_i),
the means over the batch and the channel pairs (so channel counts may differ), summed over
the paired blocks. When the spatial sizes differ, the larger feature map is average-pooled to
the smaller (adaptive pooling, as RepDistiller). Blocks are paired from the deepest down, the
last k of each network (k the smaller block count), as ``at`` does; RepDistiller pairs its
``feat[1:-1]`` (kdbench's ``feats``) from the first, which is the same when the counts agree.
Every paired block is matched, as RepDistiller does. The teacher-teacher term carries no
gradient (detached, as in RepDistiller). Defaults (RepDistiller): γ = 1, β = 50. Deliberate
difference: pooling goes by H·W rather than by H alone, so non-square maps work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.at import over_blocks
from kdbench.methods.base import Method, Needs, Step, beta, gamma


def _channels(f: torch.Tensor) -> torch.Tensor:
    """B × C × (H·W), each channel's map L2-normalised."""
    return F.normalize(f.flatten(2), dim=2)


def poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over b, i, j of (a_b,i · b_b,j)², a: B × C_a × N, b: B × C_b × N."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


def nst_block_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """MMD² of one block pair, its maps at one size."""
    s, t = _channels(fs), _channels(ft)
    return poly_kernel_mean(t, t).detach() + poly_kernel_mean(s, s) - 2 * poly_kernel_mean(s, t)


def nst_loss(s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
    return over_blocks(s_feats, t_feats, lambda fs, ft: nst_block_loss(fs, ft.detach()))


class NST(Method):
    """Neuron selectivity transfer: γ·CE + β·Σ_blocks MMD²_poly2(ŝ, t̂)."""

    hparams = (gamma(1.0), beta(50.0))
    needs = Needs(teacher=True)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        return {"nst": self.hp["beta"] * nst_loss(step.student.feats, step.teacher.feats)}
