"""The HTML report: self-contained, and seen in a real headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.results import store
from kdbench.results.report import build_report, write_report
from tests.test_results import row

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def results(tmp_path):
    """A results directory with every kind of row the report draws, and a synthetic set."""
    store.write_trial(
        tmp_path, row("t0", phase="teacher", method="teacher", student=None, test_acc=0.98)
    )
    for method, base in (("scratch", 0.90), ("kd", 0.93), ("dd_dm", 0.80)):
        for seed in range(3):
            extra = {}
            if method == "dd_dm":
                extra = {
                    "artifact": "_artifacts/dd_dm/synthetic.pt",
                    "hparams": json.dumps({"ipc": 2}),
                }
            store.write_trial(
                tmp_path,
                row(
                    f"{method}{seed}", method=method, seed=seed, test_acc=base + seed / 100, **extra
                ),
            )
    trials = [(1.0, 0.9, 0.90, "ok"), (4.0, 0.5, 0.94, "ok"), (16.0, 0.5, 0.85, "pruned")]
    for n, (T, alpha, acc, status) in enumerate(trials):
        store.write_trial(
            tmp_path,
            row(
                f"tune{n}",
                phase="tune",
                method="kd",
                test_acc=None,
                val_acc=acc,
                status=status,
                hparams=json.dumps({"T": T, "alpha": alpha, "gamma": 0.1}),
            ),
        )
    art = tmp_path / "_artifacts" / "dd_dm"
    art.mkdir(parents=True)
    torch.save(
        {"images": torch.rand(20, 1, 8, 8), "labels": torch.arange(10).repeat(2)},
        art / "synthetic.pt",
    )
    return tmp_path


def test_the_report_holds_everything_and_needs_no_network(results):
    page = build_report(results)
    # the pair's bars, the CD diagram (its seeds as blocks), cost, T and alpha (gamma never varied)
    assert page.count("<svg") == 5
    for heading in ("Overall", "Average ranks", "Cost", "Hyperparameter sensitivity"):
        assert f"<h2>{heading}" in page
    assert "<h2>Dataset distillation" in page
    assert 'aria-label="critical difference diagram: average ranks over the 3 seeds' in page
    assert 'src="data:image/png;base64,' in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<script" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_report_renders_in_headless_chromium(results, tmp_path):
    report = write_report(results, tmp_path / "out" / "report.html")
    shot = tmp_path / "shot.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ]
    run = subprocess.run(
        [CHROMIUM, *flags, "--window-size=1200,1600", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank page
    assert (pixels < 100).mean() > 0.005  # text and charts drew dark pixels
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "kdbench report" in dom and "Hyperparameter sensitivity" in dom and "<svg" in dom
    assert 'aria-label="critical difference diagram' in dom and "CD = " in dom
