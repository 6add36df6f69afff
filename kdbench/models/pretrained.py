"""Pretrained teachers: a library's published weights, found in that library's own cache.

A suite names them on a pair's teacher, ``{arch: "torchvision:resnet34", weights:
IMAGENET1K_V1}``, or for timm ``{arch: "timm:resnet18", weights: a1_in1k}`` (the pretrained
tag, what timm writes after the dot in ``resnet18.a1_in1k``). Nothing is downloaded: kdbench
runs where a cluster's nodes may have no internet. The file is looked for where the library
itself keeps it once it has downloaded it:

- torchvision: ``<torch hub dir>/checkpoints/<file>`` (``torch.hub.get_dir()``:
  ``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``), the file named by the weights'
  URL (``resnet34-b627a593.pth``). The hex digits in the name are the start of the file's
  SHA-256, which torchvision checks on download and kdbench on loading; they are also the
  teacher's id, so a plan (``--dry-run``) is the same before the file is there and after.
- timm: the Hugging Face hub cache (``$HF_HUB_CACHE``, by default
  ``~/.cache/huggingface/hub``), ``models--timm--<name>.<tag>/snapshots/*/model.safetensors``
  or ``pytorch_model.bin``; its id is the file's SHA-256 (timm publishes none), so the file
  must be there for a plan.

A missing file is one line naming the file and the folder it is expected in.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kdbench.errors import KdbenchError

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
"""The torchvision architectures kdbench wraps (``kdbench.models.torchvision_models``)."""


@dataclass(frozen=True)
class PretrainedFile:
    path: str
    """Where the library keeps the file (it may not be there yet)."""
    digest: str | None
    """The start of its SHA-256 as published (torchvision), or None (timm: hashed when read)."""
    source: str
    """Where the library downloads it from, for the missing-file line."""

    @property
    def present(self) -> bool:
        return os.path.isfile(self.path)

    def missing(self) -> str:
        return (
            f"pretrained weights not found: put {Path(self.path).name} in "
            f"{Path(self.path).parent} (the library downloads it from {self.source})"
        )


def resolve(arch: str, weights: str) -> PretrainedFile:
    """Where ``arch``'s pretrained ``weights`` live; a one-line KdbenchError for a tag the
    library does not have."""
    family, _, name = arch.partition(":") if ":" in arch else ("torchvision", "", arch)
    if family == "torchvision":
        return _torchvision(name, weights)
    if family == "timm":
        return _timm(name, weights)
    raise KdbenchError(
        f"'{arch}' has no pretrained weights kdbench can load; weights: come with "
        f"torchvision:<{'|'.join(TORCHVISION_ARCHS)}> or timm:<name>"
    )


def torchvision_arch(name: str) -> str:
    """``name`` when kdbench wraps that torchvision architecture, else a one-line error."""
    if name not in TORCHVISION_ARCHS:
        raise KdbenchError(
            f"torchvision:{name}: not one of kdbench's torchvision models "
            f"({', '.join(TORCHVISION_ARCHS)})"
        )
    return name


def _torchvision(name: str, tag: str) -> PretrainedFile:
    import torch
    import torchvision.models as tvm

    torchvision_arch(name)
    enum = tvm.get_model_weights(name)
    tags = [w.name for w in enum]
    if tag == "DEFAULT":
        tag = enum.DEFAULT.name
    if tag not in tags:
        raise KdbenchError(f"torchvision:{name} has no weights '{tag}'; valid: {', '.join(tags)}")
    url = enum[tag].url
    file = url.rsplit("/", 1)[-1]
    match = re.search(r"-([a-f0-9]+)\.", file)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return PretrainedFile(str(folder / file), match.group(1) if match else None, url)


def _timm(name: str, tag: str) -> PretrainedFile:
    full = f"{name}.{tag}"
    hub = Path(
        os.environ.get("HF_HUB_CACHE")
        or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"
    )
    repo = hub / f"models--timm--{full}"
    for file in ("model.safetensors", "pytorch_model.bin"):
        found = sorted((repo / "snapshots").glob(f"*/{file}"))
        if found:
            return PretrainedFile(str(found[-1]), None, f"https://huggingface.co/timm/{full}")
    return PretrainedFile(
        str(repo / "snapshots" / "<revision>" / "model.safetensors"),
        None,
        f"https://huggingface.co/timm/{full}",
    )


def verify(path: str, digest: str | None) -> None:
    """Refuse a file whose SHA-256 does not start with the published ``digest``."""
    if digest is None:
        return
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if not h.hexdigest().startswith(digest):
        raise KdbenchError(
            f"{path}: its SHA-256 {h.hexdigest()[:16]}… does not start with {digest}, the "
            "published hash of these weights: a partial download or another file"
        )
