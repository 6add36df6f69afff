"""MNIST, FashionMNIST, CIFAR-10/100 and SVHN through torchvision's own loading code.

Files are read from ``<root>`` in each format's native layout (torchvision's folders:
``MNIST/raw``, ``FashionMNIST/raw``, ``cifar-10-batches-py``, ``cifar-100-python``,
``train_32x32.mat``/``test_32x32.mat``). torchvision verifies the MD5 of the CIFAR and SVHN
files; kdbench keeps that check. When the files are missing, torchvision's download is tried
once; without a network the error says where to put the files.

Fashion-MNIST is also read from Debian's ``dataset-fashion-mnist`` package where it is
installed (``kdbench.data.debian``), with no configuration: when the suite names no
``data.root``, ``$KDBENCH_DATA`` is unset and the default folder does not hold torchvision's
``FashionMNIST/raw``. A root given either way takes precedence.

SVHN's ``extra`` split (531,131 images) becomes the bundle's unlabeled pool, its labels
dropped, when ``extra_32x32.mat`` is under ``<root>``; it is never downloaded and never
required. As uint8 it takes 1.6 GB (531,131 × 3,072 bytes) in every process that holds the
bundle; only methods that declare ``Needs(transfer_set=True)`` (``pseudo_label``) train on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdbench.data import debian
from kdbench.data.base import AugmentSpec, DataBundle, carve_val
from kdbench.data.registry import DATASETS, DatasetInfo, default_root
from kdbench.errors import KdbenchError


def _open(
    name: str, factory: Callable[..., Any], root: Path, package: str | None, **kwargs: Any
) -> Any:
    """The torchvision data set from ``root``, downloading it only if it is not there."""
    try:
        return factory(root=str(root), download=False, **kwargs)
    except RuntimeError as missing:
        try:
            return factory(root=str(root), download=True, **kwargs)
        except Exception as exc:
            also = (
                f"install Debian's {package} package (apt-get install {package}) or "
                if package
                else ""
            )
            raise KdbenchError(
                f"data set '{name}' is not under {root} ({missing}) and could not be downloaded "
                f"({type(exc).__name__}: {exc}); {also}put its files there in torchvision's "
                f"layout ({factory.__name__}/raw/ for the MNIST family) or set data.root"
            ) from None


def _from_package(package: str | None, root: Path, folder: str) -> tuple[torch.Tensor, ...] | None:
    """The data set from its Debian package, when no root was chosen and the default holds
    none of its files; None otherwise."""
    chosen = bool(os.environ.get("KDBENCH_DATA")) or root != default_root()
    if package is None or chosen or (root / folder / "raw").is_dir():
        return None
    return debian.mnist_family(package)


def _images(data: Any, layout: str) -> torch.Tensor:
    """torchvision's arrays -> uint8 (N, C, H, W)."""
    arr = torch.as_tensor(np.asarray(data), dtype=torch.uint8)
    if layout == "NHW":
        return arr.unsqueeze(1).contiguous()
    if layout == "NHWC":
        return arr.permute(0, 3, 1, 2).contiguous()
    return arr.contiguous()  # NCHW


def _labels(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.long)


def _train_test(
    name: str,
    cls_name: str,
    root: Path,
    layout: str,
    label_attr: str,
    split_kw: Callable[[bool], dict[str, Any]],
    package: str | None = None,
) -> tuple[torch.Tensor, ...]:
    import torchvision.datasets as tvd

    found = _from_package(package, root, cls_name)
    if found is not None:
        return found
    factory = getattr(tvd, cls_name)
    train = _open(name, factory, root, package, **split_kw(True))
    test = _open(name, factory, root, package, **split_kw(False))
    return (
        _images(train.data, layout),
        _labels(getattr(train, label_attr)),
        _images(test.data, layout),
        _labels(getattr(test, label_attr)),
    )


def _register(
    name: str,
    cls_name: str,
    *,
    layout: str,
    num_classes: int,
    augment: AugmentSpec,
    shape: tuple[int, int, int],
    sizes: tuple[int, int],
    label_attr: str = "targets",
    split_kw: Callable[[bool], dict[str, Any]] = lambda train: {"train": train},
    pool: Callable[[Path], torch.Tensor | None] | None = None,
    package: str | None = None,
) -> None:
    def loader(*, root: Path, val_fraction: float = 0.1) -> DataBundle:
        parts = _train_test(name, cls_name, Path(root), layout, label_attr, split_kw, package)
        return carve_val(
            name,
            *parts,
            val_fraction=val_fraction,
            num_classes=num_classes,
            augment=augment,
            unlabeled_x=pool(Path(root)) if pool is not None else None,
        )

    loader.info = DatasetInfo(num_classes, shape, *sizes)  # type: ignore[attr-defined]
    loader.__name__ = name
    loader.__doc__ = f"``{name}``: torchvision's {cls_name}, `val` carved from its training split."
    DATASETS.add(name, loader)


_register(
    "mnist",
    "MNIST",
    layout="NHW",
    num_classes=10,
    augment=AugmentSpec(pad=2),
    shape=(1, 28, 28),
    sizes=(60000, 10000),
)
_register(
    "fashion_mnist",
    "FashionMNIST",
    layout="NHW",
    num_classes=10,
    augment=AugmentSpec(pad=2, flip=True),
    shape=(1, 28, 28),
    sizes=(60000, 10000),
    package="dataset-fashion-mnist",
)
_register(
    "cifar10",
    "CIFAR10",
    layout="NHWC",
    num_classes=10,
    augment=AugmentSpec(pad=4, flip=True),
    shape=(3, 32, 32),
    sizes=(50000, 10000),
)
_register(
    "cifar100",
    "CIFAR100",
    layout="NHWC",
    num_classes=100,
    augment=AugmentSpec(pad=4, flip=True),
    shape=(3, 32, 32),
    sizes=(50000, 10000),
)


def _svhn_extra(root: Path) -> torch.Tensor | None:
    """SVHN's ``extra`` images as an unlabeled pool, if ``extra_32x32.mat`` is under ``root``."""
    import torchvision.datasets as tvd

    path = root / tvd.SVHN.split_list["extra"][1]
    if not path.is_file():
        return None
    try:
        extra = tvd.SVHN(root=str(root), split="extra", download=False)
    except RuntimeError:
        raise KdbenchError(
            f"data set 'svhn': {path} is corrupted or incomplete (its MD5 is not the official "
            "file's); replace it or remove it (the extra split is optional)"
        ) from None
    return _images(extra.data, "NCHW")


# House numbers are not mirror-symmetric: crops only.
_register(
    "svhn",
    "SVHN",
    layout="NCHW",
    num_classes=10,
    augment=AugmentSpec(pad=4),
    shape=(3, 32, 32),
    sizes=(73257, 26032),
    label_attr="labels",
    split_kw=lambda train: {"split": "train" if train else "test"},
    pool=_svhn_extra,
)
