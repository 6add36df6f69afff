"""``dd_dc``: dataset condensation by gradient matching (Zhao, Mopuri & Bilen 2021, "Dataset
Condensation with Gradient Matching", ICLR; eq. 9-10 and Algorithm 1).

Each outer iteration initialises a fresh ConvNet-3 θ and alternates, ``outer_loop`` times:

1. for every class c, the distance between the gradients of the loss on a real batch B_c
   and on the synthetic images S_c,
   D(∇θ L(S_c), ∇θ L(B_c)) = Σ_layers Σ_i (1 − cos(∇_i^S, ∇_i^B)),
   the cosine taken per output channel i of each weight (conv kernels flattened to
   out × in·h·w; biases and normalisation scales, one-dimensional, are left out as in the
   reference code); one SGD step (momentum 0.5) on S along ∇_S Σ_c D;
2. ``inner_loop`` epochs of training θ on S (SGD, ``lr_net``) before the next match.

The loops follow the reference per ipc: 1 → (1, 1), 10 → (10, 50), 20 → (20, 25),
30 → (30, 20), 40 → (40, 15), 50 → (50, 10); other ipc: (ipc, max(1, 500 // ipc)).
S starts from random real images of each class. Reference settings: 1,000 outer iterations,
image lr 0.1, network lr 0.01, real batch 256, width 128.

Cost: each of the 1,000 outer iterations matches gradients for every class ``outer_loop``
times and trains the network in between, more slowly the wider it is, so on a small CPU the
reference schedule takes hours: too long for one trial of a benchmark. The defaults keep the
reference settings and cap each trial at ``time_budget_s`` (60 s); the set records the
iterations it got. For the reference run: ``params: {time_budget_s: 0}``.

With ``dsa`` (differentiable siamese augmentation, ``kdbench.methods.dsa``; off by default,
as in DC), each class's real batch and its synthetic images go through one shared random
transform before the network (``DSA.siamese``; the reference's ``main.py`` 185-188), and
the network's training on S between matches augments every batch with per-image parameters
(``main.py`` 215, ``epoch(..., aug=True)`` when DSA): Zhao & Bilen 2021, registered as
``dd_dsa``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.base import HParam
from kdbench.methods.dsa import DSA
from kdbench.methods.synthetic import (
    Deadline,
    Matching,
    SyntheticSet,
    SyntheticSetMethod,
    dsa,
    image_lr,
    ipc,
    labels,
    matching_net,
    net_depth,
    net_width,
    time_budget,
    to_stored,
    train_epochs,
)

REFERENCE_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for an ipc, as the reference code sets them."""
    return REFERENCE_LOOPS.get(ipc, (ipc, max(1, 500 // ipc)))


def gradient_distance(g_syn: list[torch.Tensor], g_real: list[torch.Tensor]) -> torch.Tensor:
    """Σ over weights, Σ over output channels, of 1 − cosine(synthetic grad, real grad)."""
    total = g_syn[0].new_zeros(())
    for gs, gr in zip(g_syn, g_real, strict=True):
        if gs.ndim == 1:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(dim=1) / (gs.norm(dim=1) * gr.norm(dim=1) + 1e-6)
        total = total + (1.0 - cos).sum()
    return total


class DDDC(SyntheticSetMethod):
    """Gradient matching: per-class gradients on synthetic images follow those on real ones."""

    hparams = (
        ipc(10),
        HParam("iterations", 1000, kind="int", low=1, doc="outer iterations (reference 1,000)"),
        image_lr(0.1),
        HParam("lr_net", 0.01, low=0.0, low_open=True, doc="learning rate of the matching network"),
        net_width(),
        net_depth(),
        HParam("batch_real", 256, kind="int", low=1, doc="real images per class per match"),
        time_budget(60.0),
        train_epochs(),
        dsa(False),
        *labels(),
    )

    def synthesize(self, data, *, seed: int, device: torch.device) -> SyntheticSet:
        hp = self.hp
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        n = hp["ipc"]
        m = Matching.start(data, n, gen, device)
        syn, labels = m.images, m.labels
        opt = torch.optim.SGD([syn], lr=hp["lr_img"], momentum=0.5)
        outer_loop, inner_loop = loops(n)
        augment = DSA() if hp.get("dsa", False) else None
        deadline = Deadline(hp["time_budget_s"])
        done = updates = 0
        loss = syn.new_zeros(())
        for _ in range(hp["iterations"]):
            net = matching_net(data, hp["net_width"], hp["net_depth"], device)
            params = [p for p in net.parameters() if p.ndim > 1]
            net_opt = torch.optim.SGD(net.parameters(), lr=hp["lr_net"])
            for ol in range(outer_loop):
                loss = syn.new_zeros(())
                for c, idx in enumerate(m.by_class):
                    pick = idx[torch.randperm(len(idx), generator=gen)[: hp["batch_real"]]]
                    real = m.real_batch(data, pick)
                    s = syn[c * n : (c + 1) * n]
                    if augment is not None:
                        real, s = augment.siamese(real, s, gen=gen)
                    target = torch.full((len(pick),), c, device=device)
                    g_real = torch.autograd.grad(F.cross_entropy(net(real), target), params)
                    g_real = [g.detach() for g in g_real]
                    g_syn = torch.autograd.grad(
                        F.cross_entropy(net(s), labels[c * n : (c + 1) * n]),
                        params,
                        create_graph=True,
                    )
                    loss = loss + gradient_distance(list(g_syn), g_real)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                updates += 1
                if ol == outer_loop - 1:
                    break
                frozen = syn.detach()
                for _ in range(inner_loop):
                    order = torch.randperm(len(frozen), generator=gen).to(device)
                    for b in order.split(256):
                        xb = frozen[b] if augment is None else augment(frozen[b], gen)
                        net_loss = F.cross_entropy(net(xb), labels[b])
                        net_opt.zero_grad(set_to_none=True)
                        net_loss.backward()
                        net_opt.step()
            done += 1
            if deadline.tick():
                break
        return SyntheticSet(
            to_stored(syn.detach(), data).cpu(),
            labels.cpu(),
            iterations=done,
            seconds=deadline.elapsed,
            meta={"image_updates": updates, "last_loss": float(loss.detach())},
        )
