"""Run by test_cluster in a subprocess: a head and two worker nodes on this machine, one of
them with a logical GPU (``num_gpus=1`` where there is none). Trials are the sleep plugin's
(benchmarks/sleep_plugin.py), registered in every worker like a user's plugin. Three runs:
trials spread over the nodes; quarter-GPU trials of one GPU type packed on the GPU node while
their teacher asks for a custom resource only the head has; a run during which
the CPU-only worker node is removed while a trial sleeps on it. Prints one JSON line with what
it saw."""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
SLEEP_S = 4.0  # long enough that four trials overlap even while new workers import torch
os.environ["KDBENCH_SLEEP_S"] = str(SLEEP_S)
MARKS = Path(tempfile.mkdtemp(prefix="kdbench-marks-"))

import ray  # noqa: E402
import sleep_plugin  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from kdbench.results import load, read_table  # noqa: E402
from kdbench.scheduler.driver import run_suite  # noqa: E402
from kdbench.validation import parse_suite  # noqa: E402


def suite(name: str, seeds: int, resources: dict) -> object:
    return parse_suite(
        {
            "name": name,
            "datasets": ["sleep_data"],
            "pairs": [{"teacher": "sleep_net", "student": "sleep_net"}],
            "methods": ["sleep"],
            "seeds": list(range(seeds)),
            "budget": {"epochs": 1, "batch_size": 2},
            "teacher": {"epochs": 1},
            "tuning": {"trials": 0},
            "resources": resources,
        }
    )


def remove_when_busy(cluster: Cluster, victim: object, killed: list[str]) -> None:
    """Remove (kill) the victim node as soon as a trial sleeps on it; note that trial's id."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        busy = [m.name.split("__")[1] for m in MARKS.glob(f"{victim.node_id}__*")]
        if busy:
            killed.extend(busy)
            cluster.remove_node(victim, allow_graceful=False)
            return
        time.sleep(0.02)


def main() -> None:
    sleep_plugin.register()
    store = 80 * 2**20
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": store,
            "include_dashboard": False,
            "resources": {"big_mem": 1},
        },
    )
    victim = cluster.add_node(num_cpus=1, object_store_memory=store)
    # a logical A100: Ray labels a real one's node with this resource by itself
    gpu_node = cluster.add_node(
        num_cpus=2, num_gpus=1, object_store_memory=store, resources={"accelerator_type:A100": 1}
    )
    ray.init(
        address=cluster.address,
        logging_level="WARNING",
        runtime_env={
            "py_modules": [str(REPO / "benchmarks" / "sleep_plugin.py")],
            "worker_process_setup_hook": "sleep_plugin.register",
            "env_vars": {"KDBENCH_SLEEP_S": str(SLEEP_S), "KDBENCH_SLEEP_MARKS": str(MARKS)},
        },
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spread = run_suite(
                suite("spread", 8, {"cpus_per_trial": 1}), Path(tmp) / "a", live=False
            )
            a = load(Path(tmp) / "a")
            packed = run_suite(
                suite(
                    "packed",
                    4,
                    {
                        "cpus_per_trial": 0.25,
                        "gpus_per_trial": 0.25,
                        "accelerator_type": "A100",
                        "teacher": {"cpus": 1, "custom": {"big_mem": 1}},
                    },
                ),
                Path(tmp) / "b",
                live=False,
            )
            b = load(Path(tmp) / "b")
            nodes_before = len([n for n in ray.nodes() if n["Alive"]])
            for mark in MARKS.iterdir():
                mark.unlink()
            killed: list[str] = []
            remover = threading.Thread(target=remove_when_busy, args=(cluster, victim, killed))
            remover.start()
            faulted = run_suite(
                suite("faulted", 6, {"cpus_per_trial": 1}), Path(tmp) / "c", live=False
            )
            remover.join()
            c = read_table(Path(tmp) / "c").to_pandas()  # every row written, duplicates kept
        # The driver saw the worker die at once and the run may be over already; the control
        # store marks a killed node dead only after its missed health checks (seconds later).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            n["Alive"] for n in ray.nodes() if n["NodeID"] == victim.node_id
        ):
            time.sleep(0.5)
        sleepers = b[b["method"] == "sleep"]
        print(
            json.dumps(
                {
                    "nodes": nodes_before,
                    "spread_failed": spread.failed,
                    "spread_nodes": int(a["node_id"].nunique()),
                    "packed_failed": packed.failed,
                    "gpu_node": gpu_node.node_id,
                    "sleep_nodes": sorted(set(sleepers["node_id"])),
                    "sleep_gpus": sorted(set(sleepers["gpus"])),
                    "head": cluster.head_node.node_id,
                    "packed_teacher_nodes": sorted(set(b[b["phase"] == "teacher"]["node_id"])),
                    "sleepers": len(sleepers),
                    "packed_seconds": packed.seconds,
                    # ISO 8601 seconds: four 4 s trials that ran at once share a moment
                    "latest_start": max(sleepers["started_at"]),
                    "earliest_finish": min(sleepers["finished_at"]),
                    "sleep_s": SLEEP_S,
                    "victim": victim.node_id,
                    "killed": killed,
                    "faulted_failed": faulted.failed,
                    "faulted_rows": len(c),
                    "faulted_trials": int(c["trial_id"].nunique()),
                    "faulted_statuses": sorted(set(c["status"])),
                    "killed_nodes": sorted(set(c[c["trial_id"].isin(killed)]["node_id"])),
                    "alive_after": len([n for n in ray.nodes() if n["Alive"]]),
                }
            )
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
