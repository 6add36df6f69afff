"""A machine that fails a run (a file where a directory should be, a read-only or full disk,
an unwritable -o, Ray not starting, SIGTERM): one line, the right exit status, nothing lost.

Real read-only and full file systems are mounted for the test (a read-only bind mount, a
small tmpfs): that needs root, as the tests run in CI; elsewhere those tests say they are
skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, write_suite

SUITE = """\
name: hardening
datasets: [digits]
pairs: [{teacher: cnn_small, student: cnn_tiny}]
methods: [kd]
seeds: [0, 1, 2, 3]
budget: {epochs: 2}
teacher: {epochs: 2}
tuning: {trials: 0}
"""


def kdbench(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return subprocess.run(
        [sys.executable, "-m", "kdbench", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        **kw,
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The error line; asserts it is the only line of stderr after the run's progress."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kdbench: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@contextlib.contextmanager
def mounted(kind: str, target: Path, size_kb: int = 0):
    target.mkdir(parents=True, exist_ok=True)
    if kind == "ro":
        cmds = [
            ["mount", "--bind", str(target), str(target)],
            ["mount", "-o", "remount,bind,ro", str(target)],
        ]
    else:
        cmds = [["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(target)]]
    for cmd in cmds:
        if shutil.which(cmd[0]) is None or subprocess.run(cmd, capture_output=True).returncode:
            subprocess.run(["umount", str(target)], capture_output=True)
            pytest.skip(f"cannot mount a {kind} file system here (needs root)")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


@pytest.mark.slow
def test_results_that_is_a_file_is_refused_and_left_alone(tmp_path):
    suite = write_suite(tmp_path, SUITE)
    results = tmp_path / "results.txt"
    results.write_text("mine\n")
    proc = kdbench("run", str(suite), "--results", str(results))
    assert proc.returncode == 2
    assert one_line(proc) == (
        f"kdbench: error: --results {results}: is a file, not a directory; give a directory "
        "(it is made if it does not exist)"
    )
    assert results.read_text() == "mine\n"


@pytest.mark.slow
def test_an_unwritable_output_path_is_one_line(tmp_path):
    from kdbench.results import store
    from tests.test_results import row

    store.write_trial(tmp_path / "r", row("x0", method="kd", seed=0, test_acc=0.9))
    for out in (tmp_path / "r", tmp_path / "no" / "such" / "dir" / "x.md"):
        if out.name == "x.md":  # a parent that is a file: no directory can be made there
            (tmp_path / "no").write_text("a file")
        proc = kdbench("leaderboard", str(tmp_path / "r"), "-o", str(out))
        assert proc.returncode == 2
        line = one_line(proc)
        assert line.startswith(f"kdbench: error: -o {out}: cannot write it (")
        assert line.endswith("); give a writable path")
        report = kdbench("report", str(tmp_path / "r"), "-o", str(out))
        assert report.returncode == 2 and f"-o {out}: cannot write it" in one_line(report)
    assert len(pd.read_parquet(tmp_path / "r")) == 1


@pytest.mark.slow
def test_a_read_only_results_directory_is_one_line_and_kept(tmp_path):
    suite = write_suite(tmp_path, SUITE.replace("seeds: [0, 1, 2, 3]", "seeds: [0]"))
    results = tmp_path / "ro"
    done = kdbench("run", str(suite), "--results", str(results))
    assert done.returncode == 0, done.stderr
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    with mounted("ro", results):
        for args in (("run", str(suite), "--results", str(results)), ("compact", str(results))):
            proc = kdbench(*args)
            assert proc.returncode == 2, proc.stderr
            line = one_line(proc)
            assert str(results) in line and "Read-only file system" in line, line
            assert "give a writable results directory (--results DIR)" in line
        # reading needs no writing
        assert kdbench("leaderboard", str(results)).returncode == 0
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_and_a_rerun_finishes_it(tmp_path):
    suite = write_suite(tmp_path, SUITE)
    results = tmp_path / "full"
    # room for the teacher's row and weights and a few students, not for all of them
    with mounted("tmpfs", results, size_kb=160):
        proc = kdbench("run", str(suite), "--results", str(results))
        assert proc.returncode == 2, proc.stderr
        line = one_line(proc)
        assert "no space left on the device; free some and run the same command again" in line
        kept = pd.read_parquet(results)
        assert len(kept) >= 1 and kept["trial_id"].is_unique
        moved = tmp_path / "moved"
        shutil.copytree(results, moved, ignore=shutil.ignore_patterns(".*"))
    again = kdbench("run", str(suite), "--results", str(moved))
    assert again.returncode == 0, again.stderr
    rows = pd.read_parquet(moved)
    assert len(rows) == 1 + 2 * 4 and rows["trial_id"].is_unique  # teacher + (scratch, kd) × 4
    assert set(kept["trial_id"]) <= set(rows["trial_id"])
    assert f"{len(kept)} already finished" in again.stderr


def test_ray_that_does_not_start_is_one_line(monkeypatch):
    import ray

    from kdbench.errors import KdbenchError
    from kdbench.scheduler.cluster import init_ray

    def no_ray(**kwargs):
        raise TimeoutError("Timed out waiting for the raylet to start")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_ray)
    with pytest.raises(KdbenchError) as err:
        init_ray()
    assert str(err.value) == (
        "could not start a local Ray (TimeoutError: Timed out waiting for the raylet to start); "
        "check the free memory and the space in /tmp (Ray's session files), or give --address "
        "of a running cluster"
    )


@pytest.mark.slow
def test_sigterm_ends_a_run_like_ctrl_c(tmp_path):
    suite = write_suite(tmp_path, SUITE.replace("epochs: 2}\nteacher", "epochs: 40}\nteacher"))
    results = tmp_path / "term"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdbench", "run", str(suite), "--results", str(results)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until the teacher's row and a student's are in
        rows = list((results / "trials").glob("*.parquet")) if results.exists() else []
        if len(rows) >= 2:
            break
        time.sleep(0.5)
    assert len(rows) >= 2, "the run wrote no rows in time"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "Fatal Python error" not in err
    assert (
        "kdbench: terminated; finished trials are kept, run the same command to resume"
        in err.splitlines()
    )
    kept = pd.read_parquet(results)
    assert len(kept) >= 2 and kept["trial_id"].is_unique and (kept["status"] == "ok").all()
    assert not list(results.rglob(".*.tmp"))
