"""What the dataset-distillation methods (``dd_*``) share: the synthetic set and its making.

A ``dd_*`` method does not add a loss term to the student's training. It *replaces the
training set*: ``synthesize`` makes ``ipc`` images per class from the training split (a
chosen real subset, or images learned by matching), and the student is then trained from
scratch, with cross-entropy, on those images alone, and scored on the real validation and
test splits. ``SyntheticSetMethod.prepare`` does this through the method contract: it returns
the set as the training split and the epochs to train on it, so the trainer, the driver and
the estimator need not know that the method is one of these.

A set is named by a content key (``reusable``): what determines the set alone, so a rerun, a
final trial with a tuning trial's values or another student of the same teacher reuse it.

How the student trains on the synthetic set: with the suite's optimiser, learning rate and
schedule, for as many optimiser *steps* as a student on the full training split takes (a
student on 100 images runs 255 epochs where one on digits' 1,078 runs 30): the same
training budget in steps for every method of a suite. ``train_epochs`` sets the epochs
instead: the reference protocol is ``train_epochs: 300`` with a budget of SGD lr 0.01,
batch 256, step schedule at epoch 150 (``suites/dataset_distillation.yaml``).

Synthesis works in the normalised space the networks see; the set is stored back in the
data set's stored scale (floats around [0, 1]), so the trainer treats it like any split.
Learned images are not clipped to [0, 1], as in the reference code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from kdbench.data.base import to_unit
from kdbench.data.stream import batches, is_stream
from kdbench.data.synthetic_set import SyntheticSet
from kdbench.methods.base import (
    Cost,
    CostBasis,
    HParam,
    Method,
    MethodContext,
    Needs,
    Reused,
    Step,
    TrainingSet,
)
from kdbench.methods.dsa import DSA
from kdbench.methods.kd import kd_loss
from kdbench.methods.registry import method_class, resolve_hparams
from kdbench.models.convnet import ConvNet, matching_size
from kdbench.results.ddsets import evaluation
from kdbench.results.layout import ArtifactKey
from kdbench.spec import PROTOCOL_VERSION, MethodEntry, digest, slug, split_identity

# -- hyperparameters the dd_* methods share -------------------------------------------------


def train_epochs() -> HParam:
    return HParam(
        "train_epochs",
        0,
        kind="int",
        low=0,
        doc="epochs of the student on the synthetic set; 0: as many optimiser steps as the "
        "suite's budget takes on the whole training split",
    )


def ipc(default: int = 10) -> HParam:
    return HParam(
        "ipc", default, kind="int", low=1, doc="images per class in the synthetic set (1, 10, 50)"
    )


def time_budget(default: float) -> HParam:
    return HParam(
        "time_budget_s",
        default,
        low=0.0,
        doc="wall-clock budget of the synthesis in seconds; it stops after the last iteration "
        "that fits (0: no budget, run every iteration)",
    )


def labels(default: str = "hard") -> tuple[HParam, ...]:
    """How the student learns from the set: ``hard`` (cross-entropy on the set's labels) or
    ``soft`` (the suite's teacher's soft labels on each batch the student sees, by kd's loss:
    γ·CE + α·T²·KL(p_t^T ‖ p_s^T)). With ``hard`` the other three are not in a trial's
    hyperparameters; with ``soft`` they take these defaults unless the suite fixes them, and
    are searched only where the suite's ``search`` gives a range (``T: [1, 20, log]``)."""
    hard = default == "hard"
    return (
        HParam(
            "labels",
            default,
            kind="categorical",
            choices=("hard", "soft"),
            optional=hard,
            doc="the student's targets on the set: the set's labels (hard) or the teacher's "
            "soft labels (soft, by kd's loss)",
        ),
        HParam(
            "T",
            4.0,
            low=0.0,
            low_open=True,
            optional=hard,
            doc="soft labels: softmax temperature of teacher and student",
        ),
        HParam("alpha", 1.0, low=0.0, optional=hard, doc="soft labels: weight of the KL term"),
        HParam(
            "gamma",
            0.0,
            low=0.0,
            optional=hard,
            doc="soft labels: weight of cross-entropy on the set's own labels",
        ),
    )


LABEL_HPARAMS = ("labels", "T", "alpha", "gamma")
"""How the student is trained on a set, not what the set is: not part of the set's key."""


def dsa(default: bool) -> HParam:
    """Differentiable siamese augmentation (``kdbench.methods.dsa``): in the matching of a
    learned set, and on every batch of the student's training on any set. Off by default for
    the methods whose reference had none (optional then: their trials keep their ids)."""
    return HParam(
        "dsa",
        default,
        kind="categorical",
        choices=(True, False),
        optional=not default,
        doc="differentiable siamese augmentation in matching and while the student trains "
        "on the set",
    )


def net_width() -> HParam:
    return HParam(
        "net_width",
        0,
        kind="int",
        low=0,
        doc="channels of the matching ConvNet; 0: sized to the images (see matching_net)",
    )


def net_depth() -> HParam:
    return HParam(
        "net_depth",
        0,
        kind="int",
        low=0,
        doc="conv blocks of the matching ConvNet; 0: sized to the images (see matching_net)",
    )


def image_lr(default: float) -> HParam:
    return HParam(
        "lr_img",
        default,
        low=0.0,
        low_open=True,
        doc="learning rate of the synthetic images (SGD, momentum 0.5); not searched by "
        "default: each tuning trial would be a whole synthesis",
    )


class SyntheticSetMethod(Method):
    """Base of the ``dd_*`` methods: subclasses write ``synthesize``."""

    needs: ClassVar[Needs] = Needs(teacher=False, synthetic_set=True)
    combinable: ClassVar[bool] = False
    training_hparams: ClassVar[tuple[str, ...]] = ("train_epochs", *LABEL_HPARAMS)
    """Hyperparameters of the student's training on the set alone: not part of its key (a
    set made once is evaluated with hard and with soft labels)."""

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hp, ctx)
        # Kept as the context, not as an attribute: a module attribute would make the teacher
        # a submodule of the method, and its parameters the optimiser's.
        self.ctx = ctx
        self.soft = self.hp.get("labels", "hard") == "soft"

    @classmethod
    def uses_teacher(cls, hp: Mapping[str, Any]) -> bool:
        """The set's making reads the teacher (``needs.teacher``: herding, SRe2L), or soft
        labels do: the trainer then gives the teacher's outputs on every batch."""
        return cls.needs.teacher or hp.get("labels", "hard") == "soft"

    @classmethod
    def baselines(cls, entries: Sequence[MethodEntry]) -> list[MethodEntry]:
        return baseline_entries(entries)

    @classmethod
    def complete(cls, hp: dict[str, Any]) -> dict[str, Any]:
        """Soft labels bring their temperature and weights at their defaults."""
        if hp.get("labels", "hard") == "soft":
            for name in LABEL_HPARAMS:
                hp.setdefault(name, cls.hparam(name).default)
        return hp

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        """Hard labels: cross-entropy on the set's labels. Soft labels: kd's loss against the
        teacher's outputs on the same (augmented) batch, γ·CE + α·T²·KL."""
        if not self.soft:
            return {"ce": F.cross_entropy(step.student.logits, step.y)}
        assert step.teacher is not None
        hp = self.hp
        terms = {"kd": hp["alpha"] * kd_loss(step.student.logits, step.teacher.logits, hp["T"])}
        if hp["gamma"]:
            terms["ce"] = hp["gamma"] * F.cross_entropy(step.student.logits, step.y)
        return terms

    def augmentation(self) -> Any:
        """What augments each batch of the student's training on the set: DSA with ``dsa``
        (per-sample parameters, as the reference evaluates), else nothing."""
        if not self.hp.get("dsa", False):
            return None
        return DSA()

    def synthesize(self, data: Any, *, seed: int, device: torch.device) -> SyntheticSet:
        """The synthetic set for ``data`` (a ``DataBundle``), deterministic for a seed."""
        raise NotImplementedError

    def prepare(self, data: Any, *, spec: Any, device: torch.device, reused: Reused) -> TrainingSet:
        """The set (made now, or the one an earlier trial made) as the training split, for as
        many optimiser steps as a student on the whole split takes (or ``train_epochs``)."""
        (key,) = self.reusable(spec)
        artifacts = {}
        if key in reused:
            made = SyntheticSet.from_bytes(reused[key])
        else:
            made = self.synthesize(data, seed=spec.seed, device=device)
            made.meta.update(method=spec.method, dataset=spec.dataset, seed=spec.seed)
            made.meta["hparams"] = dict(spec.hparams)
            artifacts[key] = made.to_bytes()
        epochs = self.student_epochs(
            self.hp, spec.epochs, len(data.train_y), len(made.labels), spec.budget.batch_size
        )
        return TrainingSet(
            replace(data, train_x=made.images, train_y=made.labels),
            epochs,
            seconds=made.seconds,  # a reused set's own making counts, as if made now
            # herding's teacher chose the set; with hard labels it takes no part in training
            with_teacher=self.soft,
            artifacts=artifacts,
            artifact=key,
            transform=self.augmentation(),
        )

    @classmethod
    def reusable(cls, spec: Any) -> tuple[ArtifactKey, ...]:
        """The set's content key. The student, its training (budget, ``train_epochs``) and the
        phase do not enter; the teacher enters, as its trial id, only for a method that uses
        it (herding)."""
        identity = {
            "protocol": PROTOCOL_VERSION,
            "dataset": spec.dataset,
            **split_identity(spec.data.val_fraction, spec.refit),
            "teacher_id": spec.teacher_id if cls.needs.teacher else None,
            "method": spec.method,
            "hparams": {k: v for k, v in spec.hparams if k not in cls.training_hparams},
            "seed": spec.seed,
        }
        key = slug(f"{spec.method}-{spec.dataset}") + "-" + digest(identity, 16)
        return (ArtifactKey("synthetic", key),)

    @classmethod
    def cost(cls, hp: Mapping[str, Any], basis: CostBasis) -> Cost:
        """The student's epochs on ``ipc`` × classes images, and the synthesis's time budget
        (a synthesis without one is said to be unbounded)."""
        n_syn = int(hp["ipc"]) * basis.num_classes
        budget = float(hp.get("time_budget_s", 0.0))
        return Cost(
            n_syn,
            cls.student_epochs(hp, basis.epochs, basis.n_train, n_syn, basis.batch_size),
            stage_seconds=budget,
            stage_unbounded="time_budget_s" in hp and budget <= 0,
        )

    @classmethod
    def student_epochs(
        cls, hp: Mapping[str, Any], epochs: int, n_train: int, n_synthetic: int, batch_size: int
    ) -> int:
        """Epochs of the student on the set: ``train_epochs``, or the suite's steps."""
        fixed = int(hp.get("train_epochs") or 0)
        return fixed or synthetic_epochs(epochs, n_train, n_synthetic, batch_size)


