"""A shared results directory holds untrusted files: what each output and reader does with them."""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import warnings
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from kdbench.errors import KdbenchError
from kdbench.results import files, load, store
from kdbench.results.charts import Bar, bar_chart
from kdbench.results.formats import FORMATS
from kdbench.results.layout import Layout
from kdbench.results.leaderboard import leaderboard
from kdbench.results.render import PAIR_SHOWN, render
from kdbench.results.report import build_report
from tests.conftest import write_suite
from tests.test_leaderboard import final
from tests.test_results import row

SCRIPT = "<script>alert(1)</script>"
MARKUP = (
    f"{SCRIPT}<img src=x onerror=alert(2)> & \" ' \\input{{x}} % $ # _ {{ }} ~ ^ "
    "| `code` **b** [l](javascript:x)\nnext line\r\x1b[2J"
)


# ----------------------------------------------------------------------------- 1: escaping


class _Tags(HTMLParser):
    """Every element and attribute a browser would build from a page, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table"}
PAGE_TAGS |= {"thead", "tbody", "tr", "th", "td", "strong", "figure", "figcaption", "img"}
SVG_TAGS = {"svg", "rect", "line", "text", "circle", "path", "title"}


def _parsed(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    return tags


def _assert_inert_html(page: str) -> None:
    assert "<script" not in page.lower() and "<img src=x" not in page.lower()
    tags = _parsed(page)
    assert tags.tags <= PAGE_TAGS | SVG_TAGS, tags.tags - PAGE_TAGS - SVG_TAGS
    assert not {a for a in tags.attributes if a.startswith("on")}
    assert SCRIPT in "".join(tags.text)  # shown as text, not dropped


def _markup_dicts() -> list[dict]:
    pair = {"dataset": f"d{MARKUP}", "teacher": f"t{MARKUP}", "student": f"s{MARKUP}"}
    methods = ["scratch", "kd", MARKUP]
    return [
        {**final("teacher", 0, 0.95, **pair), "phase": "teacher", "student": None},
        *(
            final(m, seed, 0.8 + seed / 100 + i / 10, **pair)
            for i, m in enumerate(methods)
            for seed in range(3)
        ),
    ]


def _markup_rows() -> pd.DataFrame:
    return pd.DataFrame(_markup_dicts())


def _unescaped(pattern: str, line: str) -> int:
    """How many times ``pattern`` stands not escaped by a backslash (an even run before it)."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*" + pattern, line))


def _assert_markdown_tables_keep_their_columns(text: str) -> None:
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        if lines[0].startswith("|"):
            cells = {_unescaped(r"\|", line) for line in lines}
            assert len(cells) == 1 and all(line.endswith(" |") for line in lines), block
        else:
            assert len(lines) == 1, block  # a heading or the footnote, on one line
    ours = text.strip().split("\n\n")[-1]  # the footnote: the only text not from rows
    values = text.replace(ours, "")
    assert _unescaped("<", values) == 0 and _unescaped("`", values) == 0


def _assert_latex_tables_keep_their_columns(text: str, rows: int) -> None:
    body = re.findall(r"\\midrule\n(.*?)\n\\bottomrule", text, re.S)
    assert body and all(len(b.split("\n")) == rows for b in body)
    for line in "\n".join(body).split("\n"):
        assert _unescaped("&", line) == len(PAIR_SHOWN), line
    assert _unescaped(r"\{", text) == _unescaped(r"\}", text)
    assert "\\input{" not in text and "\\textbackslash{}input\\{x\\}" in text


def test_markup_in_rows_is_escaped_in_every_format():
    board = leaderboard(_markup_rows())
    assert MARKUP in set(board.pairs["method"])
    for fmt in FORMATS:
        text = render(board, fmt)
        assert "\x1b" not in text or fmt in ("csv", "json")  # those two keep values raw
        if fmt == "html":
            _assert_inert_html(text)
        elif fmt == "markdown":
            _assert_markdown_tables_keep_their_columns(text)
            assert "\\<script\\>alert(1)\\</script\\>" in text
        elif fmt == "latex":
            _assert_latex_tables_keep_their_columns(text, rows=3)
        elif fmt == "csv":
            back = pd.read_csv(io.StringIO(text), keep_default_na=False)
            assert len(back) == 3 and MARKUP in set(back["method"])  # raw values, quoted
        else:
            assert MARKUP in {p["method"] for p in json.loads(text)["pairs"]}


