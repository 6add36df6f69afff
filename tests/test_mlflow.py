"""Results into MLflow: a real tiny suite's rows and curves, exported to a SQLite store (what
MLflow 3 recommends for a local store), a file store, and a real tracking server started here
on 127.0.0.1; and logged live by ``kdbench run --mlflow``."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # else MLflow 3 reports usage
mlflow = pytest.importorskip("mlflow")

from mlflow.entities import ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from kdbench.cli import main  # noqa: E402
from kdbench.errors import KdbenchError  # noqa: E402
from kdbench.models import build_model  # noqa: E402
from kdbench.results import load  # noqa: E402
from kdbench.results.mlflow import Experiment, export, live  # noqa: E402
from kdbench.validation import load_suite  # noqa: E402
from tests.conftest import write_suite  # noqa: E402

TUNED = {
    "name": "mlf",
    "datasets": ["digits"],
    "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
    "methods": ["kd"],
    "seeds": [0],
    "budget": {"epochs": 2, "batch_size": 64},
    "teacher": {"epochs": 1},
    "tuning": {"trials": 2, "confirm": {"top": 1, "seeds": 1}},
    "resources": {"cpus_per_trial": 1},
}
"""1 teacher + 2 tune + 2 confirm + 2 final trials (scratch and kd), 2 epochs each student."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(server: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def server_runs(server: str, experiment: str) -> list[dict]:
    """The active runs of an experiment, through the REST API, tags as a dict."""
    name = urllib.parse.quote(experiment)
    exp = rest(server, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")
    found = rest(
        server,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 1000},
    ).get("runs", [])
    for run in found:
        run["tags"] = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server (SQLite behind it), on a free port of 127.0.0.1."""
    where = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job workers (huey) to start
    }
    log = (where / "server.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            *("--backend-store-uri", f"sqlite:///{where / 'mlflow.db'}"),
            *("--default-artifact-root", str(where / "artifacts")),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its uvicorn child goes with it
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(
                    "the MLflow server did not start:\n"
                    + (where / "server.log").read_text()[-3000:]
                )
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def ran(ray_local, server, tmp_path_factory):
    """The tuned suite run once by ``kdbench run --mlflow SERVER``, in this process: what the
    server held when the run's end began its catch-up export, and what that export did."""
    where = tmp_path_factory.mktemp("mlflow-run")
    suite = write_suite(where, yaml.safe_dump(TUNED))
    results = where / "results"
    seen: dict = {}
    real = live.export  # the run's end (LiveLogger.catch_up) calls it from there

    def spy(results_dir, uri, **kwargs):
        seen["before"] = server_runs(server, "kdbench/mlf")
        seen["summary"] = real(results_dir, uri, **kwargs)
        return seen["summary"]

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setattr(live, "export", spy)
        rc = main(["run", str(suite), "--results", str(results), "--mlflow", server])
    return SimpleNamespace(
        rc=rc, suite=suite, results=results, rows=load(results), stderr=err.getvalue(), **seen
    )


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


@pytest.mark.slow
def test_a_run_with_mlflow_logs_every_trial_as_it_finishes(ran, server):
    assert ran.rc == 0, ran.stderr
    rows = ran.rows
    assert len(rows) == 7 and set(rows.phase) == {"teacher", "tune", "confirm", "final"}
    # when the run's end came, every trial was on the server already, under a RUNNING parent
    before = ran.before
    trials = [r for r in before if r["tags"]["kdbench.kind"] == "trial"]
    (parent,) = [r for r in before if r["tags"]["kdbench.kind"] == "run"]
    assert {r["tags"]["kdbench.trial_id"] for r in trials} == set(rows.trial_id)
    assert parent["info"]["status"] == "RUNNING"
    assert {r["tags"]["mlflow.parentRunId"] for r in trials} == {parent["info"]["run_id"]}
    # ... so the catch-up export found them all, and only finished the parent
    assert ran.summary.runs_created == 0 and ran.summary.runs_existing == 8
    assert "7 trials logged as they finished; at the end 0 runs created, 8 already there" in (
        ran.stderr
    )
    assert "warning" not in ran.stderr
    after = {r["info"]["run_id"]: r for r in server_runs(server, "kdbench/mlf")}
    assert len(after) == 8
    assert after[parent["info"]["run_id"]]["info"]["status"] == "FINISHED"
    (run_id,) = set(rows.run_id)
    assert parent["tags"]["kdbench.run_id"] == run_id


