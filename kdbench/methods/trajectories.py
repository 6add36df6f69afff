"""Trajectories of a network's parameters, and dd_mtt's recipe for its expert trajectories, as
the method declares them: the recipe an expert trains by (``ExpertRecipe``) and the trajectory
it leaves (``Trajectory``); the trainer trains them (``kdbench.training.trajectory``). Experts
are ConvNets trained on the real training split, their parameters kept after every epoch (Cazenavette et al. 2022, "Dataset Distillation by Matching
Training Trajectories", CVPR, §3.1 "Expert trajectories"; reference code ``buffer.py``).

An expert is the matching ConvNet (``synthetic.matching_net``, instance norm) trained from a
fresh initialisation by plain SGD on the whole training split, with cross-entropy on each
batch of a new shuffle every epoch, differentiable siamese augmentation (DSA, per-sample
parameters) on every batch. Its trajectory θ*_0, θ*_1, …, θ*_E is the flat parameter vector
after initialisation and after each of the E epochs. Reference settings (``buffer.py``'s
argument defaults, which the README says all its experts used): 50 epochs
(``--train_epochs``), lr 0.01 (``--lr_teacher``), momentum 0 (``--mom``), weight decay 0
(``--l2``), batch 256 (``--batch_train``), DSA on (``--dsa``, strategy
color_crop_cutout_flip_scale_rotate), no learning-rate decay (``--decay`` off), 100 experts
(``--num_experts``); every epoch's parameters saved (``timestamps``). A constant rate, no
momentum and no weight decay make a trajectory that a few SGD steps on synthetic data can
imitate (the authors, mtt-distillation issue #8).

As in the reference, an epoch's last, partial batch is trained on and the expert is scored
once, after its last epoch. Where kdbench differs: an expert's seed fixes its initialisation,
its shuffles and its augmentation (the reference seeds nothing); the parameters are stored
flattened (``parameters_to_vector``), one vector per epoch, where the reference keeps a list
of tensors; the reference evaluates on the test split after every epoch, for its log only.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdbench.methods.dsa import DSA
from kdbench.methods.synthetic import matching_net
from kdbench.spec import Budget


@dataclass(frozen=True)
class ExpertRecipe:
    """How an expert is trained: everything that, with the data set and the seed, determines
    its trajectory. The defaults are ``buffer.py``'s."""

    width: int
    """Channels of the ConvNet, as ``models.convnet.matching_size`` resolves them."""
    depth: int
    """Conv blocks of the ConvNet, as ``models.convnet.matching_size`` resolves them."""
    epochs: int = 50
    lr: float = 0.01
    batch_size: int = 256
    momentum: float = 0.0
    weight_decay: float = 0.0
    dsa: bool = True

    def identity(self) -> dict[str, Any]:
        """What determines a trajectory (all the fields): an expert trial's hyperparameters."""
        return dataclasses.asdict(self)

    def budget(self) -> Budget:
        """Plain SGD at the recipe's rate, momentum, weight decay and batch size."""
        return Budget(
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer="sgd",
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )

    def network(self, data: Any, device: torch.device) -> nn.Module:
        """A freshly initialised matching ConvNet (from the global generator's state)."""
        return matching_net(data, self.width, self.depth, device)

    def transform(self) -> DSA | None:
        """DSA on every batch, per sample, when the recipe says so."""
        return DSA() if self.dsa else None


@dataclass
class Trajectory:
    """One expert's parameters after initialisation and after every epoch, and its scores."""

    params: list[torch.Tensor]
    """Flat float32 parameter vectors on the CPU, ``epochs + 1`` of them (the start first)."""
    seconds: float
    """Wall time of the expert's training."""
    val_acc: float
    """The expert after its last epoch (NaN without a `val` split)."""
    test_acc: float

    @property
    def epochs(self) -> int:
        return len(self.params) - 1

    def to_bytes(self) -> bytes:
        """The cached file: a dict that ``torch.load(..., weights_only=True)`` reads."""
        buf = io.BytesIO()
        torch.save(
            {
                "params": torch.stack([p.detach().cpu().float() for p in self.params]),
                "seconds": float(self.seconds),
                "val_acc": float(self.val_acc),
                "test_acc": float(self.test_acc),
            },
            buf,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Trajectory:
        d = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        return cls(list(d["params"].unbind(0)), d["seconds"], d["val_acc"], d["test_acc"])
