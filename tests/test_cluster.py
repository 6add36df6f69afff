"""Multi-node behaviour on real Ray nodes started on this machine (tests/cluster_nodes.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_three_nodes_spread_pack_quarter_gpus_and_survive_a_node_removed_mid_run():
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cluster_nodes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["nodes"] == 3
    # a head and two workers, one CPU slot each at least: the rows name all three nodes
    assert seen["spread_failed"] == 0 and seen["spread_nodes"] == 3
    # 0.25 GPU each: all four on the one node with a (logical) GPU, at the same time
    assert seen["packed_failed"] == 0 and seen["sleepers"] == 4
    assert seen["sleep_nodes"] == [seen["gpu_node"]] and seen["sleep_gpus"] == [0.25]
    assert seen["latest_start"] < seen["earliest_finish"], seen
    # the CPU-only worker removed while a trial slept on it: Ray ran that trial again on a
    # node still alive; every trial finished and each wrote exactly one row
    assert len(seen["killed"]) == 1 and seen["alive_after"] == 2, seen
    assert seen["faulted_failed"] == 0 and seen["faulted_statuses"] == ["ok"], seen
    # the teacher, then scratch and sleep for each of 6 seeds
    assert seen["faulted_rows"] == seen["faulted_trials"] == 13, seen
    assert seen["killed_nodes"] and seen["victim"] not in seen["killed_nodes"], seen
