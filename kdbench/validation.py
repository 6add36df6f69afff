"""A suite read and checked whole: the suite layer's parsing (``kdbench.spec``) answered by
the registries, then what only the models, the methods and the files can tell.

- the registries: which data sets, models and methods exist, each method's hyperparameters,
  and the entries a method implies (its ``baselines``, gathered by ``plan.implied_entries``);
- checkpoints: each teacher's file loaded as a run will load it (weights only), so that a
  file that would be refused is refused now, before Ray starts;
- pairings: every method can distil every pair it is given. A method that needs what a model
  does not expose (pre-activation features, equal channel counts...) says so through its
  ``pairing``; the models are built on the meta device and asked (shapes only: no memory,
  milliseconds), so a suite that cannot run is refused before anything trains.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch

from kdbench.data import DATASETS, dataset_info, is_streamed
from kdbench.errors import KdbenchError
from kdbench.methods import Method, method_class
from kdbench.models import MODELS, build_model, pretrained
from kdbench.plan import implied_entries
from kdbench.shipped import suite_file
from kdbench.spec import HParam, MethodEntry, Suite, read_yaml
from kdbench.spec import parse_suite as read_spec
from kdbench.spec.checks import Reader
from kdbench.spec.entries import lists_scratch
from kdbench.training.weights import read_checkpoint

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Registries:
    """The suite layer's ``Catalog``, answered by kdbench's registries."""

    datasets: Collection[str] = DATASETS
    models: Collection[str] = MODELS

    @property
    def model_families(self) -> Collection[str]:
        return MODELS.families()

    @staticmethod
    def resolve_model(name: str) -> object:
        return MODELS.get(name)

    @staticmethod
    def method_hparams(name: str) -> tuple[HParam, ...]:
        return method_class(name).hparams

    @staticmethod
    def implied_entries(entries: list[MethodEntry]) -> list[MethodEntry]:
        return implied_entries(entries)


def load_suite(path: str | Path) -> Suite:
    """Read, validate and resolve a suite file (or a shipped suite, by name); raise
    ``SuiteError`` on the first mistake."""
    path = suite_file(path)
    return parse_suite(read_yaml(path), source=str(path), base_dir=path.resolve().parent)


def parse_suite(raw: Any, *, source: str = "<suite>", base_dir: Path | None = None) -> Suite:
    """A suite from its YAML data, checked against the registries, its checkpoints and the
    pairings of its methods."""
    suite = read_spec(raw, catalog=Registries(), source=source, base_dir=base_dir)
    r = Reader(source)
    suite = _pretrained(r, suite)
    _checkpoints(r, suite)
    written = raw.get("methods") if isinstance(raw, dict) else None
    key = _entry_keys(suite, written if isinstance(written, list) else [])
    _pairing(r, suite, key)
    _streaming(r, suite, key)
    return suite


def _entry_keys(suite: Suite, written: list[Any]) -> Callable[[int], str]:
    """The suite file's key of the ``i``-th entry of ``suite.methods``: when the file does not
    list scratch, the scratch entry added in front shifts the file's indices by one
    (dataset distillation's baselines come last)."""
    offset = int(suite.methods[0].label == "scratch" and not lists_scratch(written))
    return lambda i: f"methods[{max(i - offset, 0)}]"


def _pretrained(r: Reader, suite: Suite) -> Suite:
    """Each ``weights:`` teacher with the path of its file in the library's cache and its
    published hash. A missing file is a run's to refuse (``missing_weights``), not a plan's,
    when the hash is published; timm publishes none, so its file must be there."""
    pairs = list(suite.pairs)
    for i, pair in enumerate(pairs):
        ref = pair.teacher
        if ref.weights is None:
            continue
        try:
            found = pretrained.resolve(ref.arch, ref.weights)
        except KdbenchError as exc:
            raise r.fail(f"pairs[{i}].teacher.weights", str(exc)) from None
        if found.digest is None and not found.present:
            raise r.fail(f"pairs[{i}].teacher.weights", found.missing())
        ref = dataclasses.replace(ref, checkpoint=found.path, digest=found.digest)
        pairs[i] = dataclasses.replace(pair, teacher=ref)
    return dataclasses.replace(suite, pairs=tuple(pairs))


def missing_weights(suite: Suite) -> None:
    """Refuse, in one line, a run whose pretrained teachers' files are not there."""
    for pair in suite.pairs:
        ref = pair.teacher
        if ref.weights is not None and ref.checkpoint and not os.path.isfile(ref.checkpoint):
            raise KdbenchError(
                pretrained.resolve(ref.arch, ref.weights).missing() + f" ({ref.arch} {ref.weights})"
            )


def _checkpoints(r: Reader, suite: Suite) -> None:
    """Load each teacher's checkpoint now, as a run's teacher will (weights only); a file
    shared by several pairs is read once."""
    read: set[str] = set()
    for i, pair in enumerate(suite.pairs):
        path = pair.teacher.checkpoint
        if path is None or path in read or not os.path.isfile(path):  # missing: weights'
            continue
        key = "weights" if pair.teacher.weights else "checkpoint"
        try:
            with warnings.catch_warnings():  # torch warns of pickle protocols: not one line
                warnings.simplefilter("ignore")
                read_checkpoint(path, digest=pair.teacher.digest)
        except KdbenchError as exc:
            raise r.fail(f"pairs[{i}].teacher.{key}", _ANSI.sub("", str(exc))) from None
        read.add(path)


def _pairing(r: Reader, suite: Suite, key: Callable[[int], str]) -> None:
    """Every method can distil every pair it is given (see the module's docstring)."""
    probes: dict[tuple[str, tuple[int, ...], int], Any] = {}
    shapes: dict[str, tuple[tuple[int, ...], int] | None] = {}
    for i, entry in enumerate(suite.methods):
        cls = method_class(entry.name)
        by_outputs = cls.pairing.__func__ is not Method.pairing.__func__  # type: ignore[attr-defined]
        by_models = cls.pairing_models.__func__ is not Method.pairing_models.__func__  # type: ignore[attr-defined]
        if not (by_outputs or by_models):
            continue  # pairs with anything: nothing to build
        hp = cls.complete({**cls.defaults(), **dict(entry.params)})
        wants_teacher = cls.uses_teacher(hp)
        for dataset in suite.datasets:
            if dataset not in shapes:  # a folder's data set is looked at once, not per method
                shapes[dataset] = _data_shape(dataset, suite.data.root)
            shape = shapes[dataset]
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
                    raise r.fail(
                        key(i),
                        f"'{entry.name}' cannot distil {pair.teacher.arch} → {pair.student} "
                        f"on {dataset}: {reason}",
                    )


def _streaming(r: Reader, suite: Suite, key: Callable[[int], str]) -> None:
    """Every method runs on every streamed data set it is given, or is refused with why."""
    streamed = [d for d in suite.datasets if is_streamed(d)]
    if not streamed:
        return
    for i, entry in enumerate(suite.methods):
        reasons = [method_class(n).in_memory() for n in entry.name.split("+")]
        reason = next((x for x in reasons if x), None)
        if reason:
            raise r.fail(
                key(i),
                f"'{entry.name}' cannot run on {streamed[0]}, which is streamed from files: "
                f"{reason}; use an in-memory data set for it (a downsampled copy)",
            )


def _data_shape(dataset: str, root: str | None) -> tuple[tuple[int, ...], int] | None:
    """A data set's (image shape, classes) as its loader declares them; None when they cannot
    be known without its files (the trial then reports what is wrong)."""
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
    key = (arch, shape, classes)
    if key not in cache:
        try:
            with torch.device("meta"):
                model = build_model(arch, num_classes=classes, input_shape=shape).eval()
                cache[key] = (model, model.forward_features(torch.zeros((2, *shape))))
        except Exception:  # a model meta tensors cannot run is checked by training
            cache[key] = None
    return cache[key]
