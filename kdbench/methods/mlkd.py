"""``mlkd``: multi-level logit distillation (Jin, Wang & Lin 2023, "Multi-Level Logit
Distillation", CVPR 2023).

The student's and teacher's predictions are aligned at three levels, each over the
temperatures 𝒯 = (T, 3, 5, 2, 6), on a weak and a strong augmented view of every batch:

- instance level: KD, T²·KL(p_t^T ‖ p_s^T) summed over classes, mean over the batch;
- batch level: the B×B sample-similarity Gram matrices P^T·P^Tᵀ of the two networks,
  Σ (G_t − G_s)² / B;
- class level: the C×C class-correlation matrices P^Tᵀ·P^T, Σ (M_t − M_s)² / C;

with P^T the softmax at temperature T (no T² on the batch and class terms). Prediction
augmentation: the teacher's confidence on the weak view (max softmax at temperature 1) is
thresholded at its median over the batch (``np.percentile(·, 50)``, linear interpolation);
the class confidence (softmax summed over the batch) at its median over the classes.

As the reference computes it (Jin-Ying/Multi-Level-Logit-Distillation,
``mdistiller/distillers/KD_ours.py``, class ``KD_ours``, commit 5ee473fc; the same in
sunshangquan/logit-standardization-KD, ``mdistiller/distillers/MLKD.py``):

    instance = m·Σ_{T∈𝒯} KD(weak, T) + Σ_{T∈(T,3,5)} KD(strong, T) + Σ_{T∈(2,6)} KD(weak, T)
    class    = m_c·Σ_{T∈𝒯} CC(weak, T)
    batch    = m·Σ_{T∈𝒯} BC(weak, T)
    L = γ·(CE(weak) + CE(strong)) + α·(instance + class + batch)

where m is the share of the batch whose teacher confidence is ≤ its median and m_c the share
of the classes whose class confidence is ≤ its median. These are scalars, not per-sample
masks: the reference multiplies each already-reduced loss by the boolean mask and takes the
mean (``(kd_loss(...) * mask).mean()``, the per-sample ``reduce=False`` commented out), so
a mask only scales its term by its share (≈ ½). The strong view's last two instance terms use
the *weak* logits (T = 2, 6) and the strong-view class and batch terms are computed but left
out of the returned losses; both kept here, the numbers the reference trains with.
Defaults are the reference's (``configs/cifar100/ours/*.yaml`` set none; ``cfg.py``):
T = 4 (so 𝒯 = {2, …, 6}), γ (CE weight) = 0.1, α (KD weight) = 0.9, batch 64, 240 epochs.

``logit_std`` (Sun et al. 2024; logit-standardization-KD's ``MLKD.py``): the student's and
teacher's logits are z-scored (see ``kd``) in the instance-level KD terms only, weak and
strong; the class and batch terms, the masks and the CE keep the raw logits. That
repository runs it with T = 2 (𝒯 = (2, 3, 5, 2, 6)), α = 9, γ = 0.1, 480 epochs:
``{logit_std: true, T: 2, alpha: 9}``.

The strong view. In the reference each image is cropped and flipped twice independently; the
strong copy then gets RandAugment(n = 2) on the PIL image (two operations drawn with
replacement from AutoContrast, Brightness, Color, Contrast, Equalize, Identity, Posterize,
Rotate, Sharpness, ShearX/Y, Solarize, TranslateX/Y, each with a magnitude drawn uniformly
from its range) and a Cutout of side U(0, ½)·W filled with grey (125, 123, 114). Here the
trainer gives one (already cropped and flipped, normalised) batch, the weak view; the strong
view is made from it by ``strong_view``, tensor operations only, with the same operations,
ranges and Cutout, drawn from a ``torch.Generator`` seeded from the trial's seed
(``torch.initial_seed()`` when the method is built). Deliberate differences: the strong view
shares the weak view's crop and flip rather than drawing its own; the pixel operations work
on each image mapped to [0, 1] by its own min and max (the normalisation's mean and std are
not known to a method) and mapped back; geometric operations sample nearest-neighbour with
black (0 in that scale) fill, as PIL's defaults; Color uses ITU-R 601 luma and is the identity
on one-channel images, as is Cutout's fill a mid grey (0.5) there. The student and teacher
are run on the strong view inside ``terms`` (the student in training mode, so its BatchNorm
statistics see both views, as in the reference; the teacher without gradient, in the mode the
trainer left it), in float32 rather than under the trainer's autocast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from kdbench.methods.base import (
    HParam,
    Method,
    MethodContext,
    Needs,
    SearchSpace,
    Step,
    gamma,
    temperature,
)
from kdbench.methods.kd import kd_loss, logit_std, standardize

EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)
"""The reference's fixed temperatures after the configured one."""

