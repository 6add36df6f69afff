"""Run by test_tuning_ray in a subprocess: tuning on a two-node Ray cluster on this machine.

The head node has no CPUs, so every trial runs on the worker node, while the study actor
lives on the head (the driver's node). Prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_AUTH_MODE"] = (
    "token"  # a `ray start` cluster turns token authentication on only when asked
)
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))

import ray
from ray.cluster_utils import Cluster

from kdbench.data import load_dataset
from kdbench.plan import expand, resolve_hparams, tune_spec
from kdbench.results import load
from kdbench.scheduler.driver import run_suite
from kdbench.scheduler.tasks import StudentTrial, student_task, teacher_task
from kdbench.spec import TuningConfig
from kdbench.training.trial import RunInfo
from kdbench.tuning.broker import Reporter, start_broker
from kdbench.tuning.studies import StudySpec
from kdbench.validation import load_suite


def main(suite_path: str, results: str) -> None:
    store = 100 * 2**20
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": store, "include_dashboard": False},
    )
    worker = cluster.add_node(num_cpus=2, object_store_memory=store)
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        head = ray.get_runtime_context().get_node_id()
        suite = load_suite(suite_path)
        run_suite(suite, results, address=cluster.address, live=False)
        df = load(results)

        plan = expand(suite)
        study = plan.studies[0]
        spec = StudySpec(
            "pruning-probe",
            study.space,
            budget=8,
            epochs=suite.budget.epochs,
            timeout_s=None,
            tuning=TuningConfig(trials=8),
        )
        broker = start_broker(str(Path(results) / "probe"), None, [spec])
        for _ in range(2):
            number, _ = ray.get(broker.ask.remote("pruning-probe"))
            for epoch in range(1, suite.budget.epochs + 1):
                ray.get(broker.report.remote("pruning-probe", number, epoch, 1.0))
            ray.get(broker.tell.remote("pruning-probe", number, "ok", 1.0))
        number, params = ray.get(broker.ask.remote("pruning-probe"))
        data = ray.put(load_dataset(suite.datasets[0]))
        info = RunInfo("probe", suite.name)
        _, weights = teacher_task.remote(plan.teachers[0], data, info, None)
        tspec = tune_spec(
            suite, study.cell, study.teacher, number, resolve_hparams(study.cell.method, params)
        )
        (outcome,) = ray.get(
            student_task.remote(
                [StudentTrial(tspec, 0, Reporter(broker, "pruning-probe", number))],
                data,
                info,
                weights,
            )
        )
        pruned = outcome.row
        print(
            json.dumps(
                {
                    "head": head,
                    "worker": worker.node_id,
                    "row_nodes": sorted(set(df["node_id"].dropna())),
                    "phases": df["phase"].value_counts().to_dict(),
                    "pruned_status": pruned["status"],
                    "pruned_node": pruned["node_id"],
                    "pruned_epoch": pruned["epoch_reported"],
                    "epochs": pruned["epochs"],
                }
            )
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
