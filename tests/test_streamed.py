"""Streamed data sets: class folders and WebDataset shards read as training goes, through the
one trainer, with the protocol of the in-memory data sets."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.data import DATASETS
from kdbench.data.stream import ImageRecipe, batches
from kdbench.data.streamed import StreamedImages
from kdbench.errors import KdbenchError, SuiteError
from tests.test_remote import monkeypatch_module, s3, uri  # noqa: F401 (a real S3 server)

CLASSES = 4


def jpeg(rng: np.random.Generator, colour: np.ndarray, size=(48, 40)) -> bytes:
    arr = (rng.normal(0, 30, (size[1], size[0], 3)) + colour).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_folders(root, per_class=(12, 4), classes=CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 255, (classes, 3))
    for split, n in zip(("train", "val"), per_class, strict=True):
        for c in range(classes):
            d = root / split / f"n{c:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i}.JPEG").write_bytes(jpeg(rng, colours[c]))
    return root


def write_shards(folder_root, out, per_shard=10):
    """The folder data set as WebDataset shards (image + .cls label), as ShardWriter writes."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        classes = sorted(p.name for p in (folder_root / split).iterdir())
        with wds.ShardWriter(str(out / f"{split}-%04d.tar"), maxcount=per_shard, verbose=0) as w:
            for label, c in enumerate(classes):
                for f in sorted((folder_root / split / c).iterdir()):
                    w.write({"__key__": f"{c}_{f.stem}", "jpg": f.read_bytes(), "cls": label})


@pytest.fixture
def folder_set(tmp_path):
    write_folders(tmp_path / "gen")
    return StreamedImages("gen", folder="gen", recipe=ImageRecipe(size=32, resize=36))


def test_a_folder_streams_with_val_carved_from_train_and_the_official_val_as_test(
    tmp_path, folder_set
):
    b = folder_set(root=tmp_path, val_fraction=0.25)
    assert b.streamed and b.num_classes == CLASSES and b.input_shape == (3, 32, 32)
    assert b.sizes() == {"train": 36, "val": 12, "test": 16}
    # val comes from the training images, stratified; train and val never share an image
    assert set(b.train_x.positions.tolist()).isdisjoint(b.val_x.positions.tolist())
    assert torch.bincount(b.val_y).tolist() == [3] * CLASSES
    assert b.test_x.source is not b.train_x.source
    seen = torch.cat([r.index for r in batches(b.test_x, batch_size=5)])
    assert seen.tolist() == list(range(16))  # evaluation reads the split in order


def test_an_epoch_is_the_same_for_a_seed_whatever_the_workers(tmp_path, folder_set):
    b = folder_set(root=tmp_path, val_fraction=0.25)

    def epoch(workers, seed=3):
        gen = torch.Generator().manual_seed(seed)
        reads = list(batches(b.train_x, batch_size=8, gen=gen, augment=True, workers=workers))
        return torch.cat([r.index for r in reads]), torch.cat([r.images for r in reads])

    (i0, x0), (i2, x2), (j, _) = epoch(0), epoch(2), epoch(0, seed=4)
    assert torch.equal(i0, i2) and torch.equal(x0, x2)
    assert sorted(i0.tolist()) == list(range(36)) and not torch.equal(i0, j)
    assert x0.dtype == torch.uint8 and x0.shape == (36, 3, 32, 32)


def test_shards_hold_the_same_images_as_the_folders(tmp_path, folder_set):
    write_shards(tmp_path / "gen", tmp_path / "shards" / "gen")
    shard_set = StreamedImages("gen", folder="gen", recipe=ImageRecipe(size=32, resize=36))
    a = folder_set(root=tmp_path, val_fraction=0.25)
    b = shard_set(root=tmp_path / "shards", val_fraction=0.25)
    assert b.sizes() == a.sizes() and torch.equal(a.train_y, b.train_y)
    assert len(b.train_x.source.shards) == 5  # 48 images, 10 a shard

    def split(bundle, name):
        reads = list(batches(getattr(bundle, f"{name}_x"), batch_size=7, workers=2))
        order = torch.cat([r.index for r in reads]).argsort()
        return torch.cat([r.images for r in reads])[order]

    for name in ("train", "val", "test"):
        assert torch.equal(split(a, name), split(b, name)), name
    gen = torch.Generator().manual_seed(0)
    shuffled = torch.cat([r.index for r in batches(b.train_x, batch_size=8, gen=gen, workers=2)])
    assert sorted(shuffled.tolist()) == list(range(36))


