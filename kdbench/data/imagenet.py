"""``imagenet`` (ILSVRC-2012, streamed) and ``tiny_imagenet`` (Tiny-ImageNet, in memory).

``imagenet``: 1,000 classes, 1,281,167 training and 50,000 validation images, too large for
memory (193 GB as 224 × 224 uint8), so streamed (``kdbench.data.streamed``) from
``<data.root>/imagenet``: class folders ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the
layout torchvision's ``ImageNet`` and ``ImageFolder`` read; ImageNet's ``val/`` comes flat and
must be sorted into class folders first), or WebDataset shards ``*train*.tar`` and
``*val*.tar``. The reference recipes' transforms: ``RandomResizedCrop(224)`` + horizontal flip
for training, ``Resize(256)`` + ``CenterCrop(224)`` for evaluation, ImageNet's mean and std.
``val`` is carved from the training images (``data.val_fraction``, the fixed split seed) and
the official validation set is the test split, as the field reports it. The sizes are
declared, so plans and dry runs need no files; a copy with other counts is refused.

``tiny_imagenet``: Tiny-ImageNet (200 classes of 64 × 64 images, 500 training and 50
validation images each), read from its released layout under ``<data.root>/tiny-imagenet-200``
(``tiny-imagenet-200.zip`` unzipped): ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``
with their classes in ``val/val_annotations.txt``; its ``test/`` has no labels and is not
used. 100,000 training images take 1.2 GB as uint8, so it is held in memory like CIFAR (the
dataset-distillation methods read the training images themselves and need it so); the
official validation set is the test split. Augmentation: random crops after padding by 8
pixels, and horizontal flips.
"""

from __future__ import annotations

from pathlib import Path

from kdbench.data.base import AugmentSpec, DataBundle, carve_val
from kdbench.data.imagefolder import decode_files
from kdbench.data.registry import DATASETS, DatasetInfo
from kdbench.data.stream import IMAGENET_MEAN, IMAGENET_STD, ImageRecipe
from kdbench.data.streamed import StreamedImages
from kdbench.errors import KdbenchError

IMAGENET_RECIPE = ImageRecipe(size=224, resize=256, train="random_resized_crop", flip=True)

imagenet = StreamedImages(
    "imagenet",
    folder="imagenet",
    recipe=IMAGENET_RECIPE,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    info=DatasetInfo(1000, (3, 224, 224), 1_281_167, 50_000),
    where=" (ILSVRC-2012 from image-net.org: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar)",
    doc="ILSVRC-2012, streamed from imagenet/ (class folders or WebDataset shards), "
    "ImageNet's train and eval transforms at 224; the official val is the test split.",
)
DATASETS.add("imagenet", imagenet)


TINY = "tiny-imagenet-200"


class TinyImageNet:
    """Tiny-ImageNet, 64×64, held in memory, read from tiny-imagenet-200/; its val is the test split."""

    info = DatasetInfo(200, (3, 64, 64), 100_000, 10_000)

    def __call__(self, *, root: Path, val_fraction: float = 0.1) -> DataBundle:
        base = Path(root) / TINY if not (Path(root) / "wnids.txt").is_file() else Path(root)
        if not (base / "train").is_dir() or not (base / "val" / "val_annotations.txt").is_file():
            raise KdbenchError(
                f"data set 'tiny_imagenet': no Tiny-ImageNet at {base}; unzip "
                f"{TINY}.zip (cs231n.stanford.edu/{TINY}.zip) into {Path(root)}, or set data.root"
            )
        classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
        label = {c: i for i, c in enumerate(classes)}
        train = [
            (f, label[c])
            for c in classes
            for f in sorted((base / "train" / c / "images").glob("*.[Jj][Pp][Ee][Gg]"))
        ]
        test = []
        for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in label:
                raise KdbenchError(
                    f"data set 'tiny_imagenet': {base / 'val' / 'val_annotations.txt'} names "
                    f"class {parts[1]!r}, which has no folder in {base / 'train'}"
                )
            test.append((base / "val" / "images" / parts[0], label[parts[1]]))
        train_x, train_y = decode_files(train, 64)
        test_x, test_y = decode_files(sorted(test), 64)
        return carve_val(
            "tiny_imagenet",
            train_x,
            train_y,
            test_x,
            test_y,
            val_fraction=val_fraction,
            num_classes=len(classes),
            augment=AugmentSpec(pad=8, flip=True),
        )


tiny_imagenet = TinyImageNet()
DATASETS.add("tiny_imagenet", tiny_imagenet)