# --- the strong view ------------------------------------------------------------------------

_LUMA = (0.299, 0.587, 0.114)


def _gray(u: torch.Tensor) -> torch.Tensor:
    if u.shape[1] != 3:
        return u.mean(dim=1, keepdim=True)
    w = u.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (u * w).sum(dim=1, keepdim=True)


def _blend(base: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: base + v·(u − base), clipped to [0, 1]."""
    return (base + v.view(-1, 1, 1, 1) * (u - base)).clamp(0.0, 1.0)


def _affine(u: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE, (a, b, c, d, e, f))``: output pixel (x, y) takes the input
    at (a·x + b·y + c, d·x + e·y + f), pixel centres at +½, nearest neighbour, 0 outside.
    ``coeffs`` is (N, 6)."""
    n, _, h, w = u.shape
    ys = torch.arange(h, dtype=u.dtype, device=u.device) + 0.5
    xs = torch.arange(w, dtype=u.dtype, device=u.device) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    a, b, c, d, e, f = (coeffs[:, i].view(n, 1, 1) for i in range(6))
    src_x = a * gx + b * gy + c
    src_y = d * gx + e * gy + f
    grid = torch.stack([2.0 * src_x / w - 1.0, 2.0 * src_y / h - 1.0], dim=-1)
    return F.grid_sample(u, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _coeffs(*cols: torch.Tensor) -> torch.Tensor:
    return torch.stack(cols, dim=1)


def _auto_contrast(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    lo = u.amin(dim=(2, 3), keepdim=True)
    hi = u.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (u - lo) / span.clamp_min(1e-12), u)


def _brightness(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _blend(torch.zeros_like(u), u, v)


def _color(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if u.shape[1] != 3:
        return u
    return _blend(_gray(u).expand_as(u), u, v)


def _contrast(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    mean = _gray(u).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(mean.expand_as(u), u, v)


def _equalize(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel over 256 levels (PIL's ``equalize``)."""
    n, c, h, w = u.shape
    q = (u * 255.0).round().long().clamp(0, 255).view(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=u.dtype, device=u.device)
    hist.scatter_add_(1, q, torch.ones_like(q, dtype=u.dtype))
    last = hist.gather(1, q.max(dim=1, keepdim=True).values)  # count of the top level used
    step = torch.div(h * w - last, 255.0, rounding_mode="floor")
    cum = hist.cumsum(1) - hist  # pixels below each level
    lut = torch.div(
        cum + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1.0), rounding_mode="floor"
    ).clamp(0, 255)
    out = lut.gather(1, q) / 255.0
    out = torch.where(step > 0, out, q.to(u.dtype) / 255.0)
    return out.view(n, c, h, w)


def _identity(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u


def _posterize(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    bits = v.floor().clamp(1, 8)
    scale = torch.pow(2.0, 8.0 - bits).view(-1, 1, 1, 1)
    q = (u * 255.0).round().clamp(0, 255)
    return torch.floor(q / scale) * scale / 255.0


def _rotate(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PIL's ``rotate(v)``: v degrees counter-clockwise about the centre."""
    _, _, h, w = u.shape
    a = -v * math.pi / 180.0
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = w / 2.0, h / 2.0
    c = cx - cos * cx - sin * cy
    f = cy + sin * cx - cos * cy
    return _affine(u, _coeffs(cos, sin, c, -sin, cos, f))


def _sharpness(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter (3×3, centre 5, others 1, /13); the border unchanged."""
    c = u.shape[1]
    k = u.new_ones(3, 3)
    k[1, 1] = 5.0
    k = (k / 13.0).expand(c, 1, 3, 3)
    smooth = F.conv2d(u, k, padding=1, groups=c)
    border = torch.ones_like(u, dtype=torch.bool)
    border[:, :, 1:-1, 1:-1] = False
    return _blend(torch.where(border, u, smooth), u, v)


def _shear_x(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _affine(u, _coeffs(one, v, zero, zero, one, zero))


def _shear_y(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _affine(u, _coeffs(one, zero, zero, v, one, zero))


def _solarize(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Levels at or above the threshold v (of 256) inverted."""
    return torch.where(u * 255.0 >= v.view(-1, 1, 1, 1), 1.0 - u, u)


def _translate_x(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _affine(u, _coeffs(one, zero, v * u.shape[3], zero, one, zero))


def _translate_y(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _affine(u, _coeffs(one, zero, zero, zero, one, v * u.shape[2]))


Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RAND_AUGMENT: tuple[tuple[Op, float, float], ...] = (
    (_auto_contrast, 0.0, 1.0),
    (_brightness, 0.05, 0.95),
    (_color, 0.05, 0.95),
    (_contrast, 0.05, 0.95),
    (_equalize, 0.0, 1.0),
    (_identity, 0.0, 1.0),
    (_posterize, 4.0, 8.0),
    (_rotate, -30.0, 30.0),
    (_sharpness, 0.05, 0.95),
    (_shear_x, -0.3, 0.3),
    (_shear_y, -0.3, 0.3),
    (_solarize, 0.0, 256.0),
    (_translate_x, -0.3, 0.3),
    (_translate_y, -0.3, 0.3),
)
"""The reference's ``augment_list()``: operation, lowest and highest magnitude."""

_CUTOUT_GREY = (125 / 255, 123 / 255, 114 / 255)


def _cutout(u: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """A square of side s = U(0, ½)·W at a uniform centre, clipped to the image (the
    reference's ``Cutout``/``CutoutAbs``), filled with grey. ``draws`` is (N, 3) in [0, 1)."""
    n, c, h, w = u.shape
    side = draws[:, 0] * 0.5 * w
    x0 = (draws[:, 1] * w - side / 2).clamp_min(0).floor()
    y0 = (draws[:, 2] * h - side / 2).clamp_min(0).floor()
    x1 = (x0 + side).clamp_max(w)
    y1 = (y0 + side).clamp_max(h)
    xs = torch.arange(w, device=u.device, dtype=u.dtype).view(1, 1, w)
    ys = torch.arange(h, device=u.device, dtype=u.dtype).view(1, h, 1)
    box = (
        (xs >= x0.view(n, 1, 1))
        & (xs < x1.view(n, 1, 1))
        & (ys >= y0.view(n, 1, 1))
        & (ys < y1.view(n, 1, 1))
        & (side > 0).view(n, 1, 1)
    )
    grey = u.new_tensor(_CUTOUT_GREY if c == 3 else (0.5,) * c).view(1, c, 1, 1)
    return torch.where(box.unsqueeze(1), grey, u)


def strong_view(x: torch.Tensor, generator: torch.Generator, n_ops: int = 2) -> torch.Tensor:
    """RandAugment(n_ops) then Cutout, per image, on a normalised batch (N, C, H, W): each
    image mapped to [0, 1] by its own min and max, augmented, mapped back. Every random draw
    comes from ``generator`` (on the CPU), so a seed gives the same view of the same batch."""
    n = x.shape[0]
    ops = torch.randint(0, len(RAND_AUGMENT), (n_ops, n), generator=generator)
    mags = torch.rand(n_ops, n, generator=generator, dtype=torch.float64)
    cut = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    ops, mags, cut = ops.to(x.device), mags.to(x.device, x.dtype), cut.to(x.device, x.dtype)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    u = ((x - lo) / span).contiguous()
    for r in range(n_ops):
        out = u.clone()
        for k, (op, low, high) in enumerate(RAND_AUGMENT):
            sel = (ops[r] == k).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            v = low + (high - low) * mags[r, sel]
            out[sel] = op(u[sel], v)
        u = out
    u = _cutout(u, cut)
    return lo + u * span


# --- the loss ------------------------------------------------------------------------------


def class_consistency(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """Σ (P_tᵀP_t − P_sᵀP_s)² / C, P the softmax at T (C×C class correlations)."""
    p_s, p_t = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    return ((p_t.t() @ p_t - p_s.t() @ p_s) ** 2).sum() / s.shape[1]


def batch_consistency(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """Σ (P_tP_tᵀ − P_sP_sᵀ)² / B, P the softmax at T (B×B sample similarities)."""
    p_s, p_t = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    return ((p_t @ p_t.t() - p_s @ p_s.t()) ** 2).sum() / s.shape[0]


def _share_at_or_below_median(v: torch.Tensor) -> torch.Tensor:
    """The share of ``v`` at or below its median (linear interpolation, ``np.percentile``)."""
    return (v <= torch.quantile(v, 0.5)).to(v.dtype).mean()


def confidence_shares(t_weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, m_c): the share of samples whose teacher confidence (max softmax) is at or below the
    batch median, and of classes whose summed probability is at or below the class median."""
    p = F.softmax(t_weak.detach(), dim=1)
    return _share_at_or_below_median(p.max(dim=1).values), _share_at_or_below_median(p.sum(0))


def mlkd_terms(
    s_weak: torch.Tensor,
    t_weak: torch.Tensor,
    s_strong: torch.Tensor,
    t_strong: torch.Tensor,
    T: float,
    standardized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(instance, class, batch), unweighted, as the reference sums them (see the module)."""
    t_weak, t_strong = t_weak.detach(), t_strong.detach()
    m, m_c = confidence_shares(t_weak)
    temps = (float(T), *EXTRA_TEMPERATURES)
    kw_s, kw_t, ks_s, ks_t = s_weak, t_weak, s_strong, t_strong
    if standardized:
        kw_s, kw_t, ks_s, ks_t = (standardize(z) for z in (kw_s, kw_t, ks_s, ks_t))
    instance = m * sum(kd_loss(kw_s, kw_t, tau) for tau in temps)
    instance = instance + sum(kd_loss(ks_s, ks_t, tau) for tau in temps[:3])
    instance = instance + sum(kd_loss(kw_s, kw_t, tau) for tau in temps[3:])
    cls = m_c * sum(class_consistency(s_weak, t_weak, tau) for tau in temps)
    batch = m * sum(batch_consistency(s_weak, t_weak, tau) for tau in temps)
    return instance, cls, batch


class MLKD(Method):
    """Multi-level logits: γ·(CE_w + CE_s) + α·Σ_T (instance + batch + class) on weak/strong views."""

    hparams = (
        gamma(0.1),
        HParam(
            "alpha",
            0.9,
            low=0.0,
            search=SearchSpace(0.1, 10.0, log=True),
            doc="weight of every alignment term (instance, class, batch)",
        ),
        temperature(4.0),
        HParam("n_ops", 2, kind="int", low=0, doc="RandAugment operations per strong view"),
        logit_std(),
    )
    needs = Needs(teacher=True)

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        if ctx.teacher is None:
            raise ValueError("mlkd needs a teacher")
        # A plain tuple: the models must not become submodules (their parameters would be
        # counted and optimised twice).
        self._models = (ctx.student, ctx.teacher)
        self._gen = torch.Generator().manual_seed(torch.initial_seed())

    def strong(self, x: torch.Tensor) -> torch.Tensor:
        return strong_view(x, self._gen, int(self.hp["n_ops"]))

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None
        student, teacher = self._models
        x_strong = self.strong(step.x)
        s_weak, t_weak = step.student.logits, step.teacher.logits
        s_strong = student.forward_features(x_strong).logits.to(s_weak.dtype)
        with torch.no_grad():
            t_strong = teacher.forward_features(x_strong).logits.to(s_weak.dtype)
        instance, cls, batch = mlkd_terms(
            s_weak, t_weak, s_strong, t_strong, self.hp["T"], self.hp.get("logit_std", False)
        )
        a = self.hp["alpha"]
        return {
            "ce_strong": self.hp.get("gamma", 1.0) * F.cross_entropy(s_strong, step.y),
            "mlkd_instance": a * instance,
            "mlkd_class": a * cls,
            "mlkd_batch": a * batch,
        }
