"""Cluster behaviour on real Ray nodes started on this machine, each scenario in its own process
(tests/cluster_nodes.py, tests/cluster_oom.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_script(module: str) -> dict:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", module],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Ray forwards its nodes' log lines to stdout, sometimes after the script's JSON line
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


@pytest.mark.slow
def test_three_nodes_spread_pack_quarter_gpus_and_survive_a_node_removed_mid_run():
    seen = run_script("tests.cluster_nodes")
    assert seen["nodes"] == 3
    # a head and two workers, one CPU slot each at least: the rows name all three nodes
    assert seen["spread_failed"] == 0 and seen["spread_nodes"] == 3
    # 0.25 of an A100 each: all four on the one node with a (logical) A100, at the same time
    assert seen["packed_failed"] == 0 and seen["sleepers"] == 4
    assert seen["sleep_nodes"] == [seen["gpu_node"]] and seen["sleep_gpus"] == [0.25]
    assert seen["latest_start"] < seen["earliest_finish"], seen
    # the teacher asked for a custom resource only the head offers
    assert seen["packed_teacher_nodes"] == [seen["head"]], seen
    # the CPU-only worker removed while a trial slept on it: Ray ran that trial again on a
    # node still alive; every trial finished and each wrote exactly one row
    assert len(seen["killed"]) == 1 and seen["alive_after"] == 2, seen
    assert seen["faulted_failed"] == 0 and seen["faulted_statuses"] == ["ok"], seen
    # the teacher, then scratch and sleep for each of 6 seeds
    assert seen["faulted_rows"] == seen["faulted_trials"] == 13, seen
    assert seen["killed_nodes"] and seen["victim"] not in seen["killed_nodes"], seen


@pytest.mark.slow
def test_a_trial_killed_for_memory_is_one_failed_row_after_one_retry():
    seen = run_script("tests.cluster_oom")
    # Ray's memory monitor killed it; kdbench lets Ray run it once more, not fifteen times
    assert seen["attempts"] == 2, seen
    assert seen["rows"] == 1 and seen["status"] == ["failed"] and seen["failed"] == 1, seen
    assert seen["error"][0].startswith("OutOfMemoryError:"), seen
    assert seen["other_ok"] == ["ok", "ok"], seen  # the teacher and scratch ran as usual
