"""``budget.compile``: the networks' forward passes through ``torch.compile``.

The student's ``forward_features`` is compiled for training (its backward comes with it, from
AOTAutograd), the teacher's for inference (it runs without autograd). The optimiser step is
already one fused kernel (``loop.make_optimizer``) and stays eager.

Compilation is paid once per worker process and architecture, not once per trial: Dynamo keeps
the compiled code of a model class's ``forward_features`` and reuses it for a new instance of
the class (parameters are graph inputs), and Inductor's on-disk cache serves a new worker the
kernels an earlier process built. Measured on this project's 2-core CPU (no GPU, torch 2.14):
cnn_tiny's first compiled step 28 s cold, 1.8 s from the on-disk cache, 0 s for the next
instance in the same process. Inductor's *freezing* (weights folded into the teacher's graph
as constants) was faster still for the teacher (resnet32x4, bf16: 314 ms against 355 ms not
frozen), but it recompiles for every new teacher instance, and past Dynamo's recompile limit
(8) a worker fell back to eager without a word: it is not used.

On a CPU compilation does not pay for training: a cnn_tiny step 1.8 ms eager, 2.1 ms
compiled; a resnet8x4 step (bf16, channels_last, batch 64) 267 ms eager, 273 ms compiled,
433 ms with ``max-autotune``; resnet32x4's forward pass 385 → 355 ms (bf16, batch 64).
``reduce-overhead`` adds CUDA graphs on a GPU, where a small student's step is bound by
kernel launches rather than arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdbench.models.base import KDModel, ModelOutput

Forward = Callable[[torch.Tensor], ModelOutput]

RECOMPILE_LIMIT = 64
"""Graphs Dynamo may keep per ``forward_features``: one model family's code serves several
architectures (resnet8x4, resnet32x4), each for training and for inference, at the full and
the last batch size; PyTorch's default of 8 would silently fall back to eager in a worker
that has run a few of them."""


def _compile(fn: Forward, mode: str) -> Forward:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in PyTorch 2.7
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
            break
    return torch.compile(fn, mode=None if mode == "default" else mode)


def forward(model: KDModel, mode: str) -> Forward:
    """``model.forward_features``, compiled when ``mode`` is not ``none``."""
    return model.forward_features if mode == "none" else _compile(model.forward_features, mode)
