"""A suite's raw YAML data read into a ``Suite``: every top-level key checked, with one line
that names the file, the key, the value and the valid choices (``SuiteError``).

What only the registries know (which data sets, models and methods exist, a method's
hyperparameters, the entries a method implies) is asked of a ``Catalog``, so that this layer
imports neither torch nor anything above it; ``kdbench.validation`` answers it from the
registries and adds the checks that build models or read checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

from kdbench.errors import KdbenchError
from kdbench.spec.checks import Choice, Int, Reader, String
from kdbench.spec.entries import method_entries
from kdbench.spec.hparams import HParam
from kdbench.spec.messages import show, text
from kdbench.spec.names import NAME, one_id_part, short
from kdbench.spec.sections import parse_section
from kdbench.spec.settings import MAX_SEED, MAX_SEEDS, SECTIONS, SEED_BOUND, TUNING_SEED
from kdbench.spec.suite import MethodEntry, Pair, Suite, TeacherRef

REQUIRED = ("name", "datasets", "pairs", "methods", "seeds")
TOP_KEYS = (*REQUIRED, *SECTIONS)
PATH_MAX = 300
"""Characters of a path that a message shows."""


class Catalog(Protocol):
    """What reading a suite asks of the registries."""

    datasets: Collection[str]
    """The data sets' names."""
    models: Collection[str]
    """The models' names (``in`` also answers a family's ``prefix:name``)."""
    model_families: Collection[str]
    """Prefixes whose names resolve through a library (``timm``)."""
    resolve_model: Callable[[str], object]
    """Look a family's name up; raises a one-line ``KdbenchError`` saying why it is none."""
    method_hparams: Callable[[str], tuple[HParam, ...]]
    """A method's (or a combination ``A+B``'s) declared hyperparameters; raises a one-line
    ``KdbenchError`` for an unknown name."""
    implied_entries: Callable[[list[MethodEntry]], list[MethodEntry]]
    """Entries the suite's entries bring with them (dataset distillation's baselines)."""


def parse_suite(
    raw: Any, *, catalog: Catalog, source: str = "<suite>", base_dir: Path | None = None
) -> Suite:
    """A ``Suite`` from a suite's YAML data; raises ``SuiteError`` on the first mistake."""
    r = Reader(source)
    raw = r.mapping(raw, "", TOP_KEYS, required=REQUIRED)
    pairs = _pairs(r, raw["pairs"], catalog, base_dir)
    suite = Suite(
        name=_name(r, raw["name"]),
        datasets=_datasets(r, raw["datasets"], catalog.datasets),
        pairs=pairs,
        methods=method_entries(
            r, raw["methods"], pairs, catalog.method_hparams, catalog.implied_entries
        ),
        seeds=_seeds(r, raw["seeds"]),
        **{key: parse_section(r, cls, raw.get(key), key) for key, cls in SECTIONS.items()},
        source=source,
    )
    _protocol(r, suite)
    return suite