@pytest.mark.slow
def test_shards_are_read_from_an_s3_uri(tmp_path, folder_set, s3):  # noqa: F811
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3, scheme="http", region="us-east-1")
    write_shards(tmp_path / "gen", tmp_path / "shards")
    for f in sorted((tmp_path / "shards").iterdir()):
        with fs.open_output_stream(f"bench/data/gen/{f.name}") as out:
            out.write(f.read_bytes())
    remote = folder_set(root=uri(s3, "data"), val_fraction=0.25)
    local = folder_set(root=tmp_path, val_fraction=0.25)
    assert remote.sizes() == local.sizes() and torch.equal(remote.test_y, local.test_y)
    reads = list(batches(remote.test_x, batch_size=16, workers=1))
    assert sum(len(r.index) for r in reads) == 16


def test_bad_files_give_one_line_or_a_recorded_skip(tmp_path, folder_set, caplog):
    with pytest.raises(KdbenchError, match=r"no images at .*gen; put train/<class>/"):
        folder_set(root=tmp_path / "nowhere")
    write_folders(tmp_path / "gen")
    (tmp_path / "gen" / "train" / "n000" / "3.JPEG").write_bytes(b"not a jpeg at all")
    (tmp_path / "gen" / "train" / "n001" / "notes.txt").write_text("not an image")
    os.symlink(tmp_path / "gen" / "train", tmp_path / "gen" / "train" / "n002" / "loop")
    b = folder_set(root=tmp_path, val_fraction=0.25)
    assert "2 entries under" in caplog.text and "notes.txt" in caplog.text  # and the loop
    assert b.sizes() == {"train": 36, "val": 12, "test": 16}  # the loop walked once
    reads = list(batches(b.train_x.cat(b.val_x), batch_size=64))
    assert sum(r.skipped for r in reads) == 1 and sum(len(r.index) for r in reads) == 47
    assert "cannot decode it" in caplog.text and "3.JPEG" in caplog.text
    (tmp_path / "gen" / "train" / "n003").mkdir(exist_ok=True)
    for f in (tmp_path / "gen" / "train" / "n003").iterdir():
        f.unlink()
    with pytest.raises(KdbenchError, match=r"n003 holds no images") as err:
        folder_set(root=tmp_path)
    assert "\n" not in str(err.value)


def test_a_flat_imagenet_val_folder_is_refused_with_what_to_do(tmp_path, folder_set):
    write_folders(tmp_path / "gen")
    for d in list((tmp_path / "gen" / "val").iterdir()):
        for f in d.iterdir():
            f.rename(tmp_path / "gen" / "val" / f"{d.name}_{f.name}")
        d.rmdir()
    with pytest.raises(KdbenchError, match=r"val/ comes flat.*class folder"):
        folder_set(root=tmp_path)


def test_imagenet_is_declared_so_a_plan_needs_no_files_and_a_subset_is_refused(tmp_path):
    from kdbench.data import dataset_info

    info = dataset_info("imagenet", tmp_path)
    assert (info.num_classes, info.train, info.test) == (1000, 1_281_167, 50_000)
    write_folders(tmp_path / "imagenet")
    with pytest.raises(KdbenchError, match=r"holds 4 classes.*imagenet has 1,000.*own name"):
        DATASETS.get("imagenet")(root=tmp_path)


