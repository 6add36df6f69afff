"""A trajectory, trained by the trainer: a network trained from a fresh initialisation by a
recipe that a method declares (``TrajectoryRecipe``: dd_mtt's ``ExpertRecipe``) on the whole
training split, its flat parameter vector kept after initialisation and after every epoch
(``methods.trajectories`` describes MTT's reference, ``buffer.py``, and where kdbench differs).

As the reference, an epoch's last, partial batch is trained on (even a batch of one: the
network has no BatchNorm), the images are the normalised split with the recipe's transform
(DSA) on every batch and no other augmentation, in fp32, and the network is scored once,
after its last epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector

from kdbench.methods.trajectories import Trajectory
from kdbench.spec import Budget
from kdbench.training.loop import accuracy, predict
from kdbench.training.trainer import Precision, Trainer


class TrajectoryRecipe(Protocol):
    """What a method declares for a trajectory it needs (``Method.prerequisite_recipe``)."""

    epochs: int

    def budget(self) -> Budget: ...
    def network(self, data: Any, device: torch.device) -> nn.Module: ...
    def transform(self) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None: ...


def train_trajectory(
    data: Any, recipe: TrajectoryRecipe, *, seed: int, device: torch.device
) -> Trajectory:
    """Train one network on ``data``'s training split (a ``DataBundle``) by ``recipe``;
    deterministic for a seed on a device."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # the network's initialisation
    net = recipe.network(data, device)
    trainer = Trainer(
        data,
        data.train_x.to(device),
        data.train_y.to(device).long(),
        params=list(net.parameters()),
        budget=recipe.budget(),
        seed=seed,  # the shuffles and the augmentation
        augment=False,
        precision=Precision(),
        transform=recipe.transform(),
        drop_single=False,
    )

    def loss_of(idx, x, y, t_out):
        return {"ce": F.cross_entropy(net(x), y)}

    params = [parameters_to_vector(net.parameters()).detach().cpu()]
    net.train()
    for epoch in range(recipe.epochs):
        trainer.epoch(
            loss_of, what="the trajectory's loss", at=f"epoch {epoch + 1} of {recipe.epochs}"
        )
        params.append(parameters_to_vector(net.parameters()).detach().cpu())
    seconds = time.perf_counter() - t0
    val, test = (
        accuracy(predict(net, data, x.to(device)), y.to(device))  # NaN for an empty split
        for x, y in ((data.val_x, data.val_y), (data.test_x, data.test_y))
    )
    return Trajectory(params, seconds, val, test)
