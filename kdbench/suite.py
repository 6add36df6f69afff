"""Suites: YAML files loaded safely into frozen, validated dataclasses.

Every mistake is refused before anything runs, with one line that names the file, the key,
the value and the valid choices (``SuiteError``). Only the keys DESIGN.md marks required must
be given; every other key has the default written in its dataclass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdbench.errors import KdbenchError, SuiteError, choices_hint
from kdbench.methods.base import HParam, SearchSpace

OPTIMIZERS = ("sgd", "adam", "adamw")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("cosine", "constant")
PRUNERS = ("median", "hyperband", "none")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- the dataclasses


@dataclass(frozen=True)
class Schedule:
    """Learning-rate schedule over the epochs: ``cosine``, ``constant``, or step decay."""

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


@dataclass(frozen=True)
class Budget:
    """How every student (and, with ``teacher.epochs``, every teacher) is trained."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    schedule: Schedule = field(default_factory=Schedule)
    precision: str = "auto"
    """``fp32``; ``bf16`` (autocast, channels_last); ``auto``: bf16 for compute-bound models
    (≥ 20M MACs an image) on hardware with fast bf16, fp32 otherwise (see training.loop)."""


@dataclass(frozen=True)
class DataConfig:
    val_fraction: float = 0.1
    """Share of the official training split carved off as `val` (digits: fixed 60/20/20)."""
    augment: bool = True
    """Batched random crops (and flips where the data set allows them) during training."""
    root: str | None = None
    """Where data sets live; default $KDBENCH_DATA or ~/.cache/kdbench/data."""


@dataclass(frozen=True)
class TeacherConfig:
    epochs: int = 30
    """Epochs of a teacher trained by kdbench (with the budget's optimiser and schedule)."""
    seed: int = 0


@dataclass(frozen=True)
class TuningConfig:
    trials: int = 8
    """Tuning trials per cell; 0: the method's defaults (with ``params``), no study."""
    seed: int = 0
    pruner: str = "median"
    timeout_s: float | None = None
    """Per cell: stop asking once the study has tuned this long (summed over resumed runs)."""
    storage: str | None = None
    """An SQLAlchemy URL (e.g. postgresql://user@host/db); default DIR/_studies/journal.log."""
    total_trials: int | None = None
    """Per suite: tuning trials over all cells together."""
    total_timeout_s: float | None = None
    """Per suite: seconds of tuning in one run; then every cell goes to its finals."""


Custom = tuple[tuple[str, float], ...]
"""Ray custom resources a trial holds, as sorted (name, amount) pairs: a node started with
``ray start --resources '{"a100": 4}'`` offers them."""


@dataclass(frozen=True)
class TeacherResources:
    cpus: float = 1
    gpus: float = 0
    custom: Custom = ()
    accelerator_type: str | None = None
    """Ray's accelerator type (``H100``, ``A100``...): only nodes with that GPU take the trial."""


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    custom: Custom = ()
    accelerator_type: str | None = None
    teacher: TeacherResources = field(default_factory=TeacherResources)


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
    resources: Resources = field(default_factory=Resources)
    source: str = "<suite>"

    def to_dict(self) -> dict[str, Any]:
        """The resolved suite, every default filled in, as plain YAML-able data."""

        def plain(obj: Any) -> Any:
            if isinstance(obj, Schedule):
                return obj.to_yaml()
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
                    out["search"] = {k: plain(v) for k, v in obj.search}
                return out
            if isinstance(obj, TeacherRef):
                return (
                    obj.arch
                    if obj.checkpoint is None
                    else {"arch": obj.arch, "checkpoint": obj.checkpoint}
                )
            if dataclasses.is_dataclass(obj):
                return {
                    f.name: dict(value) if f.name == "custom" else plain(value)
                    for f in dataclasses.fields(obj)
                    if f.name != "source"
                    for value in [getattr(obj, f.name)]
                }
            if isinstance(obj, tuple):
                return [plain(v) for v in obj]
            return obj

        return plain(self)

    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' is given twice", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KdbenchError(f"{path}: cannot read the suite ({exc.strerror or exc})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise KdbenchError(f"{path}: {where}YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise KdbenchError(f"{path}: YAML syntax error: {exc}") from None


# --------------------------------------------------------------------------- the loader


