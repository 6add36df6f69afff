"""Connecting to Ray: a private local cluster by default, or an existing one at an address."""

from __future__ import annotations

import logging
import os

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""With this set, every local Ray node, the dashboard and the Jobs API bind to 127.0.0.1."""


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
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            object_store_memory=object_store_memory,
            include_dashboard=False,
            **kwargs,
        )
    return True


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))