# -- helpers ---------------------------------------------------------------------------------


def class_indices(labels: torch.Tensor, num_classes: int, per_class: int) -> list[torch.Tensor]:
    """Indices of each class in ``labels``; a class with fewer than ``per_class`` is refused."""
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < per_class:
            raise ValueError(
                f"ipc={per_class} needs {per_class} training images of class {c}; "
                f"the training split has {len(idx)}"
            )
        out.append(idx)
    return out


def random_subset(
    labels: torch.Tensor, num_classes: int, per_class: int, gen: torch.Generator
) -> torch.Tensor:
    """``per_class`` distinct random indices of each class, grouped by class."""
    picks = []
    for idx in class_indices(labels, num_classes, per_class):
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(picks)


def real_set(data: Any, pick: torch.Tensor) -> SyntheticSet:
    """The training images ``pick`` as a set (the subset methods' result); from a streamed
    split, read in their evaluation view."""
    return SyntheticSet(
        to_unit(read_images(data.train_x, pick)),
        data.train_y[pick].long(),
        meta={"indices": pick.tolist()},
    )


def read_images(x: Any, pick: torch.Tensor) -> torch.Tensor:
    """``x[pick]`` of an in-memory split; of a streamed one, those images read from their files
    (in their evaluation view); a file that cannot be decoded is refused."""
    if not is_stream(x):
        return x[pick]
    out = torch.empty((len(pick), *x.shape[1:]), dtype=torch.uint8)
    for read in batches(x[pick], batch_size=256, workers=0):
        if read.skipped:
            raise ValueError(f"{read.skipped} of the picked training images cannot be decoded")
        out[read.index] = read.images
    return out


