"""``dd_dm``: dataset condensation by distribution matching (Zhao & Bilen 2023, "Dataset
Condensation with Distribution Matching", WACV; eq. 4 and Algorithm 1).

Each iteration samples a freshly initialised network ψ (ConvNet-3, frozen) and, for every
class c, a batch B_c of real images, and takes one SGD step (momentum 0.5) on the synthetic
images S to reduce

    L = Σ_c ‖ (1/|B_c|) Σ_{x∈B_c} ψ(x) − (1/|S_c|) Σ_{s∈S_c} ψ(s) ‖²

where ψ(x) is the network's flattened last feature map (its ``embedding``). S starts from
random real images of each class. Reference settings: 20,000 iterations, image lr 1.0, real
batch 256, width 128, with differentiable siamese augmentation (``main_DM.py`` 22-28, 38).

DSA (``dsa``, on by default as the reference always runs it, ``kdbench.methods.dsa``): each
class's real batch and its synthetic images share one random transform before ψ
(``DSA.siamese``; ``main_DM.py`` 155-158, one seed per class). Instance norm treats every
image alone, so augmenting per class and embedding all classes in one forward pass is the
reference's per-class forward; the student then trains on S with per-image DSA.

Cost: one iteration is cheap (a frozen network's features, one step on S), but the reference's
20,000 of them, more slowly the wider the network, still take far longer than one trial of a
benchmark should on a small CPU, even on digits. The defaults keep the reference schedule and
cap each trial at ``time_budget_s`` (60 s); the set records how many iterations it got
(``iterations`` in the artifact). For the reference run: ``params: {time_budget_s: 0}``.
"""

from __future__ import annotations

import torch

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


class DDDM(SyntheticSetMethod):
    """Distribution matching: per-class mean embeddings of fresh ConvNets, real vs synthetic."""

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
        dsa(True),
        *labels(),
    )

    def synthesize(self, data, *, seed: int, device: torch.device) -> SyntheticSet:
        hp = self.hp
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # the fresh networks' initialisations
        m = Matching.start(data, hp["ipc"], gen, device)
        syn = m.images
        opt = torch.optim.SGD([syn], lr=hp["lr_img"], momentum=0.5)
        augment = DSA() if hp["dsa"] else None
        deadline = Deadline(hp["time_budget_s"])
        done = 0
        for _ in range(hp["iterations"]):
            net = matching_net(data, hp["net_width"], hp["net_depth"], device)
            net.requires_grad_(False)
            picks = [
                idx[torch.randperm(len(idx), generator=gen)[: hp["batch_real"]]]
                for idx in m.by_class
            ]
            real, s = m.real_batch(data, torch.cat(picks)), syn
            if augment is not None:  # one transform per class, shared by its two batches
                pairs = [
                    augment.siamese(r, q, gen=gen)
                    for r, q in zip(
                        real.split([len(p) for p in picks]), syn.split(hp["ipc"]), strict=True
                    )
                ]
                real, s = torch.cat([r for r, _ in pairs]), torch.cat([q for _, q in pairs])
            # Instance norm treats every image alone, so all classes share one forward pass.
            with torch.no_grad():
                emb_real = net.forward_features(real).embedding
            emb_syn = net.forward_features(s).embedding
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
