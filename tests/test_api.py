"""``kdbench.run``: the Python entry point runs a suite as the command line does, returns its
results as DataFrames, raises the command line's errors, and shows progress in a notebook."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

import kdbench
from kdbench.errors import KdbenchError, SuiteError
from tests.conftest import REPO, write_suite

TINY = {
    "name": "api_tiny",
    "datasets": ["digits"],
    "pairs": [{"teacher": "cnn_wide", "student": "cnn_tiny"}],
    "methods": ["scratch", "kd"],
    "seeds": [0, 1],
    "budget": {"epochs": 2, "batch_size": 64},
    "teacher": {"epochs": 3},
    "tuning": {"trials": 0},
}


@pytest.mark.slow
def test_run_takes_a_mapping_and_returns_dataframes(tmp_path, ray_local):
    result = kdbench.run(TINY, results=tmp_path / "r", progress=False)
    s = result.summary.iloc[0]
    assert (s["planned"], s["ran"], s["failed"], s["skipped"]) == (5, 5, 0, 0)
    assert s["run_id"] == result.run_id and s["seconds"] > 0
    assert isinstance(result.trials, pd.DataFrame) and len(result.trials) == 5
    assert set(result.trials["phase"]) == {"teacher", "final"}
    board = result.leaderboard
    assert sorted(board["method"]) == ["kd", "scratch"]
    assert (board["n"] == 2).all() and board["mean"].between(0, 1).all()
    # the same numbers as reading the directory afterwards
    rows = kdbench.results.load(tmp_path / "r", phase="final")
    means = rows.groupby("method")["test_acc"].mean()
    for _, r in board.iterrows():
        assert r["mean"] == pytest.approx(means[r["method"]])
    assert "| kd |" in result.markdown() and result._repr_markdown_().startswith("**run ")

    again = kdbench.run(TINY, results=tmp_path / "r", progress=False)  # resumes: nothing left
    s2 = again.summary.iloc[0]
    assert (s2["ran"], s2["skipped"]) == (0, 5) and again.trials.empty
    assert len(again.rows) == len(result.rows)


def test_run_takes_a_file_and_the_same_suite_as_a_mapping_is_the_same_suite(tmp_path):
    path = write_suite(tmp_path, yaml.safe_dump(TINY))
    from kdbench.api import load

    assert load(path).sha256() == load(TINY).sha256()
    assert load("quickstart").name == "quickstart"
    assert load("quickstart.yaml").sha256() == load(REPO / "suites" / "quickstart.yaml").sha256()


@pytest.mark.slow
def test_errors_are_the_command_lines_as_exceptions(tmp_path):
    bad = dict(TINY, methods=["kd", "kdd"])
    path = write_suite(tmp_path, yaml.safe_dump(bad))
    with pytest.raises(SuiteError) as raised:
        kdbench.run(path)
    cli = subprocess.run(
        [sys.executable, "-m", "kdbench", "run", str(path)], capture_output=True, text=True
    )
    assert cli.returncode == 2
    assert cli.stderr == f"kdbench: error: {raised.value}\n"
    assert "did you mean 'kd'" in str(raised.value)

    with pytest.raises(SuiteError, match=r"<mapping>: methods\[1\]"):
        kdbench.run(bad)
    with pytest.raises(KdbenchError, match=r"not the name of a shipped suite.*'quickstart'"):
        kdbench.run("quickstrt")
    (tmp_path / "afile").write_text("")
    with pytest.raises(KdbenchError, match="is a file, not a directory"):
        kdbench.run(TINY, results=tmp_path / "afile")
    with pytest.raises(KdbenchError, match="expected a path"):
        kdbench.run(42)


def test_importing_kdbench_loads_nothing_heavy():
    code = (
        "import sys, kdbench, kdbench.cli; "
        "print(sorted(m for m in ('torch', 'ray', 'pandas', 'pyarrow', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert kdbench.__all__ == ["KdbenchError", "RunResult", "SuiteError", "__version__", "run"]


@pytest.mark.slow
def test_a_notebook_shows_progress_in_place_and_the_leaderboard(tmp_path):
    """A real Jupyter kernel runs the README's notebook example."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    suite = dict(TINY, name="api_notebook")
    cells = [
        "import kdbench",
        f"result = kdbench.run({suite!r}, results={str(tmp_path / 'r')!r})\nresult",
        "result.leaderboard[['method', 'mean', 'std', 'n']]",
        "try:\n    kdbench.run({'name': 'x'})\nexcept kdbench.SuiteError as e:\n    print(e)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    run_cell = nb.cells[1].outputs
    status = [o for o in run_cell if o.output_type == "display_data"]
    assert len(status) == 1, "the status line is one output, updated in place"
    assert status[0].data["text/plain"].startswith("finished: 5/5 done")
    lines = "".join(o.text for o in run_cell if o.output_type == "stream")
    assert lines.count("ok     final") == 4 and "[5/5]" in lines
    shown = next(o for o in run_cell if o.output_type == "execute_result").data
    assert "text/markdown" in shown and "| scratch |" in shown["text/markdown"]
    table = nb.cells[2].outputs[0].data["text/html"]
    assert "scratch" in table and "kd" in table
    assert "<mapping>: datasets: is required" in nb.cells[3].outputs[0].text
