from __future__ import annotations

import os
from pathlib import Path

import pytest

# Every Ray node, the dashboard and the Jobs API on 127.0.0.1 only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole test session (token authentication on, small store)."""
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        logging_level="WARNING",
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits():
    from kdbench.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def synthetic():
    from kdbench.data import load_dataset

    return load_dataset("synthetic")


def write_suite(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SMALL_SUITE = {
    "name": "t",
    "datasets": ["synthetic"],
    "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
    "methods": ["kd"],
    "seeds": [0],
    "budget": {"epochs": 2},
    "teacher": {"epochs": 2},
    "tuning": {"trials": 0},
}
"""The tests' suite: trained in seconds (the synthetic set, cnn_small → cnn_tiny, kd, seed 0,
two epochs, nothing tuned)."""


def small_suite(**over):
    """``SMALL_SUITE`` with ``over`` replacing whole top-level keys, read and validated."""
    from kdbench.validation import parse_suite

    return parse_suite({**SMALL_SUITE, **over})


def small_plan(**over):
    """The plan of ``small_suite(**over)``."""
    from kdbench.plan import expand

    return expand(small_suite(**over))
