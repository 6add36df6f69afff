"""Where a streamed split's images come from: a folder's files, or WebDataset tar shards.

**Files** (``FolderSource``): one file per image, read by path; a batch is any set of files,
so an epoch is a permutation of the split, cut into batches that the loader's workers read
side by side.

**Shards** (``ShardSource``): tar archives in the WebDataset layout that large-scale training
uses: each sample is a group of members sharing a key, its image (``.jpg``, ``.jpeg``,
``.png``, ``.webp``) and its label (``.cls``, the class index as text), as
``webdataset.ShardWriter`` writes them. They are read with WebDataset's tar reader
(``webdataset.tariterators``), from a local folder or from any file system pyarrow opens from
a URI (``s3://bucket/prefix?endpoint_override=…``). A shard is read from start to end, so an
epoch is a permutation of the shards, split among the workers, each shuffling what it reads
in a buffer of ``SHUFFLE_BUFFER`` images. ``val`` is carved from the training shards by
sample (the fixed split seed, stratified, as for every data set): both splits read every
training shard, and each decodes only its own images.

A shard set's index (the number of samples in each shard and their labels) takes one read
of every shard; it is kept in ``~/.cache/kdbench/shard-index/``, keyed by the shards' names,
sizes and modification times, so it is made once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from kdbench.data.stream import ImageStream, Read, collate, view
from kdbench.errors import KdbenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
SHUFFLE_BUFFER = 2048


# ---- folders -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FolderSource:
    """Image files under ``base``: ``files[i]`` is image ``i``'s path relative to it (stored
    as one byte array, not a million Python strings)."""

    base: str
    files: np.ndarray

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> str:
        return os.path.join(self.base, self.files[i].decode())

    def dataset(
        self, stream: ImageStream, *, batch_size: int, gen: torch.Generator | None, augment: bool
    ) -> Dataset:
        n = len(stream)
        order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
        seeds = (
            torch.randint(0, 2**62, (n,), generator=gen) if augment and gen is not None else None
        )
        return _FolderBatches(self, stream, order, seeds, batch_size)


class _FolderBatches(Dataset):
    """Batch ``b`` of one pass: the files at ``order[b·size : (b+1)·size]``."""

    def __init__(self, source, stream, order, seeds, batch_size) -> None:
        self.source, self.stream = source, stream
        self.order, self.seeds, self.batch_size = order, seeds, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, b: int) -> Read:
        ks = self.order[b * self.batch_size : (b + 1) * self.batch_size].tolist()
        items = []
        for k in ks:
            path = self.source.path(int(self.stream.positions[k]))
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise KdbenchError(f"cannot read {path}: {exc.strerror or exc}") from None
            seed = int(self.seeds[k]) if self.seeds is not None else None
            items.append((k, view(data, self.stream, seed, path)))
        return collate(items, self.stream.recipe)


@dataclass
class Listing:
    """What a walk of a split's class folders found."""

    files: list[str]
    labels: list[int]
    ignored: list[str]
    """Files that are not images by their extension (not counted), relative paths."""


def list_class_folders(split_dir: Path, classes: list[str], name: str) -> Listing:
    """The images of each class folder (any depth below it, sorted, torchvision's walk),
    relative to ``split_dir``'s parent. A link to a folder already walked (a loop) is not
    followed twice; an empty class is refused."""
    files: list[str] = []
    labels: list[int] = []
    ignored: list[str] = []
    root = split_dir.parent
    for label, cls in enumerate(classes):
        found, other = walk_images(split_dir / cls)
        if not found:
            raise KdbenchError(
                f"data set '{name}': {split_dir / cls} holds no images "
                f"({' '.join(IMAGE_EXTENSIONS)})"
            )
        files.extend(os.path.relpath(f, root) for f in found)
        labels.extend([label] * len(found))
        ignored.extend(os.path.relpath(f, root) for f in other)
    return Listing(files, labels, ignored)


