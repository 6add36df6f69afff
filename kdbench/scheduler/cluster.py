"""Connecting to Ray: a private local cluster by default, or an existing one at an address."""

from __future__ import annotations

import logging
import os
import socket

from kdbench.errors import KdbenchError, first_line
from kdbench.signals import end_on_sigterm
from kdbench.spec import ResourceConfig

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""With this set, every local Ray node, the dashboard and the Jobs API bind to 127.0.0.1."""
OOM_RETRIES = "1"
"""Times a trial killed by Ray's memory monitor runs again before it becomes a `failed` row.
The driver owns the tasks, so its setting counts, on a cluster started elsewhere too; Ray's
own default retries such a trial many times, each one filling the node again."""


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
) -> bool:
    """Connect to Ray; returns whether this call started it (and so should shut it down).

    No address: a new, private local Ray (``address="local"``: never one found through
    RAY_ADDRESS or a ``ray start`` on this machine) bound to 127.0.0.1 only, with Ray's token
    authentication on (the 2.60 default for local clusters, left on), no dashboard. An
    already initialised Ray (a test session, a notebook) is reused as it is.
    """
    import ray

    if ray.is_initialized():
        return False
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_task_oom_retries", OOM_RETRIES)
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise KdbenchError(
                f"--address {address}: cannot connect to a Ray cluster there "
                f"({str(exc).splitlines()[0]})"
            ) from None
    else:
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus or os.cpu_count(),
                object_store_memory=object_store_memory,
                include_dashboard=False,
                **kwargs,
            )
        except (ConnectionError, TimeoutError, RuntimeError, OSError) as exc:
            raise KdbenchError(
                f"could not start a local Ray ({type(exc).__name__}: {first_line(exc)}); check the "
                "free memory and the space in /tmp (Ray's session files), or give --address "
                "of a running cluster"
            ) from None
    end_on_sigterm()  # ray.init put its own handler in place
    return True


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Refuse at once an address where nothing listens (Ray itself retries for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise KdbenchError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise KdbenchError(
            f"--address {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); "
            "start a cluster there (ray start --head) or leave --address out for a local run"
        ) from None


def cluster_slots(resources: ResourceConfig) -> float:
    """How many student trials the cluster runs at once: the scarcest resource they hold
    decides (CPUs, GPUs, a custom resource). With none of it (a GPU node not up yet), 1."""
    import ray

    have = ray.cluster_resources()
    trial = resources.trial
    wants = {"CPU": trial.cpus, "GPU": trial.gpus}
    wants.update(trial.custom)
    fits = [have.get(name, 0.0) / amount for name, amount in wants.items() if amount > 0]
    return max(min(fits, default=1.0), 1.0)


def check_feasible(resources: ResourceConfig) -> None:
    """Refuse at once what no node of the cluster could run: Ray would queue it for ever."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    asks = {"resources": resources.trial, "resources.teacher": resources.teacher}
    for key, ask in asks.items():
        want = {"CPU": ask.cpus, "GPU": ask.gpus, **dict(ask.custom)}
        if ask.accelerator_type:
            want[f"accelerator_type:{ask.accelerator_type}"] = 0.001
        want = {k: v for k, v in want.items() if v > 0}
        if any(all(node.get(k, 0.0) >= v for k, v in want.items()) for node in nodes):
            continue
        offered = sorted({k for node in nodes for k in node if not k.startswith("node:")})
        asked = ", ".join(f"{k}={v:g}" for k, v in want.items())
        raise KdbenchError(
            f"{key}: no node of the cluster has {asked} for one trial; "
            f"its nodes offer {', '.join(offered)}"
        )