def test_markup_in_rows_is_escaped_in_the_report(tmp_path):
    rows = _markup_dicts()
    for i, r in enumerate(rows):
        store.write_trial(tmp_path, row(f"f{i}", suite=MARKUP, **r))
    for i, value in enumerate((1.0, 4.0, 16.0)):
        hp = json.dumps({MARKUP: value})
        tune = {**rows[3], "phase": "tune", "test_acc": None, "hparams": hp}
        store.write_trial(tmp_path, row(f"tune{i}", suite=MARKUP, val_acc=0.8 + i / 100, **tune))
    run = tmp_path / "_runs" / "r1"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"source": MARKUP, "git_sha": MARKUP}))
    page = build_report(tmp_path)
    assert page.count("<svg") == 4  # the pair's bars, cost, the one hyperparameter, the CD diagram
    _assert_inert_html(page)
    assert "\x1b" not in page


def test_a_value_that_is_not_finite_draws_no_bar():
    svg = bar_chart([Bar(SCRIPT, math.inf)], title=SCRIPT, ylabel="acc", lines=[("t", math.nan)])
    assert "no data" in svg and "<script" not in svg


# ----------------------------------------------------------------------------- 2: artifacts


def _images(path: Path, images: torch.Tensor | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = torch.rand(4, 1, 8, 8) if images is None else images
    torch.save({"images": images, "labels": torch.arange(len(images))}, path)
    return path


def test_artifacts_outside_the_results_directory_are_refused(tmp_path):
    from kdbench.results.artifacts import load_student, load_synthetic

    secret = _images(tmp_path / "outside" / "secret.pt")
    results = tmp_path / "results"
    _images(results / "_artifacts" / "synthetic" / "ok.pt")
    _images(results / "_artifacts" / "synthetic" / "flat.pt", torch.rand(3))
    (results / "_artifacts" / "synthetic" / "link.pt").symlink_to(secret)
    artifacts = {
        "absolute": str(secret),
        "climbs": "../outside/secret.pt",
        "symlink": "_artifacts/synthetic/link.pt",
        "flat": "_artifacts/synthetic/flat.pt",
        "inside": "_artifacts/synthetic/ok.pt",
    }
    for seed, (trial_id, artifact) in enumerate(artifacts.items()):
        store.write_trial(results, row(trial_id, method="dd_dm", seed=seed, artifact=artifact))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = build_report(results)
    said = sorted(str(w.message) for w in caught if str(w.message).startswith("trial "))
    outside = f"is outside the results directory {results}; not read"
    assert said[0] == f"trial absolute: artifact {secret} {outside}"
    assert said[1] == f"trial climbs: artifact ../outside/secret.pt {outside}"
    assert said[2].startswith("trial flat: artifact _artifacts/synthetic/flat.pt holds no images")
    assert said[2].endswith("; not embedded")
    assert said[3] == f"trial symlink: artifact _artifacts/synthetic/link.pt {outside}"
    assert len(said) == 4
    assert page.count("data:image/png;base64,") == 1
    for artifact in list(artifacts.values())[:3]:
        with pytest.raises(KdbenchError, match="outside the results directory"):
            load_synthetic(results, artifact)
    with pytest.raises(KdbenchError, match="outside the results directory"):
        load_student(results, "../../../outside/secret")
    layout = Layout(results)
    assert layout.inside(results / "_artifacts" / "new.pt") and not layout.inside(secret)


# ----------------------------------------------------------------------------- 4: foreign files


def _foreign(folder: Path, other: str = "other.parquet") -> dict[Path, bytes]:
    """A Parquet file of another schema, and a kdbench-looking one with a string ``val_acc``."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), folder / other)
    looks = store.to_table([row("looks_like_ours")]).to_pandas()
    looks["val_acc"] = "0.9"
    pq.write_table(pa.Table.from_pandas(looks, preserve_index=False), folder / "wrong_type.parquet")
    return {p: p.read_bytes() for p in (folder / other, folder / "wrong_type.parquet")}


def _assert_named_once(caught: list[warnings.WarningMessage], files: dict[Path, bytes]) -> None:
    said = [str(w.message) for w in caught if str(w.message).startswith("skipping ")]
    assert Counter(m.split(": ")[0] for m in said) == {f"skipping {p}": 1 for p in files}
    for m in said:
        assert re.fullmatch(
            r"skipping \S+: not a kdbench result file \((no schema_version, trial_id, phase, "
            r"status columns|column val_acc is (large_)?string, kdbench writes double)\); "
            r"left as it is",
            m,
        ), m


def test_foreign_parquet_files_are_skipped_named_once_and_never_touched(tmp_path):
    for seed in range(3):
        store.write_trial(tmp_path, row(f"a{seed}", seed=seed))
    foreign = _foreign(tmp_path / "trials")
    # another tool's file where this run's compacted file would go
    foreign |= _foreign(tmp_path / "compacted", other="r1.parquet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sorted(load(tmp_path)["trial_id"]) == ["a0", "a1", "a2"]
        assert "| kd |" in render(leaderboard(load(tmp_path)), "markdown")
        with files.RunLock(tmp_path):
            assert store.compact(tmp_path) == {"r1": 3}
            store.write_trial(tmp_path, row("a3", seed=3))
            assert store.compact(tmp_path) == {"r1": 1}
        assert sorted(store.finished_trials(tmp_path)) == ["a0", "a1", "a2", "a3"]
        assert "<h2>Overall" in build_report(tmp_path)
    assert {p: p.read_bytes() for p in foreign} == foreign
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == [
        "other.parquet",
        "wrong_type.parquet",
    ]
    assert len(pq.read_table(tmp_path / "compacted" / "r1-2.parquet")) == 4
    _assert_named_once(caught, foreign)


def test_a_run_folds_its_rows_and_leaves_foreign_files_alone(ray_local, tmp_path, monkeypatch):
    from kdbench.results import writer
    from kdbench.scheduler.driver import run_suite
    from kdbench.validation import load_suite

    monkeypatch.setattr(writer, "COMPACT_EVERY", 1)  # a fold in the background after each row
    suite = write_suite(
        tmp_path,
        yaml.safe_dump(
            {
                "name": "hardening",
                "datasets": ["synthetic"],
                "pairs": [{"teacher": "cnn_small", "student": "cnn_tiny"}],
                "methods": ["kd"],
                "seeds": [0],
                "budget": {"epochs": 1, "batch_size": 32},
                "teacher": {"epochs": 1},
                "tuning": {"trials": 0},
            }
        ),
    )
    results = tmp_path / "results"
    foreign = _foreign(results / "trials")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_suite(load_suite(suite), results, live=False)
        rows = load(results)
        render(leaderboard(rows), "html")
    assert summary.ran == len(rows) == 3 and set(rows["status"]) == {"ok"}
    assert {p: p.read_bytes() for p in foreign} == foreign
    assert sorted(p.name for p in (results / "trials").iterdir()) == sorted(p.name for p in foreign)
    _assert_named_once(caught, foreign)


# ----------------------------------------------------------------------------- 6: killed writes


def test_temporary_files_a_killed_writer_left_are_never_read_and_swept(tmp_path):
    for seed in range(2):
        store.write_trial(tmp_path, row(f"a{seed}", seed=seed))
    store.compact(tmp_path)
    whole = (tmp_path / "compacted" / "r1.parquet").read_bytes()
    # what SIGKILL leaves: atomic_file's temporary files, whole Parquet files of these rows
    left = [
        tmp_path / "compacted" / ".r1.parquet.k1ll3d00.tmp",
        tmp_path / "trials" / ".a0.parquet.k1ll3d01.tmp",
        tmp_path / "_cache" / "teachers" / ".t.pt.k1ll3d02.tmp",
        tmp_path / "_artifacts" / "students" / ".s.pt.k1ll3d03.tmp",
        tmp_path / "_runs" / "r1" / "curves" / ".a0.parquet.k1ll3d04.tmp",
    ]
    kept = [tmp_path / "trials" / ".keep", tmp_path / "_runs" / "r1" / "notes.tmp"]
    for path in left + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(whole)
    assert sorted(pd.read_parquet(tmp_path)["trial_id"]) == ["a0", "a1"]  # plain pyarrow
    assert sorted(load(tmp_path)["trial_id"]) == ["a0", "a1"]
    store.compact(tmp_path)  # only compactions write into compacted/: its leftovers go
    assert not left[0].exists() and all(p.exists() for p in left[1:])
    with files.RunLock(tmp_path):  # no writer at work anywhere: every leftover goes
        assert not any(p.exists() for p in left)
    assert all(p.exists() for p in kept)
    assert sorted(pd.read_parquet(tmp_path)["trial_id"]) == ["a0", "a1"]


def test_a_compaction_killed_before_its_trial_files_went_loses_no_row(tmp_path, monkeypatch):
    for seed in range(3):
        store.write_trial(tmp_path, row(f"a{seed}", seed=seed))
    unlink = Path.unlink

    def killed(self: Path, missing_ok: bool = False) -> None:
        if self.parent.name == "trials":
            raise KeyboardInterrupt("SIGKILL")
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        store.compact(tmp_path)
    monkeypatch.undo()
    # the window compact's docstring and the README state: each row twice, none missing
    assert sorted(pd.read_parquet(tmp_path)["trial_id"]) == ["a0", "a0", "a1", "a1", "a2", "a2"]
    assert sorted(load(tmp_path)["trial_id"]) == ["a0", "a1", "a2"]
    with files.RunLock(tmp_path):
        assert store.compact(tmp_path) == {"r1": 3}
    assert sorted(pd.read_parquet(tmp_path)["trial_id"]) == ["a0", "a1", "a2"]


def test_load_lists_again_when_a_compaction_removed_files_under_it(tmp_path, monkeypatch):
    for seed in range(2):
        store.write_trial(tmp_path, row(f"a{seed}", seed=seed))
    listed = store.result_files(tmp_path)  # then a compaction folds and removes them
    store.compact(tmp_path)
    listings = iter([listed])
    real = store.result_files
    monkeypatch.setattr(store, "result_files", lambda d: next(listings, None) or real(d))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(load(tmp_path)["trial_id"]) == ["a0", "a1"]


def test_a_row_cannot_choose_where_compaction_writes(tmp_path):
    results = tmp_path / "results"
    store.write_trial(results, row("a", run_id="../../escaped"))
    store.write_trial(results, row("b", run_id=str(tmp_path / "absolute")))
    store.compact(results)
    assert {p.parent for p in tmp_path.rglob("*.parquet")} == {results / "compacted"}
    assert sorted(load(results)["run_id"]) == sorted(["../../escaped", str(tmp_path / "absolute")])


def test_hyperparameters_that_are_not_a_json_object_do_not_stop_a_read(tmp_path):
    store.write_trial(tmp_path, row("a", hparams="not json"))
    store.write_trial(tmp_path, row("b", hparams="[1, 2]"))
    store.write_trial(tmp_path, row("c"))
    df = load(tmp_path).set_index("trial_id")
    assert df.loc["c", "hp_T"] == 4.0 and df.loc[["a", "b"], "hp_T"].isna().all()
    assert len(leaderboard(df.reset_index()).pairs) == 1


# ----------------------------------------------------------------------------- 7: permissions


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_result_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        trial = store.write_trial(tmp_path, row("a"))
        trial_mode = stat.S_IMODE(trial.stat().st_mode)
        store.compact(tmp_path)
        record = tmp_path / "_runs" / "r1" / "run.json"
        store.write_json_atomic({"source": "x"}, record)
        weights = tmp_path / "_cache" / "teachers" / "t.pt"
        with files.atomic_file(weights) as f:
            f.write(b"weights")
    finally:
        os.umask(old)
    assert trial_mode == mode
    for path in (tmp_path / "compacted" / "r1.parquet", record, weights):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_a_file_replaced_after_its_footer_was_read_is_read_afresh(tmp_path, monkeypatch):
    store.write_trial(tmp_path, row("a", status="failed", error="short"))
    own = store._own

    def then_replaced(paths, filesystem=None):
        found = own(paths, filesystem)  # footers read: now a compaction rewrites the file
        store.write_trial(tmp_path, row("a", status="ok", error="long " * 1000))
        return found

    monkeypatch.setattr(store, "_own", then_replaced)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = load(tmp_path)
    assert list(df["status"]) == ["ok"] and df["error"].str.startswith("long").all()
