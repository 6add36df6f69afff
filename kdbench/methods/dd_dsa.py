"""``dd_dsa``: DC + DSA, gradient matching with differentiable siamese augmentation (Zhao &
Bilen 2021, "Dataset Condensation with Differentiable Siamese Augmentation", ICML), the name
published tables give it.

It is ``dd_dc`` (``kdbench.methods.dd_dc``) with ``dsa`` on: for every class c the real batch
B_c and the synthetic images S_c go through one shared random transform A_ω (``DSA.siamese``)
and the match becomes D(∇θ L(A_ω(S_c)), ∇θ L(A_ω(B_c))); the network's training on S between
matches augments each batch with per-image parameters, and so does the student's training on
the finished set (``kdbench.methods.dsa``).

Reference settings (github:VICO-UoE/DatasetCondensation, ``main.py --method DSA``): the same
as DC's, which kdbench's defaults keep: 1,000 outer iterations (``--Iteration``, line 23),
image lr 0.1 with SGD momentum 0.5 (``--lr_img``, 24, and 100), network lr 0.01 (``--lr_net``,
25), 256 real images per class per match (``--batch_real``, 26), the per-ipc outer/inner loops
of ``utils.get_loops`` (1 → (1, 1), 10 → (10, 50), 50 → (50, 10)), ConvNet-3 width 128;
strategy ``color_crop_cutout_flip_scale_rotate`` and ``--init real`` (readme, DSA command).
The reference evaluates a DSA set by training for 1,000 epochs with DSA (``main.py`` 111-121)
where DC without augmentation trains 300: in kdbench ``train_epochs`` sets that
(``params: {train_epochs: 1000}``); its default gives the suite's budget in steps, as for
every dd method.
"""

from __future__ import annotations

from kdbench.methods.dd_dc import DDDC
from kdbench.methods.synthetic import dsa


class DDDSA(DDDC):
    """Gradient matching with differentiable siamese augmentation (DC + DSA)."""

    hparams = tuple(dsa(True) if h.name == "dsa" else h for h in DDDC.hparams)
