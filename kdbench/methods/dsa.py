"""Differentiable siamese augmentation, DSA (Zhao & Bilen 2021, "Dataset Condensation with
Differentiable Siamese Augmentation", ICML; reference code github:VICO-UoE/DatasetCondensation,
``utils.py``: ``ParamDiffAug``, ``DiffAugment``, ``rand_*``, ``AUGMENT_FNS``).

A strategy is a ``_``-joined list of augmentations. Each call draws ONE of them uniformly (the
reference's ``aug_mode = 'S'``, ``utils.py`` 476 and 511-516) and applies it; ``color`` is
brightness, saturation and contrast in turn (``AUGMENT_FNS``, 643-650). With u ~ U(0, 1) drawn
per image, or once for everything under siamese augmentation:

- brightness: x + (u − ½)·``brightness``                                    (565-572)
- saturation: (x − x̄_c)·(u·``saturation``) + x̄_c, x̄_c the mean over channels (575-583; on
  one channel x̄_c = x and the image is unchanged, as the reference's formula gives)
- contrast:   (x − x̄)·(u + ``contrast``) + x̄, x̄ the image's mean over C, H, W  (586-594)
- flip:       mirrored along W where u < ``prob_flip``                         (556-562)
- scale:      sampling grid x·s_x, y·s_y, each s = 1/r + u·(r − 1/r), r = ``ratio_scale``
              (s > 1 shrinks the image)                                        (524-539)
- rotate:     sampling grid rotated by θ = (2u − 1)·``ratio_rotate`` degrees,
              [[cos θ, −sin θ], [sin θ, cos θ]]                                (542-553)
- crop:       translation by integers t_h ∈ [−k_h, k_h], t_w ∈ [−k_w, k_w],
              k = int(side·``ratio_crop_pad`` + ½), out[i, j] = x[i + t_h, j + t_w], zero where
              that falls outside the image (the reference pads by one zero pixel and clamps
              into the pad)                                                    (597-617)
- cutout:     a square of int(side·``ratio_cutout`` + ½) pixels a side set to zero, centred at
              o ∈ {0, …, side − (size mod 2)} (rows o − size//2 … o − size//2 + size − 1),
              cropped by the image's border                                   (620-640)

Scale and rotate resample bilinearly with zero padding, in ``F.affine_grid`` /
``F.grid_sample``'s normalised coordinates with ``align_corners=True``: what the reference's
calls did on the torch it pins (``requirements.txt``: torch 1.2.0, before ``align_corners``
existed; torch ≥ 1.3 runs the same calls with ``False``). The image centre stays in place
either way.

How the reference uses it: in matching, a class's real batch and its synthetic images are
augmented with one seed (``main.py`` 185-188, ``main_DM.py`` 155-158), which makes every
draw the first image's, shared by both batches (``Siamese``): ``DSA.siamese``. While a
network trains on a synthetic set (``evaluate_synset``, and DSA's inner loop, ``main.py`` 215,
both through ``epoch``, ``utils.py`` 308-311), the seed is −1: one augmentation per batch,
its parameters drawn per image: ``DSA.__call__``.

Where this differs on purpose: every draw comes from the caller's CPU ``torch.Generator``
(the reference reseeds torch's global generator from the wall clock), so a set is the same
for a seed on any device; a siamese call draws one parameter set and applies it to every
image of every batch, rather than drawing a batch and copying its first row (the same
distribution, and batches of any size get the same transform); the batches of one siamese
call must share C, H, W. Only the reference's default mode 'S' is implemented.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STRATEGY = "color_crop_cutout_flip_scale_rotate"
"""The reference's strategy for DSA and DM (``main_DM.py`` 28, readme)."""


