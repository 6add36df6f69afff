"""``pseudo_label``: hard teacher labels (Lee 2013, "Pseudo-Label"; thresholded as in FixMatch's
pseudo-label baseline, Sohn et al. 2020).

The teacher labels the transfer set: the student learns the teacher's argmax where the
teacher's confidence max softmax ≥ ``threshold`` (0.95), with cross-entropy averaged over the
batch (masked samples count zero, as FixMatch does). Optionally the true labels of a fixed
``labeled_fraction`` of the training images (chosen by a hash of the sample index) are used
instead, with weight γ: L = γ·CE_labeled(s, y) + CE_unlabeled(s, argmax t)·[max p_t ≥ τ].

The transfer set (``Needs(transfer_set=True)``) is the training images plus the data set's
unlabeled pool when it has one — SVHN's ``extra`` split when ``extra_32x32.mat`` is under
``data.root``, an image folder's ``unlabeled/`` — and the training images alone otherwise.
Pool images have no true label (``y == -1``): they enter only through the pseudo-label term,
never the labelled share, and ``images_seen`` counts them. Without a pool the student sees
nothing but the teacher's own training images, where a well-trained teacher is right and
confident almost everywhere, so the method can do little more than ``scratch``; a pool is
where hard teacher labels carry information the labels do not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods.base import HParam, Method, Needs, SearchSpace, Step


def labeled_mask(index: torch.Tensor, fraction: float) -> torch.Tensor:
    """A fixed subset of about ``fraction`` of the samples (Knuth's multiplicative hash)."""
    if fraction <= 0:
        return torch.zeros_like(index, dtype=torch.bool)
    return ((index * 2654435761) % 2**32).double() / 2**32 < fraction


class PseudoLabel(Method):
    """Pseudo-labels: CE on the teacher's confident argmax, γ·CE on the labelled share."""

    hparams = (
        HParam("gamma", 1.0, low=0.0, doc="weight of cross-entropy on the labelled share"),
        HParam(
            "threshold",
            0.95,
            low=0.0,
            high=1.0,
            search=SearchSpace(0.5, 0.99),
            doc="the teacher's confidence needed to use its label",
        ),
        HParam(
            "labeled_fraction",
            0.0,
            low=0.0,
            high=1.0,
            doc="share of the training images that keep their true labels",
        ),
    )
    needs = Needs(teacher=True, indices=True, transfer_set=True)
    combinable = False  # its loss replaces cross-entropy on the labels: no term to add

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        assert step.teacher is not None and step.index is not None
        conf, pseudo = F.softmax(step.teacher.logits, dim=1).max(dim=1)
        has_label = step.y >= 0  # pool images come with y == -1
        labeled = labeled_mask(step.index, self.hp["labeled_fraction"]) & has_label
        use = (conf >= self.hp["threshold"]) & ~labeled
        s = step.student.logits
        b = len(s)
        y = torch.where(has_label, step.y, torch.zeros_like(step.y))  # a valid class; masked
        ce_true = (F.cross_entropy(s, y, reduction="none") * labeled).sum() / b
        ce_pseudo = (F.cross_entropy(s, pseudo, reduction="none") * use).sum() / b
        return {"ce": self.hp["gamma"] * ce_true, "pseudo": ce_pseudo}
