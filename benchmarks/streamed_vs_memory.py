"""The same suite trained from memory, from a folder of PNG files and from tar shards.

Part 1, accuracy and speed: the real Fashion-MNIST (Debian's ``dataset-fashion-mnist``, or
``--synthetic`` for a stand-in of the same shape) written out as class folders of PNG files
and as WebDataset shards, registered as two streamed data sets with the in-memory loader's
own augmentation (crop after padding by 2, flip), and one suite (cnn_small → cnn_tiny,
scratch and kd, lr 0.02, ``--seeds`` seeds, ``--epochs`` epochs, the first
``--train-images`` training images and the whole test set) run through the real driver on each
of the three. Prints each layout's test accuracy per method (mean ± std over seeds) and its
training throughput (images/s of the finals' epochs).

Part 2, memory: ``--memory-images`` generated 64 × 64 JPEGs, cnn_tiny trained on them for one
epoch in a fresh process, once from the in-memory ``ImageFolder`` and once from a streamed
folder; prints each process's peak resident memory (the kernel's ``VmHWM``, as every trial
row records it).

Last line: ``streamed vs memory: max |Δ acc| X pp (seed std Y pp); throughput folder A×,
shards B× of memory; peak memory streamed S MB vs in-memory M MB``.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np
import torch
from PIL import Image


def fashion_mnist(synthetic: bool, limit: int | None):
    """(train x, train y, test x, test y) as uint8 (N, 1, 28, 28)."""
    if synthetic:
        g = torch.Generator().manual_seed(0)
        n, m = limit or 6000, max(1000, (limit or 6000) // 6)
        proto = torch.rand(10, 1, 28, 28, generator=g)

        def make(k):
            y = torch.arange(k) % 10
            x = (proto[y] * 200 + torch.rand(k, 1, 28, 28, generator=g) * 55).to(torch.uint8)
            return x, y

        return (*make(n), *make(m))
    from kdbench.data.debian import mnist_family

    found = mnist_family("dataset-fashion-mnist")
    if found is None:
        raise SystemExit("install Debian's dataset-fashion-mnist, or pass --synthetic")
    tx, ty, vx, vy = found
    if limit:  # the first N: Fashion-MNIST's training file is in no class order
        tx, ty = tx[:limit], ty[:limit]
    return tx, ty, vx, vy


def write_layouts(root: Path, tx, ty, vx, vy) -> None:
    import webdataset as wds

    (root / "shards" / "fm").mkdir(parents=True)
    for split, x, y in (("train", tx, ty), ("val", vx, vy)):
        pattern = str(root / "shards" / "fm" / f"{split}-%04d.tar")
        with wds.ShardWriter(pattern, maxcount=5000, verbose=0) as w:
            for i in range(len(y)):
                buf = io.BytesIO()
                Image.fromarray(x[i, 0].numpy()).save(buf, "PNG")
                label = int(y[i])
                d = root / "folders" / "fm" / split / f"{label}"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{i:06d}.png").write_bytes(buf.getvalue())
                w.write({"__key__": f"{split}{i:06d}", "png": buf.getvalue(), "cls": label})


def register(tx, ty, vx, vy) -> None:
    from kdbench.data import DATASETS
    from kdbench.data.base import AugmentSpec, carve_val
    from kdbench.data.stream import ImageRecipe
    from kdbench.data.streamed import StreamedImages

    recipe = ImageRecipe(size=28, train="crop_flip", pad=2, flip=True, channels=1)

    def memory(*, root, val_fraction=0.1):
        return carve_val(
            "fm_memory",
            tx,
            ty,
            vx,
            vy,
            val_fraction=val_fraction,
            num_classes=10,
            augment=AugmentSpec(pad=2, flip=True),
        )

    DATASETS.add("fm_memory", memory)
    DATASETS.add("fm_folder", StreamedImages("fm_folder", folder="fm", recipe=recipe))
    DATASETS.add("fm_shards", StreamedImages("fm_shards", folder="fm", recipe=recipe))


def run(name: str, dataset: str, root: Path, seeds: list[int], epochs: int, out: Path):
    from kdbench.results import load
    from kdbench.scheduler.driver import run_suite
    from kdbench.validation import parse_suite

    suite = parse_suite(
        {
            "name": name,
            "datasets": [dataset],
            "data": {"root": str(root), "val_fraction": 0.1},
            "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
            "methods": ["kd"],
            "seeds": seeds,
            "budget": {"epochs": epochs, "batch_size": 256, "lr": 0.02},
            "teacher": {"epochs": epochs},
            "tuning": {"trials": 0},
        }
    )
    run_suite(suite, out, live=False)
    return load(out)


def part1(args, tmp: Path) -> tuple[float, float, dict[str, float]]:
    tx, ty, vx, vy = fashion_mnist(args.synthetic, args.train_images)
    t0 = time.perf_counter()
    write_layouts(tmp, tx, ty, vx, vy)
    print(
        f"{len(ty):,} training and {len(vy):,} test images written as PNG folders and "
        f"shards in {time.perf_counter() - t0:.0f} s"
    )
    register(tx, ty, vx, vy)
    layouts = {
        "memory": ("fm_memory", tmp),
        "folder": ("fm_folder", tmp / "folders"),
        "shards": ("fm_shards", tmp / "shards"),
    }
    accs: dict[str, dict[str, list[float]]] = {}
    speed: dict[str, float] = {}
    for layout, (dataset, root) in layouts.items():
        rows = run(f"fm_{layout}", dataset, root, args.seeds, args.epochs, tmp / f"res_{layout}")
        finals = rows[rows["phase"] == "final"]
        bad = rows[rows["status"] != "ok"]
        if len(bad):
            raise SystemExit(f"{layout}: {len(bad)} failed trials: {bad['error'].tolist()[:1]}")
        accs[layout] = {m: g["test_acc"].tolist() for m, g in finals.groupby("method")}
        speed[layout] = finals["images_seen"].sum() / finals["train_seconds"].sum()
    print(f"{'layout':8} {'method':8} {'test acc (mean ± std over seeds)':34} images/s")
    spread, diff = 0.0, 0.0
    for layout in layouts:
        for m, a in sorted(accs[layout].items()):
            arr = np.array(a) * 100
            spread = max(spread, float(arr.std(ddof=1)) if len(arr) > 1 else 0.0)
            diff = max(diff, abs(arr.mean() - np.mean(accs["memory"][m]) * 100))
            print(
                f"{layout:8} {m:8} {arr.mean():6.2f} ± {arr.std(ddof=1) if len(arr) > 1 else 0:4.2f} "
                f"({', '.join(f'{v:.2f}' for v in arr)}){'':4} {speed[layout]:8,.0f}"
            )
    return diff, spread, speed


def one_epoch(kind: str, root: str) -> None:
    """In a fresh process: load the generated set ``kind`` (memory or streamed), train
    cnn_tiny on it for one epoch, print the process's peak resident memory before loading
    and at the end (the kernel's VmHWM) and the epoch's seconds."""
    from kdbench.data.imagefolder import ImageFolder
    from kdbench.data.stream import ImageRecipe
    from kdbench.data.streamed import StreamedImages
    from kdbench.methods import MethodContext, method_class
    from kdbench.models import build_model
    from kdbench.spec import Budget
    from kdbench.training.loop import fit
    from kdbench.training.trial import _peak_rss

    torch.set_num_threads(1)
    base = _peak_rss() / 2**20
    if kind == "memory":
        data = ImageFolder("gen_memory", size=64, folder="imgs")(root=Path(root))
    else:
        recipe = ImageRecipe(size=64, train="crop_flip", pad=8)
        data = StreamedImages("gen_streamed", folder="imgs", recipe=recipe)(root=Path(root))
    model = build_model("cnn_tiny", num_classes=data.num_classes, input_shape=data.input_shape)
    cls = method_class("scratch")
    method = cls(cls.defaults(), MethodContext.for_data(model, None, data, torch.device("cpu")))
    t0 = time.perf_counter()
    fit(
        model,
        data,
        method=method,
        budget=Budget(epochs=1, batch_size=256),
        epochs=1,
        seed=0,
        augment=True,
    )
    print(f"{base:.0f} {_peak_rss() / 2**20:.0f} {time.perf_counter() - t0:.1f}")


def part2(args, tmp: Path) -> tuple[float, float]:
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    n = args.memory_images
    t0 = time.perf_counter()
    for split, k in (("train", n), ("test", max(100, n // 50))):
        for i in range(k):
            d = tmp / "gen" / "imgs" / split / f"c{i % 10}"
            d.mkdir(parents=True, exist_ok=True)
            arr = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(arr).resize((64, 64)).save(d / f"{i}.jpg", quality=90)
    print(f"{n:,} generated 64×64 JPEGs written in {time.perf_counter() - t0:.0f} s")
    peaks = {}
    for kind in ("memory", "streamed"):
        out = subprocess.run(
            [sys.executable, __file__, "--one-epoch", kind, str(tmp / "gen")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        base, peak, seconds = float(out[-3]), float(out[-2]), float(out[-1])
        peaks[kind] = peak
        print(
            f"{kind:9} one epoch of {n:,} images (cnn_tiny, one process): peak resident "
            f"memory {peak:,.0f} MB ({base:,.0f} MB before loading the data), {seconds:.0f} s"
        )
    return peaks["streamed"], peaks["memory"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-images", type=int, default=15_000, help="the first N (0: all 60,000)")
    ap.add_argument("--memory-images", type=int, default=50_000)
    ap.add_argument("--synthetic", action="store_true", help="a stand-in for Fashion-MNIST")
    ap.add_argument("--one-epoch", nargs=2, metavar=("KIND", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_epoch:
        return one_epoch(*args.one_epoch)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            diff, spread, speed = part1(args, Path(tmp))
            streamed, memory = part2(args, Path(tmp))
    finally:
        ray.shutdown()
    print(
        f"streamed vs memory: max |Δ acc| {diff:.2f} pp (seed std {spread:.2f} pp); throughput "
        f"folder {speed['folder'] / speed['memory']:.2f}×, shards "
        f"{speed['shards'] / speed['memory']:.2f}× of memory; peak memory streamed "
        f"{streamed:,.0f} MB vs in-memory {memory:,.0f} MB"
    )


if __name__ == "__main__":
    main()