@dataclass
class Matching:
    """Where the learned methods (dd_dc, dd_dm) start: the training split on the device once,
    each class's indices, and the synthetic images, initialised from random real ones."""

    train_x: torch.Tensor
    by_class: list[torch.Tensor]
    images: torch.Tensor
    """Normalised, requiring grad: what the methods optimise."""
    labels: torch.Tensor

    @classmethod
    def start(cls, data: Any, ipc: int, gen: torch.Generator, device: torch.device) -> Matching:
        by_class = class_indices(data.train_y, data.num_classes, ipc)
        init = random_subset(data.train_y, data.num_classes, ipc, gen)
        train_x = data.train_x.to(device)
        images = data.normalize(train_x[init.to(device)]).requires_grad_(True)
        return cls(train_x, by_class, images, data.train_y[init].long().to(device))

    def real_batch(self, data: Any, idx: torch.Tensor) -> torch.Tensor:
        """Normalised training images ``idx``."""
        return data.normalize(self.train_x[idx.to(self.train_x.device)])


def to_stored(x: torch.Tensor, data: Any) -> torch.Tensor:
    """Normalised images back to the data set's stored scale (the inverse of ``normalize``)."""
    mean = torch.tensor(data.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=x.device).view(1, -1, 1, 1)
    return x * std + mean


