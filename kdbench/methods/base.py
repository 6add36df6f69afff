"""The method contract every distillation method follows.

A method is an ``nn.Module`` (so any regressor or embedding head it trains is moved, saved
and optimised with the student) that declares:

- ``hparams``: its hyperparameters, each with a default, a valid domain and a default search
  space, under the names users query (``gamma``, ``alpha``, ``beta``, ``T``, ...);
- ``needs``: what the trainer must give it (the teacher's outputs, sample indices, ...);
- ``loss(step)``: a dict of named, already-weighted loss terms; the trainer sums them;
- optionally, ``prepare``: a stage of its own before the student trains (pre-training a
  connector, making a synthetic training set), which may replace the training set and the
  number of epochs; with ``reusable`` the content keys of what it makes (so a later trial
  reuses it rather than making it again) and with ``cost`` what the estimator should count.

The trainer never looks at a method's name: everything it does differently follows from
``needs`` and from what ``prepare`` returns. Loss weights follow the CRD benchmark (RepDistiller):
``loss = gamma * CE(labels) + alpha * KD(T) + beta * L_method``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.models.base import ModelOutput
from kdbench.results.layout import ArtifactKey
from kdbench.spec import Budget, MethodEntry
from kdbench.spec.hparams import HParam, SearchSpace


# The loss weights shared by every method, in the RepDistiller convention.
def gamma(default: float = 1.0) -> HParam:
    return HParam(
        "gamma",
        default,
        low=0.0,
        search=SearchSpace(0.0, 1.0),
        doc="weight of cross-entropy on the true labels",
    )


def alpha(default: float) -> HParam:
    return HParam(
        "alpha",
        default,
        low=0.0,
        search=SearchSpace(0.0, 1.0),
        doc="weight of the KL term on temperature-softened teacher probabilities",
    )


def feat_dim(default: int = 128) -> HParam:
    """The dimension of a method's linear embedding heads (CRD, CC)."""
    return HParam("feat_dim", default, kind="int", low=1, doc="embedding dimension")


def beta(default: float) -> HParam:
    """The method's own term; searched log-uniformly over two decades around the default."""
    return HParam(
        "beta",
        default,
        low=0.0,
        search=SearchSpace(default / 10.0, default * 10.0, log=True),
        doc="weight of the method's own loss term",
    )


def temperature(default: float = 4.0) -> HParam:
    return HParam(
        "T",
        default,
        low=0.0,
        low_open=True,
        search=SearchSpace(1.0, 20.0, log=True),
        doc="softmax temperature",
    )


@dataclass(frozen=True)
class Needs:
    """What a method asks of the trainer."""

    teacher: bool = True
    """The teacher's outputs (logits, block features, embedding) for every batch: the default
    answer of ``Method.uses_teacher``, which is the one question every caller asks (a method
    whose answer depends on its hyperparameters overrides that, never this)."""
    indices: bool = False
    """Each sample's index in the training split (memory banks)."""
    synthetic_set: bool = False
    """Dataset distillation: the method makes a small training set (``synthesize``) and the
    student is trained on it alone (see ``kdbench.methods.synthetic``)."""
    transfer_set: bool = False
    """Train on the training images plus the data set's unlabeled pool when it has one
    (``DataBundle.unlabeled_x``): a pool image comes with label ``y == -1`` and an index past
    the training split's, so the method's ``loss`` must not use ``y`` where it is negative.
    A combination ``A+B`` never gets the pool: its shared ``gamma``·CE needs every label."""


def missing_maps(
    student: ModelOutput, teacher: ModelOutput | None, *, preact: bool = False, blocks: int = 1
) -> str | None:
    """The common ``pairing`` of a method that matches feature maps: what is missing when
    there is no teacher, or either network exposes fewer than ``blocks`` block outputs (its
    pre-activation features, with ``preact``) or they are not (batch, C, H, W) maps."""
    if teacher is None:
        return "it distils from a teacher, and there is none"
    what = "pre-activation features" if preact else "block features"
    for role, out in (("student", student), ("teacher", teacher)):
        maps = out.preact if preact else out.feats
        if not maps:
            return f"the {role} exposes no {what}"
        if len(maps) < blocks:
            return f"the {role} exposes fewer than {blocks} blocks ({what})"
        if any(f.ndim != 4 for f in maps):
            return f"the {role}'s {what} are not (batch, channels, H, W) maps"
    return None


