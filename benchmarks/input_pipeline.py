"""The streamed input pipeline's throughput against the decoder's own rate, per core.

Writes ``--images`` ImageNet-like JPEGs (``--width`` × ``--height``, 500 × 375 by default,
ImageNet's median) once as class folders and once as WebDataset shards, then measures on
one core (one loader process, ``torch`` on one thread):

- the decoders alone on the same bytes: TorchCodec's (the one kdbench uses) and Pillow's;
- kdbench's pipeline (``kdbench.data.stream.batches``) from each layout, in ImageNet's
  training view (RandomResizedCrop 224 + flip) and its evaluation view (Resize 256 +
  CenterCrop 224): file reading, decoding, augmentation and batching, in a worker process;
- the resident memory of the process that reads a streamed split (the file list only)
  against the same split held in memory as uint8 tensors at 224.

Prints images per second per core for each and the pipeline's share of the decoder's rate
(the limit: nothing can read faster than it decodes). Last line:
``pipeline: folder X img/s/core (Y% of decode), shards Z img/s/core (W%)``.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_images(root: Path, n: int, size: tuple[int, int], classes: int = 10) -> list[bytes]:
    """``n`` ImageNet-like JPEGs of ``size``, each written to ``root/folders/{train,val}/c<k>/``
    (gpu_check writes its ImageNet-shaped folder with this too); their bytes, in order."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-20, 20, (size[1], size[0], 3))
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        for split in ("train", "val"):
            d = root / "folders" / split / f"c{i % classes:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i}.JPEG").write_bytes(data)
        out.append(data)
    return out


def write_shards(root: Path) -> None:
    import webdataset as wds

    (root / "shards").mkdir()
    for split in ("train", "val"):
        classes = sorted(p.name for p in (root / "folders" / split).iterdir())
        pattern = str(root / "shards" / f"{split}-%04d.tar")
        with wds.ShardWriter(pattern, maxcount=100, verbose=0) as w:
            for label, c in enumerate(classes):
                for f in sorted((root / "folders" / split / c).iterdir()):
                    w.write({"__key__": f"{c}_{f.stem}", "jpg": f.read_bytes(), "cls": label})


def rate(fn, items, repeats: int = 3) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in items:
            fn(b)
        best = max(best, len(items) / (time.perf_counter() - t0))
    return best


def decoders(jpegs: list[bytes]) -> dict[str, float]:
    from kdbench.data.stream import _decode_pil, decode

    return {
        "torchcodec decode": rate(lambda b: decode(b, 3), jpegs),
        "pillow decode": rate(lambda b: _decode_pil(b, 3, ""), jpegs),
    }


def pipeline(stream, augment: bool, repeats: int = 2) -> float:
    from kdbench.data.stream import batches

    best = 0.0
    for r in range(repeats):
        gen = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        n = sum(
            len(read.index)
            for read in batches(stream, batch_size=64, gen=gen, augment=augment, workers=1)
        )
        best = max(best, n / (time.perf_counter() - t0))
    return best


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--height", type=int, default=375)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from kdbench.data.imagenet import IMAGENET_RECIPE
    from kdbench.data.stream import IMAGENET_MEAN, IMAGENET_STD
    from kdbench.data.streamed import StreamedImages

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        jpegs = write_images(root, args.images, (args.width, args.height))
        write_shards(root)
        kb = np.mean([len(j) for j in jpegs]) / 1024
        print(
            f"{args.images} JPEGs of {args.width}×{args.height} ({kb:.0f} KB each) written "
            f"as folders and shards in {time.perf_counter() - t0:.1f} s"
        )
        rates = decoders(jpegs[: min(300, len(jpegs))])
        limit = rates["torchcodec decode"]
        before = rss_mb()
        bundles = {
            layout: StreamedImages(
                "bench", folder=layout, recipe=IMAGENET_RECIPE, mean=IMAGENET_MEAN, std=IMAGENET_STD
            )(root=root, val_fraction=0.0 + 1 / args.images)
            for layout in ("folders", "shards")
        }
        streamed_mb = rss_mb() - before
        results = {}
        for layout, b in bundles.items():
            stream = b.train_x.cat(b.val_x)
            results[f"{layout}: train view (RRC 224 + flip)"] = pipeline(stream, True)
            results[f"{layout}: eval view (256 → 224)"] = pipeline(stream, False)
        print(f"{'what (one core)':42} {'img/s':>8} {'of decode':>10}")
        for name, r in {**rates, **results}.items():
            print(f"{name:42} {r:8.0f} {100 * r / limit:9.0f}%")
        in_memory_mb = args.images * 3 * 224 * 224 / 2**20
        print(
            f"memory for {args.images} training images: streamed {max(streamed_mb, 0):.1f} MB "
            f"(the file lists of both layouts), in memory {in_memory_mb:.0f} MB as uint8 at 224"
        )
        folder = results["folders: train view (RRC 224 + flip)"]
        shards = results["shards: train view (RRC 224 + flip)"]
        print(
            f"pipeline: folder {folder:.0f} img/s/core ({100 * folder / limit:.0f}% of decode), "
            f"shards {shards:.0f} img/s/core ({100 * shards / limit:.0f}%)"
        )


if __name__ == "__main__":
    main()
