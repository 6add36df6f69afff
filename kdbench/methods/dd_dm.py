"""``dd_dm``: dataset condensation by distribution matching (Zhao & Bilen 2023, "Dataset
Condensation with Distribution Matching", WACV; eq. 4 and Algorithm 1).

Each iteration samples a freshly initialised network ψ (ConvNet-3, frozen) and, for every
class c, a batch B_c of real images, and takes one SGD step (momentum 0.5) on the synthetic
images S to reduce

    L = Σ_c ‖ (1/|B_c|) Σ_{x∈B_c} ψ(x) − (1/|S_c|) Σ_{s∈S_c} ψ(s) ‖²

where ψ(x) is the network's flattened last feature map (its ``embedding``). S starts from
random real images of each class. Reference settings: 20,000 iterations, image lr 1.0, real
batch 256, width 128 (with differentiable siamese augmentation, which kdbench does not apply).

Cost: one iteration is cheap (a frozen network's features, one step on S), but the reference's
20,000 of them, more slowly the wider the network, still take far longer than one trial of a
benchmark should on a small CPU, even on digits. The defaults keep the reference schedule and
cap each trial at ``time_budget_s`` (60 s); the set records how many iterations it got
(``iterations`` in the artifact). For the reference run: ``params: {time_budget_s: 0}``.
"""

from __future__ import annotations

import torch

from kdbench.methods.base import HParam
from kdbench.methods.registry import METHODS
from kdbench.methods.synthetic import (
    Deadline,
    Matching,
    SyntheticSet,
    SyntheticSetMethod,
    image_lr,
    ipc,
    matching_net,
    net_depth,
    net_width,
    time_budget,
    to_stored,
    train_epochs,
)


@METHODS.register("dd_dm")
class DDDM(SyntheticSetMethod):
    """Distribution matching: per-class mean embeddings of fresh ConvNets, real vs synthetic."""

    name = "dd_dm"
    hparams = (
        ipc(10),
        HParam(
            "iterations", 20000, kind="int", low=1, doc="matching iterations (reference 20,000)"
        ),
        image_lr(1.0),
        net_width(),
        net_depth(),
        HParam("batch_real", 256, kind="int", low=1, doc="real images per class per iteration"),
        time_budget(60.0),
        train_epochs(),
    )

    def synthesize(self, data, *, seed: int, device: torch.device) -> SyntheticSet:
        hp = self.hp
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # the fresh networks' initialisations
        m = Matching.start(data, hp["ipc"], gen, device)
        syn = m.images
        opt = torch.optim.SGD([syn], lr=hp["lr_img"], momentum=0.5)
        deadline = Deadline(hp["time_budget_s"])
        done = 0
        for _ in range(hp["iterations"]):
            net = matching_net(data, hp["net_width"], hp["net_depth"], device)
            net.requires_grad_(False)
            picks = [
                idx[torch.randperm(len(idx), generator=gen)[: hp["batch_real"]]]
                for idx in m.by_class
            ]
            real = m.real_batch(data, torch.cat(picks))
            # Instance norm treats every image alone, so all classes share one forward pass.
            with torch.no_grad():
                emb_real = net.forward_features(real).embedding
            emb_syn = net.forward_features(syn).embedding
            loss = syn.new_zeros(())
            start = 0
            for c, idx in enumerate(picks):
                mean_real = emb_real[start : start + len(idx)].mean(dim=0)
                start += len(idx)
                mean_syn = emb_syn[c * hp["ipc"] : (c + 1) * hp["ipc"]].mean(dim=0)
                loss = loss + ((mean_real - mean_syn) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if deadline.tick():
                break
        return SyntheticSet(
            to_stored(syn.detach(), data).cpu(),
            m.labels.cpu(),
            iterations=done,
            seconds=deadline.elapsed,
            meta={"last_loss": float(loss.detach())},
        )
