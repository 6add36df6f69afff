"""The tuning side of a run: studies' trials as trial specs, their outcomes told back, and
the finals chosen from each finished study.

With ``tuning.confirm`` a done study first hands out its confirm trials (its best ``top``
complete settings again, each at the further tuning seeds); its finals follow once every
confirm trial has a row, chosen by the mean validation accuracy over the tuning seeds.

``Tuner`` speaks in the plan's terms (study names, ``StudentSpec``) over a study book: the
driver's ``StudyBook``, which asks and tells, or a ``StudyPeek`` for ``--dry-run``, which
reads the storage and writes nothing.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from kdbench.plan import (
    Plan,
    StudentSpec,
    confirm_count,
    confirm_spec,
    contains,
    final_spec,
    prerequisites_of,
    representative_confirms,
    resolve_hparams,
    tune_spec,
)


class Book(Protocol):
    """What the tuner needs of a study book (``StudyBook`` or ``StudyPeek``)."""

    def interrupted(self, name: str) -> list[tuple[int, dict[str, Any]]]: ...
    def counts(self, name: str) -> tuple[int, int]: ...
    def done(self, name: str) -> bool: ...
    def done_of(self, names: list[str]) -> list[str]: ...
    def complete(self, name: str) -> list[tuple[int, dict[str, Any], float]]: ...
    def best(
        self, name: str, confirmed: dict[int, tuple[float, int]] | None = None
    ) -> tuple[dict[str, Any], float] | None: ...
    def ask_next(self, names: list[str]) -> tuple[str, int, dict[str, Any]] | None: ...
    def tell(
        self, name: str, number: int, status: str, value: float | None, epoch: int | None = None
    ) -> None: ...


TuneRow = tuple[str, "float | None", "int | None"]
"""A tuning row's (status, val_acc, epoch_reported)."""


