"""Results at an object-store URI: a real S3 server (moto's) on 127.0.0.1, spoken to through
pyarrow's S3 file system exactly as a bucket on AWS would be."""

from __future__ import annotations

import socket

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from kdbench.errors import KdbenchError
from kdbench.results import load, read_table
from kdbench.results.remote import Mirror, list_files
from kdbench.scheduler.driver import run_suite
from kdbench.validation import load_suite
from tests.conftest import write_suite


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "kdbench",
        "AWS_SECRET_ACCESS_KEY": "kdbench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch_module.setenv(key, value)
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir("bench")
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def uri(endpoint: str, prefix: str) -> str:
    return f"s3://bench/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def tiny_suite(tmp_path):
    return load_suite(
        write_suite(
            tmp_path,
            yaml.safe_dump(
                {
                    "name": "remote",
                    "datasets": ["synthetic"],
                    "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
                    "methods": ["kd", {"name": "kd", "label": "kd_tuned", "search": {"T": [1, 8]}}],
                    "seeds": [0],
                    "budget": {"epochs": 1, "batch_size": 64},
                    "teacher": {"epochs": 1},
                    "tuning": {"trials": 2},
                }
            ),
        )
    )


@pytest.mark.slow
def test_a_run_writes_to_s3_and_resumes_from_there_on_another_machine(
    ray_local, s3, tmp_path, monkeypatch
):
    where = uri(s3, "runs/a")
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "machine1"))
    suite = tiny_suite(tmp_path)
    first = run_suite(suite, where, live=False)
    # the teacher, scratch, and two tuned cells of 2 tuning trials and 1 final each
    assert first.ran == 8 and first.failed == 0

    # The rows are read where they lie, with pandas, by anyone with the URI.
    rows = load(where)
    assert len(rows) == 8 and set(rows["status"]) == {"ok"}
    assert rows["phase"].value_counts().to_dict() == {"tune": 4, "final": 3, "teacher": 1}
    fs, base = pafs.FileSystem.from_uri(where)
    stored = list_files(fs, base)
    # compacted into one file per run: the per-trial files were deleted there too
    assert not [p for p in stored if p.startswith("trials/")]
    assert [p for p in stored if p.startswith("compacted/")]
    assert [p for p in stored if p.startswith("_cache/teachers/")]  # the teacher's weights
    assert "_studies/journal.log" in stored  # the study, to resume tuning from
    assert [p for p in stored if p.endswith("/run.json")]
    assert [p for p in stored if p.startswith("_artifacts/students/")]

    # The command line reads it too: the leaderboard where it lies, the report from a copy.
    from kdbench.cli import main

    assert main(["leaderboard", where, "--format", "csv", "-o", str(tmp_path / "lb.csv")]) == 0
    assert "kd_tuned" in (tmp_path / "lb.csv").read_text()
    assert main(["report", where, "-o", str(tmp_path / "report.html")]) == 0
    assert "kd_tuned" in (tmp_path / "report.html").read_text()

    # Another machine (an empty cache) resumes from the bucket alone: nothing left to run.
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "machine2"))
    again = run_suite(suite, where, live=False)
    assert again.ran == 0 and again.skipped == first.ran
    assert (tmp_path / "machine2").is_dir()


@pytest.mark.slow
def test_a_rerun_runs_only_what_the_bucket_lacks(ray_local, s3, tmp_path, monkeypatch):
    """The bucket, not any machine's copy, says what is done: with the teacher's row deleted
    there, a rerun from a fresh machine retrains the teacher alone and keeps every other row."""
    where = uri(s3, "runs/b")
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "c1"))
    suite = tiny_suite(tmp_path)
    run_suite(suite, where, live=False)
    table = read_table(where)
    teacher_id = next(r["trial_id"] for r in table.to_pylist() if r["phase"] == "teacher")

    # drop the teacher's row from the compacted file in the bucket, through the mirror
    mirror = Mirror(where, local=tmp_path / "edit")
    mirror.pull()
    (path,) = (tmp_path / "edit" / "compacted").glob("*.parquet")
    t = pq.read_table(path)
    pq.write_table(t.filter(pc.not_equal(t.column("trial_id"), teacher_id)), path)
    mirror.sync()
    assert teacher_id not in set(read_table(where).column("trial_id").to_pylist())

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "c2"))
    rerun = run_suite(suite, where, live=False)
    assert rerun.ran == 1 and rerun.rows[0]["trial_id"] == teacher_id
    assert len(load(where)) == 8


def test_an_unknown_uri_is_refused_in_one_line(tmp_path):
    with pytest.raises(KdbenchError) as err:
        load("nosuch://bucket/x")
    assert str(err.value).startswith("nosuch://bucket/x: cannot open this results location")
    assert "\n" not in str(err.value)


def test_a_uri_with_nothing_there_says_so(s3):
    with pytest.raises(KdbenchError, match=r"no results there"):
        load(uri(s3, "runs/none"))
