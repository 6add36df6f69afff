"""The study book as a Ray actor, so that a trial on any node can report and be pruned.

The actor runs on the driver's node (it writes the journal in the results directory). Trials
call ``report`` after every epoch; the driver asks and tells its own book on the same storage,
so the actor is needed only by trials that report (it is started with the first of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from kdbench.tuning.studies import StudyBook


def start_broker(*args: Any, **kwargs: Any) -> Any:
    """A StudyBook actor pinned to this (the driver's) node; it holds no CPU."""
    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(StudyBook).options(
        num_cpus=0,
        max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    )
    return actor.remote(*args, **kwargs)


@dataclass(frozen=True)
class Reporter:
    """Given to a tuning trial: reports each epoch to its study, answers whether to prune."""

    broker: Any
    study: str
    number: int

    def __call__(self, epoch: int, val_acc: float) -> bool:
        return ray.get(self.broker.report.remote(self.study, self.number, epoch, val_acc))
