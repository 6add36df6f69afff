"""Data sets that a Debian package installs: found through the package's own file list.

``apt-get install dataset-fashion-mnist`` puts Fashion-MNIST's four IDX files (gzipped) where
Debian keeps data sets. kdbench asks dpkg where the package put them (``dpkg-query -L``), so
nothing is guessed, copied or downloaded; the files are read as they lie, in the IDX format
the MNIST family is published in (big-endian header, uint8 payload).
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import torch

from kdbench.errors import KdbenchError

IDX_UBYTE = 0x08
"""The IDX type code of unsigned bytes (the MNIST family's images and labels)."""


def package_files(package: str) -> list[Path]:
    """The files an installed Debian package holds, by dpkg's own list; [] when it is not
    installed (or this is not a Debian-like system)."""
    if shutil.which("dpkg-query") is None:
        return []
    try:
        out = subprocess.run(
            ["dpkg-query", "-L", package], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [Path(line) for line in out.stdout.splitlines() if line.strip()]


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes (gzipped or not) as a uint8 tensor of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, kind, ndim = struct.unpack(">HBB", data[:4])
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    except (OSError, EOFError, struct.error) as exc:
        raise KdbenchError(f"{path}: not a readable IDX file ({exc})") from None
    if zero != 0 or kind != IDX_UBYTE or len(data) != 4 + 4 * ndim + int(np.prod(shape)):
        raise KdbenchError(f"{path}: not an IDX file of unsigned bytes, or cut short")
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return torch.from_numpy(payload.reshape(shape).copy())


def mnist_family(package: str) -> tuple[torch.Tensor, ...] | None:
    """(train images, train labels, test images, test labels) of an MNIST-family package,
    images as uint8 (N, 1, H, W); None when the package is not installed."""
    files = {p.name: p for p in package_files(package) if "-ubyte" in p.name}
    names = [
        f"{split}-{kind}-idx{dims}-ubyte"
        for split in ("train", "t10k")
        for kind, dims in (("images", 3), ("labels", 1))
    ]
    paths = [files.get(n + ".gz") or files.get(n) for n in names]
    if not files or any(p is None for p in paths):
        return None
    train_x, train_y, test_x, test_y = (read_idx(p) for p in paths)  # type: ignore[arg-type]
    for x, y in ((train_x, train_y), (test_x, test_y)):
        if len(x) != len(y):
            raise KdbenchError(f"Debian package {package}: {len(x)} images against {len(y)} labels")
    return train_x.unsqueeze(1), train_y.long(), test_x.unsqueeze(1), test_y.long()
