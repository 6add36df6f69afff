"""Model weights as bytes: what travels between the driver and its workers, and what is kept.

Every file is a plain ``torch.save`` dict of tensors (and numbers), loaded back with
``weights_only=True``: a results directory or a checkpoint from someone else cannot run code.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from kdbench.errors import KdbenchError
from kdbench.models import pretrained


def read_checkpoint(path: str, digest: str | None = None) -> bytes:
    """A user's teacher checkpoint, loaded safely (weights only) and normalised to a state dict;
    ``digest``: the published start of its SHA-256 (a library's pretrained weights), checked.
    A ``.safetensors`` file (timm's) is read with safetensors."""
    pretrained.verify(path, digest)
    if path.endswith(".safetensors"):
        return _safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KdbenchError(
            f"{path}: not a loadable weights-only checkpoint ({type(exc).__name__}: "
            f"{_reason(str(exc))}); kdbench loads only tensors, never code: save the "
            "state_dict (torch.save(model.state_dict(), path))"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KdbenchError(f"{path}: expected a state dict (parameter name -> tensor)")
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _safetensors(path: str) -> bytes:
    try:
        from safetensors.torch import load_file

        state = load_file(path)
    except Exception as exc:
        raise KdbenchError(f"{path}: not a readable safetensors file ({exc})") from None
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict into a kdbench model, or into the library network it wraps
    (``model.net``: a torchvision or timm state dict, as the library saves it)."""
    net = getattr(model, "net", None)
    if isinstance(net, torch.nn.Module) and state and not any(k.startswith("net.") for k in state):
        net.load_state_dict(state)
    else:
        model.load_state_dict(state)


def _reason(text: str) -> str:
    """torch's reason for refusing a file, without its advice to load it unsafely."""
    marker = "WeightsUnpickler error:"
    if marker in text:
        return text.split(marker, 1)[1].strip().split(". ", 1)[0].splitlines()[0].rstrip(".")
    return text.strip().splitlines()[0] if text.strip() else "no reason given"


def load_weights(blob: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def dump_weights(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def dump_student(model: torch.nn.Module, spec: Any, data: Any) -> bytes:
    """A final trial's student: its weights and what rebuilding and feeding it takes (read
    back by ``kdbench.results.load_student``)."""
    buf = io.BytesIO()
    torch.save(
        {
            "arch": spec.student,
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "mean": list(data.mean),
            "std": list(data.std),
            "dataset": spec.dataset,
            "method": spec.label,
            "seed": spec.seed,
            "trial_id": spec.trial_id,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        buf,
    )
    return buf.getvalue()