@pytest.mark.slow
def test_export_to_sqlite_nests_runs_with_params_metrics_curves_and_tags(
    ran, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a client-side SQLite store puts artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = export(ran.results, uri)
    assert (summary.parents_created, summary.created, summary.existing) == (1, 7, 0)
    assert summary.experiments == ["kdbench/mlf"]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("kdbench/mlf")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == 8
    (parent,) = [r for r in runs if r.data.tags["kdbench.kind"] == "run"]
    rows = ran.rows.set_index("trial_id")
    (run_id,) = set(rows.run_id)
    record = ran.results / "_runs" / run_id
    assert parent.data.tags["kdbench.suite"] == "mlf"
    sha = (record / "suite.sha256").read_text().strip()
    assert parent.data.tags["kdbench.suite_sha256"] == sha == load_suite(ran.suite).sha256()
    assert parent.data.params["budget.epochs"] == "2"
    assert parent.data.params["tuning.confirm.top"] == "1"
    assert parent.info.status == "FINISHED"
    assert parent.info.end_time == max(ms(t) for t in rows.finished_at)
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"suite.yaml", "run.json"}
    yaml_file = client.download_artifacts(parent.info.run_id, "suite.yaml", str(tmp_path))
    assert Path(yaml_file).read_text() == (record / "suite.yaml").read_text()

    children = {r.data.tags["kdbench.trial_id"]: r for r in runs if r is not parent}
    assert set(children) == set(rows.index)
    for trial_id, run in children.items():
        row = rows.loc[trial_id]
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name == trial_id
        assert tags["kdbench.phase"] == row.phase
        assert tags["kdbench.status"] == row.status == "ok"
        assert tags["kdbench.seed"] == str(row.seed)
        assert tags["kdbench.run_id"] == run_id
        assert run.info.status == "FINISHED"
        assert run.info.start_time == ms(row.started_at)
        assert run.info.end_time == ms(row.finished_at)
        assert params["dataset"] == "digits" and params["teacher"] == "cnn_small"
        assert params["method"] == row.method and params["seed"] == str(row.seed)
        for name, value in json.loads(row.hparams).items():
            assert params[name] == (value if isinstance(value, str) else json.dumps(value))
        assert metrics["val_acc"] == pytest.approx(row.val_acc)
        assert metrics["train_seconds"] == pytest.approx(row.train_seconds)
        if row.phase == "final":
            for name in ("test_acc", "best_test_acc", "teacher_test_acc", "agreement"):
                assert metrics[name] == pytest.approx(row[name]), name
        else:
            assert "best_test_acc" not in metrics  # null on these rows: not logged
        if row.phase == "teacher":
            assert tags["kdbench.cell"] == "digits/cnn_small"
            assert "student" not in params
        else:
            assert tags["kdbench.cell"] == f"digits/cnn_small->cnn_tiny/{row.method}"
        curve = pd.read_parquet(record / "curves" / f"{trial_id}.parquet")
        history = client.get_metric_history(run.info.run_id, "epoch/val_acc")
        assert [m.step for m in history] == list(curve.epoch) == list(range(1, row.epochs + 1))
        assert [m.value for m in history] == pytest.approx(list(curve.val_acc))
        losses = client.get_metric_history(run.info.run_id, "epoch/train_loss")
        assert [m.value for m in losses] == pytest.approx(list(curve.train_loss))
    kd = rows[(rows.phase == "final") & (rows.method == "kd")].index[0]
    assert "epoch/loss_kd" in children[kd].data.metrics  # the method's own loss terms

    again = export(ran.results, uri)
    assert again.runs_created == 0 and (again.parents_existing, again.existing) == (1, 7)
    assert len(client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)) == 8