@dataclass(frozen=True)
class MethodContext:
    """What a method may look at when it builds its own modules."""

    student: nn.Module
    teacher: nn.Module | None
    num_classes: int
    n_train: int
    input_shape: tuple[int, ...]
    """One image's shape (C, H, W)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    train_labels: torch.Tensor | None = None
    """The training split's labels, by sample index (CRD draws negatives from other classes)."""

    @classmethod
    def for_data(
        cls, student: nn.Module, teacher: nn.Module | None, data: Any, device: torch.device
    ) -> MethodContext:
        """The context of a trial on a ``DataBundle``."""
        return cls(
            student=student,
            teacher=teacher,
            num_classes=data.num_classes,
            n_train=len(data.train_y),
            input_shape=data.input_shape,
            device=device,
            train_labels=data.train_y,
        )

    @torch.no_grad()
    def probe(self) -> tuple[ModelOutput, ModelOutput | None]:
        """The student's and teacher's outputs on a dummy batch, to size a method's own modules."""
        x = torch.zeros((2, *self.input_shape), device=self.device)
        outs: list[ModelOutput | None] = []
        for model in (self.student, self.teacher):
            if model is None:
                outs.append(None)
                continue
            was = model.training
            model.eval()
            outs.append(model.forward_features(x))
            model.train(was)
        assert outs[0] is not None
        return outs[0], outs[1]


@dataclass(frozen=True)
class Prerequisite:
    """What must exist before a method's trial runs, declared by the method
    (``Method.prerequisites``): a trial of its own, planned like a teacher, trained once per
    (data set, network, recipe, seed) and shared by every trial that declares the same one.
    Its result is cached under its trial id and reaches each trial that needs it in
    ``prepare``'s ``reused``, under ``ArtifactKey(kind, <its trial id>)``. dd_mtt's expert
    trajectories are one; a generator or a pretrained network would be another."""

    kind: str
    """What it is: its row's ``phase`` and ``method`` (one of ``results.schema.Phase``)."""
    network: str
    """The network it trains: its row's ``teacher`` column."""
    recipe: tuple[tuple[str, Any], ...]
    """Everything that, with the data set and the seed, decides it: its row's ``hparams``,
    and what ``Method.prerequisite_recipe`` is given back on the worker."""
    budget: Budget
    """How it trains (epochs, batch, optimiser): part of its trial id, as a teacher's."""
    seeds: int = 1
    """How many: one trial at each seed 0 … n−1."""


StageLoss = Callable[[ModelOutput | None, ModelOutput], torch.Tensor]
"""A stage's loss of one batch: (the student's outputs, or None when the stage does not run
the student; the teacher's outputs) -> a scalar."""


@dataclass
class Stage:
    """A method's pre-training stage, as its ``prepare`` declares it and the trainer runs it
    before the student's training (``kdbench.training.stage``): ``epochs`` epochs over the
    training split, SGD on ``params`` at the suite's learning rate × ``lr_scale``, on ``loss``.
    ``train``: the modules in train mode during the stage (the rest of the student, when it
    runs, in eval mode); ``student``: the network whose outputs ``loss`` reads first, or None
    when the stage needs only the teacher's (the student is then not run)."""

    loss: StageLoss
    params: list[nn.Parameter]
    train: list[nn.Module]
    student: nn.Module | None
    teacher: nn.Module
    epochs: int
    lr_scale: float = 1.0


