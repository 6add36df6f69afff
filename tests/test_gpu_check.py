"""benchmarks/gpu_check.py keeps working between GPU runs: its CPU run passes every check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_runs_its_code_paths_on_the_cpu(tmp_path):
    # A private Ray (the script's own), with its own figures file: nothing recorded as a GPU's.
    env = {**os.environ, "KDBENCH_GPU_RATES": str(tmp_path / "rates.json")}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("gpu check: ") and lines[-1].endswith(" 0 failed")
    assert any(
        ln.startswith("ok     crd with a CIFAR-100-sized bank: banks of 50,000 × 128")
        for ln in lines
    )
    assert any(ln.startswith("ok     2 trials packed") for ln in lines)
    assert any(ln.startswith("cifar speedup vs reference: ") for ln in lines)
    # the table extrapolated at each measured packing, a CPU's figures never recorded as a GPU's
    hours = [ln for ln in lines if ln.strip().startswith("at ") and ln.endswith("GPU-hours")]
    assert len(hours) == 2
    assert not (tmp_path / "rates.json").exists()
