"""Streamed data sets: a registration that reads its images from files as training goes.

``StreamedImages(name, folder=…, recipe=…)`` is a data set whose splits are ``ImageStream``s
(``kdbench.data.stream``): nothing but the file list and the labels is held in memory, so its
size does not enter a trial's memory. It finds its files under the suite's ``data.root``
(``$KDBENCH_DATA`` or ``~/.cache/kdbench/data`` by default), in ``<root>/<folder>``, or in
``data.root`` itself when that holds the layout, in either of two layouts:

- **class folders**, as torchvision's ``ImageFolder`` and ``ImageNet`` read them:
  ``train/<class>/*.JPEG`` and ``val/<class>/`` (or ``test/<class>/``), classes the sorted
  sub-folder names of ``train/``; any depth below a class folder; files count as images by
  their extension, and the others are reported once and left out;
- **WebDataset shards**: ``*train*.tar`` and ``*val*.tar`` (or ``*test*.tar``) archives,
  each sample an image member and a ``.cls`` label (``kdbench.data.sources``), in a folder or
  at a URI that pyarrow opens (``data.root: s3://bucket/prefix?endpoint_override=…``).

The protocol is every data set's: ``val`` is carved from the training images by the fixed
split seed (``data.val_fraction``, stratified), and the official validation set is the test
split, read only by finals (as the field reports ImageNet). The normalisation is the
recipe's declared ``mean`` and ``std`` (ImageNet's), or, when none is declared, measured once
on a fixed sample of up to ``STATS_SAMPLE`` training images in their evaluation view.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from kdbench.data.base import SPLIT_SEED, DataBundle, stratified_split
from kdbench.data.registry import DatasetInfo
from kdbench.data.sources import (
    FolderSource,
    ShardSource,
    class_names,
    folder_source,
    list_class_folders,
    list_shards,
    shard_index,
)
from kdbench.data.stream import ImageRecipe, ImageStream, batches
from kdbench.errors import KdbenchError

log = logging.getLogger(__name__)

STATS_SAMPLE = 2000


class StreamedImages:
    """A streamed data set (see the module's docstring)."""

    streamed = True
    """Its splits are read from files as training goes (validation refuses the methods that
    need the training images in memory)."""

    def __init__(
        self,
        name: str,
        *,
        folder: str,
        recipe: ImageRecipe,
        mean: tuple[float, ...] = (),
        std: tuple[float, ...] = (),
        info: DatasetInfo | None = None,
        where: str = "",
        doc: str = "",
    ) -> None:
        self.name, self.folder, self.recipe = name, folder, recipe
        self.__doc__ = doc or (
            f"Streamed from {folder}/ (class folders or WebDataset shards), "
            f"{recipe.channels}×{recipe.size}×{recipe.size}."
        )
        self.mean, self.std = tuple(mean), tuple(std)
        self.info = info
        """The official sizes (ILSVRC-2012's), or None: plans need no files, and a copy of
        another size is refused."""
        self.where = where
        """What the missing-files line adds: where the files come from."""
        self._counted: dict[str, DatasetInfo] = {}

    def __repr__(self) -> str:
        return f"StreamedImages({self.name!r}, folder={self.folder!r})"

    # ---- finding the files -------------------------------------------------------------

    def locate(self, root: str) -> tuple[str, str]:
        """(layout, location): ``folders`` and the folder holding ``train/``, or ``shards``
        and the folder or URI holding the tar files; one line when neither is there."""
        if "://" in root:
            base, _, query = root.partition("?")
            for cand in (base, f"{base.rstrip('/')}/{self.folder}"):
                uri = cand + (f"?{query}" if query else "")
                if list_shards(uri, "train"):
                    return "shards", uri
            raise self._missing(root)
        for cand in (Path(root), Path(root) / self.folder):
            if (cand / "train").is_dir():
                return "folders", str(cand)
            if list_shards(str(cand), "train"):
                return "shards", str(cand)
        raise self._missing(root)

    def _missing(self, root: str) -> KdbenchError:
        base = root if "://" in root else str(Path(root) / self.folder)
        return KdbenchError(
            f"data set '{self.name}': no images at {base}; put train/<class>/ and "
            f"val/<class>/ image folders there, or train-*.tar and val-*.tar WebDataset "
            f"shards (or set data.root){self.where}"
        )

    # ---- the bundle ----------------------------------------------------------------------

    def _read(self, root: str) -> tuple[str, list[str], Any, torch.Tensor, Any, torch.Tensor]:
        """(location, classes, train source, train labels, test source, test labels) of the
        layout found under ``root``."""
        layout, location = self.locate(root)
        if layout == "folders":
            return location, *self._folders(Path(location))
        return location, *self._shards(location)

    def __call__(self, *, root: Path | str, val_fraction: float = 0.1) -> DataBundle:
        location, classes, source, train_y, test_source, test_y = self._read(str(root))
        self._check_sizes(len(classes), len(train_y), len(test_y), location)
        keep, val = stratified_split(train_y, (1.0 - val_fraction, val_fraction), seed=SPLIT_SEED)
        recipe = self.recipe
        mean, std = self.mean, self.std
        if not mean:
            mean, std = self._measure(ImageStream(source, keep, recipe))
        fill = tuple(round(255 * m) for m in mean)
        return DataBundle(
            name=self.name,
            train_x=ImageStream(source, keep, recipe, fill),
            train_y=train_y[keep],
            val_x=ImageStream(source, val, recipe, fill),
            val_y=train_y[val],
            test_x=ImageStream(test_source, torch.arange(len(test_y)), recipe, fill),
            test_y=test_y,
            num_classes=len(classes),
            mean=mean,
            std=std,
        )

    def _check_sizes(self, classes: int, train: int, test: int, location: str) -> None:
        d = self.info
        if d is None or (d.num_classes, d.train, d.test) == (classes, train, test):
            return
        raise KdbenchError(
            f"data set '{self.name}': {location} holds {classes:,} classes, {train:,} training "
            f"and {test:,} validation images; {self.name} has {d.num_classes:,}, {d.train:,} and "
            f"{d.test:,}. A subset or another copy is another data set: register it under its "
            "own name (kdbench.data.streamed.StreamedImages)"
        )

    def _folders(
        self, base: Path
    ) -> tuple[list[str], FolderSource, torch.Tensor, FolderSource, torch.Tensor]:
        train_dir = base / "train"
        classes = class_names(train_dir)
        if not classes:
            raise KdbenchError(f"data set '{self.name}': {train_dir} has no class folders")
        test_dir = next((base / d for d in ("val", "test") if (base / d).is_dir()), None)
        if test_dir is None:
            raise KdbenchError(
                f"data set '{self.name}': {base} has neither val/ nor test/ (class folders "
                "like train/'s)"
            )
        test_classes = class_names(test_dir)
        if test_classes != classes:
            flat = not test_classes and any(os.scandir(test_dir))
            raise KdbenchError(
                f"data set '{self.name}': the class folders of {test_dir} differ from "
                f"{train_dir}'s ({len(test_classes)} against {len(classes)})"
                + (
                    "; ImageNet's val/ comes flat, its labels in a separate file: move each "
                    "image into its class folder (torchvision's ImageNet does so from the devkit)"
                    if flat
                    else ""
                )
            )
        train = list_class_folders(train_dir, classes, self.name)
        test = list_class_folders(test_dir, classes, self.name)
        ignored = train.ignored + test.ignored
        if ignored:
            log.warning(
                "data set '%s': %d entries under %s are not images (by their extension, or "
                "not regular files, or links out of their class folder) and are left out, e.g. %s",
                self.name,
                len(ignored),
                base,
                ignored[0],
            )
        return (
            classes,
            folder_source(base, train.files),
            torch.tensor(train.labels, dtype=torch.long),
            folder_source(base, test.files),
            torch.tensor(test.labels, dtype=torch.long),
        )

    def _shards(
        self, location: str
    ) -> tuple[list[str], ShardSource, torch.Tensor, ShardSource, torch.Tensor]:
        train = list_shards(location, "train")
        test = list_shards(location, "val") or list_shards(location, "test")
        if not test:
            raise KdbenchError(
                f"data set '{self.name}': {location} has train shards but no *val*.tar "
                "(or *test*.tar) shards"
            )
        parts = []
        for shards in (train, test):
            labels = shard_index(location, shards, self.name)
            source = ShardSource(location, tuple(s[0] for s in shards), tuple(map(len, labels)))
            parts.append((source, torch.tensor([x for ls in labels for x in ls], dtype=torch.long)))
        (train_source, train_y), (test_source, test_y) = parts
        k = int(train_y.max()) + 1 if len(train_y) else 0
        if len(train_y) == 0 or int(train_y.min()) < 0 or int(test_y.max()) >= k:
            raise KdbenchError(
                f"data set '{self.name}': the labels in {location}'s shards are not the "
                f"classes 0 … {k - 1} of the training shards"
            )
        missing = sorted(set(range(k)) - set(train_y.tolist()))
        if missing:
            raise KdbenchError(
                f"data set '{self.name}': no training image of class {missing[0]} in "
                f"{location}'s shards ({len(missing)} classes empty)"
            )
        return [str(c) for c in range(k)], train_source, train_y, test_source, test_y

    def _measure(self, stream: ImageStream) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of a fixed sample of training images (evaluation view)."""
        gen = torch.Generator().manual_seed(SPLIT_SEED)
        n = min(STATS_SAMPLE, len(stream))
        sample = stream[torch.randperm(len(stream), generator=gen)[:n].sort().values]
        total = torch.zeros(stream.recipe.channels, dtype=torch.float64)
        square = torch.zeros_like(total)
        pixels = 0
        for read in batches(sample, batch_size=256):
            x = read.images.double() / 255.0
            total += x.sum(dim=(0, 2, 3))
            square += x.pow(2).sum(dim=(0, 2, 3))
            pixels += x.shape[0] * x.shape[2] * x.shape[3]
        mean = total / max(pixels, 1)
        std = (square / max(pixels, 1) - mean.pow(2)).clamp_min(1e-12).sqrt()
        return tuple(mean.tolist()), tuple(std.clamp_min(1e-6).tolist())

    # ---- plans ---------------------------------------------------------------------------

    def info_at(self, root: Path) -> DatasetInfo:
        """The declared sizes, else a count of the files (or the shards' index)."""
        if self.info is not None:
            return self.info
        key = str(root)
        if key not in self._counted:
            _, classes, source, _, test_source, _ = self._read(key)
            shape = (self.recipe.channels, self.recipe.size, self.recipe.size)
            self._counted[key] = DatasetInfo(len(classes), shape, len(source), len(test_source))
        return self._counted[key]
