"""Suites: YAML files loaded safely into frozen, validated dataclasses.

Every mistake is refused before anything runs, with one line that names the file, the key,
the value and the valid choices (``SuiteError``). Only ``name``, ``datasets``, ``pairs``,
``methods`` and ``seeds`` must be given; every other key has a default.

Each setting of a section (``budget``, ``data``, ``teacher``, ``tuning``, ``resources``) is
declared once, as a field of its dataclass: ``setting(default, check, doc)`` puts the check
(an ``Int``, ``Number``, ``Choice``... that both validates a raw YAML value and renders the
parsed one back to plain YAML), the one-line doc, and where needed its part in trial ids, in
the field's metadata. ``parse_section`` reads any section from those declarations (unknown
keys refused, defaults filled) and ``render_section`` writes any section back, so the
resolved suite (``Suite.to_dict``) and the budget's part of trial ids (``budget_identity``)
follow from them too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kdbench.errors import KdbenchError, SuiteError, choices_hint, first_line, one_line
from kdbench.methods.base import HParam, SearchSpace
from kdbench.shipped import suite_file

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
# Matched with fullmatch: a pattern ending in `$` also accepts a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_MAX = 100
"""Characters of a suite's name or a label: they name a directory and trial files."""

# Sane upper bounds, so that an absurd value is refused before any work starts.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_TRIALS = 100_000
MAX_SEEDS = 10_000
MAX_SEED = 2**32 - 1
SEED_BOUND = "numpy, which seeds Optuna's sampler, takes no seed of 2**32 or more"
MAX_SUITE_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
"""Nodes of a suite's YAML, an alias counted once for every use (a "billion laughs" suite
expands a few lines into billions of nodes)."""


# --------------------------------------------------------------------------- checks


