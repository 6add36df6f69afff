"""The command line's small commands, the progress display and users' plugins."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest

from kdbench.registry import Registry
from kdbench.scheduler.progress import Progress
from tests.conftest import REPO


def kdbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdbench", *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.mark.slow
def test_list_shows_what_the_registries_hold():
    methods = kdbench("list", "methods")
    assert methods.returncode == 0
    for name in (
        "scratch",
        "kd ",
        "fitnet",
        "at ",
        "crd",
        "pseudo_label",
        "dkd",
        "rkd",
        "pkt",
        "sp ",
    ):
        assert name in methods.stdout, name
    assert "T=4.0" in methods.stdout
    assert "cnn_tiny" in kdbench("list", "models").stdout
    datasets = kdbench("list", "datasets").stdout
    assert "digits" in datasets and "cifar100" in datasets and "100 classes" in datasets


def test_usage_errors_exit_2_in_one_line():
    proc = kdbench("list", "metods")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "invalid choice" in proc.stderr
    missing = kdbench("leaderboard", "/no/such/dir")
    assert missing.returncode == 2 and "no such results directory" in missing.stderr


def row(status="ok"):
    return {
        "phase": "final",
        "status": status,
        "dataset": "d",
        "teacher": "t",
        "student": "s",
        "method": "kd",
        "seed": 0,
        "val_acc": 0.9,
        "test_acc": 0.91,
        "train_seconds": 1.5,
        "error": "boom" if status == "failed" else None,
    }


def test_progress_on_a_terminal_redraws_one_status_line():
    out = io.StringIO()
    p = Progress(3, stream=out, live=True)
    p.set_running(2)
    p.finished(row())
    p.finished(row("failed"))
    text = out.getvalue()
    assert "\r\033[K" in text
    assert "2/3 done · 2 running · 1 failed" in text and "ETA" in text
    assert "failed final   d t→s kd seed=0: boom" in text


def test_progress_in_a_log_is_one_plain_line_per_trial():
    out = io.StringIO()
    p = Progress(2, stream=out, live=False)
    p.finished(row())
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/2] ok     final   d t→s kd seed=0  val=0.900 test=0.910  1.5s"
    assert lines[1].startswith("finished: 1/2 done · 0 running · 0 failed")
    assert "\r" not in out.getvalue()


def test_a_users_package_registers_through_an_entry_point(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent("""
        def tiny_mlp(*, num_classes, input_shape):
            return ("model", num_classes, input_shape)
    """)
    )
    dist = tmp_path / "my_models-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-models\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kdbench.widgets]\ntiny_mlp = my_models:tiny_mlp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    widgets: Registry = Registry("widget")
    assert "tiny_mlp" in widgets
    assert widgets.get("tiny_mlp")(num_classes=3, input_shape=(1, 2, 2)) == ("model", 3, (1, 2, 2))


@pytest.mark.slow
def test_leaderboard_formats_report_and_compact_from_the_command_line(tmp_path):
    from kdbench.results import store
    from tests.test_results import row

    for i, (m, acc) in enumerate([("scratch", 0.9), ("scratch", 0.91), ("kd", 0.93), ("kd", 0.94)]):
        store.write_trial(tmp_path, row(f"x{i}", method=m, seed=i % 2, test_acc=acc))
    for fmt, marker in (
        ("markdown", "### digits"),
        ("csv", "dataset,teacher"),
        ("html", "<!DOCTYPE html>"),
        ("latex", "\\toprule"),
        ("json", '"pairs"'),
    ):
        out = kdbench("leaderboard", str(tmp_path), "--format", fmt)
        assert out.returncode == 0 and marker in out.stdout, (fmt, out.stderr)
    target = tmp_path / "lb.tex"
    assert (
        kdbench("leaderboard", str(tmp_path), "--format", "latex", "-o", str(target)).returncode
        == 0
    )
    assert "\\bottomrule" in target.read_text()
    report = tmp_path / "r.html"
    assert kdbench("report", str(tmp_path), "-o", str(report)).returncode == 0
    assert "<h2>Overall" in report.read_text()
    compacted = kdbench("compact", str(tmp_path))
    assert compacted.returncode == 0 and "r1: 4 rows folded into compacted/" in compacted.stdout
    assert "nothing to compact" in kdbench("compact", str(tmp_path)).stdout
    assert kdbench("report", "/no/such/dir").returncode == 2


@pytest.mark.slow
def test_a_wrong_cluster_address_is_refused_at_once_in_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    suite = REPO / "suites" / "quickstart.yaml"
    for address, says in ((f"127.0.0.1:{port}", "nothing answers"), ("nonsense", "expected auto")):
        proc = kdbench("run", str(suite), "--results", str(tmp_path / "r"), "--address", address)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, (
            proc.stderr
        )
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_every_shipped_suite_dry_runs_without_training(tmp_path):
    for suite in sorted((REPO / "suites").glob("*.yaml")):
        proc = kdbench("run", str(suite), "--results", str(tmp_path / suite.stem), "--dry-run")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "left to run" in proc.stdout and "dry run: nothing was trained" in proc.stdout
        assert not (tmp_path / suite.stem / "trials").exists()


@pytest.mark.slow
def test_a_dry_run_gives_gpu_hours_only_from_rates_measured_on_a_gpu(tmp_path):
    import json
    import os

    suite = tmp_path / "gpu.yaml"
    suite.write_text(
        textwrap.dedent(
            """
            name: gpu
            datasets: [digits]
            pairs: [{teacher: cnn_small, student: cnn_tiny}]
            methods: [kd]
            seeds: [0]
            budget: {epochs: 2}
            teacher: {epochs: 2}
            tuning: {trials: 0}
            resources: {gpus_per_trial: 0.5}
            """
        )
    )
    rates = tmp_path / "rates.json"
    args = ("run", str(suite), "--results", str(tmp_path / "r"), "--dry-run")
    env = {**os.environ, "KDBENCH_GPU_RATES": str(rates)}

    def dry_run() -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "kdbench", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    assert f"GPU-hours: not estimated: no GPU rates are recorded in {rates}" in dry_run()
    rates.write_text(
        json.dumps(
            {
                "device": "NVIDIA H100",
                "measured_at": "2026-12-06",
                "gflops": {"1": 1000.0, "2": 1500.0},
            }
        )
    )
    out = dry_run()
    assert "GPU-hours of training on NVIDIA H100" in out and "with 2 trials a GPU" in out