def load_suite(path: str | Path) -> Suite:
    """Read, validate and resolve a suite file; raise ``SuiteError`` on the first mistake."""
    path = Path(path)
    return parse_suite(read_yaml(path), source=str(path), base_dir=path.resolve().parent)


class _Checker:
    """Field-level checks that phrase every refusal the same way."""

    def __init__(self, source: str) -> None:
        self.source = source

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
                where = f"{key}.{k}" if key else str(k)
                raise self.fail(where, f"unknown key '{k}'; {choices_hint(k, allowed)}")
        for k in required:
            if k not in raw or raw[k] is None:
                where = f"{key}.{k}" if key else k
                raise self.fail(where, "is required")
        return raw

    def integer(self, value: Any, key: str, *, minimum: int | None = None) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not float(value).is_integer()
        ):
            raise self.fail(key, f"{_show(value)} is not an integer")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"{_show(value)} must be ≥ {minimum}")
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
            or not math.isfinite(value)
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

    def nonempty_list(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_show(value)}")
        if not value:
            raise self.fail(key, "is empty; give at least one entry")
        return value

    def unique(self, items: list[Any], key: str, show: Any = None) -> None:
        seen: dict[Any, int] = {}
        for i, item in enumerate(items):
            if item in seen:
                shown = show(item) if show else _show(item)
                raise self.fail(f"{key}[{i}]", f"{shown} duplicates {key}[{seen[item]}]")
            seen[item] = i


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    return repr(value)


TOP_KEYS = (
    "name",
    "datasets",
    "pairs",
    "methods",
    "seeds",
    "budget",
    "data",
    "teacher",
    "tuning",
    "resources",
)


def parse_suite(raw: Any, *, source: str = "<suite>", base_dir: Path | None = None) -> Suite:
    from kdbench.data import DATASETS
    from kdbench.models import MODELS

    c = _Checker(source)
    raw = c.mapping(raw, "", TOP_KEYS, required=("name", "datasets", "pairs", "methods", "seeds"))

    name = c.string(raw["name"], "name")
    if not _NAME.match(name):
        raise c.fail(
            "name", f"'{name}' must be letters, digits, '_', '.' or '-' (it names a directory)"
        )

    datasets = c.nonempty_list(raw["datasets"], "datasets")
    for i, d in enumerate(datasets):
        c.choice(d, f"datasets[{i}]", DATASETS)
    c.unique(datasets, "datasets")

    pairs = [
        _pair(c, p, f"pairs[{i}]", MODELS, base_dir)
        for i, p in enumerate(c.nonempty_list(raw["pairs"], "pairs"))
    ]
    c.unique(pairs, "pairs", show=lambda p: f"{p.teacher.arch} → {p.student}")

    methods = [
        _method(c, m, f"methods[{i}]")
        for i, m in enumerate(c.nonempty_list(raw["methods"], "methods"))
    ]
    labels = [m.label for m in methods]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise c.fail(
                f"methods[{i}]",
                f"a second entry labelled '{label}'; give one of them "
                "a distinct label (e.g. label: kd_t8) or remove the duplicate",
            )
    if "scratch" not in labels:
        methods.insert(0, MethodEntry(name="scratch", label="scratch"))

    seeds = c.nonempty_list(raw["seeds"], "seeds")
    seeds = [c.integer(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(seeds)]
    c.unique(seeds, "seeds")

    suite = Suite(
        name=name,
        datasets=tuple(datasets),
        pairs=tuple(pairs),
        methods=tuple(methods),
        seeds=tuple(seeds),
        budget=_budget(c, raw.get("budget")),
        data=_data(c, raw.get("data")),
        teacher=_teacher(c, raw.get("teacher")),
        tuning=_tuning(c, raw.get("tuning")),
        resources=_resources(c, raw.get("resources")),
        source=source,
    )
    return suite


def _pair(c: _Checker, raw: Any, key: str, models: Any, base_dir: Path | None) -> Pair:
    raw = c.mapping(raw, key, ("teacher", "student"), required=("teacher", "student"))
    student = c.choice(raw["student"], f"{key}.student", models)
    t = raw["teacher"]
    if isinstance(t, dict):
        t = c.mapping(t, f"{key}.teacher", ("arch", "checkpoint"), required=("arch",))
        arch = c.choice(t["arch"], f"{key}.teacher.arch", models)
        ckpt = c.string(t.get("checkpoint"), f"{key}.teacher.checkpoint", optional=True)
        if ckpt is not None:
            ckpt = _resolve_checkpoint(c, ckpt, f"{key}.teacher.checkpoint", base_dir)
        return Pair(TeacherRef(arch, ckpt), student)
    return Pair(TeacherRef(c.choice(t, f"{key}.teacher", models)), student)


def _resolve_checkpoint(c: _Checker, ckpt: str, key: str, base_dir: Path | None) -> str:
    candidates = (
        [Path(ckpt)]
        if Path(ckpt).is_absolute()
        else (([base_dir / ckpt] if base_dir else []) + [Path.cwd() / ckpt])
    )
    for cand in candidates:
        if cand.is_file():
            return str(cand.resolve())
    raise c.fail(
        key, f"'{ckpt}' is not a file (looked in: {', '.join(str(p) for p in candidates)})"
    )


def _method(c: _Checker, raw: Any, key: str) -> MethodEntry:
    from kdbench.methods import method_class

    if isinstance(raw, str):
        raw = {"name": raw}
    raw = c.mapping(raw, key, ("name", "label", "params", "search"), required=("name",))
    name = c.string(raw["name"], f"{key}.name")
    try:
        cls = method_class(name)
    except KdbenchError as exc:
        raise c.fail(f"{key}.name", str(exc)) from None
    label = c.string(raw.get("label", name), f"{key}.label")
    if not _NAME.match(label.replace("+", "_")):
        raise c.fail(f"{key}.label", f"'{label}' must be letters, digits, '_', '.', '-' or '+'")
    known = {h.name: h for h in cls.hparams}
    params = c.mapping(raw.get("params"), f"{key}.params", tuple(known))
    fixed = []
    for pname, value in params.items():
        reason = known[pname].check(value)
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
        name=name, label=label, params=tuple(sorted(fixed)), search=tuple(sorted(spaces))
    )


