"""DD-Ranking's scores of dataset-distillation rows (Li et al. 2025, "DD-Ranking: Rethinking the
Evaluation of Dataset Distillation"): what a distilled set adds beyond its evaluation.

A set's accuracy mixes two things: what the set carries, and how the student is trained on it
(soft labels from a teacher, strong augmentation). DD-Ranking separates them with two terms,
both in accuracy points of the same student network on the same test split:

- ``ior``, improvement over random: the set's accuracy minus that of a random real subset of
  the same ipc evaluated the same way (the same labels, hard or the teacher's soft ones at
  the same temperature and weights, the same augmentation, the same epochs). Every suite with
  a dd entry gets that ``dd_random`` entry automatically, as it gets ``scratch``
  (``SyntheticSetMethod.baselines``, added by ``plan.implied_entries``). Higher is better; 0 for the random set.
- ``hlr``, hard-label recovery: the accuracy of the student trained on the whole training
  split with hard labels (the pair's ``scratch``) minus the set's accuracy with hard labels
  (for a soft-labelled entry, its ``<label>_hard`` twin, evaluated on the same sets). Lower is
  better: how much of the whole data's accuracy the set alone, without a teacher's labels,
  fails to recover.
- ``dd_score``: DD-Ranking's label-robust score (LRS; "DD-Ranking score" in its first
  release) of the two: α = w·IOR − (1 − w)·HLR with w = ``DD_WEIGHT`` = 0.5, mapped to
  [0, 1] by (e^α − e^−1) / (e − e^−1), α taken on accuracies as fractions (DD-Ranking's code
  feeds percentages to the same formula, which only stays in [0, 1] on fractions). A set whose
  IOR equals its HLR (α = 0) scores 0.269; 1 is IOR = 1 with HLR = −1.

Where kdbench differs from DD-Ranking's code on purpose: every accuracy is the last epoch's
(DD-Ranking takes the best test accuracy over checkpoints, a choice made on the test split),
the random subset is drawn from the trial's seed (not the clock), and its learning rate is the
suite's, as the set's is (DD-Ranking grid-searches the random subset's alone).

Torch-free: the leaderboard reads rows only.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from kdbench.results.ddsets import evaluation, set_method

DD_WEIGHT = 0.5
"""The weight of IOR against HLR in ``dd_score``."""


def _settings(hparams: object) -> str | None:
    try:
        hp = json.loads(hparams) if isinstance(hparams, str) else None
        return json.dumps(evaluation(hp), sort_keys=True) if isinstance(hp, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def describe(final: pd.DataFrame) -> pd.DataFrame:
    """Per cell (pair and method) of ``final`` rows: ``_dd`` (the set's method or None),
    ``_eval`` (its evaluation settings as JSON), ``_sets`` (its sets, one per seed) and
    ``_hard`` (whether its labels are hard)."""
    out = []
    for keys, group in final.groupby(["dataset", "teacher", "student", "method"], sort=False):
        first = group.iloc[0]
        dd = set_method(first.get("artifact"))
        ev = _settings(first.get("hparams")) if dd else None
        out.append(
            dict(
                zip(["dataset", "teacher", "student", "method"], keys, strict=True),
                _dd=dd,
                _eval=ev,
                _sets=frozenset(group["artifact"].dropna()) if dd else frozenset(),
                _hard=bool(ev) and json.loads(ev)["labels"] == "hard",
            )
        )
    return pd.DataFrame(out)


def scores(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (the leaderboard's per-pair rows, with ``mean``, ``scratch`` and the columns
    of ``describe``) with ``ior``, ``hlr`` and ``dd_score`` (NaN outside dataset
    distillation, or where the random baseline, the hard-label twin or scratch is missing)."""
    ior, hlr = [], []
    for _, r in table.iterrows():
        if not r["_dd"]:
            ior.append(np.nan)
            hlr.append(np.nan)
            continue
        same_pair = table[
            (table["dataset"] == r["dataset"])
            & (table["teacher"] == r["teacher"])
            & (table["student"] == r["student"])
        ]
        rnd = same_pair[(same_pair["_dd"] == "dd_random") & (same_pair["_eval"] == r["_eval"])]
        ior.append(r["mean"] - rnd["mean"].iloc[0] if len(rnd) else np.nan)
        if r["_hard"]:
            hard = r["mean"]
        else:  # the same sets, evaluated on their own labels
            twin = same_pair[same_pair["_hard"] & (same_pair["_sets"] == r["_sets"])]
            hard = twin["mean"].iloc[0] if len(twin) else np.nan
        hlr.append(r["scratch"] - hard)
    table = table.assign(ior=ior, hlr=hlr)
    table["dd_score"] = lrs(table["ior"].to_numpy(float), table["hlr"].to_numpy(float))
    return table


def lrs(ior: np.ndarray, hlr: np.ndarray, weight: float = DD_WEIGHT) -> np.ndarray:
    """DD-Ranking's label-robust score of IOR and HLR (fractions): exp-mapped to [0, 1]."""
    alpha = weight * ior - (1 - weight) * hlr
    return (np.exp(alpha) - np.exp(-1.0)) / (np.e - np.exp(-1.0))