@dataclass(frozen=True)
class DSAParams:
    """The reference's constants (``utils.py`` 474-484, ``ParamDiffAug``)."""

    prob_flip: float = 0.5
    """Probability of mirroring an image."""
    ratio_scale: float = 1.2
    """Largest scale factor r: each axis is scaled by a factor in [1/r, r]."""
    ratio_rotate: float = 15.0
    """Largest rotation, in degrees either way."""
    ratio_crop_pad: float = 0.125
    """Largest translation, as a fraction of the side."""
    ratio_cutout: float = 0.5
    """Side of the cut-out square, as a fraction of the image's side."""
    brightness: float = 1.0
    """Range of the added brightness offset: (u − ½)·brightness."""
    saturation: float = 2.0
    """Range of the saturation factor: u·saturation."""
    contrast: float = 0.5
    """Smallest contrast factor: u + contrast."""


# One elementary augmentation: ``draw(n, (h, w), params, gen)`` gives n rows of parameters on
# the CPU; ``apply(x, drawn, params)`` applies them (one row broadcast to every image, or one
# row per image).
Draw = Callable[[int, tuple[int, int], DSAParams, torch.Generator], torch.Tensor]
Apply = Callable[[torch.Tensor, torch.Tensor, DSAParams], torch.Tensor]


def _uniform(n: int, gen: torch.Generator, k: int = 1) -> torch.Tensor:
    return torch.rand(n, k, generator=gen)


