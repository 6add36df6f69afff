"""``imagefolder``: your own images, one folder per class (ImageNet's layout), held in memory.

Layout, under a folder ``ROOT``::

    ROOT/train/<class>/*.jpg      the training images (any depth below <class>)
    ROOT/test/<class>/...         the test split; when there is no test/, val/ is used
    ROOT/unlabeled/...            optional: images without labels, directly or in subfolders

``ROOT`` is the suite's ``data.root`` itself when it holds a ``train/`` folder, otherwise
``<data.root>/imagefolder`` (``data.root`` defaults to ``$KDBENCH_DATA`` or
``~/.cache/kdbench/data``). Classes are the sub-folders of ``train/`` sorted by name, as
torchvision's ``ImageFolder`` sorts them (class ``i`` is the ``i``-th name); the test folder
must hold the same class folders. ImageNet's own ``val/`` is a flat folder with labels in a
separate file: move its images into class folders first. Files count as images by their
extension, as torchvision's: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp (any case).
``val`` is carved from ``train/`` by ``data.val_fraction`` with the fixed split seed, as for
CIFAR. ``unlabeled/`` becomes the bundle's unlabeled pool (``DataBundle.unlabeled_x``), which
methods that declare ``Needs(transfer_set=True)`` (``pseudo_label``) train on.

Every image is decoded with Pillow, converted to RGB (grayscale, palette and RGBA images
too), its shorter side resized to ``size`` (bilinear, antialiased) and its centre cropped to
``size × size`` — ImageNet's evaluation transform — and kept as uint8 tensors in memory, like
every kdbench data set: the whole set takes N × 3 × size² bytes (3 KiB an image at 32: 10,000
images 31 MB; ImageNet-1k's 1.28 M training images 3.9 GB at 32, 15.7 GB at 64), in every
process that holds the bundle and again on the trial's device. Full-size ImageNet (224 × 224:
193 GB) does not fit this design; use a downsampled copy. A JPEG is decoded at the smallest
of its built-in reduced scales (1/2, 1/4, 1/8) that still covers ``size``: the pixels a full
decode adds would be thrown away by the resize, and decoding fewer is faster. Files are
decoded one after another, in one process, each time a run loads the data set, so a folder of
ImageNet-1k's size takes a long while to load. Augmentation: random crops after padding by
size/8 pixels and horizontal flips, as for CIFAR.

The size is part of the registered data set, not a setting: the registry name is what trial
ids, teacher caches and every node of a cluster agree on, so one name must mean one input
shape everywhere (an environment variable could differ between nodes, or between two runs
sharing a cache). ``imagefolder`` is 32 × 32; another size or folder is another entry, e.g. in
your package (``my_pkg/data.py``), registered through the ``kdbench.datasets`` entry points
(``imagenette64 = "my_pkg.data:imagenette64"``)::

    from kdbench.data.imagefolder import ImageFolder
    imagenette64 = ImageFolder("imagenette64", size=64, folder="imagenette")

Plans and cost estimates read the sizes from a count of the files under the suite's
``data.root`` (nothing decoded); a missing folder is refused there, in one line, before any
trial runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdbench.data.base import AugmentSpec, DataBundle, carve_val
from kdbench.data.registry import DATASETS, DatasetInfo
from kdbench.data.sources import IMAGE_EXTENSIONS, class_names, walk_images
from kdbench.errors import KdbenchError


class ImageFolder:
    """Your images in class folders (train/, test/ or val/, unlabeled/), resized to 32×32."""

    def __init__(self, name: str = "imagefolder", *, size: int = 32, folder: str = "imagefolder"):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise TypeError(f"ImageFolder size must be a positive integer, not {size!r}")
        self.name = name
        self.size = size
        self.folder = folder
        if size != 32:
            self.__doc__ = (self.__doc__ or "").replace("32×32", f"{size}×{size}")
        self._counts: dict[Path, DatasetInfo] = {}

    def __repr__(self) -> str:
        return f"ImageFolder({self.name!r}, size={self.size}, folder={self.folder!r})"

    def __call__(self, *, root: Path, val_fraction: float = 0.1) -> DataBundle:
        base = self.locate(Path(root))
        classes, train_files, test_files = self._splits(base)
        train_x, train_y = decode_files(train_files, self.size)
        test_x, test_y = decode_files(test_files, self.size)
        pool_dir = base / "unlabeled"
        pool = None
        if pool_dir.is_dir():
            pool_files = [(Path(p), -1) for p in walk_images(pool_dir)[0]]
            pool = decode_files(pool_files, self.size)[0] if pool_files else None
        return carve_val(
            self.name,
            train_x,
            train_y,
            test_x,
            test_y,
            val_fraction=val_fraction,
            num_classes=len(classes),
            augment=self.augment,
            unlabeled_x=pool,
        )

    @property
    def augment(self) -> AugmentSpec:
        return AugmentSpec(pad=max(1, self.size // 8), flip=True)

    def info_at(self, root: Path) -> DatasetInfo:
        """Sizes from a count of the files under ``root`` (nothing is decoded)."""
        base = self.locate(root)
        if base not in self._counts:
            classes, train, test = self._splits(base)
            shape = (3, self.size, self.size)
            self._counts[base] = DatasetInfo(len(classes), shape, len(train), len(test))
        return self._counts[base]

    def locate(self, root: Path) -> Path:
        """``root`` itself when it holds ``train/``, else ``root/<folder>``; refused if neither."""
        if (root / "train").is_dir():
            return root
        base = root / self.folder
        if not base.is_dir():
            raise KdbenchError(
                f"data set '{self.name}': no image folder at {base} (nor train/ in {root}); "
                "put train/<class>/ and test/<class>/ (or val/<class>/) there, or set data.root"
            )
        if not (base / "train").is_dir():
            raise KdbenchError(
                f"data set '{self.name}': {base} has no train/ folder of class folders"
            )
        return base

    def _splits(
        self, base: Path
    ) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
        """The class names and the (file, label) lists of train and test."""
        train_dir = base / "train"
        classes = class_names(train_dir)
        if not classes:
            raise KdbenchError(f"data set '{self.name}': {train_dir} has no class folders")
        test_dir = base / "test" if (base / "test").is_dir() else base / "val"
        if not test_dir.is_dir():
            raise KdbenchError(
                f"data set '{self.name}': {base} has neither test/ nor val/ (class folders "
                "like train/'s)"
            )
        test_classes = class_names(test_dir)
        if test_classes != classes:
            missing = sorted(set(classes) - set(test_classes))
            extra = sorted(set(test_classes) - set(classes))
            diff = "; ".join(
                f"{what}: {_some(names)}"
                for what, names in (("missing", missing), ("not in train/", extra))
                if names
            )
            raise KdbenchError(
                f"data set '{self.name}': the class folders of {test_dir} differ from "
                f"{train_dir}'s ({diff})"
            )
        return classes, self._files(train_dir, classes), self._files(test_dir, classes)

    def _files(self, split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
        out: list[tuple[Path, int]] = []
        for label, name in enumerate(classes):
            files = [Path(f) for f in walk_images(split_dir / name)[0]]
            if not files:
                raise KdbenchError(
                    f"data set '{self.name}': {split_dir / name} holds no images "
                    f"({' '.join(IMAGE_EXTENSIONS)})"
                )
            out.extend((f, label) for f in files)
        return out


def decode_files(files: list[tuple[Path, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, size, size) images and their labels, decoded one file at a time."""
    x = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    y = torch.empty(len(files), dtype=torch.long)
    for i, (path, label) in enumerate(files):
        x[i] = _load(path, size)
        y[i] = label
    return x, y


def _load(path: Path, size: int) -> torch.Tensor:
    """One image: RGB, shorter side resized to ``size``, centre ``size × size`` crop; (3, s, s)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at the smallest scale ≥ size
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) / 2, (h - side) / 2
            # Resizing the centred square is the shorter-side resize and the centre crop at once.
            img = img.resize(
                (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
            )
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise KdbenchError(f"cannot read the image {path}: {exc}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


imagefolder = ImageFolder()
DATASETS.add("imagefolder", imagefolder)
