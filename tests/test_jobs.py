"""`kdbench submit` and `kdbench jobs` against a real Ray cluster with its Jobs API."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from kdbench.errors import KdbenchError
from kdbench.scheduler.jobs import entrypoint, results_dir
from tests.conftest import REPO


def test_results_must_be_a_path_the_cluster_can_keep():
    assert results_dir(None, "quickstart") == "~/kdbench-results/quickstart"
    assert results_dir("/shared/r", "x") == "/shared/r"
    with pytest.raises(KdbenchError, match="absolute path on the cluster"):
        results_dir("results/x", "x")
    assert results_dir("s3://bucket/r", "x") == "s3://bucket/r"  # read on the head, then anywhere
    with pytest.raises(KdbenchError, match="nosuch://b/r: cannot open this results location"):
        results_dir("nosuch://b/r", "x")


def test_the_entrypoint_quotes_paths_but_lets_the_heads_shell_expand_home():
    cmd = entrypoint("my suite.yaml", "~/kdbench results/q")
    assert cmd == (
        "python -m kdbench run 'my suite.yaml' --address auto --results ~'/kdbench results/q'"
    )
    assert entrypoint("s.yaml", "/r", retry_failed=True).endswith("--results /r --retry-failed")


@pytest.fixture(scope="module")
def cluster():
    """A head node with its dashboard, token authentication on, in its own process."""
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "jobs_cluster.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    yield url, env
    proc.stdin.close()
    proc.wait(timeout=60)


def kdbench(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "kdbench", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


@pytest.mark.slow
def test_a_submitted_suite_runs_on_the_cluster_and_its_rows_read_with_pandas(cluster, tmp_path):
    url, env = cluster
    suite_dir = tmp_path / "suites"
    suite_dir.mkdir()
    suite = suite_dir / "tiny.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "datasets": ["synthetic"],
                "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
                "methods": ["kd"],
                "seeds": [0],
                "budget": {"epochs": 2, "batch_size": 32},
                "teacher": {"epochs": 2},
                "tuning": {"trials": 0},
            }
        )
    )
    results = tmp_path / "results"
    sub = kdbench("submit", str(suite), "--address", url, "--results", str(results), env=env)
    assert sub.returncode == 0, sub.stderr[-2000:]
    job_id = sub.stdout.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_") and " " not in job_id  # alone on the last line

    waited = kdbench("jobs", "status", job_id, "--address", url, "--wait", env=env)
    assert waited.returncode == 0 and waited.stdout.strip().splitlines()[-1] == "SUCCEEDED", (
        waited.stdout + kdbench("jobs", "logs", job_id, "--address", url, env=env).stdout
    )
    df = pd.read_parquet(results)
    assert sorted(df["method"]) == ["kd", "scratch", "teacher"]
    assert (df["status"] == "ok").all() and df["node_id"].notna().all()

    logs = kdbench("jobs", "logs", job_id, "--address", url, env=env)
    assert "run " in logs.stdout and "| kd |" in logs.stdout
    stop = kdbench("jobs", "stop", job_id, "--address", url, env=env)
    assert stop.returncode == 0 and stop.stdout.strip() == "not running"


@pytest.mark.slow
def test_mistakes_are_refused_in_one_line(cluster, tmp_path):
    url, env = cluster
    bad = kdbench("jobs", "status", "raysubmit_nope", "--address", url, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "raysubmit_nope" in bad.stderr
    rel = kdbench(
        "submit",
        str(REPO / "suites" / "quickstart.yaml"),
        "--address",
        url,
        "--results",
        "r",
        env=env,
    )
    assert rel.returncode == 2 and "absolute path on the cluster" in rel.stderr
    wrong = dict(env, RAY_AUTH_TOKEN=secrets.token_hex(16))
    denied = kdbench("jobs", "status", "raysubmit_nope", "--address", url, env=wrong)
    assert denied.returncode == 2 and denied.stderr.count("\n") == 1