def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A column of n values (n = 1 or the batch), shaped to broadcast over x."""
    return v.to(x.device, x.dtype).view(-1, 1, 1, 1)


def _brightness(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    return x + (_per_image(u, x) - 0.5) * p.brightness


def _saturation(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_per_image(u, x) * p.saturation) + mean


def _contrast(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_image(u, x) + p.contrast) + mean


def _flip(x: torch.Tensor, u: torch.Tensor, p: DSAParams) -> torch.Tensor:
    mirror = (u < p.prob_flip).to(x.device).view(-1, 1, 1, 1)
    return torch.where(mirror, x.flip(3), x)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of x on the affine grid theta (n, 2, 3), n = 1 or the batch."""
    theta = theta.to(x.device, x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _draw_scale(n: int, size: tuple[int, int], p: DSAParams, gen: torch.Generator) -> torch.Tensor:
    r = p.ratio_scale
    return _uniform(n, gen, 2) * (r - 1.0 / r) + 1.0 / r


def _scale(x: torch.Tensor, s: torch.Tensor, p: DSAParams) -> torch.Tensor:
    theta = torch.zeros(len(s), 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s[:, 0], s[:, 1]
    return _warp(x, theta)


def _draw_rotate(n: int, size: tuple[int, int], p: DSAParams, gen: torch.Generator) -> torch.Tensor:
    return (_uniform(n, gen) - 0.5) * 2 * math.radians(p.ratio_rotate)


def _rotate(x: torch.Tensor, angle: torch.Tensor, p: DSAParams) -> torch.Tensor:
    cos, sin = angle[:, 0].cos(), angle[:, 0].sin()
    theta = torch.zeros(len(angle), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    return _warp(x, theta)


def _crop_shift(size: tuple[int, int], p: DSAParams) -> tuple[int, int]:
    return int(size[0] * p.ratio_crop_pad + 0.5), int(size[1] * p.ratio_crop_pad + 0.5)


def _draw_crop(n: int, size: tuple[int, int], p: DSAParams, gen: torch.Generator) -> torch.Tensor:
    kh, kw = _crop_shift(size, p)
    th = torch.randint(-kh, kh + 1, (n,), generator=gen)
    tw = torch.randint(-kw, kw + 1, (n,), generator=gen)
    return torch.stack([th, tw], dim=1)


def _crop(x: torch.Tensor, t: torch.Tensor, p: DSAParams) -> torch.Tensor:
    n, c, h, w = x.shape
    t = t.to(x.device).expand(n, 2)
    rows = torch.arange(h, device=x.device) + t[:, :1]  # (n, h): the source row of each row
    cols = torch.arange(w, device=x.device) + t[:, 1:]
    inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[
        :, None, None, :
    ]
    # Gather (differentiable in x) at the clamped source, then zero what came from outside.
    x = x.gather(2, rows.clamp(0, h - 1)[:, None, :, None].expand(n, c, h, w))
    x = x.gather(3, cols.clamp(0, w - 1)[:, None, None, :].expand(n, c, h, w))
    return x * inside.to(x.dtype)


def _cutout_size(size: tuple[int, int], p: DSAParams) -> tuple[int, int]:
    return int(size[0] * p.ratio_cutout + 0.5), int(size[1] * p.ratio_cutout + 0.5)


def _draw_cutout(n: int, size: tuple[int, int], p: DSAParams, gen: torch.Generator) -> torch.Tensor:
    sh, sw = _cutout_size(size, p)
    oh = torch.randint(0, size[0] + 1 - sh % 2, (n,), generator=gen)
    ow = torch.randint(0, size[1] + 1 - sw % 2, (n,), generator=gen)
    return torch.stack([oh - sh // 2, ow - sw // 2], dim=1)  # the square's first row, column


def _cutout(x: torch.Tensor, start: torch.Tensor, p: DSAParams) -> torch.Tensor:
    h, w = x.shape[2:]
    sh, sw = _cutout_size((h, w), p)
    start = start.to(x.device)
    rows = torch.arange(h, device=x.device) - start[:, :1]  # (n, h): row offset in the square
    cols = torch.arange(w, device=x.device) - start[:, 1:]
    cut = ((rows >= 0) & (rows < sh))[:, None, :, None] & ((cols >= 0) & (cols < sw))[
        :, None, None, :
    ]
    return x * (~cut).to(x.dtype)


def _draw_u(n: int, size: tuple[int, int], p: DSAParams, gen: torch.Generator) -> torch.Tensor:
    return _uniform(n, gen)


AUGMENTS: dict[str, tuple[tuple[Draw, Apply], ...]] = {
    "color": ((_draw_u, _brightness), (_draw_u, _saturation), (_draw_u, _contrast)),
    "crop": ((_draw_crop, _crop),),
    "cutout": ((_draw_cutout, _cutout),),
    "flip": ((_draw_u, _flip),),
    "scale": ((_draw_scale, _scale),),
    "rotate": ((_draw_rotate, _rotate),),
}
"""Each augmentation a strategy may name: its elementary steps, in order (``AUGMENT_FNS``)."""


class DSA:
    """The augmentation of a strategy: ``dsa(x, gen)`` per image, ``dsa.siamese(a, b, gen=gen)``
    one transform for all (see the module's docstring)."""

    def __init__(self, strategy: str = STRATEGY, params: DSAParams = DSAParams()) -> None:
        names = strategy.split("_")
        unknown = [n for n in names if n not in AUGMENTS]
        if unknown:
            raise ValueError(
                f"unknown DSA augmentation {', '.join(map(repr, unknown))} in strategy "
                f"{strategy!r}; valid: {', '.join(AUGMENTS)} (joined by '_')"
            )
        self.strategy = strategy
        self.names = tuple(names)
        self.params = params

    def __repr__(self) -> str:
        return f"DSA({self.strategy!r}, {self.params})"

    def _pick(self, gen: torch.Generator) -> tuple[tuple[Draw, Apply], ...]:
        """One of the strategy's augmentations, uniformly (mode 'S')."""
        return AUGMENTS[self.names[int(torch.randint(len(self.names), (1,), generator=gen))]]

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Per-sample random parameters (evaluation: training a student on a set)."""
        _check(x)
        size = (x.shape[2], x.shape[3])
        for draw, apply in self._pick(gen):
            x = apply(x, draw(x.shape[0], size, self.params, gen), self.params)
        return x

    def siamese(self, *batches: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """One sampled transform, shared by every image of every batch (matching)."""
        if not batches:
            raise ValueError("DSA.siamese needs at least one batch")
        for x in batches:
            _check(x)
        if len({tuple(x.shape[1:]) for x in batches}) > 1:
            shapes = ", ".join(str(tuple(x.shape)) for x in batches)
            raise ValueError(f"DSA.siamese needs batches of one image shape; got {shapes}")
        size = (batches[0].shape[2], batches[0].shape[3])
        out = list(batches)
        for draw, apply in self._pick(gen):
            drawn = draw(1, size, self.params, gen)
            out = [apply(x, drawn, self.params) for x in out]
        return tuple(out)


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"DSA needs (N, C, H, W) images; got shape {tuple(x.shape)}")
