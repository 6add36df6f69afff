"""Submitting a suite to a Ray cluster through Ray's Jobs API, and following the job.

``submit`` ships two things with the job, in its runtime environment: the suite's directory
as the job's working directory (the suite, and the teacher checkpoints it names beside it),
and the kdbench package itself (``py_modules``), so the cluster runs the code the submitter
has. The job's driver is ``python -m kdbench run SUITE --address auto --results DIR`` on the
head node: the same scheduler as a local run, on the cluster.

The results location is seen from the cluster: the driver alone writes it (workers send
their rows back), so it is a place on the head node that outlives the job (not the job's
temporary working directory), a shared file system, or an object-store URI (s3://, gs://)
that the head node's credentials reach; the submitter then reads it from anywhere.

Token authentication: the client sends the token Ray finds for this process
(``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``, with ``RAY_AUTH_MODE=token``), as Ray's own
``ray job`` CLI does.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdbench._version import __version__
from kdbench.errors import KdbenchError, first_line
from kdbench.results.layout import CACHE, STUDIES
from kdbench.results.remote import check_scheme, is_uri

EXCLUDES = ["results/", f"{CACHE}/", f"{STUDIES}/", "*.parquet", ".git/", "__pycache__/"]
"""Never shipped from the suite's directory: results, caches, version control."""

AGENT_WAIT_S = 60.0
"""How long ``submit`` waits for a just-started cluster's job agent."""

DEFAULT_RESULTS = "~/kdbench-results"
"""Where a submitted run writes when ``--results`` is not given (on the head node)."""


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise KdbenchError(
            f"--address {address}: expected the dashboard's URL, e.g. http://HEAD:8265"
        )
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError here
        raise KdbenchError(
            f"--address {address}: no Ray dashboard answers there ({first_line(exc)})"
        ) from None


def results_dir(results: str | None, suite_name: str) -> str:
    """The results path the job will write, as the cluster's shell will read it."""
    if results is None:
        return f"{DEFAULT_RESULTS}/{suite_name}"
    if is_uri(results):
        check_scheme(results)  # opened on the head, with the head's credentials
        return results
    if not (results.startswith("/") or results.startswith("~")):
        raise KdbenchError(
            f"--results {results}: give an absolute path on the cluster (a relative one would "
            "land in the job's temporary working directory)"
        )
    return results


def entrypoint(suite_file: str, results: str, *, retry_failed: bool = False) -> str:
    # The path's ~ must reach the head's shell unquoted to be expanded there.
    home, rest = (results[:1], results[1:]) if results.startswith("~") else ("", results)
    target = home + (shlex.quote(rest) if rest else "")
    command = f"python -m kdbench run {shlex.quote(suite_file)} --address auto --results {target}"
    return command + (" --retry-failed" if retry_failed else "")


def submit(
    suite_path: str | Path,
    *,
    address: str,
    results: str | None = None,
    retry_failed: bool = False,
) -> str:
    """Submits the suite; returns the job id."""
    from kdbench.validation import load_suite

    path = Path(suite_path).resolve()
    suite = load_suite(path)  # refused here, in one line, rather than on the cluster
    client = _client(address)
    package = Path(__file__).resolve().parent.parent
    runtime_env = {
        "working_dir": str(path.parent),
        "py_modules": [str(package)],
        "excludes": EXCLUDES,
        "env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    }
    command = entrypoint(path.name, results_dir(results, suite.name), retry_failed=retry_failed)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(
                entrypoint=command,
                runtime_env=runtime_env,
                metadata={"kdbench_suite": suite.name, "kdbench_version": __version__},
            )
        except Exception as exc:
            # A cluster just started answers 500 "No available agent" until its dashboard
            # agent is up (seconds): wait for it rather than fail.
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            raise KdbenchError(f"{address}: the job was not accepted ({first_line(exc)})") from None


def status(job_id: str, *, address: str) -> str:
    """The job's status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    client = _client(address)
    try:
        return str(client.get_job_status(job_id).value)
    except Exception as exc:
        raise KdbenchError(f"job {job_id}: {first_line(exc)}") from None


def logs(job_id: str, *, address: str) -> str:
    client = _client(address)
    try:
        return client.get_job_logs(job_id)
    except Exception as exc:
        raise KdbenchError(f"job {job_id}: {first_line(exc)}") from None


def stop(job_id: str, *, address: str) -> bool:
    client = _client(address)
    try:
        return bool(client.stop_job(job_id))
    except Exception as exc:
        raise KdbenchError(f"job {job_id}: {first_line(exc)}") from None


def wait(job_id: str, *, address: str, poll_s: float = 2.0) -> Iterator[str]:
    """The job's status each time it changes, until it is over."""
    last = None
    while True:
        now = status(job_id, address=address)
        if now != last:
            yield now
            last = now
        if now in ("SUCCEEDED", "FAILED", "STOPPED"):
            return
        time.sleep(poll_s)