class Tuner:
    def __init__(
        self,
        plan: Plan,
        book: Book,
        tune_rows: dict[str, TuneRow] | None = None,
        confirm_rows: dict[str, TuneRow] | None = None,
    ):
        self.plan = plan
        self.suite = plan.suite
        self.book = book
        self.studies = {s.name: s for s in plan.studies}
        self.tune_rows = tune_rows or {}
        """Rows of tuning trials already written: a killed driver's trials are told from them."""
        self.confirm_rows = dict(confirm_rows or {})
        """Confirm trials' rows, written before or in this run, by trial id."""
        self._confirms: dict[str, list[StudentSpec]] = {}
        self._warned: set[str] = set()

    @property
    def names(self) -> list[str]:
        return list(self.studies)

    def teachers_of(self, name: str) -> set[str]:
        """The teachers a study's trials and its finals distil from."""
        study = self.studies[name]
        hp = resolve_hparams(study.cell.method)
        first = {  # what its method needs made first, for tuning and for the finals
            tid
            for refit in {False, self.suite.data.refits}
            for _, tid in prerequisites_of(self.suite, study.cell, hp, refit)
        }
        return {study.teacher.trial_id, study.final_teacher.trial_id} | first

    def spec(self, name: str, number: int, params: dict[str, Any] | None) -> StudentSpec:
        study = self.studies[name]
        hp = resolve_hparams(study.cell.method, params)
        return tune_spec(self.suite, study.cell, study.teacher, number, hp)

    def resume(self, name: str) -> list[StudentSpec]:
        """The trials a killed driver left running: those whose row was written are told
        from it; the others are to run again under their own numbers."""
        out = []
        for number, params in self.book.interrupted(name):
            spec = self.spec(name, number, params)
            if spec.trial_id in self.tune_rows:
                self.book.tell(name, number, *self.tune_rows[spec.trial_id])
            else:
                out.append(spec)
        return out

    def done(self, name: str) -> bool:
        return self.book.done(name)

    def done_of(self, names: list[str]) -> list[str]:
        return self.book.done_of(names)

    def left(self, name: str) -> int:
        """Trials still to ask of a study, its confirm trials, and its finals."""
        done, running = self.book.counts(name)
        study = self.studies[name]
        asks = max(study.budget - done - running, 0)
        return asks + confirm_count(self.suite, study.budget) + len(self.suite.seeds)

    def representative(self, name: str) -> list[StudentSpec]:
        """A study's trials yet to ask, its confirm trials and its finals, at the method's
        defaults (for costs)."""
        study = self.studies[name]
        done, running = self.book.counts(name)
        hp = resolve_hparams(study.cell.method)
        tune = [
            tune_spec(self.suite, study.cell, study.teacher, n, hp)
            for n in range(done + running, study.budget)
        ]
        return tune + representative_confirms(self.suite, study, hp) + self.final_specs(name, hp)

    def final_specs(self, name: str, hp: tuple[tuple[str, Any], ...]) -> list[StudentSpec]:
        study = self.studies[name]
        return [
            final_spec(self.suite, study.cell, study.final_teacher, seed, hp)
            for seed in self.suite.seeds
        ]

    def ask(self, order: list[str]) -> tuple[str, StudentSpec] | None:
        """A new trial of the first study in ``order`` that may ask one."""
        got = self.book.ask_next(order)
        if got is None:
            return None
        name, number, params = got
        return name, self.spec(name, number, params)

    def tell(self, name: str, spec: StudentSpec, row: dict[str, Any]) -> None:
        # Its last epoch goes with the tell: the trial did not report it (see run_student).
        self.book.tell(
            name, spec.number or 0, row["status"], row.get("val_acc"), row.get("epoch_reported")
        )

    # -- seed-confirmed selection
    def confirms(self, name: str) -> list[StudentSpec]:
        """A done study's confirm trials: its ``top`` best complete trials (the earlier on a
        tie) and its reference trial (the defaults, when complete and not among them), each
        at every further tuning seed. None without ``tuning.confirm``."""
        c = self.suite.tuning.confirm
        if not c:
            return []
        if name not in self._confirms:
            study = self.studies[name]
            complete = self.book.complete(name)
            best = sorted(complete, key=lambda t: (-t[2], t[0]))[: c.top]
            # The reference setting is confirmed too: the one-standard-error rule may keep
            # it, which it could not do among candidates that left it out.
            start = start_point(study)
            numbers = {n for n, _, _ in best}
            best += [t for t in complete if t[1] == start and t[0] not in numbers][:1]
            self._confirms[name] = [
                confirm_spec(
                    self.suite,
                    study.cell,
                    study.teacher,
                    number,
                    seed,
                    resolve_hparams(study.cell.method, params),
                )
                for number, params, _ in best
                for seed in self.suite.tuning_seeds[1:]
            ]
        return self._confirms[name]

    def confirmed(self, name: str) -> bool:
        """Whether every confirm trial of a done study has its row (its finals may go)."""
        return all(s.trial_id in self.confirm_rows for s in self.confirms(name))

    def record(self, spec: StudentSpec, row: dict[str, Any]) -> None:
        """A confirm trial's outcome."""
        self.confirm_rows[spec.trial_id] = (row["status"], row.get("val_acc"), None)

    def forget(self, spec: StudentSpec) -> None:
        """A confirm trial that runs again (``--retry-failed``): its old row does not count."""
        self.confirm_rows.pop(spec.trial_id, None)

    def _means(self, name: str) -> dict[int, tuple[float, int]] | None:
        """Per confirmed trial: its mean validation accuracy over the tuning seeds that
        scored (its own trial's, and the confirm trials' that did not fail), and their count."""
        if not self.suite.tuning.confirm:
            return None
        values = {n: [v] for n, _, v in self.book.complete(name)}
        out: dict[int, list[float]] = {}
        for spec in self.confirms(name):
            assert spec.number is not None
            status, val, _ = self.confirm_rows.get(spec.trial_id, ("failed", None, None))
            scored = out.setdefault(spec.number, list(values[spec.number]))
            if status == "ok" and val is not None:
                scored.append(float(val))
        return {n: (sum(v) / len(v), len(v)) for n, v in out.items()}

    def finals(self, name: str) -> list[StudentSpec]:
        """A finished study's final trials: its selected hyperparameters, every seed."""
        study = self.studies[name]
        means = self._means(name)
        best = self.book.best(name) if means is None else self.book.best(name, means)
        if best is None and name not in self._warned:
            self._warned.add(name)
            print(
                f"kdbench: no tuning trial of {study.cell.key} completed; its finals use the "
                "defaults",
                file=sys.stderr,
            )
        return self.final_specs(name, resolve_hparams(study.cell.method, best[0] if best else None))


def start_point(study: Any) -> dict[str, Any] | None:
    """The defaults (with params) of a study's searched hyperparameters, if all lie in its
    ranges: a new study measures them first."""
    defaults = dict(resolve_hparams(study.cell.method))
    start = {k: defaults[k] for k in study.space}
    inside = all(contains(d, start[k]) for k, d in study.space.items())
    return start if inside else None


def book_args(plan: Plan, results_dir: str) -> tuple[Any, ...]:
    """``StudyBook``'s arguments for a plan, for the driver's book or the study actor."""
    from kdbench.data import dataset_info
    from kdbench.tuning.studies import StudySpec

    suite = plan.suite
    t = suite.tuning
    specs = [
        StudySpec(
            s.name,
            s.space,
            s.budget,
            suite.budget.epochs,
            t.timeout_s,
            t,
            start=start_point(s),
            n_val=dataset_info(s.cell.dataset, suite.data.root).split_sizes(
                suite.data.val_fraction
            )[1],
        )
        for s in plan.studies
    ]
    return (results_dir, t.storage, specs, t.total_trials, t.total_timeout_s)
