"""``imagefolder``: real PNG and JPEG files in class folders, decoded, resized and split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.data import DATASETS, AugmentSpec, dataset_info, load_dataset
from kdbench.data.imagefolder import ImageFolder
from kdbench.errors import KdbenchError

# Class folders deliberately not in creation order: labels follow the sorted names.
CLASSES = {"zebra": (200, 40, 40), "cat": (40, 200, 40), "dog": (40, 40, 200)}
PER_CLASS = {"train": 8, "test": 3}
SIZES = [(48, 40), (40, 64), (33, 33), (100, 50)]


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int], gray=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    if gray:
        img = img.convert("L")
    img.save(path)


def write_tree(root: Path, *, test: str = "test", unlabeled: int = 0) -> Path:
    """root/{train,test}/<class>/NN.png|jpg in several sizes, one grayscale; a flat-colour image
    per class, so a decoded pixel says which class it came from."""
    for split, n in PER_CLASS.items():
        folder = test if split == "test" else split
        for name, color in CLASSES.items():
            for i in range(n):
                ext = "jpg" if i % 2 else "png"
                sub = "nested/" if i == 1 else ""  # images below a class folder's sub-folder
                write_image(
                    root / folder / name / f"{sub}{i:02d}.{ext}",
                    color,
                    SIZES[i % len(SIZES)],
                    gray=(split == "train" and name == "cat" and i == 0),
                )
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    for i in range(unlabeled):
        sub = "batch1/" if i % 2 else ""  # directly inside unlabeled/ or in a sub-folder
        write_image(root / "unlabeled" / f"{sub}u{i}.JPEG", (128, 128, 128), (60, 45))
    return root


def test_a_folder_of_real_images_loads_as_32x32_uint8_with_sorted_class_labels(tmp_path):
    write_tree(tmp_path / "imagefolder")
    b = load_dataset("imagefolder", root=tmp_path, val_fraction=0.25)
    assert b.num_classes == 3 and b.input_shape == (3, 32, 32)
    n_train = 3 * PER_CLASS["train"]
    assert b.sizes() == {"train": n_train - 6, "val": 6, "test": 3 * PER_CLASS["test"]}
    assert b.train_x.dtype == torch.uint8 and b.test_x.shape == (9, 3, 32, 32)
    assert torch.bincount(b.val_y, minlength=3).tolist() == [2, 2, 2]
    assert b.unlabeled_x is None
    assert b.augment == AugmentSpec(pad=4, flip=True)
    gray = round(0.299 * 40 + 0.587 * 200 + 0.114 * 40)  # PIL's L of the cat colour
    for x, y in ((b.train_x, b.train_y), (b.val_x, b.val_y), (b.test_x, b.test_y)):
        for img, label in zip(x, y, strict=True):
            name = sorted(CLASSES)[int(label)]  # cat, dog, zebra
            centre = img[:, 16, 16].tolist()
            expected = CLASSES[name]
            if centre[0] == centre[1] == centre[2]:  # the grayscale cat, converted to RGB
                assert name == "cat" and abs(centre[0] - gray) <= 2
            else:
                assert all(abs(a - e) <= 6 for a, e in zip(centre, expected, strict=True))


def test_resize_keeps_the_centre_of_the_shorter_side(tmp_path):
    # A 96×64 image whose left and right 8-pixel bands are red: the centre 64×64 crop (and the
    # antialiasing filter's reach beyond it, 4 pixels at this scale) has none.
    img = np.zeros((64, 96, 3), dtype=np.uint8)
    img[:, :8] = img[:, -8:] = (255, 0, 0)
    img[:, 8:-8] = (0, 0, 255)
    for split in ("train", "val"):
        for name in ("a", "b"):
            path = tmp_path / split / name / "x.png"
            path.parent.mkdir(parents=True)
            Image.fromarray(img).save(path)
    b = ImageFolder(size=16)(root=tmp_path, val_fraction=0.5)  # root itself holds train/
    assert b.input_shape == (3, 16, 16) and b.augment.pad == 2
    assert (b.test_x[:, 0] == 0).all() and (b.test_x[:, 2] == 255).all()


def test_the_unlabeled_folder_becomes_the_pool(tmp_path):
    write_tree(tmp_path, test="val", unlabeled=5)  # val/ stands in for test/
    b = load_dataset("imagefolder", root=tmp_path, val_fraction=0.25)
    assert b.sizes()["test"] == 9
    assert b.unlabeled_x is not None and b.unlabeled_x.shape == (5, 3, 32, 32)
    assert (
        b.unlabeled_x.dtype == torch.uint8 and (b.unlabeled_x[:, :, 16, 16] - 128).abs().max() <= 2
    )
    x, y = b.transfer_set()
    assert len(x) == len(b.train_y) + 5 and (y[-5:] == -1).all() and (y[:-5] >= 0).all()


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_missing_or_malformed_folder_is_refused_in_one_line_naming_the_path(tmp_path):
    with pytest.raises(KdbenchError) as missing:
        load_dataset("imagefolder", root=tmp_path)
    assert str(tmp_path / "imagefolder") in one_line(missing)

    (tmp_path / "imagefolder" / "train").mkdir(parents=True)
    with pytest.raises(KdbenchError) as empty:
        load_dataset("imagefolder", root=tmp_path)
    assert f"{tmp_path / 'imagefolder' / 'train'} has no class folders" in one_line(empty)

    write_tree(tmp_path / "other")
    (tmp_path / "other" / "test" / "dog").rename(tmp_path / "other" / "test" / "wolf")
    with pytest.raises(KdbenchError) as differ:
        load_dataset("imagefolder", root=tmp_path / "other")
    text = one_line(differ)
    assert str(tmp_path / "other" / "test") in text and "missing: dog" in text
    assert "not in train/: wolf" in text

    (tmp_path / "other" / "test" / "wolf").rename(tmp_path / "other" / "test" / "dog")
    (tmp_path / "other" / "train" / "zebra" / "00.png").write_bytes(b"not a png")
    with pytest.raises(KdbenchError) as broken:
        load_dataset("imagefolder", root=tmp_path / "other")
    assert f"cannot read the image {tmp_path / 'other' / 'train' / 'zebra' / '00.png'}" in (
        one_line(broken)
    )

    no_test = write_tree(tmp_path / "no_test")
    for f in sorted((no_test / "test").rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    (no_test / "test").rmdir()
    with pytest.raises(KdbenchError, match="has neither test/ nor val/") as neither:
        load_dataset("imagefolder", root=no_test)
    assert str(no_test) in one_line(neither)


def test_info_counts_files_under_the_suites_root_without_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "nothing"))
    loader = ImageFolder(size=24)
    with pytest.raises(KdbenchError, match="no image folder at"):
        loader.info_at(tmp_path / "nothing")
    write_tree(tmp_path / "mine" / "imagefolder")
    info = loader.info_at(tmp_path / "mine")
    assert (info.num_classes, info.input_shape, info.train, info.test) == (3, (3, 24, 24), 24, 9)
    assert "imagefolder" in DATASETS
    assert dataset_info("imagefolder", tmp_path / "mine").train == 24
    with pytest.raises(KdbenchError, match="no image folder"):
        dataset_info("imagefolder")  # the default root ($KDBENCH_DATA) holds none
