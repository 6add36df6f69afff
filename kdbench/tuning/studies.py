"""Optuna studies: where they live, what they are called, how they sample, prune and stop.

Storage is an Optuna JournalStorage file, ``DIR/_studies/journal.log``, unless the suite gives
``tuning.storage`` (an SQLAlchemy URL such as ``postgresql://user@host/db``). A study is named
after its cell plus a short hash of everything that makes its trials comparable (the
teacher, the budget, the method's fixed params and search space, the tuning seed and
pruner), e.g. ``digits/cnn_wide->cnn_tiny/kd@3f9a1c2e``: change any of those and a new
study starts rather than mixing incomparable trials.

The driver's study book asks, tells and chooses; when trials report epochs, a second book in a
Ray actor next to the driver (``broker``) adds their intermediate values and answers their
pruner's question. Both are on the driver's node; Optuna's journal and RDB storages take
writes from several processes (the journal under its file lock).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from kdbench.errors import KdbenchError
from kdbench.results.layout import Layout
from kdbench.spec import TuningConfig

ELAPSED = "kdbench_elapsed_s"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

optuna.logging.set_verbosity(logging.WARNING)


def journal_path(results_dir: str | os.PathLike[str]) -> Path:
    return Layout.of(results_dir).journal()


def repair_journal(path: Path) -> None:
    """Make a journal safe to append to after a writer was killed.

    A write cut short leaves a last line without its newline (Optuna's reader then fails
    as soon as anything follows it), and perhaps a lock file. Called only by the process
    that holds the results directory's run lock, so no writer can be alive.
    """
    lock = Path(str(path) + ".lock")
    lock.unlink(missing_ok=True)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def open_storage(results_dir: str | os.PathLike[str], url: str | None) -> BaseStorage:
    if url:
        try:
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except Exception as exc:
            raise KdbenchError(
                f"tuning.storage: cannot open '{url}': {type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
    path = journal_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_journal(path)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileSymlinkLock(str(path))))


def make_sampler(tuning: TuningConfig, budget: int) -> optuna.samplers.BaseSampler:
    """Seeded TPE; its random start-up phase is a third of the budget (at least 2 trials)."""
    return optuna.samplers.TPESampler(
        seed=tuning.seed, n_startup_trials=max(2, budget // 3), constant_liar=True
    )


def make_pruner(tuning: TuningConfig, epochs: int, budget: int) -> optuna.pruners.BasePruner:
    """Median (default): prune below the median of earlier trials at the same epoch, after a
    third of the epochs and once a quarter of the budget (at least 2 trials) has finished;
    hyperband: rungs from 1 epoch to all of them; none: never prune."""
    if tuning.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=max(2, budget // 4), n_warmup_steps=max(1, epochs // 3)
        )
    if tuning.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class StudySpec:
    """What the study book needs to open (or resume) one cell's study."""

    name: str
    space: dict[str, BaseDistribution]
    budget: int
    epochs: int
    timeout_s: float | None
    tuning: TuningConfig
    start: dict[str, Any] | None = None
    """The method's defaults (with the suite's params): a new study's first trial."""
    n_val: int | None = None
    """Images in the validation split, for the standard error of a validation accuracy."""


def select(
    trials: list[tuple[int, dict[str, Any], float]],
    start: dict[str, Any] | None,
    n_val: int | None,
    seeds: int = 1,
) -> tuple[int, dict[str, Any], float, str] | None:
    """Choose a cell's hyperparameters from its complete trials (number, params, val_acc).

    The highest validation accuracy wins (the earlier trial on a tie), unless the reference
    setting (``start``: the method's defaults) scored within one standard error of it,
    sqrt(p(1 − p) / n_val): a difference the validation split cannot resolve does not
    overturn the reference (the one-standard-error rule). With ``seeds`` > 1 the values are
    means over that many tuning seeds (seed-confirmed selection), and the standard error is
    that of a mean over ``seeds`` × ``n_val`` images.
    """
    if not trials:
        return None
    number, params, value = max(trials, key=lambda t: (t[2], -t[0]))
    over = f" over {seeds} tuning seeds" if seeds > 1 else ""
    if start is not None and n_val:
        se = math.sqrt(value * (1.0 - value) / (n_val * seeds))
        for n, p, v in trials:
            if p == start and v >= value - se:
                return n, p, v, f"reference within one standard error of the best{over}"
    return (
        number,
        params,
        value,
        (f"best mean validation accuracy{over}" if over else "best validation accuracy"),
    )


Confirmed = dict[int, tuple[float, int]]
"""Seed-confirmed selection's candidates: trial number -> (mean validation accuracy over
its tuning seeds, how many seeds scored)."""