class Deadline:
    """Stops an optimisation after the last iteration that fits in ``budget_s`` (0: never)."""

    def __init__(self, budget_s: float) -> None:
        self.budget = budget_s
        self.start = time.perf_counter()
        self.longest = 0.0
        self._last = self.start

    def tick(self) -> bool:
        """Call after each iteration: whether another one would overrun the budget."""
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last)
        self._last = now
        if self.budget <= 0 or math.isinf(self.budget):
            return False
        return now - self.start + self.longest > self.budget

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def matching_net(data: Any, width: int, depth: int, device: torch.device) -> torch.nn.Module:
    """A freshly initialised ConvNet for matching (instance norm: it sees one class at a time)."""
    width, depth = matching_size(data.input_shape, width, depth)
    net = ConvNet(
        num_classes=data.num_classes, input_shape=data.input_shape, width=width, depth=depth
    )
    return net.to(device)


def synthetic_epochs(epochs: int, n_train: int, n_synthetic: int, batch_size: int) -> int:
    """Epochs on the synthetic set that take as many optimiser steps as ``epochs`` on the data."""
    steps = epochs * math.ceil(n_train / batch_size)
    return max(1, math.ceil(steps / math.ceil(n_synthetic / batch_size)))


# -- the baselines every dataset-distillation entry is scored against (DD-Ranking) -----------


def baseline_entries(entries: Sequence[Any]) -> list[Any]:
    """Every dataset-distillation method's ``baselines``: for every
    dataset-distillation entry with soft labels, its hard-label twin (``<label>_hard``, the
    same sets evaluated on their own labels: HLR's term); then for every dd entry, a
    ``dd_random`` of the same ipc evaluated the same way (labels and their weights, DSA,
    epochs) on the same pairs (IOR's term), unless the suite has one. A searched setting is
    taken at its default."""

    def settings(e: Any) -> dict[str, Any]:
        return evaluation(dict(resolve_hparams(e)))

    def same_set(a: Any, b: Any) -> bool:
        """Entries of one method that make the same sets and evaluate them alike."""
        cls = method_class(a.name)
        made = [
            {k: v for k, v in resolve_hparams(e) if k not in cls.training_hparams} for e in (a, b)
        ]
        return made[0] == made[1] and settings(a) == settings(b)

    def is_dd(e: Any) -> bool:
        return getattr(method_class(e.name), "needs", Needs()).synthetic_set

    labels = {e.label for e in entries}
    added: list[Any] = []

    def fresh(label: str) -> str:
        while label in labels:
            label += "_auto"
        labels.add(label)
        return label

    for e in [e for e in entries if is_dd(e)]:
        if settings(e)["labels"] == "soft":
            params = {k: v for k, v in e.params if k not in LABEL_HPARAMS}
            if method_class(e.name).hparam("labels").default != "hard":  # dd_sre2l's is soft
                params["labels"] = "hard"
            twin = MethodEntry(e.name, "", tuple(sorted(params.items())), (), e.pairs)
            if not any(o.name == e.name and same_set(o, twin) for o in entries):
                added.append(replace(twin, label=fresh(f"{e.label}_hard")))
    randoms: dict[tuple[str, ...], Any] = {}
    for e in [e for e in (*entries, *added) if is_dd(e)]:
        want = settings(e)
        key = tuple(sorted((k, str(v)) for k, v in want.items()))
        have = [o for o in (*entries, *added) if o.name == "dd_random" and settings(o) == want]
        covered = {p for o in have for p in o.pairs}
        if any(not o.pairs for o in have) or (e.pairs and set(e.pairs) <= covered):
            continue
        if key in randoms:  # one baseline for every entry evaluated this way: their pairs
            got = randoms[key]
            pairs = () if not got.pairs or not e.pairs else tuple(sorted({*got.pairs, *e.pairs}))
            randoms[key] = replace(got, pairs=pairs)
            continue
        name = f"dd_random_ipc{want['ipc']}" + ("_soft" if want["labels"] == "soft" else "")
        name += "_dsa" if want["dsa"] else ""
        params = {k: v for k, v in want.items() if k in ("ipc", "labels", "dsa")}
        if want["train_epochs"]:
            params["train_epochs"] = want["train_epochs"]
        for k in ("T", "alpha", "gamma"):
            if k in want:
                params[k] = want[k]
        if params.get("labels") == "hard":
            del params["labels"]
        if not params.get("dsa"):
            params.pop("dsa", None)
        randoms[key] = MethodEntry("dd_random", name, tuple(sorted(params.items())), (), e.pairs)
    added += [replace(r, label=fresh(r.label)) for r in randoms.values()]
    return added
