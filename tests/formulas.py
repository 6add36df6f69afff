"""What the loss tests share when they recompute a method's loss from its formula: NumPy
references of the softmax and of logit standardisation, and a stub network whose outputs are
fixed arrays (what a method sizes its own modules from)."""

from __future__ import annotations

import numpy as np
import torch

from kdbench.models.base import ModelOutput


def softmax(v, T=1.0):
    v = np.asarray(v, dtype=np.float64) / T
    e = np.exp(v - v.max())
    return e / e.sum()


def zscore(v):
    """Logit standardisation: mean 0, standard deviation with Bessel's correction, ε = 1e-7."""
    v = np.asarray(v, dtype=np.float64)
    return (v - v.mean()) / (v.std(ddof=1) + 1e-7)


class Stub(torch.nn.Module):
    """A model whose outputs are fixed arrays: what a method's modules are sized from."""

    def __init__(self, out: ModelOutput) -> None:
        super().__init__()
        self.out = out
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward_features(self, x):
        return self.out


def build_on_stubs(name, s_out: ModelOutput, t_out: ModelOutput, **hp):
    """Method ``name`` (its defaults, overridden by ``hp``) sized from the two stubs' outputs,
    in float64, its own modules initialised from seed 0."""
    from kdbench.methods import METHODS, MethodContext

    cls = METHODS.get(name)
    ctx = MethodContext(
        student=Stub(s_out), teacher=Stub(t_out), num_classes=3, n_train=8, input_shape=(1, 4, 4)
    )
    torch.manual_seed(0)
    return cls({**cls.defaults(), **hp}, ctx).double()
