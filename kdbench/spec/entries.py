"""A suite's ``methods``: each entry's name, label, fixed ``params``, ``search`` ranges and
``pairs``, checked against the hyperparameters the method declares (``HParam``), which the
catalog looks up by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdbench.errors import KdbenchError
from kdbench.spec.checks import Choice, Reader, String
from kdbench.spec.hparams import HParam, SearchSpace
from kdbench.spec.messages import SHOW_MAX, show
from kdbench.spec.names import NAME, one_id_part, short
from kdbench.spec.suite import MethodEntry, Pair, pair_name


def method_entries(
    r: Reader,
    raw: Any,
    pairs: tuple[Pair, ...],
    hparams_of: Callable[[str], tuple[HParam, ...]],
    implied: Callable[[list[MethodEntry]], list[MethodEntry]],
) -> tuple[MethodEntry, ...]:
    """The entries as written, ``scratch`` first when the suite does not list it, then the
    entries the written ones imply (``implied``: dataset distillation's baselines), after
    the written ones so that ``methods[i]`` in a message is still the suite's i-th entry."""
    methods = [
        _method(r, m, f"methods[{i}]", pairs, hparams_of)
        for i, m in enumerate(r.nonempty_list(raw, "methods"))
    ]
    labels = [m.label for m in methods]
    for i, m in enumerate(methods):
        for j, first in enumerate(methods[:i]):
            if first.label == m.label and not _per_pair(first, m, pairs):
                raise r.fail(
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
    for extra in implied(methods):
        methods.append(extra)
        entries.append(
            (f"the baseline '{extra.label}' added for dataset distillation", extra.label)
        )
    one_id_part(r, entries, "give one of them a distinct label")
    return tuple(methods)


def lists_scratch(written: list[Any]) -> bool:
    """Whether the suite's own ``methods`` name ``scratch`` (else it was added in front)."""
    return any(
        (m if isinstance(m, str) else m.get("label", m.get("name"))) == "scratch"
        for m in written
        if isinstance(m, (str, dict))
    )


def _per_pair(a: MethodEntry, b: MethodEntry, pairs: tuple[Pair, ...]) -> bool:
    """Whether two entries with one label are one method's per-pair settings (DKD's β for
    each pair, as mdistiller sets it): same method, ``pairs`` given, no pair in common. Each
    cell (data set, pair, label) then still has one entry."""
    return a.name == b.name and bool(a.pairs) and bool(b.pairs) and not _overlap(a, b, pairs)


def _overlap(a: MethodEntry, b: MethodEntry, pairs: tuple[Pair, ...]) -> str:
    both = [pair_name(p) for p in pairs if a.runs_on(p) and b.runs_on(p)]
    return ", ".join(both)


def _method(
    r: Reader,
    raw: Any,
    key: str,
    pairs: tuple[Pair, ...],
    hparams_of: Callable[[str], tuple[HParam, ...]],
) -> MethodEntry:
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = r.mapping(raw, key, ("name", "label", "params", "search", "pairs"), required=("name",))
    name = String().parse(r, raw["name"], f"{key}.name")
    short(r, name, f"{key}.name")  # else the registry's refusal shows it whole, twice
    try:
        declared = hparams_of(name)
    except KdbenchError as exc:
        raise r.fail(f"{key}.name", str(exc)) from None
    label = String().parse(r, raw.get("label", name), f"{key}.label")
    if not NAME.fullmatch(label.replace("+", "_")):
        raise r.fail(f"{key}.label", f"{show(label)} must be letters, digits, '_', '.', '-' or '+'")
    short(r, label, f"{key}.label")
    known = {h.name: h for h in declared}
    params = r.mapping(raw.get("params"), f"{key}.params", tuple(known))
    fixed = []
    for pname, value in params.items():
        reason = _hp_reason(known[pname], value)
        if reason:
            raise r.fail(f"{key}.params.{pname}", reason)
        fixed.append((pname, known[pname].coerce(value)))
    search = r.mapping(raw.get("search"), f"{key}.search", tuple(known))
    spaces = []
    for pname, value in search.items():
        if pname in params:
            raise r.fail(
                f"{key}.search.{pname}", f"'{pname}' is fixed in params; drop one of the two"
            )
        spaces.append((pname, _search_space(r, value, f"{key}.search.{pname}", known[pname])))
    return MethodEntry(
        name=name,
        label=label,
        params=tuple(sorted(fixed)),
        search=tuple(sorted(spaces)),
        pairs=_method_pairs(r, raw.get("pairs"), f"{key}.pairs", pairs),
    )


def _method_pairs(r: Reader, raw: Any, key: str, pairs: tuple[Pair, ...]) -> tuple[str, ...]:
    """``pairs: [teacher->student, ...]``: the suite's pairs a method runs on (a suite that
    distils a CIFAR-style pair and evaluates dataset distillation on ConvNet-3 runs neither
    family on the other's pair)."""
    if raw is None:
        return ()
    names = [pair_name(p) for p in pairs]
    chosen = r.nonempty_list(raw, key)
    for i, name in enumerate(chosen):
        Choice(tuple(dict.fromkeys(names))).parse(r, name, f"{key}[{i}]")
        if names.count(name) > 1:
            raise r.fail(
                f"{key}[{i}]",
                f"'{name}' names {names.count(name)} pairs (their teachers' checkpoints "
                "differ); a method entry cannot choose between them",
            )
    r.unique(chosen, key)
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
            return f"{show(value)} is too large ({hp.domain()})"
        plain = True
    if not plain:
        what = hp.domain() if hp.kind == "categorical" else f"a number ({hp.domain()})"
        return f"{show(value)} is not {what}"
    return hp.check(value)


def _search_space(r: Reader, raw: Any, key: str, hp: HParam) -> SearchSpace:
    """``[low, high]``, ``[low, high, log]``, or ``{choices: [...]}``."""
    if isinstance(raw, dict):
        raw = r.mapping(raw, key, ("choices",), required=("choices",))
        choices = r.nonempty_list(raw["choices"], f"{key}.choices")
        for i, v in enumerate(choices):
            reason = _hp_reason(hp, v)
            if reason:
                raise r.fail(f"{key}.choices[{i}]", reason)
        r.unique(choices, f"{key}.choices")
        return SearchSpace(choices=tuple(hp.coerce(v) for v in choices))
    if hp.kind == "categorical":
        raise r.fail(key, f"'{hp.name}' is categorical: give {{choices: [...]}} from {hp.domain()}")
    if not isinstance(raw, list) or len(raw) not in (2, 3) or (len(raw) == 3 and raw[2] != "log"):
        raise r.fail(
            key,
            f"{show(raw)} is not a range; write [low, high], [low, high, log] "
            "or {choices: [...]}",
        )
    low, high = raw[0], raw[1]
    for bound, v in (("low", low), ("high", high)):
        reason = _hp_reason(hp, v)
        if reason:
            raise r.fail(key, f"{bound} bound {reason}")
    if not low < high:
        raise r.fail(key, f"low {low!r} must be below high {high!r}")
    log = len(raw) == 3
    if log and low <= 0:
        raise r.fail(key, f"a log range needs low > 0, got {low!r}")
    return SearchSpace(low=hp.coerce(low), high=hp.coerce(high), log=log)
