"""Run by test_cluster in a subprocess: a trial that fills more memory than Ray's memory
monitor allows on its node. The node's kill threshold is set a few GiB above what the
machine uses now, and the trial fills twice that margin. The sleep plugin reaches the driver
and the workers as a user's plugin does: an installed distribution's entry points (here a
folder on PYTHONPATH holding the module and its ``.dist-info``). Prints one JSON line."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
os.environ.pop("RAY_task_oom_retries", None)  # kdbench's own setting is what is tested
REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(tempfile.mkdtemp(prefix="kdbench-plugin-"))
shutil.copy(REPO / "benchmarks" / "sleep_plugin.py", PLUGIN)
(PLUGIN / "kdbench_sleep-0.dist-info").mkdir()
(PLUGIN / "kdbench_sleep-0.dist-info" / "METADATA").write_text(
    "Metadata-Version: 2.1\nName: kdbench-sleep\nVersion: 0\n"
)
(PLUGIN / "kdbench_sleep-0.dist-info" / "entry_points.txt").write_text(
    "[kdbench.datasets]\nsleep_data = sleep_plugin:sleep_data\n"
    "[kdbench.models]\nsleep_net = sleep_plugin:sleep_net\n"
    "[kdbench.methods]\nsleep = sleep_plugin:Sleep\n"
)
sys.path.insert(0, str(PLUGIN))
os.environ["PYTHONPATH"] = os.pathsep.join([str(PLUGIN), os.environ.get("PYTHONPATH", "")])
MARGIN_MB = 3 * 1024
MARKS = Path(tempfile.mkdtemp(prefix="kdbench-marks-"))
os.environ["KDBENCH_SLEEP_MARKS"] = str(MARKS)
os.environ["KDBENCH_SLEEP_S"] = "3"
os.environ["KDBENCH_SLEEP_HOG_MB"] = str(2 * MARGIN_MB)

from ray.cluster_utils import Cluster  # noqa: E402

from kdbench.results import load  # noqa: E402
from kdbench.scheduler.driver import run_suite  # noqa: E402
from kdbench.validation import parse_suite  # noqa: E402


def main() -> None:
    info = dict(line.split(":") for line in Path("/proc/meminfo").read_text().splitlines())
    total, available = (int(info[k].split()[0]) * 1024 for k in ("MemTotal", "MemAvailable"))
    threshold = (total - available + MARGIN_MB * 2**20) / total
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": 80 * 2**20,
            "include_dashboard": False,
            "_system_config": {
                "memory_usage_threshold": threshold,
                "min_memory_free_bytes": -1,
                "memory_monitor_refresh_ms": 100,
            },
        },
    )
    suite = parse_suite(
        {
            "name": "oom",
            "datasets": ["sleep_data"],
            "pairs": [{"teacher": "sleep_net", "student": "sleep_net"}],
            "methods": ["sleep"],
            "seeds": [0],
            "budget": {"epochs": 1, "batch_size": 2},
            "teacher": {"epochs": 1},
            "tuning": {"trials": 0},
        }
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_suite(suite, Path(tmp) / "r", address=cluster.address, live=False)
            rows = load(Path(tmp) / "r")
        hog = rows[rows["method"] == "sleep"]
        attempts = [m.name for m in MARKS.iterdir()]
        print(
            json.dumps(
                {
                    "threshold": threshold,
                    "failed": summary.failed,
                    "rows": len(hog),
                    "status": hog["status"].tolist(),
                    "error": hog["error"].tolist(),
                    "attempts": len(attempts),
                    "other_ok": rows[rows["method"] != "sleep"]["status"].tolist(),
                }
            )
        )
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