def class_names(directory: Path) -> list[str]:
    """Sub-folder names, sorted: torchvision's ``find_classes``."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir())


def walk_images(directory: Path) -> tuple[list[str], list[str]]:
    """(image files, other entries) below ``directory``, sorted; only regular files count as
    images. Links to folders are followed while they stay inside ``directory``'s own tree
    and lead to a folder not walked yet: a link back up (a loop) or out to another class
    would count images twice or under the wrong label, and is reported instead."""
    images: list[str] = []
    other: list[str] = []
    top = os.path.realpath(directory)
    seen: set[str] = set()
    for parent, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(parent)
        inside = real == top or real.startswith(top + os.sep)
        if real in seen or not inside:
            other.append(parent)
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for n in sorted(names):
            path = os.path.join(parent, n)
            if os.path.isfile(path) and n.lower().endswith(IMAGE_EXTENSIONS):
                images.append(path)
            else:  # not an image by its extension, or a pipe, a socket, a dangling link
                other.append(path)
    return sorted(images), other


def folder_source(base: Path, files: list[str]) -> FolderSource:
    return FolderSource(str(base), np.array([f.encode() for f in files], dtype=bytes))


# ---- shards ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ShardSource:
    """WebDataset shards at ``location`` (a folder or a URI): ``shards[i]`` holds
    ``counts[i]`` samples; sample positions run through the shards in order."""

    location: str
    shards: tuple[str, ...]
    counts: tuple[int, ...]

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def starts(self) -> list[int]:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(int).tolist()

    def dataset(
        self, stream: ImageStream, *, batch_size: int, gen: torch.Generator | None, augment: bool
    ) -> IterableDataset:
        if gen is not None:
            order = torch.randperm(len(self.shards), generator=gen).tolist()
            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        else:
            order, seed = list(range(len(self.shards))), None
        return _ShardBatches(self, stream, order, seed, augment, batch_size)


class _ShardBatches(IterableDataset):
    """One pass: worker ``w`` of ``W`` reads the shards at ``order[w::W]``, shuffled in a
    buffer when the pass has a ``seed`` (an epoch)."""

    def __init__(self, source, stream, order, seed, augment, batch_size) -> None:
        self.source, self.stream, self.augment = source, stream, augment
        self.order, self.seed, self.batch_size = order, seed, batch_size
        # A source position -> its index in the split (-1: not in this split).
        self.split_index = np.full(len(source), -1, dtype=np.int64)
        self.split_index[stream.positions.numpy()] = np.arange(len(stream))

    def __iter__(self) -> Iterator[Read]:
        info = get_worker_info()
        w, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shuffle = self.seed is not None
        rng = random.Random(f"{self.seed}:{w}")
        buffer: list[tuple[int, bytes, str]] = []
        batch: list[tuple[int, torch.Tensor | None]] = []
        starts = self.source.starts
        for s in self.order[w::n_workers]:
            samples = shard_samples(self.source.location, self.source.shards[s])
            for offset, (key, data, _label) in enumerate(samples):
                position = starts[s] + offset
                k = int(self.split_index[position])
                if k < 0:
                    continue
                where = f"{self.source.shards[s]}:{key}"
                if not shuffle:
                    batch.append(self._view(k, data, where))
                elif len(buffer) < SHUFFLE_BUFFER:
                    buffer.append((k, data, where))
                    continue
                else:
                    i = rng.randrange(len(buffer))
                    buffer[i], item = (k, data, where), buffer[i]
                    batch.append(self._view(*item))
                if len(batch) == self.batch_size:
                    yield collate(batch, self.stream.recipe)
                    batch = []
        rng.shuffle(buffer)
        for item in buffer:
            batch.append(self._view(*item))
            if len(batch) == self.batch_size:
                yield collate(batch, self.stream.recipe)
                batch = []
        if batch:
            yield collate(batch, self.stream.recipe)

    def _view(self, k: int, data: bytes, where: str) -> tuple[int, torch.Tensor | None]:
        seed = None
        if self.augment and self.seed is not None:
            seed = (self.seed * 1_000_003 + int(self.stream.positions[k])) % 2**62
        return k, view(data, self.stream, seed, where)


def _open(location: str, name: str) -> Any:
    if "://" in location:
        fs, base = _filesystem(location)
        return fs.open_input_stream(f"{base}/{name}")
    return open(os.path.join(location, name), "rb")


def _filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, base = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        raise KdbenchError(f"{uri}: cannot open this data location ({reason})") from None
    return fs, base.rstrip("/")


def shard_samples(location: str, name: str) -> Iterator[tuple[str, bytes, int | None]]:
    """(key, image bytes, label or None) of each sample of a shard; a sample without an image
    is refused in one line naming the shard and the key."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    try:
        with _open(location, name) as f:
            members = ({**m, "__url__": name} for m in tar_file_iterator(f))
            for sample in group_by_keys(members):
                key = sample["__key__"]
                image = next((sample[e] for e in SHARD_IMAGE_KEYS if e in sample), None)
                if image is None:
                    raise KdbenchError(
                        f"shard {name} at {location}: sample '{key}' has no image member "
                        f"(.{', .'.join(SHARD_IMAGE_KEYS)}); found .{', .'.join(_exts(sample))}"
                    )
                label = sample.get("cls")
                yield key, image, None if label is None else int(label.decode().strip())
    except KdbenchError:
        raise
    except (OSError, EOFError, ValueError, tarfile.TarError) as exc:
        raise KdbenchError(f"shard {name} at {location}: cannot read it ({exc})") from None


def _exts(sample: dict[str, Any]) -> list[str]:
    return sorted(k for k in sample if not k.startswith("__"))


def list_shards(location: str, pattern: str) -> list[tuple[str, int, int]]:
    """(name, size, mtime ns) of the ``*.tar`` files at ``location`` whose name contains
    ``pattern``, sorted by name."""
    if "://" in location:
        import pyarrow.fs as pafs

        fs, base = _filesystem(location)
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        found = [
            (i.base_name, i.size or 0, i.mtime_ns or 0)
            for i in infos
            if i.type == pafs.FileType.File
        ]
    else:
        if not os.path.isdir(location):
            return []
        found = []
        for e in os.scandir(location):
            if e.is_file():
                st = e.stat()
                found.append((e.name, st.st_size, st.st_mtime_ns))
    return sorted(f for f in found if f[0].endswith(".tar") and pattern in f[0])


def shard_index(location: str, shards: list[tuple[str, int, int]], name: str) -> list[list[int]]:
    """The labels of each shard's samples, in order: read once, then kept in the cache."""
    key = hashlib.sha256(
        json.dumps([location.split("?")[0], shards], sort_keys=True).encode()
    ).hexdigest()[:32]
    cache = index_dir() / f"{key}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    labels: list[list[int]] = []
    for shard, _size, _mtime in shards:
        these = []
        for key_, _image, label in shard_samples(location, shard):
            if label is None:
                raise KdbenchError(
                    f"data set '{name}': sample '{key_}' of shard {shard} at {location} has no "
                    "label (.cls member, the class index as text)"
                )
            these.append(label)
        labels.append(these)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(labels))
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: the index is made again next time
    return labels


def index_dir() -> Path:
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdbench" / "shard-index"
    )
