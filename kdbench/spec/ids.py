"""Trial ids and content keys: what enters them, in one canonical form.

A trial's id (``kdbench.plan``) and a synthetic set's content key (``methods.synthetic``) are
a readable prefix plus a hash of a canonical JSON of everything that decides the result. The
parts they share are declared here once.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

PROTOCOL_VERSION = 1
"""Bumped when the training protocol changes what a trial computes: old ids stop matching."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(identity: Any, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``identity``'s canonical JSON."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:length]


def split_identity(val_fraction: float, refit: bool) -> dict[str, Any]:
    """The data split's part of an id: the share carved off as `val`, and with ``refit`` that
    the trial trains on train+val (only when set, so ids made before it stay as they were)."""
    return {"val_fraction": val_fraction, **({"train": "train+val"} if refit else {})}


def slug(text: str) -> str:
    """A name fit for a file: ``+`` spelled out, anything else odd made ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("+", "_plus_"))
