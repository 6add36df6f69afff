"""Real runs on a real local Ray: the driver, the tasks, the files, the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pandas as pd
import pytest
import torch
import yaml

from kdbench.errors import KdbenchError
from kdbench.models import build_model
from kdbench.plan import expand
from kdbench.results import COLUMNS, load
from kdbench.scheduler.driver import run_suite
from kdbench.validation import load_suite
from tests.conftest import REPO, write_suite


@pytest.fixture
def suite_file(tmp_path):
    # A second teacher comes from a checkpoint that does not fit its architecture: its trial
    # fails, the students that need it fail with that reason, and the run goes on.
    bad = tmp_path / "wrong_arch.pt"
    torch.save(build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8)).state_dict(), bad)
    return write_suite(
        tmp_path,
        yaml.safe_dump(
            {
                "name": "e2e",
                "datasets": ["synthetic"],
                "pairs": [
                    {"teacher": "cnn_small", "student": "cnn_tiny"},
                    {
                        "teacher": {"arch": "cnn_wide", "checkpoint": str(bad)},
                        "student": "cnn_tiny",
                    },
                ],
                "methods": ["kd"],
                "seeds": [0, 1],
                "budget": {"epochs": 2, "batch_size": 32},
                "teacher": {"epochs": 2},
                "tuning": {"trials": 0},
            }
        ),
    )


def test_a_run_writes_every_trial_and_a_rerun_trains_nothing(ray_local, suite_file, tmp_path):
    results = tmp_path / "results"
    summary = run_suite(load_suite(suite_file), results, live=False)
    assert summary.planned == summary.ran == 2 + 2 * 2 * 2

    df = pd.read_parquet(results)  # plain pandas, no kdbench
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 10 and df["trial_id"].is_unique
    teachers = df[df.phase == "teacher"].set_index("teacher")
    assert teachers.loc["cnn_small", "status"] == "ok"
    assert teachers.loc["cnn_wide", "status"] == "failed"
    assert "does not fit cnn_wide" in teachers.loc["cnn_wide", "error"]
    finals = df[df.phase == "final"]
    ok = finals[finals.status == "ok"]
    assert len(ok) == 6  # both pairs' scratch + the good pair's kd
    assert ok["test_acc"].between(0, 1).all() and ok["node_id"].notna().all()
    failed = finals[finals.status == "failed"]
    assert set(failed["method"]) == {"kd"} and failed["error"].str.contains("not available").all()
    assert failed["test_acc"].isna().all()
    good_kd = ok[(ok.method == "kd")]
    assert good_kd["agreement"].between(0, 1).all() and good_kd["teacher_test_acc"].notna().all()

    run_dir = results / "_runs" / summary.run_id
    assert load_suite(suite_file).sha256() == (run_dir / "suite.sha256").read_text().strip()
    assert "torch" in json.loads((run_dir / "run.json").read_text())["packages"]
    curves = pd.read_parquet(run_dir / "curves")
    assert set(curves["epoch"]) == {1, 2} and curves["trial_id"].nunique() == 7  # 1 teacher + 6 ok
    assert len(list((results / "_cache" / "teachers").glob("*.pt"))) == 1

    # the run ended by folding its trial files into one file
    assert not list((results / "trials").glob("*.parquet"))
    assert [p.stem for p in (results / "compacted").glob("*.parquet")] == [summary.run_id]

    def written():
        return {p: p.stat().st_mtime_ns for p in results.glob("[!_]*/*.parquet")}

    files = written()
    again = run_suite(load_suite(suite_file), results, live=False)
    assert again.ran == 0 and again.skipped == 10
    assert written() == files  # nothing trained, nothing rewritten

    retry = run_suite(load_suite(suite_file), results, retry_failed=True, live=False)
    assert retry.ran == 3  # the failed teacher and its two kd students, nothing else
    assert len(load(results)) == 10 and pd.read_parquet(results)["trial_id"].is_unique


def test_a_long_run_folds_its_trial_files_as_it_goes_and_loses_no_row(
    ray_local, suite_file, tmp_path, monkeypatch
):
    from kdbench.results import store, writer

    folded = []
    compact = store.compact

    def watched(results_dir, files=None, known=None):
        folded.append(
            (
                threading.current_thread().name,
                None if files is None else len(files),
                len(known or {}),  # rows the driver still held: not read back
            )
        )
        return compact(results_dir, files, known=known)

    monkeypatch.setattr(writer, "COMPACT_EVERY", 3)
    monkeypatch.setattr(store, "compact", watched)
    results = tmp_path / "results"
    summary = run_suite(load_suite(suite_file), results, live=False)
    # every third row, beside the driver (which goes on scheduling), then the rest at the end
    assert folded == [("kdbench-compact", 3, 3)] * 3 + [("MainThread", None, 1)]
    df = pd.read_parquet(results)
    assert len(df) == summary.ran == 10 and df["trial_id"].is_unique
    assert not list((results / "trials").glob("*.parquet"))


@pytest.mark.slow
def test_the_command_line_runs_prints_the_leaderboard_and_resumes(tmp_path):
    suite = write_suite(
        tmp_path,
        yaml.safe_dump(
            {
                "name": "cli",
                "datasets": ["synthetic"],
                "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
                "methods": ["kd"],
                "seeds": [0, 1],
                "budget": {"epochs": 2},
                "teacher": {"epochs": 2},
                "tuning": {"trials": 0},
            }
        ),
    )
    results = tmp_path / "out"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cmd = [sys.executable, "-m", "kdbench", "run", str(suite), "--results", str(results)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "### synthetic: cnn_small → cnn_tiny" in first.stdout
    assert "| kd |" in first.stdout and "| scratch |" in first.stdout
    assert "[5/5] ok" in first.stderr  # plain progress lines when not on a terminal
    assert "finished: 5/5 done" in first.stderr

    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert second.returncode == 0
    assert "nothing to run: all 5 trials" in second.stderr
    assert second.stdout == first.stdout
    assert (
        len([p for p in (results / "_runs").iterdir() if p.is_dir()]) == 1
    )  # no second run recorded

    csv = subprocess.run(
        [sys.executable, "-m", "kdbench", "leaderboard", str(results), "--format", "csv"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert csv.returncode == 0
    table = pd.read_csv(pd.io.common.StringIO(csv.stdout))
    assert set(table["method"]) == {"kd", "scratch"} and table["n"].eq(2).all()

    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert dry.returncode == 0 and "0 left to run (5 rows already in" in dry.stdout


def test_distillation_sets_and_students_are_saved_and_reused(ray_local, synthetic, tmp_path):
    """Two students on one data set share each synthetic set (one per method and seed); every
    final trial leaves its student, which loads back and scores what its row says."""
    from kdbench.results import load_student, load_synthetic

    suite = write_suite(
        tmp_path,
        yaml.safe_dump(
            {
                "name": "dd",
                "datasets": ["synthetic"],
                "pairs": [
                    {"teacher": "cnn_small", "student": "cnn_tiny"},
                    {"teacher": "cnn_small", "student": "cnn_small"},
                ],
                "methods": [
                    "dd_random",
                    {"name": "dd_dm", "params": {"ipc": 2, "iterations": 3, "net_width": 8}},
                ],
                "seeds": [0],
                "budget": {"epochs": 2, "batch_size": 32},
                "teacher": {"epochs": 2},
                "tuning": {"trials": 0},
            }
        ),
    )
    results = tmp_path / "results"
    summary = run_suite(load_suite(suite), results, live=False)
    # teacher; per pair scratch, the 2 dd entries and dd_dm's baseline (ipc 2, DSA at evaluation)
    assert summary.failed == 0 and summary.ran == 1 + 2 * 4
    df = pd.read_parquet(results)
    finals = df[df.phase == "final"]
    dd = finals[finals.method.str.startswith("dd_")]
    assert dd["artifact"].str.startswith("_artifacts/synthetic/").all()
    assert dd.groupby("method")["artifact"].nunique().to_dict() == {
        "dd_dm": 1,
        "dd_random": 1,
        "dd_random_ipc2_dsa": 1,
    }
    assert len(list((results / "_artifacts" / "synthetic").glob("*.pt"))) == 3
    dm = dd[dd.method == "dd_dm"].iloc[0]
    made = load_synthetic(results, dm["artifact"])
    assert made.images.shape == (20, 1, 8, 8) and made.iterations == 3
    assert (dd[dd.method == "dd_dm"]["images_seen"] % 20 == 0).all()

    assert len(list((results / "_artifacts" / "students").glob("*.pt"))) == len(finals)
    scratch = finals[finals.method == "scratch"].iloc[0]
    assert scratch["artifact"] == f"_artifacts/students/{scratch['trial_id']}.pt"
    student = load_student(results, scratch["trial_id"])
    with torch.no_grad():
        predicted = student(synthetic.test_x).argmax(1)
    assert (predicted == synthetic.test_y).float().mean().item() == pytest.approx(
        scratch["test_acc"], abs=1e-6
    )

    again = run_suite(load_suite(suite), results, live=False)
    assert again.ran == 0


@pytest.mark.parametrize(
    ("resources", "key", "asked"),
    [
        ({"custom": {"a100": 1}}, "resources", "a100=1"),
        ({"teacher": {"gpus": 1}}, "resources.teacher", "GPU=1"),
        ({"accelerator_type": "H100"}, "resources", "accelerator_type:H100"),
    ],
)
def test_resources_no_node_has_are_refused_before_anything_runs(
    ray_local, tmp_path, resources, key, asked
):
    path = write_suite(
        tmp_path,
        yaml.safe_dump(
            {
                "name": "nowhere",
                "datasets": ["synthetic"],
                "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
                "methods": ["kd"],
                "seeds": [0],
                "budget": {"epochs": 1},
                "tuning": {"trials": 0},
                "resources": resources,
            }
        ),
    )
    with pytest.raises(KdbenchError) as err:
        run_suite(load_suite(path), tmp_path / "results", live=False)
    msg = str(err.value)
    assert msg.startswith(f"{key}: no node of the cluster has ") and asked in msg, msg
    assert "offer" in msg and "CPU" in msg and "\n" not in msg
    assert not list((tmp_path / "results").glob("trials/*.parquet"))


def test_expert_trajectories_run_first_once_and_are_shared(ray_local, tmp_path):
    """dd_mtt's experts are trials of their own: trained once before the sets that learn from
    them, with rows, cached, and not trained again for another seed or a rerun."""
    tiny = {"ipc": 2, "iterations": 2, "net_width": 8, "experts": 2}
    tiny.update(expert_epochs_trained=3, max_start_epoch=1, expert_epochs=1, syn_steps=2)
    suite = write_suite(
        tmp_path,
        yaml.safe_dump(
            {
                "name": "mtt",
                "datasets": ["synthetic"],
                "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
                "methods": [{"name": "dd_mtt", "params": tiny}],
                "seeds": [0, 1],
                "budget": {"epochs": 2, "batch_size": 32},
                "teacher": {"epochs": 1},
                "tuning": {"trials": 0},
            }
        ),
    )
    plan = expand(load_suite(suite))
    experts = [t for t in plan.teachers if t.phase == "expert"]
    assert [e.seed for e in experts] == [0, 1] and experts[0].epochs == 3
    mtt = [s for s in plan.finals if s.method == "dd_mtt"]
    assert all(s.prerequisite_ids == tuple(e.trial_id for e in experts) for s in mtt)
    results = tmp_path / "results"
    summary = run_suite(load_suite(suite), results, live=False)
    df = pd.read_parquet(results)
    assert summary.failed == 0, df[df.status == "failed"]["error"].tolist()
    rows = df[df.phase == "expert"]
    assert sorted(rows["seed"]) == [0, 1] and (rows["method"] == "expert").all()
    assert rows["val_acc"].between(0, 1).all() and (rows["train_seconds"] > 0).all()
    assert all((results / "_cache" / "teachers" / f"{e.trial_id}.pt").exists() for e in experts)
    sets = df[(df.phase == "final") & (df.method == "dd_mtt")]
    assert len(sets) == 2 and sets["artifact"].nunique() == 2  # one set per seed
    assert run_suite(load_suite(suite), results, live=False).ran == 0