def _candidates(
    complete: list[tuple[int, dict[str, Any], float]], confirmed: Confirmed | None
) -> tuple[list[tuple[int, dict[str, Any], float]], int]:
    """The trials selection chooses among, and the seeds each value is a mean over."""
    if confirmed is None:
        return complete, 1
    chosen = [(n, p, confirmed[n][0]) for n, p, _ in complete if n in confirmed]
    return chosen, min((confirmed[n][1] for n, _, _ in chosen), default=1)


@dataclass
class _Open:
    spec: StudySpec
    study: optuna.Study
    study_id: int
    elapsed_before: float
    finished: int
    running: set[int]
    interrupted: list[tuple[int, dict[str, Any]]]
    started: float | None = None


class StudyBook:
    """Every study of a run, behind one object: ask, report, tell, and the budgets.

    A study is *done* when its finished trials (complete, pruned or failed) reach its budget,
    or its tuning time (summed over runs) reaches ``timeout_s``, or the suite's totals are
    reached; and no trial of it is still running. Only one book asks and tells (the driver's;
    the broker's only adds epochs), so it counts trials itself rather than re-reading the
    storage at every decision.
    """

    def __init__(
        self,
        results_dir: str,
        url: str | None,
        specs: list[StudySpec],
        total_trials: int | None = None,
        total_timeout_s: float | None = None,
    ) -> None:
        self.storage = open_storage(results_dir, url)
        self.total_trials = total_trials
        self.total_timeout_s = total_timeout_s
        self.started = time.monotonic()
        self.studies: dict[str, _Open] = {}
        for spec in specs:
            study = optuna.create_study(
                study_name=spec.name,
                storage=self.storage,
                direction="maximize",
                sampler=make_sampler(spec.tuning, spec.budget),
                pruner=make_pruner(spec.tuning, spec.epochs, spec.budget),
                load_if_exists=True,
            )
            trials = study.get_trials(deepcopy=False)
            if not trials and spec.start:
                # The reference setting is always measured first: with a small, noisy
                # validation split, tuning may only replace it by something that beats it.
                study.enqueue_trial(spec.start, skip_if_exists=True)
            # Trials a killed driver left RUNNING are run again under their own numbers.
            interrupted = [
                (t.number, dict(t.params)) for t in trials if t.state == TrialState.RUNNING
            ]
            self.studies[spec.name] = _Open(
                spec=spec,
                study=study,
                study_id=self.storage.get_study_id_from_name(spec.name),
                elapsed_before=float(study.user_attrs.get(ELAPSED, 0.0)),
                finished=sum(t.state in FINISHED_STATES for t in trials),
                running={n for n, _ in interrupted},
                interrupted=interrupted,
            )
        self._started_total = sum(o.finished + len(o.running) for o in self.studies.values())

    # ---------------------------------------------------------------- reading

    def interrupted(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        """Trials left RUNNING by a driver that died, (number, params), once: to run again."""
        o = self.studies[name]
        out, o.interrupted = o.interrupted, []
        return out

    def counts(self, name: str) -> tuple[int, int]:
        o = self.studies[name]
        return o.finished, len(o.running)

    def _elapsed(self, o: _Open) -> float:
        return o.elapsed_before + (time.monotonic() - o.started if o.started else 0.0)

    def can_ask(self, name: str) -> bool:
        o = self.studies[name]
        if o.finished + len(o.running) >= o.spec.budget:
            return False
        if o.spec.timeout_s is not None and self._elapsed(o) >= o.spec.timeout_s:
            return False
        if self.total_trials is not None and self._started_total >= self.total_trials:
            return False
        return not (
            self.total_timeout_s is not None
            and time.monotonic() - self.started >= self.total_timeout_s
        )

    def done(self, name: str) -> bool:
        return not self.can_ask(name) and not self.studies[name].running

    def done_of(self, names: list[str]) -> list[str]:
        """Those of ``names`` that are done (one call for the driver, not one per study)."""
        return [n for n in names if self.done(n)]

    def complete(self, name: str) -> list[tuple[int, dict[str, Any], float]]:
        """The study's complete trials: (number, params, validation accuracy)."""
        trials = self.studies[name].study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [(t.number, dict(t.params), float(t.value)) for t in trials]

    def best(
        self, name: str, confirmed: Confirmed | None = None
    ) -> tuple[dict[str, Any], float] | None:
        """The selected hyperparameters and their validation accuracy (see ``select``);
        with ``confirmed``, chosen among those trials by their mean over the tuning seeds."""
        o = self.studies[name]
        trials, seeds = _candidates(self.complete(name), confirmed)
        chosen = select(trials, o.spec.start, o.spec.n_val, seeds)
        if chosen is None:
            return None
        number, params, value, rule = chosen
        o.study.set_user_attr("kdbench_selected", {"number": number, "rule": rule})
        return params, value

    # ---------------------------------------------------------------- writing

    def ask(self, name: str) -> tuple[int, dict[str, Any]]:
        o = self.studies[name]
        if o.started is None:
            o.started = time.monotonic()
        trial = o.study.ask(fixed_distributions=o.spec.space)
        o.running.add(trial.number)
        self._started_total += 1
        return trial.number, dict(trial.params)

    def ask_next(self, names: list[str]) -> tuple[str, int, dict[str, Any]] | None:
        """A new trial of the first of ``names`` that may ask one, or None."""
        for name in names:
            if self.can_ask(name):
                return (name, *self.ask(name))
        return None

    def _record(self, o: _Open, number: int, epoch: int, value: float) -> int:
        """Store a trial's validation accuracy after an epoch; returns the trial's id."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(o.study_id, number)
        self.storage.set_trial_intermediate_value(trial_id, epoch, value)
        return trial_id

    def report(self, name: str, number: int, epoch: int, value: float) -> bool:
        """Record a trial's validation accuracy after an epoch; True: prune it now."""
        o = self.studies[name]
        trial_id = self._record(o, number, epoch, value)
        return o.study.pruner.prune(o.study, self.storage.get_trial(trial_id))

    def tell(
        self, name: str, number: int, status: str, value: float | None, epoch: int | None = None
    ) -> None:
        """A trial's end. ``epoch``: the epoch ``value`` was measured after, when the trial did
        not report it itself (its last: no answer to wait for, the trial ends there anyway)."""
        o = self.studies[name]
        if status == "ok" and value is not None:
            if epoch:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    self._record(o, number, epoch, value)
            o.study.tell(number, value, skip_if_finished=True)
        elif status == "pruned":
            o.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            o.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        if number in o.running:
            o.running.discard(number)
            o.finished += 1
        if o.spec.timeout_s is not None:  # a resumed run's tuning time counts what ran before
            o.study.set_user_attr(ELAPSED, self._elapsed(o))


class StudyPeek:
    """The studies of a plan as they stand, read without creating or writing anything (for
    ``--dry-run``): the read side of ``StudyBook``, and a ``tell`` that only counts."""

    def __init__(
        self, results_dir: str | os.PathLike[str], url: str | None, specs: list[StudySpec]
    ):
        self.specs = {s.name: s for s in specs}
        self.trials: dict[str, list[Any]] = {name: [] for name in self.specs}
        storage = _existing_storage(results_dir, url)
        if storage is not None:
            known = set(optuna.get_all_study_names(storage))
            for name in self.specs:
                if name in known:
                    study = optuna.load_study(study_name=name, storage=storage)
                    self.trials[name] = study.get_trials(deepcopy=False)
        self.finished = {
            n: sum(t.state in FINISHED_STATES for t in ts) for n, ts in self.trials.items()
        }
        self.running = {
            n: {t.number for t in ts if t.state == TrialState.RUNNING}
            for n, ts in self.trials.items()
        }

    def interrupted(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        return [
            (t.number, dict(t.params)) for t in self.trials[name] if t.state == TrialState.RUNNING
        ]

    def counts(self, name: str) -> tuple[int, int]:
        return self.finished[name], len(self.running[name])

    def done(self, name: str) -> bool:
        return self.finished[name] >= self.specs[name].budget and not self.running[name]

    def done_of(self, names: list[str]) -> list[str]:
        return [n for n in names if self.done(n)]

    def complete(self, name: str) -> list[tuple[int, dict[str, Any], float]]:
        return [
            (t.number, dict(t.params), float(t.value))
            for t in self.trials[name]
            if t.state == TrialState.COMPLETE
        ]

    def best(
        self, name: str, confirmed: Confirmed | None = None
    ) -> tuple[dict[str, Any], float] | None:
        spec = self.specs[name]
        trials, seeds = _candidates(self.complete(name), confirmed)
        chosen = select(trials, spec.start, spec.n_val, seeds)
        return None if chosen is None else (chosen[1], chosen[2])

    def ask_next(self, names: list[str]) -> None:
        return None

    def tell(
        self, name: str, number: int, status: str, value: float | None, epoch: int | None = None
    ) -> None:
        if number in self.running[name]:
            self.running[name].discard(number)
            self.finished[name] += 1


def _existing_storage(results_dir: str | os.PathLike[str], url: str | None) -> BaseStorage | None:
    if url:
        return open_storage(results_dir, url)
    path = journal_path(results_dir)
    return JournalStorage(JournalFileBackend(str(path))) if path.exists() else None
