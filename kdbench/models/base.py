"""What every model in kdbench exposes, so feature-based methods work on any of them.

``model(x)`` returns logits (what a user takes home); ``model.forward_features(x)`` returns a
``ModelOutput`` with the logits, the output of each block, and the pooled embedding that
feeds the classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ModelOutput:
    logits: torch.Tensor
    feats: list[torch.Tensor] = field(default_factory=list)
    """The output of each block, shallow to deep (after its activation)."""
    embedding: torch.Tensor | None = None
    """The pooled penultimate feature, the classifier's input: (batch, dim)."""
    preact: list[torch.Tensor] = field(default_factory=list)
    """The output of each block before its last activation (same shapes as ``feats``, unless a
    block pools after its activation); empty for a model that does not expose them."""

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ModelOutput:
        """The same outputs with ``fn`` applied to every tensor (a batch slice, a cast)."""
        return ModelOutput(
            logits=fn(self.logits),
            feats=[fn(f) for f in self.feats],
            embedding=None if self.embedding is None else fn(self.embedding),
            preact=[fn(f) for f in self.preact],
        )


class KDModel(nn.Module):
    """Base of the zoo: subclasses implement ``forward_features``."""

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits

    def bn_before_relu(self) -> list[nn.BatchNorm2d] | None:
        """Per block of ``preact``, the ``BatchNorm2d`` its values come out of (mdistiller's
        ``get_bn_before_relu``: in a residual block, the last BN of the branch, before the sum),
        or ``None`` where the model does not give them (the default). OFD reads its margins
        from their affine parameters."""
        return None


def init_conv_bn(model: nn.Module) -> None:
    """The reference zoos' initialisation: He (fan-out) for convolutions, BatchNorm at γ=1, β=0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one image: convolutions and linear layers.

    Normalisation, activations and pooling are not counted (the usual convention, as in the
    papers' MAC columns); they are a small share of a CNN's work.
    """
    total = 0

    def conv_hook(mod: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += out[0].numel() * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: nn.Linear, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += mod.in_features * mod.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros((1, *input_shape), dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
