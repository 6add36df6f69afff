"""Fashion-MNIST from Debian's dataset-fashion-mnist package: found through dpkg's own list
of the package's files, read where they lie; data.root and $KDBENCH_DATA take precedence."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from kdbench.data import debian, load_dataset
from kdbench.data.debian import package_files, read_idx
from kdbench.errors import KdbenchError
from tests.test_data import N_TEST, N_TRAIN, check_bundle, labels, no_network, pattern, write_idx

PACKAGE = "dataset-fashion-mnist"


@pytest.fixture
def no_root(tmp_path, monkeypatch):
    """No data.root, no $KDBENCH_DATA, an empty default folder."""
    monkeypatch.delenv("KDBENCH_DATA", raising=False)
    default = tmp_path / "default"
    monkeypatch.setattr("kdbench.data.registry.default_root", lambda: default)
    monkeypatch.setattr("kdbench.data.torchvision_sets.default_root", lambda: default)
    return default


def write_package(folder):
    """The package's layout: the four IDX files, gzipped, in one folder."""
    folder.mkdir(parents=True)
    files = []
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        y = labels(n)
        imgs = np.stack([pattern(int(v), 1, 28)[0] for v in y])
        for name, blob in (
            (
                f"{prefix}-images-idx3-ubyte.gz",
                struct.pack(">IIII", 2051, n, 28, 28) + imgs.tobytes(),
            ),
            (
                f"{prefix}-labels-idx1-ubyte.gz",
                struct.pack(">II", 2049, n) + y.astype(np.uint8).tobytes(),
            ),
        ):
            (folder / name).write_bytes(gzip.compress(blob))
            files.append(folder / name)
    return [folder.parent, folder, *files]


def test_the_package_layout_is_read_where_it_lies(tmp_path, no_root, monkeypatch):
    listed = write_package(tmp_path / "usr" / "share" / "datasets" / "fashion-mnist")
    monkeypatch.setattr(
        debian, "package_files", lambda package: listed if package == PACKAGE else []
    )
    check_bundle(load_dataset("fashion_mnist", val_fraction=0.25), 1, 28, N_TRAIN, N_TEST)
    assert not no_root.exists()  # nothing copied


def test_a_chosen_root_takes_precedence_over_the_package(tmp_path, monkeypatch):
    listed = write_package(tmp_path / "pkg")
    monkeypatch.setattr(debian, "package_files", lambda package: listed)
    mine = tmp_path / "mine"
    write_idx(mine, "FashionMNIST")
    # the package pairs each image with its own label; the chosen root's labels are shifted
    raw = mine / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    y = (labels(N_TRAIN) + 1) % 10
    raw.write_bytes(struct.pack(">II", 2049, N_TRAIN) + y.astype(np.uint8).tobytes())

    def from_mine(bundle) -> bool:
        return all(
            np.array_equal(img.numpy(), pattern((int(label) - 1) % 10, 1, 28))
            for img, label in zip(bundle.train_x, bundle.train_y, strict=True)
        )

    monkeypatch.setenv("KDBENCH_DATA", str(mine))
    assert from_mine(load_dataset("fashion_mnist", val_fraction=0.25))
    monkeypatch.delenv("KDBENCH_DATA")
    assert from_mine(load_dataset("fashion_mnist", root=mine, val_fraction=0.25))


def test_without_package_or_files_the_error_names_both(no_root, monkeypatch):
    monkeypatch.setattr(debian, "package_files", lambda package: [])
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", no_network)
    with pytest.raises(KdbenchError) as err:
        load_dataset("fashion_mnist")
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text and "FashionMNIST/raw/" in text
    assert "\n" not in text


def test_a_cut_idx_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 10, 28, 28) + b"\0" * 100))
    with pytest.raises(KdbenchError, match="not an IDX file of unsigned bytes, or cut short"):
        read_idx(path)


@pytest.mark.skipif(not package_files(PACKAGE), reason=f"Debian's {PACKAGE} is not installed")
def test_the_real_fashion_mnist_from_the_package(no_root):
    bundle = load_dataset("fashion_mnist")
    assert bundle.sizes() == {"train": 54000, "val": 6000, "test": 10000}
    assert bundle.input_shape == (1, 28, 28) and bundle.num_classes == 10
    every = np.bincount(np.concatenate([bundle.train_y.numpy(), bundle.val_y.numpy()]))
    assert every.tolist() == [6000] * 10  # Fashion-MNIST's training split is balanced
    assert np.bincount(bundle.test_y.numpy()).tolist() == [1000] * 10
    assert bundle.train_x.dtype.is_floating_point is False and int(bundle.train_x.max()) == 255