def test_tiny_imagenet_reads_its_released_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    lines = []
    for c in ("n01443537", "n01629819"):
        d = base / "train" / c / "images"
        d.mkdir(parents=True)
        for i in range(5):
            (d / f"{c}_{i}.JPEG").write_bytes(jpeg(rng, np.array([90, 90, 90]), (64, 64)))
    (base / "val" / "images").mkdir(parents=True)
    for i, c in enumerate(("n01629819", "n01443537", "n01629819")):
        (base / "val" / "images" / f"val_{i}.JPEG").write_bytes(jpeg(rng, np.zeros(3), (64, 64)))
        lines.append(f"val_{i}.JPEG\t{c}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    b = DATASETS.get("tiny_imagenet")(root=tmp_path, val_fraction=0.2)
    assert not b.streamed and b.input_shape == (3, 64, 64) and b.num_classes == 2
    assert b.sizes() == {"train": 8, "val": 2, "test": 3} and b.test_y.tolist() == [1, 0, 1]
    with pytest.raises(KdbenchError, match=r"no Tiny-ImageNet at .*unzip tiny-imagenet-200.zip"):
        DATASETS.get("tiny_imagenet")(root=tmp_path / "nowhere")


def test_a_method_that_needs_the_images_in_memory_is_refused_on_a_streamed_set():
    from kdbench.validation import parse_suite

    raw = {
        "name": "s",
        "datasets": ["imagenet"],
        "pairs": [{"teacher": "resnet34", "student": "resnet18"}],
        "methods": ["kd", "dd_dm"],
        "seeds": [0],
        "tuning": {"trials": 0},
    }
    with pytest.raises(
        SuiteError, match=r"methods\[1\]: 'dd_dm' cannot run on imagenet.*in memory"
    ):
        parse_suite(raw)
    parse_suite({**raw, "methods": ["kd", "at", "dd_sre2l"]})  # sre2l reads no training image


def test_pretrained_weights_are_found_in_the_librarys_cache_and_checked(tmp_path, monkeypatch):
    from kdbench.validation import missing_weights, parse_suite

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    raw = {
        "name": "p",
        "datasets": ["imagenet"],
        "pairs": [
            {
                "teacher": {"arch": "torchvision:resnet34", "weights": "IMAGENET1K_V1"},
                "student": "resnet18",
            }
        ],
        "methods": ["kd"],
        "seeds": [0],
        "tuning": {"trials": 0},
    }
    suite = parse_suite(raw)  # a plan needs no file: the id is the published hash
    ref = suite.pairs[0].teacher
    assert ref.digest == "b627a593" and ref.checkpoint.endswith("checkpoints/resnet34-b627a593.pth")
    with pytest.raises(KdbenchError, match=r"put resnet34-b627a593.pth in .*torch/hub/checkpoints"):
        missing_weights(suite)
    from kdbench.plan import expand

    assert expand(suite).teachers[0].epochs == 0
    path = tmp_path / "torch" / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    path.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, path)  # not the published file
    with pytest.raises(SuiteError, match=r"weights: .*does not start with b627a593"):
        parse_suite(raw)
    bad = {
        **raw,
        "pairs": [
            {"teacher": {"arch": "torchvision:resnet34", "weights": "V9"}, "student": "resnet18"}
        ],
    }
    with pytest.raises(SuiteError, match=r"no weights 'V9'; valid: IMAGENET1K_V1"):
        parse_suite(bad)


