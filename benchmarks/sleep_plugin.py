"""A data set, a model and a method whose trial's work is a fixed sleep (scheduler_overhead.py).

Imported in the driver and, through Ray's ``worker_process_setup_hook``, in every worker, so
that trial specs naming them resolve everywhere, as a user's entry-point plugin would.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import ray
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.data import DATASETS, DataBundle
from kdbench.data.registry import DatasetInfo
from kdbench.methods import METHODS, HParam, Method, Needs, SearchSpace, Step
from kdbench.models import MODELS, KDModel, ModelOutput

WORK_S = float(os.environ.get("KDBENCH_SLEEP_S", "0.2"))
MARKS = os.environ.get("KDBENCH_SLEEP_MARKS")
"""A folder where each trial step leaves ``<node id>__<task name>__<pid>`` as it starts to
sleep: the cluster tests watch it to remove a node while a trial runs there, and count the
attempts of a trial."""
HOG_MB = int(os.environ.get("KDBENCH_SLEEP_HOG_MB", "0"))
"""Memory each trial step fills before it sleeps (the out-of-memory test)."""


class Flat(KDModel):
    def __init__(self, *, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.fc = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        emb = x.flatten(1)
        return ModelOutput(logits=self.fc(emb), feats=[x], embedding=emb)


def sleep_net(*, num_classes: int, input_shape: tuple[int, ...]) -> Flat:
    """A linear layer: nothing to compute."""
    return Flat(num_classes=num_classes, input_shape=input_shape)


def sleep_data(*, root=None, val_fraction: float = 0.1) -> DataBundle:
    """Two images per split."""
    x = torch.rand(2, 1, 2, 2)
    y = torch.tensor([0, 1])
    return DataBundle("sleep_data", x, y, x, y, x, y, num_classes=2)


sleep_data.info = DatasetInfo(2, (1, 2, 2), 2, 2, 2)  # type: ignore[attr-defined]


class Sleep(Method):
    """Cross-entropy, after sleeping WORK_S seconds in its one training step."""

    name = "sleep"
    hparams = (HParam("x", 0.5, low=0.0, high=1.0, search=SearchSpace(0.0, 1.0)),)
    needs = Needs(teacher=False)
    combinable = False

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        if MARKS:
            ctx = ray.get_runtime_context()
            (Path(MARKS) / f"{ctx.get_node_id()}__{ctx.get_task_name()}__{os.getpid()}").touch()
        hog = torch.ones(HOG_MB * 2**18) if HOG_MB else None  # float32: 2**18 a MiB
        time.sleep(WORK_S)
        del hog
        return {"ce": F.cross_entropy(step.student.logits, step.y)}


def register() -> None:
    if "sleep" not in METHODS:
        DATASETS.add("sleep_data", sleep_data)
        MODELS.add("sleep_net", sleep_net)
        METHODS.add("sleep", Sleep)


def sleep_suite(name: str, cells: int, trials: int, seeds: int) -> Any:
    """``cells`` tuned cells of the sleep method on one pair: ``trials`` tuning trials and
    ``seeds`` finals each, plus the teacher and scratch."""
    from kdbench.validation import parse_suite

    return parse_suite(
        {
            "name": name,
            "datasets": ["sleep_data"],
            "pairs": [{"teacher": "sleep_net", "student": "sleep_net"}],
            "methods": [
                {"name": "sleep", "label": f"sleep{i}", "params": {}} for i in range(cells)
            ],
            "seeds": list(range(seeds)),
            "budget": {"epochs": 1, "batch_size": 2},
            "teacher": {"epochs": 1},
            "tuning": {"trials": trials, "pruner": "none"},
            "resources": {"cpus_per_trial": 1},
        }
    )


def start_ray(cpus: int, work: float, *, warm: bool = False) -> None:
    """A private local Ray whose workers register this plugin and sleep ``work`` s a trial.
    ``warm``: return once a worker per CPU has started (Python, torch and this plugin imported,
    and torch's first optimiser made) and run a task, as on a cluster that is already up; else
    at once, while they still start."""
    register()
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={
            "py_modules": [__file__],
            "worker_process_setup_hook": "sleep_plugin.register",
            "env_vars": {"KDBENCH_SLEEP_S": str(work)},
        },
    )
    if warm:
        pids: set[int] = set()
        while len(pids) < cpus:  # one worker took them all before another had started: again
            pids |= set(ray.get([_worker_pid.remote() for _ in range(cpus)]))


@ray.remote(num_cpus=1)
def _worker_pid() -> int:
    # A process's first torch optimiser imports torch._dynamo, which takes seconds: a cost of
    # each new worker process, like importing torch, not of the scheduler.
    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    time.sleep(0.1)  # long enough that the next task goes to another worker
    return os.getpid()
