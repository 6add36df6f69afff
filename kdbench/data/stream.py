"""Streamed splits: images read from files as training goes, not held in memory.

An ``ImageStream`` stands where an in-memory split holds its (N, C, H, W) tensor
(``DataBundle.train_x``, ``val_x``, ``test_x``): it knows which images of a ``Source`` (a
folder's files, or WebDataset tar shards: ``kdbench.data.shards``) are in the split, and the
``ImageRecipe`` that turns a file into a network input. Its labels are the bundle's
``train_y`` etc., as for an in-memory split: the index ``k`` of an image in its split is the
index of its label.

``batches`` reads a stream in worker processes (a torch ``DataLoader``): each worker decodes
with TorchCodec's libjpeg-turbo / libpng decoders (``torchcodec.decoders.decode_image``,
faster than Pillow on the same files: ``benchmarks/input_pipeline.py``) and augments each image on
uint8 tensors (``torchvision.transforms.v2.functional``), so a batch reaches the trial as
uint8 images that the trainer normalises on the device. Training order and augmentation come
from the trial's generator alone: each epoch draws a permutation of the split (folders) or of
its shards (tar archives, read in order and shuffled in a buffer), and one seed per image
that its crop and flip are drawn from; the same seed gives the same batches whatever the
number of workers (folders), or for the same number of workers (shards).

A file that cannot be decoded is left out of its batch and counted (``Read.skipped``): the
trial's row reports the count (``skipped_images``) and the worker's log names each file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The normalisation every ImageNet reference recipe uses (torchvision's, mdistiller's)."""

TRAIN_VIEWS = ("random_resized_crop", "crop_flip", "none")


@dataclass(frozen=True)
class ImageRecipe:
    """How a file becomes a network input of ``channels × size × size``.

    Evaluation (val, test, and training without augmentation): the shorter side resized to
    ``resize`` (bilinear, antialiased; not at all when it is already that), then the centre
    ``size × size`` crop: ImageNet's ``Resize(256)`` + ``CenterCrop(224)`` with ``resize``
    256 and ``size`` 224. Training with augmentation, by ``train``:

    - ``random_resized_crop``: ImageNet's ``RandomResizedCrop(size)`` (area ``scale``, aspect
      ``ratio``, torchvision's ten tries then a centre crop) and a horizontal flip;
    - ``crop_flip``: the evaluation view, then a random ``size × size`` crop after padding by
      ``pad`` pixels of the mean colour and, with ``flip``, a horizontal flip: what the
      in-memory data sets do on the device (``AugmentSpec``), where padding by zeros after
      normalisation is padding by the mean;
    - ``none``: the evaluation view.
    """

    size: int
    resize: int | None = None
    """The shorter side before the centre crop; None: ``size``."""
    train: str = "random_resized_crop"
    pad: int = 0
    flip: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    channels: int = 3

    def __post_init__(self) -> None:
        if self.train not in TRAIN_VIEWS:
            raise ValueError(f"ImageRecipe train={self.train!r}; valid: {', '.join(TRAIN_VIEWS)}")
        if self.channels not in (1, 3):
            raise ValueError(f"ImageRecipe channels={self.channels}; valid: 1, 3")

    @property
    def augments(self) -> bool:
        return self.train == "random_resized_crop" or (
            self.train == "crop_flip" and (self.pad > 0 or self.flip)
        )


class Source(Protocol):
    """Where a split's images come from: ``len`` images at positions 0 … len − 1, read one
    pass at a time through ``dataset`` (``kdbench.data.sources``)."""

    def __len__(self) -> int: ...

    def dataset(
        self, stream: ImageStream, *, batch_size: int, gen: torch.Generator | None, augment: bool
    ) -> Any: ...


@dataclass(frozen=True, eq=False)
class ImageStream:
    """The images at ``positions`` of ``source``, in that order: image ``k`` of the split is
    ``source``'s image ``positions[k]``. Looks like an image tensor where the bundle asks
    (``len``, ``shape``, ``ndim``), holds none."""

    source: Source
    positions: torch.Tensor
    recipe: ImageRecipe
    fill: tuple[int, ...] = (0, 0, 0)
    """The pad colour of ``crop_flip`` (the training mean as uint8)."""

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def ndim(self) -> int:
        return 4

    @property
    def shape(self) -> torch.Size:
        r = self.recipe
        return torch.Size((len(self), r.channels, r.size, r.size))

    def to(self, *_: Any, **__: Any) -> ImageStream:
        """Where an in-memory split moves to the trial's device: a stream stays where it is
        (each batch is moved as it is read)."""
        return self

    def __getitem__(self, idx: torch.Tensor | slice) -> ImageStream:
        """The sub-split at ``idx`` (split indices), as an in-memory split is indexed."""
        return replace(self, positions=self.positions[idx])

    def cat(self, other: ImageStream) -> ImageStream:
        """This split followed by ``other`` of the same source (``DataBundle.refit``)."""
        if other.source is not self.source:
            raise ValueError("cannot join streams of different sources")
        return replace(self, positions=torch.cat([self.positions, other.positions]))


def is_stream(x: Any) -> bool:
    return isinstance(x, ImageStream)


# ---- one image ---------------------------------------------------------------------------


