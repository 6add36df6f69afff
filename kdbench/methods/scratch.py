"""``scratch``: the student alone, trained on the labels with cross-entropy.

The floor every method is measured against; added to every pair automatically.
"""

from __future__ import annotations

from kdbench.methods.base import Method, Needs


class Scratch(Method):
    """Cross-entropy on the true labels: L = CE(s, y). No teacher."""

    hparams = ()
    needs = Needs(teacher=False)
    combinable = False