def _search_space(c: _Checker, raw: Any, key: str, hp: HParam) -> SearchSpace:
    """``[low, high]``, ``[low, high, log]``, or ``{choices: [...]}``."""
    if isinstance(raw, dict):
        raw = c.mapping(raw, key, ("choices",), required=("choices",))
        choices = c.nonempty_list(raw["choices"], f"{key}.choices")
        for i, v in enumerate(choices):
            reason = hp.check(v)
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
        reason = hp.check(v)
        if reason:
            raise c.fail(key, f"{bound} bound {reason}")
    if not low < high:
        raise c.fail(key, f"low {low!r} must be below high {high!r}")
    log = len(raw) == 3
    if log and low <= 0:
        raise c.fail(key, f"a log range needs low > 0, got {low!r}")
    return SearchSpace(low=hp.coerce(low), high=hp.coerce(high), log=log)


def _budget(c: _Checker, raw: Any) -> Budget:
    d = Budget()
    raw = c.mapping(raw, "budget", tuple(f.name for f in dataclasses.fields(Budget)))
    epochs = c.integer(raw.get("epochs", d.epochs), "budget.epochs", minimum=1)
    return Budget(
        epochs=epochs,
        batch_size=c.integer(raw.get("batch_size", d.batch_size), "budget.batch_size", minimum=1),
        optimizer=c.choice(raw.get("optimizer", d.optimizer), "budget.optimizer", OPTIMIZERS),
        lr=c.number(raw.get("lr", d.lr), "budget.lr", low=0, low_open=True),
        momentum=c.number(
            raw.get("momentum", d.momentum), "budget.momentum", low=0, high=1, high_open=True
        ),
        weight_decay=c.number(
            raw.get("weight_decay", d.weight_decay), "budget.weight_decay", low=0
        ),
        schedule=_schedule(c, raw.get("schedule", "cosine"), "budget.schedule"),
        precision=c.choice(raw.get("precision", d.precision), "budget.precision", PRECISIONS),
    )