def _protocol(r: Reader, suite: Suite) -> None:
    """What the settings must respect together for the numbers to mean what they say."""
    t = suite.tuning
    if t.trials == 0:
        return
    if suite.data.val_fraction == 0:
        raise r.fail(
            "data.val_fraction",
            "0 leaves no validation split to tune on; give a share in (0, 1) (with "
            "data.refit: train+val the finals still train on all of it), or tuning.trials: 0",
        )
    last = t.seed + len(suite.tuning_seeds) - 1
    if last > MAX_SEED:
        raise r.fail(
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
            raise r.fail(
                "tuning.seed",
                f"{what}: a tuning trial would double as a final trial (the very run picked "
                "for its validation score), biasing tuned methods upwards; "
                f"choose a tuning.seed outside seeds (the default is {TUNING_SEED})",
            )


def _name(r: Reader, raw: Any) -> str:
    name = String().parse(r, raw, "name")
    if not NAME.fullmatch(name):
        raise r.fail(
            "name", f"{show(name)} must be letters, digits, '_', '.' or '-' (it names a directory)"
        )
    short(r, name, "name")
    return name


def _datasets(r: Reader, raw: Any, known: Collection[str]) -> tuple[str, ...]:
    datasets = r.nonempty_list(raw, "datasets")
    for i, d in enumerate(datasets):
        Choice(known).parse(r, d, f"datasets[{i}]")
    r.unique(datasets, "datasets")
    one_id_part(
        r,
        [(f"datasets[{i}]", d) for i, d in enumerate(datasets)],
        "name only one of them in a suite",
    )
    return tuple(datasets)


def _pairs(r: Reader, raw: Any, catalog: Catalog, base_dir: Path | None) -> tuple[Pair, ...]:
    pairs = [
        _pair(r, p, f"pairs[{i}]", catalog, base_dir)
        for i, p in enumerate(r.nonempty_list(raw, "pairs"))
    ]
    r.unique(pairs, "pairs", shown=lambda p: f"{p.teacher.arch} → {p.student}")
    models = [
        (f"pairs[{i}].{role}", name)
        for i, p in enumerate(pairs)
        for role, name in (("teacher", p.teacher.arch), ("student", p.student))
    ]
    one_id_part(r, models, "name only one of them in a suite")
    return tuple(pairs)


def _seeds(r: Reader, raw: Any) -> tuple[int, ...]:
    seeds = r.nonempty_list(raw, "seeds", most=MAX_SEEDS)
    check = Int(minimum=0, maximum=MAX_SEED, why=SEED_BOUND)
    seeds = [check.parse(r, s, f"seeds[{i}]") for i, s in enumerate(seeds)]
    r.unique(seeds, "seeds")
    return tuple(seeds)


def _pair(r: Reader, raw: Any, key: str, catalog: Catalog, base_dir: Path | None) -> Pair:
    raw = r.mapping(raw, key, ("teacher", "student"), required=("teacher", "student"))
    student = _model(r, raw["student"], f"{key}.student", catalog)
    t = raw["teacher"]
    if isinstance(t, dict):
        t = r.mapping(t, f"{key}.teacher", ("arch", "checkpoint", "weights"), required=("arch",))
        arch = _model(r, t["arch"], f"{key}.teacher.arch", catalog)
        ckpt = t.get("checkpoint")
        if t.get("weights") is not None:
            if ckpt is not None:
                raise r.fail(
                    f"{key}.teacher",
                    "give checkpoint (your file) or weights (a library's), not both",
                )
            weights = String().parse(r, t["weights"], f"{key}.teacher.weights")
            return Pair(TeacherRef(arch, weights=weights), student)
        if ckpt is not None:
            ckpt = String().parse(r, ckpt, f"{key}.teacher.checkpoint")
            ckpt = _resolve_checkpoint(r, ckpt, f"{key}.teacher.checkpoint", base_dir)
        return Pair(TeacherRef(arch, ckpt), student)
    return Pair(TeacherRef(_model(r, t, f"{key}.teacher", catalog)), student)


def _model(r: Reader, value: Any, key: str, catalog: Catalog) -> str:
    """A model name: a registered one, or one of a family (``timm:<name>``), refused with the
    family's own reason (unknown to timm, timm not installed)."""
    if isinstance(value, str) and ":" in value and value.split(":", 1)[0] in catalog.model_families:
        try:
            catalog.resolve_model(value)
        except KdbenchError as exc:
            raise r.fail(key, str(exc)) from None
        return value
    return Choice(catalog.models).parse(r, value, key)


def _resolve_checkpoint(r: Reader, ckpt: str, key: str, base_dir: Path | None) -> str:
    """A checkpoint's absolute path, looked for beside the suite, then in the working folder."""
    candidates = (
        [Path(ckpt)]
        if Path(ckpt).is_absolute()
        else (([base_dir / ckpt] if base_dir else []) + [Path.cwd() / ckpt])
    )
    for cand in candidates:
        if cand.is_file():
            return str(cand.resolve())
    raise r.fail(
        key,
        f"'{text(ckpt, PATH_MAX)}' is not a file "
        f"(looked in: {', '.join(text(str(p), PATH_MAX) for p in candidates)})",
    )