class Check:
    """Validates and coerces one raw YAML value, and renders a parsed one back to plain YAML."""

    def parse(self, c: _Checker, value: Any, key: str) -> Any:
        raise NotImplementedError

    def render(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Int(Check):
    """An integer (a float such as 3.0 reads as 3) between ``minimum`` and ``maximum`` when
    given; ``why`` says in the refusal why the maximum is what it is."""

    minimum: int | None = None
    maximum: int | None = None
    why: str = ""

    def parse(self, c: _Checker, value: Any, key: str) -> int:
        return c.integer(value, key, minimum=self.minimum, maximum=self.maximum, why=self.why)


@dataclass(frozen=True)
class Number(Check):
    """A finite number between optional bounds, each closed unless marked open."""

    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    def parse(self, c: _Checker, value: Any, key: str) -> float:
        return c.number(
            value,
            key,
            low=self.low,
            low_open=self.low_open,
            high=self.high,
            high_open=self.high_open,
        )


@dataclass(frozen=True)
class Choice(Check):
    """One of ``choices``; a typo is offered the closest."""

    choices: tuple[str, ...]

    def parse(self, c: _Checker, value: Any, key: str) -> str:
        return c.choice(value, key, self.choices)


class Bool(Check):
    """``true`` or ``false``, nothing that merely converts to one."""

    def parse(self, c: _Checker, value: Any, key: str) -> bool:
        return c.boolean(value, key)


class String(Check):
    """A non-empty string."""

    def parse(self, c: _Checker, value: Any, key: str) -> str | None:
        return c.string(value, key)


@dataclass(frozen=True)
class Optional(Check):
    """``null``, or what ``inner`` accepts."""

    inner: Check

    def parse(self, c: _Checker, value: Any, key: str) -> Any:
        return None if value is None else self.inner.parse(c, value, key)

    def render(self, value: Any) -> Any:
        return None if value is None else self.inner.render(value)


class ScheduleCheck(Check):
    """``cosine``, ``constant``, or ``{step: [epochs], gamma: 0.1}``."""

    def parse(self, c: _Checker, value: Any, key: str) -> Schedule:
        return _schedule(c, value, key)

    def render(self, value: Schedule) -> Any:
        return value.to_yaml()


class CustomResources(Check):
    """``{name: amount}``: Ray custom resources; CPUs and GPUs have keys of their own."""

    def parse(self, c: _Checker, value: Any, key: str) -> Custom:
        raw = value if value is not None else {}
        if not isinstance(raw, dict):
            raise c.fail(key, f"expected a mapping of resource name to amount, got {_show(raw)}")
        out = []
        for name, amount in raw.items():
            if not isinstance(name, str) or not name:
                raise c.fail(key, f"{_show(name)} is not a resource name")
            if name in RAY_BUILTIN_RESOURCES:
                raise c.fail(
                    f"{key}.{name}",
                    f"'{name}' is not a custom resource; give CPUs and GPUs with their own keys",
                )
            out.append((name, c.number(amount, f"{key}.{name}", low=0, low_open=True)))
        return tuple(sorted(out))

    def render(self, value: Custom) -> dict[str, float]:
        return dict(value)


@dataclass(frozen=True)
class Section(Check):
    """A nested section: its own mapping, or with ``inline`` its fields written straight into
    the enclosing mapping, each under ``keys.get(field, field)``."""

    cls: type
    inline: bool = False
    keys: Mapping[str, str] = field(default_factory=dict)

    def parse(self, c: _Checker, value: Any, key: str) -> Any:
        return parse_section(c, self.cls, value, key)

    def render(self, value: Any) -> dict[str, Any]:
        return render_section(value)


Identity = Literal["always", "never", "unless default"]


@dataclass(frozen=True)
class Setting:
    """What a section's field declares beside its name and default (kept in its metadata)."""

    check: Check
    doc: str
    identity: Identity = "always"
    """Whether the field enters trial ids (``budget_identity``); ``unless default``: only
    when set otherwise, so the trials of suites written before the field keep their ids."""


def setting(default: Any, check: Check, doc: str, *, identity: Identity = "always") -> Any:
    """A section's field, declared once: its default, how its YAML value is checked and
    rendered, and one line saying what it is.

    The default is shared by every instance, so it must be immutable (the sections and
    ``Schedule`` are frozen); pyproject.toml tells ruff so (it cannot see it through the call)."""
    return field(default=default, metadata={"setting": Setting(check, doc, identity)})


def _setting(f: dataclasses.Field) -> Setting:
    return f.metadata["setting"]


# --------------------------------------------------------------------------- the dataclasses


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


@dataclass(frozen=True)
class TeacherRef:
    """A teacher architecture, trained by kdbench or loaded from the user's checkpoint."""

    arch: str
    checkpoint: str | None = None
    """Absolute path of a state dict (resolved from the suite's directory or the working one)."""

    def __str__(self) -> str:
        return self.arch


@dataclass(frozen=True)
class Pair:
    teacher: TeacherRef
    student: str


@dataclass(frozen=True)
class MethodEntry:
    """One line of ``methods``: a registry name (or ``A+B``), fixed params, search overrides."""

    name: str
    label: str
    """What the ``method`` column says; the name unless the entry gives ``label``."""
    params: tuple[tuple[str, Any], ...] = ()
    search: tuple[tuple[str, SearchSpace], ...] = ()
    pairs: tuple[str, ...] = ()
    """The pairs (``teacher->student``) the method runs on; empty: every pair of the suite."""

    def runs_on(self, pair: Pair) -> bool:
        return not self.pairs or pair_name(pair) in self.pairs


def pair_name(pair: Pair) -> str:
    """A pair as a method entry's ``pairs`` names it: ``teacher->student``."""
    return f"{pair.teacher.arch}->{pair.student}"


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[str, ...]
    pairs: tuple[Pair, ...]
    methods: tuple[MethodEntry, ...]
    """As written, with ``scratch`` first (added when the suite does not list it)."""
    seeds: tuple[int, ...]
    budget: Budget = field(default_factory=Budget)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    source: str = "<suite>"

    def to_dict(self) -> dict[str, Any]:
        """The resolved suite, every default filled in, as plain YAML-able data."""
        return {
            f.name: render_section(value) if f.name in SECTIONS else _plain(value)
            for f in dataclasses.fields(self)
            if f.name != "source"
            for value in [getattr(self, f.name)]
        }

    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()

    @property
    def tuning_seeds(self) -> tuple[int, ...]:
        """The seeds tuning trials train at: ``tuning.seed``, then one more per confirmation
        seed. Never any of ``seeds`` (refused when the suite is read)."""
        extra = self.tuning.confirm.seeds if self.tuning.confirm else 0
        return tuple(range(self.tuning.seed, self.tuning.seed + 1 + extra))


def _plain(obj: Any) -> Any:
    """The suite's parts other than its sections as plain YAML-able data."""
    if isinstance(obj, SearchSpace):
        return (
            {"choices": list(obj.choices)}
            if obj.choices
            else ([obj.low, obj.high, "log"] if obj.log else [obj.low, obj.high])
        )
    if isinstance(obj, MethodEntry):
        out: dict[str, Any] = {"name": obj.name}
        if obj.label != obj.name:
            out["label"] = obj.label
        if obj.params:
            out["params"] = dict(obj.params)
        if obj.search:
            out["search"] = {k: _plain(v) for k, v in obj.search}
        if obj.pairs:
            out["pairs"] = list(obj.pairs)
        return out
    if isinstance(obj, TeacherRef):
        return (
            obj.arch if obj.checkpoint is None else {"arch": obj.arch, "checkpoint": obj.checkpoint}
        )
    if isinstance(obj, Pair):
        return {"teacher": _plain(obj.teacher), "student": obj.student}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last),
    and turns a scalar that cannot be built (``2001-13-45``, an integer of 5000 digits) into a
    marked YAML error instead of a bare ``ValueError``."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            shown = _show(node.value) if isinstance(node, yaml.ScalarNode) else node.tag
            reason = (
                "too many digits for any setting"
                if node.tag == "tag:yaml.org,2002:int"
                else first_line(exc)
            )
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown}: {reason}", node.start_mark
            ) from None


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "a list or a mapping cannot be a key", key_node.start_mark
            )
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {_show(key)} is given twice", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: Path) -> Any:
    """A suite file's data; anything that is not a small YAML text is refused in one line."""
    text = _suite_text(path)
    try:
        loader = _StrictLoader(text)  # the reader refuses a control character here
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_NODES:
            raise KdbenchError(
                f"{path}: the suite expands to more than {MAX_YAML_NODES} YAML nodes (an alias "
                "counts once for every use); write it out without aliases that multiply"
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise KdbenchError(
            f"{path}: {where}YAML syntax error: {exc.problem or first_line(exc)}"
        ) from None
    except yaml.reader.ReaderError as exc:
        raise KdbenchError(
            f"{path}: character #x{exc.character:04x} at position {exc.position} is not "
            "allowed in YAML; a suite is a text file"
        ) from None
    except yaml.YAMLError as exc:
        raise KdbenchError(f"{path}: YAML syntax error: {first_line(exc)}") from None
    except RecursionError:
        raise KdbenchError(
            f"{path}: the suite nests lists or mappings too deeply to read"
        ) from None


def _suite_text(path: Path) -> str:
    """The file's text, refused before parsing when it is larger than any suite or not UTF-8."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)  # never more, whatever the file is
    except OSError as exc:
        raise KdbenchError(f"{path}: cannot read the suite ({exc.strerror or exc})") from None
    if len(data) > MAX_SUITE_BYTES:
        raise KdbenchError(
            f"{path}: larger than {MAX_SUITE_BYTES // 2**20} MiB; a suite is a short YAML "
            "text file (is this the right file?)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KdbenchError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "a suite is a YAML text file saved as UTF-8"
        ) from None


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the composed document, each alias counted as often as it is used, without
    building anything: an alias is the same node object each time it appears, so the sizes
    memoised by node make this linear in the distinct nodes. Counting stops once past
    ``MAX_YAML_NODES``; a node that contains itself is refused (it has no finite size)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "an alias is used inside its own anchor", node.start_mark
            )
        open_nodes.add(id(node))
        total = 1
        for child in _children(node):
            total += size(child)
            if total > MAX_YAML_NODES:
                break
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


# --------------------------------------------------------------------------- the loader


def load_suite(path: str | Path) -> Suite:
    """Read, validate and resolve a suite file (or a shipped suite, by name); raise
    ``SuiteError`` on the first mistake."""
    path = suite_file(path)
    return parse_suite(read_yaml(path), source=str(path), base_dir=path.resolve().parent)


class _Checker:
    """Field-level checks that phrase every refusal the same way."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.checkpoints: set[str] = set()
        """Checkpoints read already: pairs that share one read it once."""

    def fail(self, key: str, message: str) -> SuiteError:
        return SuiteError(self.source, key, message)

    def mapping(
        self, raw: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise self.fail(key or "(top level)", f"expected a mapping, got {_show(raw)}")
        for k in raw:
            if k not in allowed:
                name = _text(k) if isinstance(k, str) else _show(k)
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key '{name}'; {choices_hint(k, allowed)}")
        for k in required:
            if k not in raw or raw[k] is None:
                where = f"{key}.{k}" if key else k
                raise self.fail(where, "is required")
        return raw

    def integer(
        self,
        value: Any,
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        why: str = "",
    ) -> int:
        # An int is never converted to a float: one of 400 digits overflows one.
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise self.fail(key, f"{_show(value)} is not an integer")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"{_show(value)} must be ≥ {minimum}")
        if maximum is not None and value > maximum:
            raise self.fail(
                key, f"{_show(value)} must be ≤ {maximum}" + (f" ({why})" if why else "")
            )
        return int(value)

    def number(
        self,
        value: Any,
        key: str,
        *,
        low: float | None = None,
        low_open: bool = False,
        high: float | None = None,
        high_open: bool = False,
    ) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            # math.isfinite would convert an int too large for a float, and overflow
            or not (math.isfinite(value) if isinstance(value, float) else abs(value) <= _FLOAT_MAX)
        ):
            raise self.fail(key, f"{_show(value)} is not a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise self.fail(key, f"{_show(value)} must be {'>' if low_open else '≥'} {low:g}")
        if high is not None and (value > high or (high_open and value == high)):
            raise self.fail(key, f"{_show(value)} must be {'<' if high_open else '≤'} {high:g}")
        return float(value)

    def choice(self, value: Any, key: str, choices: tuple[str, ...] | Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.fail(key, f"{_show(value)} is not valid; {choices_hint(value, choices)}")
        return value

    def string(self, value: Any, key: str, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"{_show(value)} is not a non-empty string")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"{_show(value)} is not true or false")
        return value

    def nonempty_list(self, value: Any, key: str, *, most: int | None = None) -> list[Any]:
        """A list of 1 to ``most`` entries: its length is checked before any entry is."""
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_show(value)}")
        if not value:
            raise self.fail(key, "is empty; give at least one entry")
        if most is not None and len(value) > most:
            raise self.fail(key, f"has {len(value)} entries; give at most {most}")
        return value

    def unique(self, items: list[Any], key: str, show: Any = None) -> None:
        seen: dict[Any, int] = {}
        for i, item in enumerate(items):
            if item in seen:
                shown = show(item) if show else _show(item)
                raise self.fail(f"{key}[{i}]", f"{shown} duplicates {key}[{seen[item]}]")
            seen[item] = i