@dataclass
class TrainingSet:
    """What the student trains on, as a method's ``prepare`` decides (by default: the data)."""

    data: Any
    """A ``DataBundle``: its training split is what the student sees; val and test stay real."""
    epochs: int
    seconds: float = 0.0
    """Wall time of the method's own stage, counted in the trial's ``train_seconds``."""
    stage: Stage | None = None
    """A pre-training stage the trainer runs before the student's training (ab, ft, fsp
    pre-train a connector, a paraphraser or the student's layers); its seconds are added to
    ``seconds`` once it has run."""
    with_teacher: bool = True
    """Whether the teacher's outputs reach the loss (a method whose teacher only chose the
    training set says False)."""
    artifacts: dict[ArtifactKey, bytes] = field(default_factory=dict)
    """What the stage made that should be kept (the result writer saves it)."""
    artifact: ArtifactKey | None = None
    """The row's ``artifact``: what the stage made (a final trial's saved student otherwise)."""
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    """Applied to every normalised training batch after the suite's own augmentation (DSA on
    a synthetic set), drawing from the trial's generator."""

    @property
    def stage_epochs(self) -> int:
        """Epochs of the method's own stage over the training split; 0 for none."""
        return self.stage.epochs if self.stage is not None else 0


Reused = Mapping[ArtifactKey, bytes]
"""What earlier trials made under a method's ``reusable`` keys, as the driver found it."""


@dataclass(frozen=True)
class CostBasis:
    """What a trial's cost follows from: the training split's size, the classes, the suite's
    epochs and batch size."""

    n_train: int
    num_classes: int
    epochs: int
    batch_size: int


@dataclass(frozen=True)
class Cost:
    """What one trial of a method costs, for the estimator: training images per epoch, epochs,
    and the seconds of its own stage."""

    images_per_epoch: int
    epochs: int
    stage_seconds: float = 0.0
    stage_unbounded: bool = False
    """The stage has no time bound, so its cost is not in ``stage_seconds``."""


@dataclass
class Step:
    """One training batch as a method sees it."""

    x: torch.Tensor
    y: torch.Tensor
    student: ModelOutput
    teacher: ModelOutput | None = None
    index: torch.Tensor | None = None
    epoch: int = 0
    epochs: int = 1


class Method(nn.Module):
    """Base class of every method. Subclasses set ``hparams`` and ``needs`` and write ``terms``."""

    name: ClassVar[str] = ""
    hparams: ClassVar[tuple[HParam, ...]] = ()
    needs: ClassVar[Needs] = Needs()
    combinable: ClassVar[bool] = True
    """Whether ``A+B`` may name it (a method with no term of its own adds nothing)."""

    def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__()
        self.hp = dict(hp)

    @classmethod
    def in_memory(cls) -> str | None:
        """Why the method needs the training images held in memory (it reads them itself,
        not through the trainer's batches), or None: it runs on a streamed data set too.
        Validation refuses the method on a streamed data set with this reason."""
        if cls.needs.transfer_set:
            return "it trains on the training images and the unlabeled pool held in memory"
        if cls.needs.synthetic_set:
            return "it builds its synthetic set from the training images held in memory"
        return None

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        """Named, weighted terms: ``ce`` (gamma · cross-entropy) plus the method's own."""
        terms = {"ce": self.hp.get("gamma", 1.0) * F.cross_entropy(step.student.logits, step.y)}
        terms.update(self.terms(step))
        return terms

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        """The method's own terms, each already multiplied by its weight."""
        return {}

    def prepare(self, data: Any, *, spec: Any, device: torch.device, reused: Reused) -> TrainingSet:
        """The method's stage before training, given the trial's ``spec`` and what earlier
        trials made under this trial's ``reusable`` keys (``reused``). The identity here."""
        return TrainingSet(data, spec.epochs)

    @classmethod
    def pairing(
        cls, student: ModelOutput, teacher: ModelOutput | None, hp: Mapping[str, Any]
    ) -> str | None:
        """What this method misses in a teacher → student pair, or ``None`` when it can distil
        it: ``student`` and ``teacher`` are the two models' outputs on a probe batch (built on
        the meta device, so only their shapes are real). Validation calls it for every pair a
        suite gives the method, before anything runs, and refuses the suite with the reason,
        which names the role, not the model (the caller adds the pair's names): e.g. "the
        student exposes no pre-activation features". By default nothing is missing."""
        return None

    @classmethod
    def pairing_models(
        cls, student: nn.Module, teacher: nn.Module | None, hp: Mapping[str, Any]
    ) -> str | None:
        """Like ``pairing``, for what only the modules tell (the teacher has BatchNorm layers):
        the models as built on the meta device. By default nothing is missing."""
        return None

    @classmethod
    def uses_teacher(cls, hp: Mapping[str, Any]) -> bool:
        """Whether a trial with these hyperparameters reads the teacher: its weights are handed
        to the trial, and the trainer gives its outputs on every batch. ``needs.teacher``
        unless the method says otherwise."""
        return cls.needs.teacher

    @classmethod
    def prerequisites(
        cls, hp: Mapping[str, Any], input_shape: tuple[int, ...]
    ) -> tuple[Prerequisite, ...]:
        """What must be made before a trial with these hyperparameters runs, on images of
        ``input_shape``; the plan makes each a trial of its own. None by default."""
        return ()

    @classmethod
    def prerequisite_recipe(cls, kind: str, recipe: Mapping[str, Any]) -> Any:
        """The recipe object a worker trains a declared prerequisite by, from its ``recipe``
        (a trajectory's: ``training.trajectory.TrajectoryRecipe``)."""
        raise NotImplementedError(f"{cls.name} declares no prerequisite of kind {kind!r}")

    @classmethod
    def baselines(cls, entries: Sequence[MethodEntry]) -> list[MethodEntry]:
        """Entries a suite that lists this method gets besides its own, as every suite gets
        ``scratch``: the baselines its scores compare with (dataset distillation's random
        subsets and hard-label twins, for DD-Ranking's IOR and HLR). ``entries`` are all of
        the suite's, with those added before; the plan calls each distinct hook once
        (``plan.implied_entries``). None by default."""
        return []

    @classmethod
    def reusable(cls, spec: Any) -> tuple[ArtifactKey, ...]:
        """Content keys of what ``prepare`` makes for ``spec`` that another trial may reuse."""
        return ()

    @classmethod
    def cost(cls, hp: Mapping[str, Any], basis: CostBasis) -> Cost:
        """What a trial costs: by default, every epoch over the whole training split."""
        return Cost(basis.n_train, basis.epochs)

    @classmethod
    def hparam(cls, name: str) -> HParam:
        for h in cls.hparams:
            if h.name == name:
                return h
        raise KeyError(name)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {h.name: h.default for h in cls.hparams if not h.optional}

    @classmethod
    def complete(cls, hp: dict[str, Any]) -> dict[str, Any]:
        """A trial's hyperparameters (defaults, then the suite's) with the optional ones that
        a switch among them brings in (soft labels bring their temperature and weights)."""
        return hp


