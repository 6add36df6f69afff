"""An expert trajectory (``dd_mtt``'s), trained by the trainer: the matching ConvNet trained
from a fresh initialisation by its ``ExpertRecipe`` on the whole training split, its flat
parameter vector kept after initialisation and after every epoch (``methods.experts``
describes the reference, MTT's ``buffer.py``, and where kdbench differs).

As the reference, an epoch's last, partial batch is trained on (even a batch of one: the
ConvNet has no BatchNorm), the images are the normalised split with DSA on every batch and no
other augmentation, in fp32, and the expert is scored once, after its last epoch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector

from kdbench.methods.dsa import DSA
from kdbench.methods.experts import ExpertRecipe, Trajectory
from kdbench.methods.synthetic import matching_net
from kdbench.spec import Budget
from kdbench.training.loop import accuracy, predict
from kdbench.training.trainer import Precision, Trainer


def train_trajectory(
    data: Any, recipe: ExpertRecipe, *, seed: int, device: torch.device
) -> Trajectory:
    """Train one expert on ``data``'s training split (a ``DataBundle``) by ``recipe``;
    deterministic for a seed on a device."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)  # the network's initialisation
    net = matching_net(data, recipe.width, recipe.depth, device)
    trainer = Trainer(
        data,
        data.train_x.to(device),
        data.train_y.to(device).long(),
        params=list(net.parameters()),
        budget=Budget(
            batch_size=recipe.batch_size,
            optimizer="sgd",
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        ),
        seed=seed,  # the shuffles and the augmentation
        augment=False,
        precision=Precision(),
        transform=DSA() if recipe.dsa else None,
        drop_single=False,
    )

    def loss_of(idx, x, y, t_out):
        return {"ce": F.cross_entropy(net(x), y)}

    params = [parameters_to_vector(net.parameters()).detach().cpu()]
    net.train()
    for epoch in range(recipe.epochs):
        trainer.epoch(loss_of, what="the expert's loss", at=f"epoch {epoch + 1} of {recipe.epochs}")
        params.append(parameters_to_vector(net.parameters()).detach().cpu())
    seconds = time.perf_counter() - t0
    val, test = (
        accuracy(predict(net, data, x.to(device)), y.to(device))  # NaN for an empty split
        for x, y in ((data.val_x, data.val_y), (data.test_x, data.test_y))
    )
    return Trajectory(params, seconds, val, test)