def decode(data: bytes, channels: int) -> torch.Tensor:
    """uint8 (C, H, W) from an encoded image, converted to RGB or grayscale as ``channels``
    says; ValueError when it cannot be decoded. JPEG, PNG, WebP and GIF go through TorchCodec
    (libjpeg-turbo, libpng, libwebp: ``torchvision.io``'s decoders, which it supersedes); the
    formats it lacks (BMP, TIFF, PPM/PGM) through Pillow."""
    from torchcodec.decoders import ImageReadMode, decode_image

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _decode_pil(data, channels, reason)


def _decode_pil(data: bytes, channels: int, reason: str) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ValueError(reason) from None
    t = torch.from_numpy(arr.copy())
    return t.permute(2, 0, 1) if t.ndim == 3 else t.unsqueeze(0)


def eval_view(img: torch.Tensor, recipe: ImageRecipe) -> torch.Tensor:
    import torchvision.transforms.v2.functional as F

    side = recipe.resize or recipe.size
    if min(img.shape[-2:]) != side:
        img = F.resize(img, side, antialias=True)
    if tuple(img.shape[-2:]) != (recipe.size, recipe.size):
        img = F.center_crop(img, [recipe.size, recipe.size])
    return img


def crop_box(
    height: int, width: int, recipe: ImageRecipe, gen: torch.Generator
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, h, w): torchvision's ``get_params`` — ten tries of
    an area in ``scale`` and a log-uniform aspect in ``ratio``, then the whole image cropped
    to the nearest ratio in range — drawn from ``gen``."""
    area = height * width
    lo, hi = math.log(recipe.ratio[0]), math.log(recipe.ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=gen).tolist()
        target = area * (recipe.scale[0] + u[0] * (recipe.scale[1] - recipe.scale[0]))
        aspect = math.exp(lo + u[1] * (hi - lo))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < recipe.ratio[0]:
        w, h = width, round(width / recipe.ratio[0])
    elif in_ratio > recipe.ratio[1]:
        h, w = height, round(height * recipe.ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_view(
    img: torch.Tensor, recipe: ImageRecipe, gen: torch.Generator, fill: tuple[int, ...]
) -> torch.Tensor:
    import torchvision.transforms.v2.functional as F

    if recipe.train == "random_resized_crop":
        top, left, h, w = crop_box(img.shape[-2], img.shape[-1], recipe, gen)
        img = F.resized_crop(img, top, left, h, w, [recipe.size, recipe.size], antialias=True)
    else:
        img = eval_view(img, recipe)
        if recipe.train == "none":
            return img
        if recipe.pad > 0:  # crop_flip
            p, s = recipe.pad, recipe.size
            img = F.pad(img, [p, p, p, p], fill=list(fill[: img.shape[0]]))
            dy, dx = torch.randint(0, 2 * p + 1, (2,), generator=gen).tolist()
            img = img[:, dy : dy + s, dx : dx + s]
    if recipe.flip and torch.rand(1, generator=gen).item() < 0.5:
        img = img.flip(-1)
    return img


def view(data: bytes, stream: ImageStream, seed: int | None, where: str) -> torch.Tensor | None:
    """One image as the trial sees it: its training view drawn from ``seed``, or its
    evaluation view when ``seed`` is None; None (logged with ``where``) when it cannot be
    decoded."""
    try:
        img = decode(data, stream.recipe.channels)
    except ValueError as exc:
        log.warning("skipped %s: cannot decode it (%s)", where, exc)
        return None
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
        return train_view(img, stream.recipe, gen, stream.fill).contiguous()
    return eval_view(img, stream.recipe).contiguous()


# ---- batches -----------------------------------------------------------------------------


@dataclass
class Read:
    """A batch as read: split indices, uint8 images (N, C, size, size), and how many of the
    batch's files could not be decoded (left out)."""

    index: torch.Tensor
    images: torch.Tensor
    skipped: int = 0


def collate(items: list[tuple[int, torch.Tensor | None]], recipe: ImageRecipe) -> Read:
    kept = [(k, img) for k, img in items if img is not None]
    if kept:
        images = torch.stack([img for _, img in kept])
    else:
        images = torch.empty((0, recipe.channels, recipe.size, recipe.size), dtype=torch.uint8)
    return Read(
        torch.tensor([k for k, _ in kept], dtype=torch.long), images, len(items) - len(kept)
    )


def _load_codecs() -> None:
    """Import the decoder and the transforms (a second between them) in the process that
    forks the loader's workers: a worker forked before they are loaded imports them itself,
    and the workers are forked afresh each epoch."""
    import torchcodec.decoders  # noqa: F401
    import torchvision.transforms.v2.functional  # noqa: F401


def batches(
    stream: ImageStream,
    *,
    batch_size: int,
    gen: torch.Generator | None = None,
    augment: bool = False,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Read]:
    """One pass over the split in batches of up to ``batch_size``: an epoch's order drawn
    from ``gen`` when given, else the split's order; each image in the recipe's training view
    (its own seed from ``gen``) with ``augment``, else its evaluation view."""
    from torch.utils.data import DataLoader

    _load_codecs()  # here, once, not in every epoch's freshly forked workers
    dataset = stream.source.dataset(stream, batch_size=batch_size, gen=gen, augment=augment)
    loader = DataLoader(
        dataset,
        batch_size=None,  # each item is a whole batch, formed where it is read
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    yield from loader
