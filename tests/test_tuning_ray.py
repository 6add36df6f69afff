"""Tuning on a real local Ray: studies, pruning through the actor, resume after SIGKILL, PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pandas as pd
import pytest
import yaml

from kdbench.plan import expand, resolve_hparams, tune_spec
from kdbench.results import load
from kdbench.scheduler.driver import run_suite
from kdbench.spec import TuningConfig
from kdbench.tuning.studies import StudySpec, journal_path, select
from kdbench.validation import load_suite
from tests.conftest import write_suite


def tuned_suite(tmp_path, name="tuned", **over):
    raw = {
        "name": name,
        "datasets": ["synthetic"],
        "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
        "methods": ["kd", {"name": "kd", "label": "kd_t", "search": {"T": [1, 8]}}],
        "seeds": [0, 1],
        "budget": {"epochs": 3, "batch_size": 32},
        "teacher": {"epochs": 2},
        "tuning": {"trials": 4},
    }
    raw.update(over)
    return write_suite(tmp_path, yaml.safe_dump(raw), f"{name}.yaml")


def journal_storage(results):
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal_path(results)))
    )


def check_tuned_results(results, suite_path):
    """What every tuned run must leave behind, however it got there."""
    suite = load_suite(suite_path)
    plan = expand(suite)
    df = load(results)
    tune = df[df.phase == "tune"]
    final = df[df.phase == "final"]
    assert (
        tune["test_acc"].isna().all()
        and tune["test_top5"].isna().all()
        and tune["agreement"].isna().all()
    )
    # exactly one final row per (cell, seed); no trial twice
    assert df["trial_id"].is_unique
    assert Counter(zip(final.method, final.seed, strict=True)) == {
        (c.method.label, s): 1 for c in plan.cells for s in suite.seeds
    }
    storage = journal_storage(results)
    for study in plan.studies:
        trials = optuna.load_study(study_name=study.name, storage=storage).trials
        assert len(trials) == study.budget
        assert all(t.state.is_finished() for t in trials)
        rows = tune[tune.method == study.cell.method.label]
        assert len(rows) == study.budget
        # every epoch's accuracy reached the study, the last one (told by the driver) too:
        # the pruner compares later trials with these
        for t in trials:
            if t.state.name == "COMPLETE":
                hp = resolve_hparams(study.cell.method, t.params)
                trial_id = tune_spec(suite, study.cell, study.teacher, t.number, hp).trial_id
                row = rows[rows.trial_id == trial_id].iloc[0]
                assert sorted(t.intermediate_values) == list(range(1, row.epoch_reported + 1))
                assert t.intermediate_values[row.epoch_reported] == pytest.approx(t.value)
                assert t.value == pytest.approx(row.val_acc)
        # the finals ran the selected trial's hyperparameters
        complete = [(t.number, t.params, t.value) for t in trials if t.state.name == "COMPLETE"]
        start = {k: dict(resolve_hparams(study.cell.method))[k] for k in study.space}
        chosen = select(complete, start, 120)
        expected = dict(resolve_hparams(study.cell.method, chosen[1]))
        for hp in final[final.method == study.cell.method.label]["hparams"]:
            assert json.loads(hp) == pytest.approx(expected)
    return df


@pytest.mark.slow
def test_a_tuned_run_studies_every_cell_and_runs_the_finals_of_the_selection(ray_local, tmp_path):
    path = tuned_suite(tmp_path)
    results = tmp_path / "r"
    summary = run_suite(load_suite(path), results, live=False)
    assert summary.failed == 0
    df = check_tuned_results(results, path)
    assert len(df[df.phase == "tune"]) == 8
    # the study a user opens with Optuna is the one kdbench used
    names = optuna.get_all_study_names(journal_storage(results))
    assert sorted(names) == sorted(s.name for s in expand(load_suite(path)).studies)
    assert run_suite(load_suite(path), results, live=False).ran == 0


@pytest.mark.slow
def test_short_trials_share_ray_tasks_and_each_still_writes_one_row(ray_local, tmp_path):
    # One-epoch trials on the synthetic set last well under a second: once each cell's first
    # two are measured, the driver sends several of them to one Ray task.
    path = tuned_suite(
        tmp_path,
        name="short",
        seeds=[0, 1, 2],
        budget={"epochs": 1, "batch_size": 64},
        teacher={"epochs": 1},
        tuning={"trials": 12},
    )
    results = tmp_path / "r"
    summary = run_suite(load_suite(path), results, live=False)
    assert summary.failed == 0
    df = check_tuned_results(results, path)
    assert summary.ran == len(df) == 1 + 3 + 2 * (12 + 3)
    assert summary.tasks < summary.ran - 5, (summary.tasks, summary.ran)


@pytest.mark.slow
def test_pruning_stops_the_ray_task_through_the_study_actor(ray_local, synthetic, tmp_path):
    from kdbench.scheduler.tasks import StudentTrial, student_task, teacher_task
    from kdbench.training.trial import RunInfo
    from kdbench.tuning.broker import Reporter, start_broker

    path = tuned_suite(tmp_path, budget={"epochs": 6, "batch_size": 32})
    plan = expand(load_suite(path))
    study = plan.studies[0]
    spec = StudySpec(
        study.name,
        study.space,
        budget=8,
        epochs=6,
        timeout_s=None,
        tuning=TuningConfig(trials=8, pruner="median"),
    )
    broker = start_broker(str(tmp_path / "r"), None, [spec])
    # two earlier trials that reached 100% at every epoch: anything below is pruned
    for _ in range(2):
        number, _params = ray_local.get(broker.ask.remote(study.name))
        for epoch in range(1, 7):
            ray_local.get(broker.report.remote(study.name, number, epoch, 1.0))
        ray_local.get(broker.tell.remote(study.name, number, "ok", 1.0))
    number, params = ray_local.get(broker.ask.remote(study.name))
    info = RunInfo("r", "t")
    data = ray_local.put(synthetic)
    _, weights = teacher_task.remote(plan.teachers[0], data, info, None)
    tspec = tune_spec(
        plan.suite, study.cell, study.teacher, number, resolve_hparams(study.cell.method, params)
    )
    (out,) = ray_local.get(
        student_task.remote(
            [StudentTrial(tspec, 0, Reporter(broker, study.name, number))], data, info, weights
        )
    )
    row = out.row
    assert row["status"] == "pruned", row
    assert row["epoch_reported"] == 2  # warm-up is a third of 6 epochs; pruned at the first chance
    assert row["images_seen"] == 2 * len(synthetic.train_y)
    ray_local.kill(broker)


@pytest.mark.slow
def test_killing_the_driver_mid_run_and_running_again_loses_and_repeats_nothing(tmp_path):
    path = tuned_suite(
        tmp_path, name="killed", tuning={"trials": 6}, budget={"epochs": 4, "batch_size": 32}
    )
    results = tmp_path / "r"
    cmd = [sys.executable, "-m", "kdbench", "run", str(path), "--results", str(results)]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = (
            list((results / "trials").glob("tune-*.parquet"))
            if (results / "trials").exists()
            else []
        )
        if len(done) >= 3 or proc.poll() is not None:
            break
        time.sleep(0.2)
    assert proc.poll() is None, (
        "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    )
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    before = {p.stem for p in (results / "trials").glob("*.parquet")}
    assert 3 <= len([n for n in before if n.startswith("tune-")]) < 12

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert before <= set(load(results)["trial_id"])  # nothing written before the kill was lost
    df = check_tuned_results(results, path)
    assert len(df[df.phase == "tune"]) == 12 and len(df[df.phase == "teacher"]) == 1


@pytest.fixture(scope="module")
def postgres_url():
    from tests.postgres import PostgresServer

    try:
        server = PostgresServer()
    except FileNotFoundError as exc:
        pytest.skip(f"no PostgreSQL server on this machine: {exc}")
    url = server.start()
    yield url
    server.stop()


@pytest.mark.slow
def test_studies_can_live_in_postgresql(ray_local, tmp_path, postgres_url):
    path = tuned_suite(
        tmp_path,
        name="pg",
        tuning={"trials": 3, "storage": postgres_url},
        methods=["kd"],
        seeds=[0],
    )
    results = tmp_path / "r"
    run_suite(load_suite(path), results, live=False)
    assert not journal_path(results).exists()
    plan = expand(load_suite(path))
    study = optuna.load_study(study_name=plan.studies[0].name, storage=postgres_url)
    assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
    df = pd.read_parquet(results)
    assert (df.phase == "tune").sum() == 3 and (df.phase == "final").sum() == 2


@pytest.mark.slow
def test_studies_and_pruning_work_when_trials_run_on_another_node(tmp_path):
    path = tuned_suite(
        tmp_path,
        name="nodes",
        methods=["kd"],
        seeds=[0],
        budget={"epochs": 6, "batch_size": 32},
        tuning={"trials": 3},
    )
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.multinode_tuning", str(path), str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["row_nodes"] == [seen["worker"]]  # the head has no CPUs: every trial ran elsewhere
    assert seen["phases"] == {"teacher": 1, "tune": 3, "final": 2}
    assert seen["pruned_status"] == "pruned" and seen["pruned_node"] == seen["worker"]
    assert seen["pruned_epoch"] < seen["epochs"]
