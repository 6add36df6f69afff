"""Run by test_jobs in a subprocess: a Ray cluster with its dashboard (the Jobs API) on this
machine, token authentication on. Prints the dashboard's URL, then lives until its stdin
closes, and takes its nodes down with it (never `ray stop`, which would end every Ray on
the machine, the test session's included)."""

from __future__ import annotations

import os
import socket
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_AUTH_MODE"] = "token"  # the caller gives RAY_AUTH_TOKEN

from ray.cluster_utils import Cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "object_store_memory": 100 * 2**20,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": port,
            # Its own port for the node's agent, which serves the Jobs API: the default
            # (52365) is taken by any other Ray on the machine (the test session's).
            "dashboard_agent_listen_port": free_port(),
        },
    )
    try:
        print(f"http://127.0.0.1:{port}", flush=True)
        sys.stdin.read()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