def combine(components: Sequence[type[Method]]) -> type[Method]:
    """``A+B``: the loss terms of both, the hyperparameters of both.

    A hyperparameter both declare (``gamma``) is shared. In a combination ``gamma`` and
    ``alpha`` default to 1, the convention of RepDistiller's combined runs (CRD+KD: γ=1, α=1,
    β=0.8); ``beta`` and the rest keep their method's default.
    """
    merged: dict[str, HParam] = {}
    for comp in components:
        for h in comp.hparams:
            if h.name in ("gamma", "alpha"):
                h = HParam(**{**h.__dict__, "default": 1.0})
            merged.setdefault(h.name, h)

    class Combined(Method):
        name = "+".join(c.name for c in components)
        hparams = tuple(merged.values())
        needs = Needs(
            teacher=any(c.needs.teacher for c in components),
            indices=any(c.needs.indices for c in components),
        )

        def __init__(self, hp: Mapping[str, Any], ctx: MethodContext) -> None:
            super().__init__(hp, ctx)
            self.parts = nn.ModuleList(c(hp, ctx) for c in components)

        @classmethod
        def pairing(
            cls, student: ModelOutput, teacher: ModelOutput | None, hp: Mapping[str, Any]
        ) -> str | None:
            for c in components:
                reason = c.pairing(student, teacher, hp)
                if reason:
                    return f"{c.name}: {reason}"
            return None

        def terms(self, step: Step) -> dict[str, torch.Tensor]:
            out: dict[str, torch.Tensor] = {}
            for part in self.parts:
                out.update(part.terms(step))
            return out

    Combined.__name__ = Combined.__qualname__ = "Combined_" + "_".join(c.name for c in components)
    Combined.__doc__ = "Combination of " + ", ".join(c.name for c in components) + "."
    return Combined