_FLOAT_MAX = sys.float_info.max
SHOW_MAX = 60
"""Characters of a value that a message shows."""


def _show(value: Any) -> str:
    """A value as a message shows it: one line of at most about ``SHOW_MAX`` characters,
    whatever the value. A structure is rendered piece by piece and only as far as is shown:
    a suite's aliases can make one of billions of nodes, which must never be serialised."""
    if isinstance(value, str):
        return f"'{_text(value)}'"
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool):
        return _integer(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return _clip(_pieces(value))
    if isinstance(value, (bytes, bytearray)):
        value = value[: SHOW_MAX + 1]
    return _text(repr(value))


def _text(text: str, limit: int = SHOW_MAX) -> str:
    """``text`` cut to ``limit`` characters, control characters (a newline) escaped."""
    text = one_line(text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integer(value: int) -> str:
    if abs(value) < 10**30:
        return repr(value)
    if value.bit_length() < 10_000:  # str() of an int refuses more than 4300 digits
        return f"an integer of {len(str(abs(value)))} digits"
    return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"


def _clip(pieces: Iterator[str]) -> str:
    """The pieces joined, drawn only until more than ``SHOW_MAX`` characters are there."""
    out: list[str] = []
    length = 0
    for piece in pieces:
        out.append(piece)
        length += len(piece)
        if length > SHOW_MAX:
            break
    return _text("".join(out))


def _pieces(value: Any) -> Iterator[str]:
    """``value`` as JSON-like text, lazily: each level yields a bracket before descending,
    so a consumer that stops after n characters never goes deeper than n levels (nor loops
    on a structure that contains itself)."""
    if isinstance(value, dict):
        yield "{"
        for i, (k, v) in enumerate(value.items()):
            yield ", " if i else ""
            yield from _pieces(k)
            yield ": "
            yield from _pieces(v)
        yield "}"
    elif isinstance(value, (list, tuple, set, frozenset)):
        yield "["
        for i, v in enumerate(value):
            yield ", " if i else ""
            yield from _pieces(v)
        yield "]"
    elif isinstance(value, str):
        yield json.dumps(value[: SHOW_MAX + 1])
    elif isinstance(value, int) and not isinstance(value, bool):
        yield _integer(value)
    elif value is None or isinstance(value, (bool, float)):
        yield json.dumps(value)
    else:
        yield json.dumps(_show(value))


REQUIRED = ("name", "datasets", "pairs", "methods", "seeds")
TOP_KEYS = (*REQUIRED, *SECTIONS)


def parse_suite(raw: Any, *, source: str = "<suite>", base_dir: Path | None = None) -> Suite:
    c = _Checker(source)
    raw = c.mapping(raw, "", TOP_KEYS, required=REQUIRED)
    pairs = _pairs(c, raw["pairs"], base_dir)
    suite = Suite(
        name=_name(c, raw["name"]),
        datasets=_datasets(c, raw["datasets"]),
        pairs=pairs,
        methods=_methods(c, raw["methods"], pairs),
        seeds=_seeds(c, raw["seeds"]),
        **{key: parse_section(c, cls, raw.get(key), key) for key, cls in SECTIONS.items()},
        source=source,
    )
    _protocol(c, suite)
    _pairing(c, suite, c.nonempty_list(raw["methods"], "methods"))
    return suite


def _pairing(c: _Checker, suite: Suite, written: list[Any]) -> None:
    """Every method can distil every pair it is given: a method that needs what a model does
    not expose (pre-activation features, equal channel counts, ...) says so through its
    ``pairing``, and the suite is refused here, before anything runs."""
    from kdbench.methods import Method, method_class

    # the scratch entry added in front (dataset distillation's baselines come last)
    offset = int(suite.methods[0].label == "scratch" and not _lists_scratch(written))
    probes: dict[tuple[str, tuple[int, ...], int], Any] = {}
    for i, entry in enumerate(suite.methods):
        cls = method_class(entry.name)
        by_outputs = cls.pairing.__func__ is not Method.pairing.__func__  # type: ignore[attr-defined]
        by_models = cls.pairing_models.__func__ is not Method.pairing_models.__func__  # type: ignore[attr-defined]
        if not (by_outputs or by_models):
            continue  # pairs with anything: nothing to build
        hp = cls.complete({**cls.defaults(), **dict(entry.params)})
        wants_teacher = cls.uses_teacher(hp)
        for dataset in suite.datasets:
            shape = _data_shape(dataset, suite.data.root)
            if shape is None:
                continue
            for pair in suite.pairs:
                if not entry.runs_on(pair):
                    continue
                s_out = _probe(probes, pair.student, *shape)
                t_out = _probe(probes, pair.teacher.arch, *shape) if wants_teacher else None
                if s_out is None or (wants_teacher and t_out is None):
                    continue
                reason = cls.pairing(s_out[1], t_out and t_out[1], hp) if by_outputs else None
                if by_models and not reason:
                    reason = cls.pairing_models(s_out[0], t_out and t_out[0], hp)
                if reason:
                    raise c.fail(
                        f"methods[{i - offset}]",
                        f"'{entry.name}' cannot distil {pair.teacher.arch} → {pair.student} "
                        f"on {dataset}: {reason}",
                    )


def _lists_scratch(written: list[Any]) -> bool:
    return any(
        (m if isinstance(m, str) else m.get("label", m.get("name"))) == "scratch"
        for m in written
        if isinstance(m, (str, dict))
    )


def _data_shape(dataset: str, root: str | None) -> tuple[tuple[int, ...], int] | None:
    """A data set's (image shape, classes) as its loader declares them; None when they cannot
    be known without its files (the trial then reports what is wrong)."""
    from kdbench.data import dataset_info

    try:
        info = dataset_info(dataset, root)
    except Exception:  # missing files are the trial's to report, not validation's
        return None
    return tuple(info.input_shape), info.num_classes


def _probe(
    cache: dict[tuple[str, tuple[int, ...], int], Any],
    arch: str,
    shape: tuple[int, ...],
    classes: int,
) -> Any:
    """A model and its outputs on a batch of two, built and run on the meta device (shapes
    only: no memory, no initialisation, milliseconds); None when the model cannot run there."""
    import torch

    from kdbench.models import build_model

    key = (arch, shape, classes)
    if key not in cache:
        try:
            with torch.device("meta"):
                model = build_model(arch, num_classes=classes, input_shape=shape).eval()
                cache[key] = (model, model.forward_features(torch.zeros((2, *shape))))
        except Exception:  # a model meta tensors cannot run is checked by training
            cache[key] = None
    return cache[key]


def _protocol(c: _Checker, suite: Suite) -> None:
    """What the settings must respect together for the numbers to mean what they say."""
    t = suite.tuning
    if t.trials == 0:
        return
    if suite.data.val_fraction == 0:
        raise c.fail(
            "data.val_fraction",
            "0 leaves no validation split to tune on; give a share in (0, 1) (with "
            "data.refit: train+val the finals still train on all of it), or tuning.trials: 0",
        )
    last = t.seed + len(suite.tuning_seeds) - 1
    if last > MAX_SEED:
        raise c.fail(
            "tuning.seed",
            f"{t.seed} plus {last - t.seed} confirmation seeds passes {MAX_SEED} ({SEED_BOUND})",
        )
    for i, seed in enumerate(suite.seeds):
        if t.seed <= seed <= last:
            what = (
                f"{t.seed} is also a final seed (seeds[{i}])"
                if last == t.seed
                else f"the tuning seeds {t.seed} to {last} (tuning.seed and its "
                f"{last - t.seed} confirmation seeds) include seeds[{i}] = {seed}"
            )
            raise c.fail(
                "tuning.seed",
                f"{what}: a tuning trial would double as a final trial (the very run picked "
                "for its validation score), biasing tuned methods upwards; "
                f"choose a tuning.seed outside seeds (the default is {TUNING_SEED})",
            )


def _name(c: _Checker, raw: Any) -> str:
    name = c.string(raw, "name")
    if not _NAME.fullmatch(name):
        raise c.fail(
            "name", f"{_show(name)} must be letters, digits, '_', '.' or '-' (it names a directory)"
        )
    _short(c, name, "name")
    return name


def _short(c: _Checker, name: str, key: str) -> None:
    if len(name) > NAME_MAX:
        raise c.fail(
            key,
            f"{_show(name)} has {len(name)} characters; give at most {NAME_MAX} "
            "(it names files and directories)",
        )


def _datasets(c: _Checker, raw: Any) -> tuple[str, ...]:
    from kdbench.data import DATASETS

    datasets = c.nonempty_list(raw, "datasets")
    for i, d in enumerate(datasets):
        c.choice(d, f"datasets[{i}]", DATASETS)
    c.unique(datasets, "datasets")
    _one_id_part(
        c,
        [(f"datasets[{i}]", d) for i, d in enumerate(datasets)],
        "name only one of them in a suite",
    )
    return tuple(datasets)


def _pairs(c: _Checker, raw: Any, base_dir: Path | None) -> tuple[Pair, ...]:
    from kdbench.models import MODELS

    pairs = [
        _pair(c, p, f"pairs[{i}]", MODELS, base_dir)
        for i, p in enumerate(c.nonempty_list(raw, "pairs"))
    ]
    c.unique(pairs, "pairs", show=lambda p: f"{p.teacher.arch} → {p.student}")
    models = [
        (f"pairs[{i}].{role}", name)
        for i, p in enumerate(pairs)
        for role, name in (("teacher", p.teacher.arch), ("student", p.student))
    ]
    _one_id_part(c, models, "name only one of them in a suite")
    return tuple(pairs)


def _methods(c: _Checker, raw: Any, pairs: tuple[Pair, ...]) -> tuple[MethodEntry, ...]:
    methods = [
        _method(c, m, f"methods[{i}]", pairs) for i, m in enumerate(c.nonempty_list(raw, "methods"))
    ]
    labels = [m.label for m in methods]
    for i, m in enumerate(methods):
        for j, first in enumerate(methods[:i]):
            if first.label == m.label and not _per_pair(first, m, pairs):
                raise c.fail(
                    f"methods[{i}]",
                    f"a second entry labelled '{m.label}'; give one of them "
                    "a distinct label (e.g. label: kd_t8) or remove the duplicate "
                    f"(entries of one method may share a label when their pairs do not "
                    f"overlap: methods[{j}] and this one both run on "
                    f"{_overlap(first, m, pairs)})",
                )
    entries = [(f"methods[{i}]", label) for i, label in enumerate(labels)]
    if "scratch" not in labels:
        methods.insert(0, MethodEntry(name="scratch", label="scratch"))
        entries.insert(0, ("the scratch entry every suite has", "scratch"))
    # Dataset distillation's baselines (random subsets, hard-label twins), after the entries
    # as written, so that methods[i] in a message is still the suite's i-th entry.
    from kdbench.methods.synthetic import baseline_entries

    for extra in baseline_entries(methods):
        methods.append(extra)
        entries.append(
            (f"the baseline '{extra.label}' added for dataset distillation", extra.label)
        )
    _one_id_part(c, entries, "give one of them a distinct label")
    return tuple(methods)


def _per_pair(a: MethodEntry, b: MethodEntry, pairs: tuple[Pair, ...]) -> bool:
    """Whether two entries with one label are one method's per-pair settings (DKD's β for
    each pair, as mdistiller sets it): same method, ``pairs`` given, no pair in common. Each
    cell (data set, pair, label) then still has one entry."""
    return a.name == b.name and bool(a.pairs) and bool(b.pairs) and not _overlap(a, b, pairs)


def _overlap(a: MethodEntry, b: MethodEntry, pairs: tuple[Pair, ...]) -> str:
    both = [pair_name(p) for p in pairs if a.runs_on(p) and b.runs_on(p)]
    return ", ".join(both)


def _one_id_part(c: _Checker, entries: list[tuple[str, str]], fix: str) -> None:
    """Refuse two different names that read alike in trial ids (``plan.slug``: ``kd+x`` and
    ``kd_plus_x``), case aside (a file system that ignores case keeps one of two files). A
    label is not in an id's hash, so two such labels of one method would share every trial
    id, and one row would silently take the other's place."""
    from kdbench.plan import slug

    seen: dict[str, tuple[str, str]] = {}
    for key, name in entries:
        first_key, first = seen.setdefault(slug(name).casefold(), (key, name))
        if first != name:
            part = _show(slug(first)) + (", case aside" if slug(first) != slug(name) else "")
            raise c.fail(
                key,
                f"{_show(name)} reads as {_show(first)} ({first_key}) in trial ids ({part}); {fix}",
            )


def _seeds(c: _Checker, raw: Any) -> tuple[int, ...]:
    seeds = c.nonempty_list(raw, "seeds", most=MAX_SEEDS)
    seeds = [
        c.integer(s, f"seeds[{i}]", minimum=0, maximum=MAX_SEED, why=SEED_BOUND)
        for i, s in enumerate(seeds)
    ]
    c.unique(seeds, "seeds")
    return tuple(seeds)


def _pair(c: _Checker, raw: Any, key: str, models: Any, base_dir: Path | None) -> Pair:
    raw = c.mapping(raw, key, ("teacher", "student"), required=("teacher", "student"))
    student = _model(c, raw["student"], f"{key}.student", models)
    t = raw["teacher"]
    if isinstance(t, dict):
        t = c.mapping(t, f"{key}.teacher", ("arch", "checkpoint"), required=("arch",))
        arch = _model(c, t["arch"], f"{key}.teacher.arch", models)
        ckpt = c.string(t.get("checkpoint"), f"{key}.teacher.checkpoint", optional=True)
        if ckpt is not None:
            ckpt = _resolve_checkpoint(c, ckpt, f"{key}.teacher.checkpoint", base_dir)
        return Pair(TeacherRef(arch, ckpt), student)
    return Pair(TeacherRef(_model(c, t, f"{key}.teacher", models)), student)


def _model(c: _Checker, value: Any, key: str, models: Any) -> str:
    """A model name: a registered one, or one of a family (``timm:<name>``), refused with the
    family's own reason (unknown to timm, timm not installed)."""
    if isinstance(value, str) and ":" in value and value.split(":", 1)[0] in models.families():
        try:
            models.get(value)
        except KdbenchError as exc:
            raise c.fail(key, str(exc)) from None
        return value
    return c.choice(value, key, models)


def _resolve_checkpoint(c: _Checker, ckpt: str, key: str, base_dir: Path | None) -> str:
    candidates = (
        [Path(ckpt)]
        if Path(ckpt).is_absolute()
        else (([base_dir / ckpt] if base_dir else []) + [Path.cwd() / ckpt])
    )
    for cand in candidates:
        if cand.is_file():
            path = str(cand.resolve())
            _loadable_checkpoint(c, path, key)
            return path
    raise c.fail(
        key,
        f"'{_text(ckpt, _PATH_MAX)}' is not a file "
        f"(looked in: {', '.join(_text(str(p), _PATH_MAX) for p in candidates)})",
    )


_PATH_MAX = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _loadable_checkpoint(c: _Checker, path: str, key: str) -> None:
    """Load the checkpoint now, as a run's teacher will (weights only), so that a file that
    is refused is refused by validation and before Ray starts, not by a running trial."""
    if path in c.checkpoints:
        return
    import warnings

    from kdbench.training.weights import read_checkpoint  # imports torch: only when needed

    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols: not one line
            warnings.simplefilter("ignore")
            read_checkpoint(path)
    except KdbenchError as exc:
        raise c.fail(key, _ANSI.sub("", str(exc))) from None
    c.checkpoints.add(path)


def _method(c: _Checker, raw: Any, key: str, pairs: tuple[Pair, ...]) -> MethodEntry:
    from kdbench.methods import method_class

    if isinstance(raw, str):
        raw = {"name": raw}
    raw = c.mapping(raw, key, ("name", "label", "params", "search", "pairs"), required=("name",))
    name = c.string(raw["name"], f"{key}.name")
    _short(c, name, f"{key}.name")  # else the registry's refusal shows it whole, twice
    try:
        cls = method_class(name)
    except KdbenchError as exc:
        raise c.fail(f"{key}.name", str(exc)) from None
    label = c.string(raw.get("label", name), f"{key}.label")
    if not _NAME.fullmatch(label.replace("+", "_")):
        raise c.fail(
            f"{key}.label", f"{_show(label)} must be letters, digits, '_', '.', '-' or '+'"
        )
    _short(c, label, f"{key}.label")
    known = {h.name: h for h in cls.hparams}
    params = c.mapping(raw.get("params"), f"{key}.params", tuple(known))
    fixed = []
    for pname, value in params.items():
        reason = _hp_reason(known[pname], value)
        if reason:
            raise c.fail(f"{key}.params.{pname}", reason)
        fixed.append((pname, known[pname].coerce(value)))
    search = c.mapping(raw.get("search"), f"{key}.search", tuple(known))
    spaces = []
    for pname, value in search.items():
        if pname in params:
            raise c.fail(
                f"{key}.search.{pname}", f"'{pname}' is fixed in params; drop one of the two"
            )
        spaces.append((pname, _search_space(c, value, f"{key}.search.{pname}", known[pname])))
    return MethodEntry(
        name=name,
        label=label,
        params=tuple(sorted(fixed)),
        search=tuple(sorted(spaces)),
        pairs=_method_pairs(c, raw.get("pairs"), f"{key}.pairs", pairs),
    )


def _method_pairs(c: _Checker, raw: Any, key: str, pairs: tuple[Pair, ...]) -> tuple[str, ...]:
    """``pairs: [teacher->student, ...]``: the suite's pairs a method runs on (a suite that
    distils a CIFAR-style pair and evaluates dataset distillation on ConvNet-3 runs neither
    family on the other's pair)."""
    if raw is None:
        return ()
    names = [pair_name(p) for p in pairs]
    chosen = c.nonempty_list(raw, key)
    for i, name in enumerate(chosen):
        c.choice(name, f"{key}[{i}]", tuple(dict.fromkeys(names)))
        if names.count(name) > 1:
            raise c.fail(
                f"{key}[{i}]",
                f"'{name}' names {names.count(name)} pairs (their teachers' checkpoints "
                "differ); a method entry cannot choose between them",
            )
    c.unique(chosen, key)
    return tuple(chosen)


def _hp_reason(hp: HParam, value: Any) -> str | None:
    """``hp.check``, but a value it would render whole (a structure, a long string) or
    convert to a float (an integer of 400 digits overflows one) is refused here first."""
    plain = (
        value is None
        or isinstance(value, (bool, float))
        or (isinstance(value, str) and len(value) <= SHOW_MAX)
    )
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 2**63:
            return f"{_show(value)} is too large ({hp.domain()})"
        plain = True
    if not plain:
        what = hp.domain() if hp.kind == "categorical" else f"a number ({hp.domain()})"
        return f"{_show(value)} is not {what}"
    return hp.check(value)


def _search_space(c: _Checker, raw: Any, key: str, hp: HParam) -> SearchSpace:
    """``[low, high]``, ``[low, high, log]``, or ``{choices: [...]}``."""
    if isinstance(raw, dict):
        raw = c.mapping(raw, key, ("choices",), required=("choices",))
        choices = c.nonempty_list(raw["choices"], f"{key}.choices")
        for i, v in enumerate(choices):
            reason = _hp_reason(hp, v)
            if reason:
                raise c.fail(f"{key}.choices[{i}]", reason)
        c.unique(choices, f"{key}.choices")
        return SearchSpace(choices=tuple(hp.coerce(v) for v in choices))
    if hp.kind == "categorical":
        raise c.fail(key, f"'{hp.name}' is categorical: give {{choices: [...]}} from {hp.domain()}")
    if not isinstance(raw, list) or len(raw) not in (2, 3) or (len(raw) == 3 and raw[2] != "log"):
        raise c.fail(
            key,
            f"{_show(raw)} is not a range; write [low, high], [low, high, log] "
            "or {choices: [...]}",
        )
    low, high = raw[0], raw[1]
    for bound, v in (("low", low), ("high", high)):
        reason = _hp_reason(hp, v)
        if reason:
            raise c.fail(key, f"{bound} bound {reason}")
    if not low < high:
        raise c.fail(key, f"low {low!r} must be below high {high!r}")
    log = len(raw) == 3
    if log and low <= 0:
        raise c.fail(key, f"a log range needs low > 0, got {low!r}")
    return SearchSpace(low=hp.coerce(low), high=hp.coerce(high), log=log)


def _schedule(c: _Checker, raw: Any, key: str) -> Schedule:
    if isinstance(raw, str):
        return Schedule(kind=c.choice(raw, key, (*SCHEDULES, "step")))
    if raw is not None and not isinstance(raw, dict):
        raise c.fail(
            key,
            f"{_show(raw)} is not valid; valid: cosine, constant, half, "
            "or {step: [epochs], gamma: 0.1}",
        )
    raw = c.mapping(raw, key, ("step", "gamma"), required=("step",))
    steps = c.nonempty_list(raw["step"], f"{key}.step", most=MAX_EPOCHS)
    steps = [
        c.integer(s, f"{key}.step[{i}]", minimum=1, maximum=MAX_EPOCHS) for i, s in enumerate(steps)
    ]
    if steps != sorted(set(steps)):
        raise c.fail(f"{key}.step", f"{_show(steps)} must be strictly increasing epochs")
    gamma = c.number(raw.get("gamma", 0.1), f"{key}.gamma", low=0, low_open=True, high=1)
    return Schedule(kind="step", milestones=tuple(steps), gamma=gamma)


# --------------------------------------------------------------------------- sections


def parse_section(c: _Checker, cls: type, raw: Any, key: str) -> Any:
    """A section read by its dataclass's declarations: an unknown key is refused, and an
    absent one takes its default's YAML form through the same check as a written value (so
    a default is coerced as a written value would be: ``cpus: 1`` reads as 1.0 either way)."""
    raw = _known_keys(c, cls, raw, key)
    return _section_from(c, cls, raw, key, {})


def _known_keys(c: _Checker, cls: type, raw: Any, key: str) -> dict[str, Any]:
    """The section's mapping, its keys and those of the sections inside it checked before
    any value, so that a misspelt key is the one named, wherever it is."""
    raw = c.mapping(raw, key, tuple(name for name, _ in _declared(cls, {})))
    for name, check in _declared(cls, {}):
        if isinstance(check, Section) and name in raw:
            _known_keys(c, check.cls, raw[name], f"{key}.{name}")
    return raw


def _declared(cls: type, keys: Mapping[str, str]) -> Iterator[tuple[str, Check]]:
    """(key, check) of each setting a section's mapping holds, an inline section's among them."""
    for f in dataclasses.fields(cls):
        check = _setting(f).check
        if isinstance(check, Section) and check.inline:
            yield from _declared(check.cls, check.keys)
        else:
            yield keys.get(f.name, f.name), check


def _section_from(
    c: _Checker, cls: type, raw: dict[str, Any], key: str, keys: Mapping[str, str]
) -> Any:
    values = {}
    for f in dataclasses.fields(cls):
        check = _setting(f).check
        if isinstance(check, Section) and check.inline:
            values[f.name] = _section_from(c, check.cls, raw, key, check.keys)
            continue
        name = keys.get(f.name, f.name)
        value = raw[name] if name in raw else check.render(f.default)
        values[f.name] = check.parse(c, value, f"{key}.{name}")
    return cls(**values)


def render_section(section: Any, keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Any section as plain YAML, keys in declaration order: the inverse of parse_section."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        check = _setting(f).check
        value = getattr(section, f.name)
        if isinstance(check, Section) and check.inline:
            out.update(render_section(value, check.keys))
        else:
            out[(keys or {}).get(f.name, f.name)] = check.render(value)
    return out


def budget_identity(budget: Budget) -> dict[str, Any]:
    """The budget's part of a trial's id: each field as its declaration's ``identity`` says."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(budget):
        s = _setting(f)
        value = getattr(budget, f.name)
        if s.identity == "never" or (s.identity == "unless default" and value == f.default):
            continue
        out[f.name] = s.check.render(value)
    return out