def test_a_file_store_is_written_where_mlflow_allows_it(ran, tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(KdbenchError, match="MLFLOW_ALLOW_FILE_STORE") as err:
        export(ran.results, uri)  # MLflow 3 refuses new file stores unless told otherwise
    assert "\n" not in str(err.value)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert export(ran.results, uri).runs_created == 8
    assert export(ran.results, uri).runs_existing == 8
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("kdbench/mlf").experiment_id])
    (parent,) = [r for r in runs if r.data.tags["kdbench.kind"] == "run"]
    assert [r.data.tags.get("mlflow.parentRunId") for r in runs].count(parent.info.run_id) == 7


def test_the_tracking_server_lists_the_exported_runs_over_rest(ran, server, capsys):
    args = ["export", str(ran.results), "--mlflow", server, "--experiment", "over-rest"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out == (
        f"MLflow {server}, experiment 'over-rest': 8 runs created (1 suite run, 7 trials), "
        "0 already there\n"
    )
    runs = server_runs(server, "over-rest")
    assert len(runs) == 8
    (parent,) = [r for r in runs if r["tags"]["kdbench.kind"] == "run"]
    children = [r for r in runs if r is not parent]
    assert {r["tags"]["mlflow.parentRunId"] for r in children} == {parent["info"]["run_id"]}
    assert {r["tags"]["kdbench.trial_id"] for r in children} == set(ran.rows.trial_id)
    phases = sorted(r["tags"]["kdbench.phase"] for r in children)
    assert phases == ["confirm", "confirm", "final", "final", "teacher", "tune", "tune"]
    assert {r["tags"]["kdbench.status"] for r in children} == {"ok"}
    assert parent["tags"]["kdbench.suite"] == "mlf" and parent["tags"]["kdbench.suite_sha256"]

    assert main(args) == 0
    assert "0 runs created (0 suite runs, 0 trials), 8 already there" in capsys.readouterr().out
    assert len(server_runs(server, "over-rest")) == 8


def failing_suite(tmp_path: Path) -> Path:
    """A teacher whose checkpoint does not fit its architecture: the teacher and kd fail, the
    scratch student does not need it. 3 trials, no tuning."""
    bad = tmp_path / "wrong_arch.pt"
    torch.save(build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8)).state_dict(), bad)
    return write_suite(
        tmp_path,
        yaml.safe_dump(
            {
                "name": "mlf-failing",
                "datasets": ["digits"],
                "pairs": [
                    {"teacher": {"arch": "cnn_wide", "checkpoint": str(bad)}, "student": "cnn_tiny"}
                ],
                "methods": ["kd"],
                "seeds": [0],
                "budget": {"epochs": 1, "batch_size": 64},
                "tuning": {"trials": 0},
            }
        ),
    )