@pytest.mark.slow
def test_a_generated_imagenet_folder_runs_end_to_end_with_a_local_pretrained_teacher(
    ray_local, tmp_path, monkeypatch
):
    """20 classes × 40 JPEGs of 256 px, torchvision's ResNet-18 architecture as teacher (a
    torchvision state dict on disk, standing for pretrained weights) and student."""
    import torchvision

    from kdbench.results import load
    from kdbench.scheduler.driver import run_suite
    from kdbench.validation import parse_suite

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 255, (20, 3))
    for split, n in (("train", 40), ("val", 10)):
        for c in range(20):
            d = tmp_path / "data" / "gen20" / split / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{i}.JPEG").write_bytes(jpeg(rng, colours[c], (256, 256)))
    gen20 = StreamedImages("gen20", folder="gen20", recipe=ImageRecipe(64, 73))
    DATASETS.get("digits")  # the built-in families first, then this test's own, for this test
    monkeypatch.setitem(DATASETS._entries, "gen20", gen20)
    torch.save(torchvision.models.resnet18(num_classes=20).state_dict(), tmp_path / "r18.pth")
    suite = parse_suite(
        {
            "name": "gen20",
            "datasets": ["gen20"],
            "data": {"root": str(tmp_path / "data")},
            "pairs": [
                {
                    "teacher": {"arch": "resnet18", "checkpoint": str(tmp_path / "r18.pth")},
                    "student": "resnet18",
                }
            ],
            "methods": ["kd"],
            "seeds": [0],
            "budget": {"epochs": 1, "batch_size": 64},
            "tuning": {"trials": 0},
        }
    )
    summary = run_suite(suite, tmp_path / "results", live=False)
    assert summary.failed == 0
    rows = load(tmp_path / "results").set_index("method")
    assert rows.loc["kd", "images_seen"] == 720 and rows.loc["kd", "skipped_images"] == 0
    assert rows.loc["teacher", "status"] == "ok" and 0 <= rows.loc["kd", "test_acc"] <= 1


def run_benchmark(script: str, *args: str) -> str:
    """A benchmark script's output, run as a user runs it."""
    import subprocess
    import sys

    from tests.conftest import REPO

    command = [sys.executable, str(REPO / "benchmarks" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout


@pytest.mark.slow
def test_the_input_pipeline_benchmark_runs_at_a_tiny_size():
    out = run_benchmark("input_pipeline.py", "--images", "12")
    last = out.strip().splitlines()[-1]
    assert last.startswith("pipeline: folder ") and "img/s/core" in last and "shards" in last


@pytest.mark.slow
def test_the_streamed_vs_memory_benchmark_runs_at_a_tiny_size():
    out = run_benchmark(
        "streamed_vs_memory.py",
        *("--synthetic", "--train-images", "300", "--seeds", "0", "--epochs", "1"),
        *("--memory-images", "200"),
    )
    last = out.strip().splitlines()[-1]
    assert last.startswith("streamed vs memory: max |Δ acc|") and "peak memory streamed" in last
    assert "folder" in out and "shards" in out and "memory" in out


def test_timm_pretrained_weights_come_from_the_hub_cache_with_the_files_hash_as_id(
    tmp_path, monkeypatch
):
    import hashlib

    import timm
    from safetensors.torch import save_file

    from kdbench.models import build_model
    from kdbench.plan import expand
    from kdbench.training.weights import load_into, load_weights, read_checkpoint
    from kdbench.validation import parse_suite

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    raw = {
        "name": "t",
        "datasets": ["synthetic"],
        "pairs": [
            {"teacher": {"arch": "timm:test_resnet", "weights": "r160_in1k"}, "student": "cnn_tiny"}
        ],
        "methods": ["kd"],
        "seeds": [0],
        "tuning": {"trials": 0},
    }
    with pytest.raises(SuiteError, match=r"put model.safetensors in .*models--timm--test_resnet"):
        parse_suite(raw)  # timm publishes no hash: the file must be there for a plan
    folder = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k" / "snapshots" / "abc123"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=4, in_chans=1)
    save_file(net.state_dict(), folder / "model.safetensors")
    suite = parse_suite(raw)
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert expand(suite).teachers[0].checkpoint_sha256 == sha
    teacher = build_model("timm:test_resnet", num_classes=4, input_shape=(1, 8, 8))
    load_into(teacher, load_weights(read_checkpoint(str(folder / "model.safetensors"))))
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(teacher.eval()(x), net.eval()(x), atol=1e-5)
