"""Data sets: fixed splits, batched augmentation, and every loader on native-format files."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from kdbench.data import DATASETS, AugmentSpec, augment_batch, load_dataset, stratified_split
from kdbench.errors import KdbenchError


def test_digits_is_split_60_20_20_stratified_and_fixed(digits):
    assert digits.sizes() == {"train": 1078, "val": 359, "test": 360}
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    for split in ("train", "val", "test"):
        counts = torch.bincount(getattr(digits, f"{split}_y"), minlength=10)
        assert (counts > 0).all()
    again = load_dataset("digits")
    assert torch.equal(again.val_x, digits.val_x) and torch.equal(again.test_y, digits.test_y)


def test_digits_splits_do_not_overlap(digits):
    def keys(x):
        return {tuple(img.flatten().tolist()) for img in x}

    # Digits contains a few identical images; compare indices through the split itself.
    y = torch.tensor(np.arange(100) % 10)
    a, b, c = stratified_split(y, (0.6, 0.2, 0.2))
    assert not (set(a.tolist()) & set(b.tolist())) and not (set(b.tolist()) & set(c.tolist()))
    assert sorted(a.tolist() + b.tolist() + c.tolist()) == list(range(100))
    assert len(keys(digits.val_x) & keys(digits.test_x)) <= 3


def test_stratified_split_keeps_class_shares():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    _, val = stratified_split(y, (0.9, 0.1), seed=0)
    assert torch.bincount(y[val]).tolist() == [5, 3, 2]
    _, val2 = stratified_split(y, (0.9, 0.1), seed=1)
    assert not torch.equal(val, val2)


def test_normalisation_gives_zero_mean_unit_std_on_train(synthetic):
    x = synthetic.normalize(synthetic.train_x)
    assert x.mean().abs() < 1e-4 and (x.std() - 1).abs() < 1e-2


def test_augmentation_crops_shift_each_image_within_the_padding():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    assert torch.equal(augment_batch(x, AugmentSpec(), gen), x)
    out = augment_batch(x, AugmentSpec(pad=2), gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_augmentation_flips_about_half_the_batch():
    x = torch.arange(8, dtype=torch.float32).reshape(1, 1, 1, 8).repeat(200, 1, 1, 1)
    out = augment_batch(x, AugmentSpec(flip=True), torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 7).sum().item()
    assert 60 < flipped < 140
    assert torch.equal(out[out[:, 0, 0, 0] == 7], x.flip(3)[:flipped])


# --------------------------------------------------------------------- native-format files

N_TRAIN, N_TEST = 40, 20


def pattern(label: int, channels: int, size: int) -> np.ndarray:
    """An image whose pixels encode its label, channel and row: catches any layout mix-up."""
    c = np.arange(channels)[:, None, None]
    h = np.arange(size)[None, :, None]
    img = (label * 20 + c * 5 + h) % 256 + np.zeros((channels, size, size), dtype=np.int64)
    return img.astype(np.uint8)


def check_bundle(bundle, channels: int, size: int, n_train: int, n_test: int, classes: int = 10):
    assert bundle.input_shape == (channels, size, size)
    assert bundle.train_x.dtype == torch.uint8
    assert len(bundle.train_y) + len(bundle.val_y) == n_train and len(bundle.test_y) == n_test
    assert len(bundle.val_y) == round(0.25 * n_train)
    for x, y in (
        (bundle.train_x, bundle.train_y),
        (bundle.val_x, bundle.val_y),
        (bundle.test_x, bundle.test_y),
    ):
        for img, label in zip(x, y, strict=True):
            assert np.array_equal(img.numpy(), pattern(int(label), channels, size))
    assert bundle.num_classes == classes


def labels(n: int, classes: int = 10) -> np.ndarray:
    return np.arange(n) % classes


def write_idx(root: Path, folder: str) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        y = labels(n)
        imgs = np.stack([pattern(int(v), 1, 28)[0] for v in y])
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + imgs.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + y.astype(np.uint8).tobytes()
        )


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_from_idx_files(tmp_path, name, folder):
    write_idx(tmp_path, folder)
    check_bundle(load_dataset(name, root=tmp_path, val_fraction=0.25), 1, 28, N_TRAIN, N_TEST)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root: Path, classes: int) -> dict[str, object]:
    """CIFAR's python pickles; returns torchvision's file lists with these files' MD5s."""
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True)
    label_key = "labels" if classes == 10 else "fine_labels"

    def batch(path: Path, y: np.ndarray) -> None:
        data = np.stack([pattern(int(v), 3, 32).reshape(-1) for v in y])
        with open(path, "wb") as f:
            pickle.dump({"data": data, label_key: y.tolist()}, f)

    if classes == 10:
        per = N_TRAIN // 5
        train = [f"data_batch_{i}" for i in range(1, 6)]
        for i, name in enumerate(train):
            batch(folder / name, labels(N_TRAIN)[i * per : (i + 1) * per])
        test, meta_name, meta_key = "test_batch", "batches.meta", "label_names"
    else:
        train = ["train"]
        batch(folder / "train", labels(N_TRAIN, 100))
        test, meta_name, meta_key = "test", "meta", "fine_label_names"
    batch(folder / test, labels(N_TEST, 100 if classes == 100 else 10))
    with open(folder / meta_name, "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(classes)]}, f)
    return {
        "train_list": [[n, md5(folder / n)] for n in train],
        "test_list": [[test, md5(folder / test)]],
        "meta": {"filename": meta_name, "key": meta_key, "md5": md5(folder / meta_name)},
    }


def no_network(*args, **kwargs):
    raise OSError("no network in this test")


@pytest.mark.parametrize(
    "name,cls,classes", [("cifar10", tvd.CIFAR10, 10), ("cifar100", tvd.CIFAR100, 100)]
)
def test_cifar_from_python_pickles_with_md5_checked(tmp_path, monkeypatch, name, cls, classes):
    lists = write_cifar(tmp_path, classes)
    # torchvision checks each file's MD5 against its table of the real files; the test registers
    # the MD5s of the files it wrote, so the check still runs, on these files.
    for attr, value in lists.items():
        monkeypatch.setattr(cls, attr, value)
    bundle = load_dataset(name, root=tmp_path, val_fraction=0.25)
    check_bundle(bundle, 3, 32, N_TRAIN, N_TEST, classes)
    assert bundle.augment == AugmentSpec(pad=4, flip=True)


def test_a_corrupted_cifar_file_is_refused(tmp_path, monkeypatch):
    lists = write_cifar(tmp_path, 10)
    for attr, value in lists.items():
        monkeypatch.setattr(tvd.CIFAR10, attr, value)
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(
        KdbenchError, match=r"data set 'cifar10' is not under .*could not be downloaded"
    ):
        load_dataset("cifar10", root=tmp_path)


def write_svhn(root: Path, splits: dict[str, int]) -> dict[str, list[str]]:
    """SVHN's .mat files; returns torchvision's split table with these files' MD5s."""
    from scipy.io import savemat

    split_list = {}
    for split, n in splits.items():
        y = labels(n)
        x = np.stack([pattern(int(v), 3, 32) for v in y])  # N, C, H, W
        mat_y = np.where(y == 0, 10, y).reshape(-1, 1)  # SVHN writes digit 0 as 10
        path = root / f"{split}_32x32.mat"
        savemat(path, {"X": x.transpose(2, 3, 1, 0), "y": mat_y})  # stored as H, W, C, N
        split_list[split] = ["unused-url", path.name, md5(path)]
    return split_list


def test_svhn_from_mat_files(tmp_path, monkeypatch):
    split_list = write_svhn(tmp_path, {"train": N_TRAIN, "test": N_TEST})
    split_list["extra"] = ["unused-url", "extra_32x32.mat", "0" * 32]
    monkeypatch.setattr(tvd.SVHN, "split_list", split_list)
    bundle = load_dataset("svhn", root=tmp_path, val_fraction=0.25)
    check_bundle(bundle, 3, 32, N_TRAIN, N_TEST)
    assert bundle.augment.flip is False
    assert bundle.unlabeled_x is None  # no extra_32x32.mat: no pool, and nothing is missing


def test_svhn_extra_split_becomes_the_unlabeled_pool(tmp_path, monkeypatch):
    monkeypatch.setattr(
        tvd.SVHN,
        "split_list",
        write_svhn(tmp_path, {"train": N_TRAIN, "test": N_TEST, "extra": 30}),
    )
    bundle = load_dataset("svhn", root=tmp_path, val_fraction=0.25)
    check_bundle(bundle, 3, 32, N_TRAIN, N_TEST)
    pool = bundle.unlabeled_x
    assert pool is not None and pool.shape == (30, 3, 32, 32) and pool.dtype == torch.uint8
    for img, label in zip(pool, labels(30), strict=True):  # native layout read right
        assert np.array_equal(img.numpy(), pattern(int(label), 3, 32))
    assert bundle.sizes() == {"train": 30, "val": 10, "test": N_TEST}  # the pool is no split

    with open(tmp_path / "extra_32x32.mat", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(KdbenchError, match=r"extra_32x32\.mat is corrupted or incomplete"):
        load_dataset("svhn", root=tmp_path)


def test_missing_files_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", no_network)
    with pytest.raises(
        KdbenchError, match=rf"'mnist' is not under {tmp_path}.*put its files there"
    ):
        load_dataset("mnist", root=tmp_path)


def test_every_registered_data_set_declares_what_a_plan_needs(tmp_path, monkeypatch):
    from kdbench.data import dataset_info
    from tests.test_imagefolder import write_tree

    write_tree(tmp_path / "imagefolder")  # imagefolder counts its files under the default root
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path))
    for name in DATASETS:
        info = dataset_info(name)
        assert info.num_classes >= 2 and len(info.input_shape) == 3 and info.train > 0