@pytest.mark.slow
def test_a_retried_trial_replaces_its_run_and_a_failing_store_does_not_stop_the_run(
    ray_local, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    suite, results = failing_suite(tmp_path), tmp_path / "results"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real, calls = Experiment.trial, []

    def flaky(self, *args, **kwargs):  # the store fails once, mid-run
        calls.append(1)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException("the tracking store went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Experiment, "trial", flaky)
    assert main(["run", str(suite), "--results", str(results), "--mlflow", uri]) == 0
    err = capsys.readouterr().err
    assert err.count("kdbench: warning:") == 1 and "the tracking store went away" in err
    # the parent run was made before the failure; the end exported the three trials
    assert "0 trials logged as they finished; at the end 3 runs created, 1 already there" in err
    first = load(results).set_index("trial_id")
    assert sorted(first.status) == ["failed", "failed", "ok"]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("kdbench/mlf-failing").experiment_id
    runs = client.search_runs([exp])
    assert len(runs) == 4
    (parent,) = [r for r in runs if r.data.tags["kdbench.kind"] == "run"]
    assert parent.info.status == "FINISHED"
    for run in runs:
        if run is parent:
            continue
        row = first.loc[run.data.tags["kdbench.trial_id"]]
        assert run.info.status == {"ok": "FINISHED", "failed": "FAILED"}[row.status]
        if row.status == "failed":
            assert run.data.tags["kdbench.error"] == row.error
            assert run.data.tags["mlflow.note.content"] == row.error  # the run's description
            assert "test_acc" not in run.data.metrics
    teacher = first[first.phase == "teacher"].iloc[0]
    assert "does not fit cnn_wide" in teacher.error

    monkeypatch.setattr(Experiment, "trial", real)
    args = ["run", str(suite), "--results", str(results), "--retry-failed", "--mlflow", uri]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 trials logged as they finished; at the end 0 runs created, 5 already there" in err
    second = load(results).set_index("trial_id")
    retried = second[second.run_id != first.run_id.iloc[0]]
    assert len(second) == 3 and len(retried) == 2  # the failed two, written again

    runs = client.search_runs([exp])
    parents = {
        r.data.tags["kdbench.run_id"]: r for r in runs if r.data.tags["kdbench.kind"] == "run"
    }
    assert len(runs) == 5 and set(parents) == set(second.run_id)
    for run in (r for r in runs if r.data.tags["kdbench.kind"] == "trial"):
        row = second.loc[run.data.tags["kdbench.trial_id"]]  # one run per trial: its last row
        assert run.data.tags["kdbench.run_id"] == row.run_id
        assert run.data.tags["mlflow.parentRunId"] == parents[row.run_id].info.run_id
    deleted = client.search_runs([exp], run_view_type=ViewType.DELETED_ONLY)
    assert {r.data.tags["kdbench.trial_id"] for r in deleted} == set(retried.index)
    summary = export(results, uri)
    assert summary.runs_created == 0 and summary.runs_existing == 5


def test_an_unreachable_server_is_warned_of_and_the_run_goes_on(ray_local, tmp_path, capsys):
    suite, results = failing_suite(tmp_path), tmp_path / "results"
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["run", str(suite), "--results", str(results), "--mlflow", dead]) == 0
    err = capsys.readouterr().err
    assert len(load(results)) == 3
    warnings = [line for line in err.splitlines() if line.startswith("kdbench: warning:")]
    assert len(warnings) == 2  # at the start, and at the end with what to do later
    assert all("cannot reach the tracking server" in w for w in warnings)
    assert f"kdbench export {results} --mlflow {dead}" in warnings[1]


def test_bad_uris_and_a_missing_mlflow_are_one_line_errors(ran, tmp_path, monkeypatch, capsys):
    def fails(*args: str) -> str:
        assert main(list(args)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kdbench: error: "), err
        return err

    assert "MLflow foo://bar: " in fails("export", str(ran.results), "--mlflow", "foo://bar")
    dead = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    assert "cannot reach the tracking server" in fails("export", str(ran.results), "--mlflow", dead)
    assert time.monotonic() - t0 < 15  # no minutes of MLflow's retries
    assert "no such results directory" in fails(
        "export", str(tmp_path / "nothing"), "--mlflow", dead
    )
    # a URI kdbench run cannot use stops it before anything trains
    results = tmp_path / "results"
    assert "foo://bar" in fails(
        "run", str(ran.suite), "--results", str(results), "--mlflow", "foo://bar"
    )
    assert not list(results.glob("*/*.parquet"))

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    err = fails("export", str(ran.results), "--mlflow", dead)
    assert "pip install 'kdbench[mlflow]'" in err