def _schedule(c: _Checker, raw: Any, key: str) -> Schedule:
    if isinstance(raw, str):
        return Schedule(kind=c.choice(raw, key, (*SCHEDULES, "step")))
    if raw is not None and not isinstance(raw, dict):
        raise c.fail(
            key,
            f"{_show(raw)} is not valid; valid: cosine, constant, or {{step: [epochs], gamma: 0.1}}",
        )
    raw = c.mapping(raw, key, ("step", "gamma"), required=("step",))
    steps = c.nonempty_list(raw["step"], f"{key}.step")
    steps = [c.integer(s, f"{key}.step[{i}]", minimum=1) for i, s in enumerate(steps)]
    if steps != sorted(set(steps)):
        raise c.fail(f"{key}.step", f"{steps} must be strictly increasing epochs")
    gamma = c.number(raw.get("gamma", 0.1), f"{key}.gamma", low=0, low_open=True, high=1)
    return Schedule(kind="step", milestones=tuple(steps), gamma=gamma)


def _data(c: _Checker, raw: Any) -> DataConfig:
    d = DataConfig()
    raw = c.mapping(raw, "data", tuple(f.name for f in dataclasses.fields(DataConfig)))
    return DataConfig(
        val_fraction=c.number(
            raw.get("val_fraction", d.val_fraction),
            "data.val_fraction",
            low=0,
            low_open=True,
            high=1,
            high_open=True,
        ),
        augment=c.boolean(raw.get("augment", d.augment), "data.augment"),
        root=c.string(raw.get("root", d.root), "data.root", optional=True),
    )


def _teacher(c: _Checker, raw: Any) -> TeacherConfig:
    d = TeacherConfig()
    raw = c.mapping(raw, "teacher", ("epochs", "seed"))
    return TeacherConfig(
        epochs=c.integer(raw.get("epochs", d.epochs), "teacher.epochs", minimum=1),
        seed=c.integer(raw.get("seed", d.seed), "teacher.seed", minimum=0),
    )


def _tuning(c: _Checker, raw: Any) -> TuningConfig:
    d = TuningConfig()
    raw = c.mapping(raw, "tuning", tuple(f.name for f in dataclasses.fields(TuningConfig)))

    def optional(key: str, check: Any) -> Any:
        value = raw.get(key, getattr(d, key))
        return None if value is None else check(value, f"tuning.{key}")

    return TuningConfig(
        trials=c.integer(raw.get("trials", d.trials), "tuning.trials", minimum=0),
        seed=c.integer(raw.get("seed", d.seed), "tuning.seed", minimum=0),
        pruner=c.choice(raw.get("pruner", d.pruner), "tuning.pruner", PRUNERS),
        timeout_s=optional("timeout_s", lambda v, k: c.number(v, k, low=0, low_open=True)),
        storage=c.string(raw.get("storage", d.storage), "tuning.storage", optional=True),
        total_trials=optional("total_trials", lambda v, k: c.integer(v, k, minimum=1)),
        total_timeout_s=optional(
            "total_timeout_s", lambda v, k: c.number(v, k, low=0, low_open=True)
        ),
    )


RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _custom(c: _Checker, raw: Any, key: str) -> Custom:
    """``{name: amount}``: Ray custom resources; CPUs and GPUs have keys of their own."""
    raw = raw if raw is not None else {}
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


def _resources(c: _Checker, raw: Any) -> Resources:
    d = Resources()
    raw = c.mapping(
        raw,
        "resources",
        ("cpus_per_trial", "gpus_per_trial", "custom", "accelerator_type", "teacher"),
    )
    t = c.mapping(
        raw.get("teacher"), "resources.teacher", ("cpus", "gpus", "custom", "accelerator_type")
    )
    return Resources(
        cpus_per_trial=c.number(
            raw.get("cpus_per_trial", d.cpus_per_trial),
            "resources.cpus_per_trial",
            low=0,
            low_open=True,
        ),
        gpus_per_trial=c.number(
            raw.get("gpus_per_trial", d.gpus_per_trial), "resources.gpus_per_trial", low=0
        ),
        custom=_custom(c, raw.get("custom"), "resources.custom"),
        accelerator_type=c.string(
            raw.get("accelerator_type"), "resources.accelerator_type", optional=True
        ),
        teacher=TeacherResources(
            cpus=c.number(
                t.get("cpus", d.teacher.cpus), "resources.teacher.cpus", low=0, low_open=True
            ),
            gpus=c.number(t.get("gpus", d.teacher.gpus), "resources.teacher.gpus", low=0),
            custom=_custom(c, t.get("custom"), "resources.teacher.custom"),
            accelerator_type=c.string(
                t.get("accelerator_type"), "resources.teacher.accelerator_type", optional=True
            ),
        ),
    )
