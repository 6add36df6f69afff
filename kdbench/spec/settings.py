"""The suite's sections of settings, each a frozen dataclass whose fields declare their
key, check, default and doc once (``setting``): ``budget``, ``data``, ``teacher``, ``tuning``
and ``resources``. ``SECTIONS`` names them by their top-level key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdbench.spec.checks import Bool, Check, Choice, Int, Number, Optional, Reader, String
from kdbench.spec.messages import show
from kdbench.spec.sections import Section, identity, setting

OPTIMIZERS = ("sgd", "adam", "adamw")
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
SCHEDULES = ("cosine", "constant", "half")
"""``half``: ×0.1 once, at half the epochs of the trial (dataset distillation's evaluation:
the same schedule for a set trained 300 epochs and one trained 1,000)."""
PRUNERS = ("median", "hyperband", "none")
REFITS = ("none", "train+val")
TUNING_SEED = 1_000_000
"""The default ``tuning.seed``: far from any seed list a person writes (0, 1, 2, 42, 1234), so
that no tuning trial doubles as a final trial (an overlap is refused)."""
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")

# Sane upper bounds, so that an absurd value is refused before any work starts.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_TRIALS = 100_000
MAX_SEEDS = 10_000
MAX_SEED = 2**32 - 1
SEED_BOUND = "numpy, which seeds Optuna's sampler, takes no seed of 2**32 or more"


class ScheduleCheck(Check):
    """``cosine``, ``constant``, or ``{step: [epochs], gamma: 0.1}``."""

    def parse(self, r: Reader, value: Any, key: str) -> Schedule:
        return _schedule(r, value, key)

    def render(self, value: Schedule) -> Any:
        return value.to_yaml()


class CustomResources(Check):
    """``{name: amount}``: Ray custom resources; CPUs and GPUs have keys of their own."""

    def parse(self, r: Reader, value: Any, key: str) -> Custom:
        raw = value if value is not None else {}
        if not isinstance(raw, dict):
            raise r.fail(key, f"expected a mapping of resource name to amount, got {show(raw)}")
        out = []
        for name, amount in raw.items():
            if not isinstance(name, str) or not name:
                raise r.fail(key, f"{show(name)} is not a resource name")
            if name in RAY_BUILTIN_RESOURCES:
                raise r.fail(
                    f"{key}.{name}",
                    f"'{name}' is not a custom resource; give CPUs and GPUs with their own keys",
                )
            out.append((name, Number(low=0, low_open=True).parse(r, amount, f"{key}.{name}")))
        return tuple(sorted(out))

    def render(self, value: Custom) -> dict[str, float]:
        return dict(value)


@dataclass(frozen=True)
class Schedule:
    """Learning-rate schedule over the epochs: ``cosine``, ``constant``, step decay, or
    ``half`` (×``gamma`` at half the trial's epochs)."""

    kind: str = "cosine"
    milestones: tuple[int, ...] = ()
    """For ``step``: the epochs at which the rate is multiplied by ``gamma``."""
    gamma: float = 0.1

    def to_yaml(self) -> Any:
        return (
            self.kind
            if self.kind != "step"
            else {"step": list(self.milestones), "gamma": self.gamma}
        )


def seed_setting(doc: str, default: int = 0) -> Any:
    """A seed's setting: every seed goes to numpy (through Optuna's sampler) and to torch."""
    return setting(
        default, Int(minimum=0, maximum=MAX_SEED, why=SEED_BOUND), f"{doc} (at most {MAX_SEED})."
    )


@dataclass(frozen=True)
class Budget:
    """How every student (and, with ``teacher.epochs``, every teacher) is trained."""

    epochs: int = setting(
        30,
        Int(minimum=1, maximum=MAX_EPOCHS),
        f"Epochs of every student (at most {MAX_EPOCHS}).",
        # A trial's own epochs enter its id instead: a teacher trains teacher.epochs.
        identity="never",
    )
    batch_size: int = setting(
        64,
        Int(minimum=1, maximum=MAX_BATCH_SIZE),
        f"Training images a step (at most {MAX_BATCH_SIZE}).",
    )
    optimizer: str = setting("sgd", Choice(OPTIMIZERS), "The optimiser of every trial.")
    lr: float = setting(0.05, Number(low=0, low_open=True), "The initial learning rate.")
    momentum: float = setting(
        0.9, Number(low=0, high=1, high_open=True), "SGD's momentum (Adam and AdamW ignore it)."
    )
    weight_decay: float = setting(5.0e-4, Number(low=0), "Weight decay of every optimiser.")
    schedule: Schedule = setting(Schedule(), ScheduleCheck(), "The learning-rate schedule.")
    precision: str = setting(
        "auto",
        Choice(PRECISIONS),
        "fp32; bf16 (autocast, channels_last); auto: bf16 for compute-bound models "
        "(≥ 20M MACs an image) on hardware with fast bf16, fp32 otherwise (see training.loop).",
        identity="unless default",
    )
    compile: str = setting(
        "none",
        Choice(COMPILE_MODES),
        "torch.compile mode of the student's training step and the teacher's forward pass "
        "(none: eager); the same arithmetic, so not part of a trial's id (see training.compiled).",
        identity="never",
    )


@dataclass(frozen=True)
class DataConfig:
    val_fraction: float = setting(
        0.1,
        Number(low=0, high=1, high_open=True),
        "Share of the official training split carved off as `val` (digits: fixed 60/20/20); "
        "0 only when nothing is tuned.",
    )
    refit: str = setting(
        "none",
        Choice(REFITS),
        "train+val: teachers and finals train on the whole official training split once tuning "
        "is done (val serves tuning alone); none: they train on `train`, `val` held out.",
    )
    augment: bool = setting(
        True,
        Bool(),
        "Batched random crops (and flips where the data set allows them) during training.",
    )
    root: str | None = setting(
        None,
        Optional(String()),
        "Where data sets live; default $KDBENCH_DATA or ~/.cache/kdbench/data.",
    )

    @property
    def refits(self) -> bool:
        """Whether teachers and finals train on train+val once tuning is done."""
        return self.refit == "train+val"


@dataclass(frozen=True)
class TeacherConfig:
    epochs: int = setting(
        30,
        Int(minimum=1, maximum=MAX_EPOCHS),
        "Epochs of a teacher trained by kdbench (with the budget's optimiser and schedule; "
        f"at most {MAX_EPOCHS}).",
    )
    seed: int = seed_setting("The seed every teacher trains at")


@dataclass(frozen=True)
class Confirm:
    """Seed-confirmed selection: what reruns once a study is done."""

    top: int = setting(
        3, Int(minimum=1, maximum=MAX_TRIALS), "The best complete trials of the study to rerun."
    )
    seeds: int = setting(
        2,
        Int(minimum=1, maximum=MAX_SEEDS),
        "Extra tuning seeds each reruns at: tuning.seed + 1, + 2, ...",
    )


@dataclass(frozen=True)
class TuningConfig:
    trials: int = setting(
        8,
        Int(minimum=0, maximum=MAX_TRIALS),
        "Tuning trials per cell; 0: the method's defaults (with ``params``), no study "
        f"(at most {MAX_TRIALS}).",
    )
    seed: int = seed_setting(
        "The seed tuning trials train at and Optuna's sampler draws from; never one of `seeds`",
        TUNING_SEED,
    )
    confirm: Confirm | None = setting(
        None,
        Optional(Section(Confirm)),
        "{top: 3, seeds: 2}: once a study is done, its best settings rerun at the next tuning "
        "seeds, and the best mean validation accuracy is selected; null: the best single trial.",
    )
    pruner: str = setting("median", Choice(PRUNERS), "What stops hopeless tuning trials early.")
    timeout_s: float | None = setting(
        None,
        Optional(Number(low=0, low_open=True)),
        "Per cell: stop asking once the study has tuned this long (summed over resumed runs).",
    )
    storage: str | None = setting(
        None,
        Optional(String()),
        "An SQLAlchemy URL (e.g. postgresql://user@host/db); default DIR/_studies/journal.log.",
    )
    total_trials: int | None = setting(
        None, Optional(Int(minimum=1)), "Per suite: tuning trials over all cells together."
    )
    total_timeout_s: float | None = setting(
        None,
        Optional(Number(low=0, low_open=True)),
        "Per suite: seconds of tuning in one run; then every cell goes to its finals.",
    )


Custom = tuple[tuple[str, float], ...]
"""Ray custom resources a trial holds, as sorted (name, amount) pairs: a node started with
``ray start --resources '{"a100": 4}'`` offers them."""


@dataclass(frozen=True)
class Resources:
    """What one trial's Ray task holds (a student's or a teacher's)."""

    cpus: float = setting(1, Number(low=0, low_open=True), "CPUs a trial holds.")
    gpus: float = setting(0, Number(low=0), "GPUs (or a share of one) a trial holds.")
    custom: Custom = setting((), CustomResources(), "Ray custom resources a trial holds.")
    accelerator_type: str | None = setting(
        None,
        Optional(String()),
        "Ray's accelerator type (``H100``, ``A100``...): only nodes with that GPU take the trial.",
    )


@dataclass(frozen=True)
class ResourceConfig:
    """The suite's ``resources``: what student and teacher trials hold."""

    trial: Resources = setting(
        Resources(),
        # The students' keys sit in `resources` itself, as suites have always written them.
        Section(Resources, inline=True, keys={"cpus": "cpus_per_trial", "gpus": "gpus_per_trial"}),
        "What each student trial holds.",
    )
    teacher: Resources = setting(Resources(), Section(Resources), "What each teacher trial holds.")


SECTIONS: dict[str, type] = {
    "budget": Budget,
    "data": DataConfig,
    "teacher": TeacherConfig,
    "tuning": TuningConfig,
    "resources": ResourceConfig,
}
"""The suite's sections of settings, by their top-level key."""


def _schedule(r: Reader, raw: Any, key: str) -> Schedule:
    if isinstance(raw, str):
        return Schedule(kind=Choice((*SCHEDULES, "step")).parse(r, raw, key))
    if raw is not None and not isinstance(raw, dict):
        raise r.fail(
            key,
            f"{show(raw)} is not valid; valid: cosine, constant, half, "
            "or {step: [epochs], gamma: 0.1}",
        )
    raw = r.mapping(raw, key, ("step", "gamma"), required=("step",))
    steps = r.nonempty_list(raw["step"], f"{key}.step", most=MAX_EPOCHS)
    steps = [
        Int(minimum=1, maximum=MAX_EPOCHS).parse(r, s, f"{key}.step[{i}]")
        for i, s in enumerate(steps)
    ]
    if steps != sorted(set(steps)):
        raise r.fail(f"{key}.step", f"{show(steps)} must be strictly increasing epochs")
    gamma = Number(low=0, low_open=True, high=1).parse(r, raw.get("gamma", 0.1), f"{key}.gamma")
    return Schedule(kind="step", milestones=tuple(steps), gamma=gamma)


def budget_identity(budget: Budget) -> dict[str, Any]:
    """The budget's part of a trial's id: each field as its declaration's ``identity`` says."""
    return identity(budget)
