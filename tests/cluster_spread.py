"""Run by test_cluster in a subprocess: a head and two worker nodes on this machine, one of
them with a logical GPU (``num_gpus=1`` where there is none). Trials are the sleep plugin's
(benchmarks/sleep_plugin.py), registered in every worker like a user's plugin. Prints one
JSON line with what it saw."""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
SLEEP_S = 2.0
os.environ["KDBENCH_SLEEP_S"] = str(SLEEP_S)

import ray  # noqa: E402
import sleep_plugin  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from kdbench.results import load  # noqa: E402
from kdbench.scheduler.driver import run_suite  # noqa: E402
from kdbench.suite import parse_suite  # noqa: E402


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


def main() -> None:
    sleep_plugin.register()
    store = 80 * 2**20
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": store, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, object_store_memory=store)
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1, object_store_memory=store)
    ray.init(
        address=cluster.address,
        logging_level="WARNING",
        runtime_env={
            "py_modules": [str(REPO / "benchmarks" / "sleep_plugin.py")],
            "worker_process_setup_hook": "sleep_plugin.register",
            "env_vars": {"KDBENCH_SLEEP_S": str(SLEEP_S)},
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
                    {"cpus_per_trial": 0.25, "gpus_per_trial": 0.25, "teacher": {"cpus": 1}},
                ),
                Path(tmp) / "b",
                live=False,
            )
            b = load(Path(tmp) / "b")
        sleepers = b[b["method"] == "sleep"]
        print(
            json.dumps(
                {
                    "nodes": len(ray.nodes()),
                    "spread_failed": spread.failed,
                    "spread_nodes": int(a["node_id"].nunique()),
                    "packed_failed": packed.failed,
                    "gpu_node": gpu_node.node_id,
                    "sleep_nodes": sorted(set(sleepers["node_id"])),
                    "sleep_gpus": sorted(set(sleepers["gpus"])),
                    "sleepers": len(sleepers),
                    "packed_seconds": packed.seconds,
                    # ISO 8601 seconds: four 2 s trials that ran at once share a moment
                    "latest_start": max(sleepers["started_at"]),
                    "earliest_finish": min(sleepers["finished_at"]),
                    "sleep_s": SLEEP_S,
                }
            )
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
