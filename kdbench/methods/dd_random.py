"""``dd_random``: a random real subset of ``ipc`` images per class (the baseline of dataset
distillation; Wang et al. 2018, "Dataset Distillation", §5, and the "Random" column of Zhao
et al. 2021, "Dataset Condensation with Gradient Matching", Table 1).

S = ⋃_c {x_i : i ∈ R_c}, R_c ⊂ {i : y_i = c}, |R_c| = ipc, drawn uniformly without replacement
with the trial's seed; the student is then trained from scratch on S alone.
"""

from __future__ import annotations

import torch

from kdbench.methods.synthetic import (
    SyntheticSet,
    SyntheticSetMethod,
    dsa,
    ipc,
    labels,
    random_subset,
    real_set,
    train_epochs,
)


class DDRandom(SyntheticSetMethod):
    """A seeded random subset of ``ipc`` real training images per class."""

    hparams = (ipc(10), train_epochs(), dsa(False), *labels())
    training_hparams = (
        *SyntheticSetMethod.training_hparams,
        "dsa",
    )  # a real subset: DSA only at evaluation

    @classmethod
    def in_memory(cls) -> str | None:
        return None  # ipc images per class, read from their files when the split is streamed

    def synthesize(self, data, *, seed: int, device: torch.device) -> SyntheticSet:
        gen = torch.Generator().manual_seed(seed)
        pick = random_subset(data.train_y, data.num_classes, self.hp["ipc"], gen)
        return real_set(data, pick)
