"""Hostile or absurd suites: each is refused before anything runs, in one line that names the
file, the key or value and what to do, and through the command line with exit status 2 and
no traceback."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from kdbench.errors import KdbenchError, SuiteError
from kdbench.spec import MAX_SEED, Budget, TeacherConfig, TuningConfig
from kdbench.spec.messages import show as _show
from kdbench.validation import load_suite, parse_suite
from tests.conftest import REPO

PAIR = "pairs: [{teacher: cnn_wide, student: cnn_tiny}]"


def suite(name: str = "x", methods: str = "[kd]", seeds: str = "[0]", extra: str = "") -> str:
    return f"name: {name}\ndatasets: [digits]\n{PAIR}\nmethods: {methods}\nseeds: {seeds}\n" + extra


def laughs(use: str) -> str:
    """A "billion laughs" suite: nine aliases of ten make 10**9 strings from a few lines."""
    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        prev, cur = chr(96 + i), chr(97 + i)
        levels.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    # The anchors sit in an unknown top-level key: the aliases are what is refused.
    return "lol: {" + ", ".join(levels) + "}\n" + use


class Touch:
    """A pickle that runs code when loaded: it opens (creates) ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def checkpoint_suite(ckpt: str) -> str:
    pair = f"pairs: [{{teacher: {{arch: cnn_wide, checkpoint: {ckpt}}}, student: cnn_tiny}}]"
    return suite().replace(PAIR, pair)


# name -> (the file's content, the message after "FILE: ")
CASES: dict[str, tuple[str | bytes, str]] = {
    # 3. aliases expanded without bound; files larger than any suite
    "laughs in name": (
        laughs(suite(name="*j")),
        "the suite expands to more than 100000 YAML nodes (an alias counts once for every "
        "use); write it out without aliases that multiply",
    ),
    "laughs in a param": (
        laughs(suite(methods="[{name: kd, params: {T: *j}}]")),
        "the suite expands to more than 100000 YAML nodes (an alias counts once for every "
        "use); write it out without aliases that multiply",
    ),
    "alias inside its own anchor": (
        suite(name="&r [*r]"),
        "line 1, column 7: YAML syntax error: an alias is used inside its own anchor",
    ),
    "file over 1 MiB": (
        suite() + "# padding\n" * 110_000,
        "larger than 1 MiB; a suite is a short YAML text file (is this the right file?)",
    ),
    "6.5 million seeds in a file": (
        suite(seeds="[" + ", ".join(["0"] * 6_500_000) + "]"),
        "larger than 1 MiB; a suite is a short YAML text file (is this the right file?)",
    ),
    # 5. labels that give one trial id
    "labels kd+x and kd_plus_x": (
        suite(methods="[{name: kd, label: kd+x}, {name: kd, label: kd_plus_x}]"),
        "methods[1]: 'kd_plus_x' reads as 'kd+x' (methods[0]) in trial ids ('kd_plus_x'); "
        "give one of them a distinct label",
    ),
    "labels that differ in case alone": (
        suite(methods="[{name: kd, label: KD}, kd]"),
        "methods[1]: 'kd' reads as 'KD' (methods[0]) in trial ids ('KD', case aside); "
        "give one of them a distinct label",
    ),
    "labels k\\n and k_": (
        suite(methods='[{name: kd, label: "k\\n"}, {name: kd, label: k_}]'),
        "methods[0].label: 'k\\n' must be letters, digits, '_', '.', '-' or '+'",
    ),
    # 8. binary, non-UTF-8, integers too large for their field
    "not UTF-8": (
        b"\x80\x04\x95binary" + suite().encode(),
        "not UTF-8 text (byte 0x80 at offset 0); a suite is a YAML text file saved as UTF-8",
    ),
    "a NUL character": (
        "name: a\x00b\n",
        "character #x0000 at position 7 is not allowed in YAML; a suite is a text file",
    ),
    "epochs of 400 digits": (
        suite(extra="budget: {epochs: " + "7" * 400 + "}\n"),
        "budget.epochs: an integer of 400 digits must be ≤ 100000",
    ),
    "an integer of 5000 digits": (
        suite(extra="budget: {lr: " + "7" * 5000 + "}\n"),
        "line 6, column 14: YAML syntax error: cannot read "
        "'777777777777777777777777777777777777777777777777777777777...': "
        "too many digits for any setting",
    ),
    "a param of 400 digits": (
        suite(methods="[{name: kd, params: {T: " + "7" * 400 + "}}]"),
        "methods[0].params.T: an integer of 400 digits is too large (float in (0, inf))",
    ),
    "a seed of 2**63": (
        suite(seeds=f"[0, {2**63}]"),
        "seeds[1]: 9223372036854775808 must be ≤ 4294967295 "
        "(numpy, which seeds Optuna's sampler, takes no seed of 2**32 or more)",
    ),
    "a tuning seed of 2**32": (
        suite(extra=f"tuning: {{seed: {2**32}}}\n"),
        "tuning.seed: 4294967296 must be ≤ 4294967295 "
        "(numpy, which seeds Optuna's sampler, takes no seed of 2**32 or more)",
    ),
    # 9. absurd sizes; names ending in a newline
    "tuning.trials of 10**12": (
        suite(extra=f"tuning: {{trials: {10**12}}}\n"),
        "tuning.trials: 1000000000000 must be ≤ 100000",
    ),
    "epochs of 10**12": (
        suite(extra=f"budget: {{epochs: {10**12}}}\n"),
        "budget.epochs: 1000000000000 must be ≤ 100000",
    ),
    "teacher epochs of 10**12": (
        suite(extra=f"teacher: {{epochs: {10**12}}}\n"),
        "teacher.epochs: 1000000000000 must be ≤ 100000",
    ),
    "batch_size of 10**12": (
        suite(extra=f"budget: {{batch_size: {10**12}}}\n"),
        "budget.batch_size: 1000000000000 must be ≤ 1000000",
    ),
    "10001 seeds": (
        suite(seeds="[" + ", ".join(map(str, range(10_001))) + "]"),
        "seeds: has 10001 entries; give at most 10000",
    ),
    "a name ending in a newline": (
        suite(name='"results/x\\n"'),
        "name: 'results/x\\n' must be letters, digits, '_', '.' or '-' (it names a directory)",
    ),
    "a name of 300 characters": (
        suite(name="n" * 300),
        "name: 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...' has 300 "
        "characters; give at most 100 (it names files and directories)",
    ),
    # 10. checkpoints that torch.load(weights_only=True) refuses
    "a pickle that runs code": (
        checkpoint_suite("evil.pt"),
        "pairs[0].teacher.checkpoint: {dir}/evil.pt: not a loadable weights-only checkpoint "
        "(UnpicklingError: ",
    ),
    "garbage bytes as a checkpoint": (
        checkpoint_suite("garbage.pt"),
        "pairs[0].teacher.checkpoint: {dir}/garbage.pt: not a loadable weights-only "
        "checkpoint (UnpicklingError: ",
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every case's suite file, beside the checkpoints they name."""
    root = tmp_path_factory.mktemp("hostile").resolve()
    torch.save({"w": Touch(root / "touched")}, root / "evil.pt")
    (root / "garbage.pt").write_bytes(b"\x00\x01 not a checkpoint")
    out = {}
    for i, (name, (content, _)) in enumerate(CASES.items()):
        path = root / f"case{i}.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        out[name] = path
    return out


def expected(name: str, path: Path) -> str:
    return f"{path}: " + CASES[name][1].format(dir=path.parent)


@pytest.fixture(scope="module")
def cli(files) -> dict[str, tuple[int | None, str, str]]:
    """Per case: `kdbench run FILE --dry-run`'s exit status and stderr, and the line
    `kdbench validate` printed for the file. `validate` is run once over every file;
    `run --dry-run` once per file through the command line's entry point, all in one process
    (a fresh interpreter per file would cost seconds each)."""
    paths = [str(p) for p in files.values()]
    validate = subprocess.run(
        [sys.executable, "-m", "kdbench", "validate", *paths],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert validate.returncode == 2 and "Traceback" not in validate.stderr, validate.stderr
    lines = validate.stderr.splitlines()
    assert len(lines) == len(paths), validate.stderr  # one line a file
    harness = textwrap.dedent("""
        import contextlib, io, json, sys, traceback
        from kdbench.cli import main
        out = []
        for path in sys.argv[1:]:
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = main(["run", path, "--dry-run", "--results", path + ".results"])
            except BaseException:
                rc = None
                err.write(traceback.format_exc())
            out.append([rc, err.getvalue()])
        print(json.dumps(out))
    """)
    runs = subprocess.run(
        [sys.executable, "-c", harness, *paths], capture_output=True, text=True, cwd=REPO
    )
    assert runs.returncode == 0, runs.stderr[-3000:]
    results = json.loads(runs.stdout.splitlines()[-1])
    return {
        name: (rc, stderr, line)
        for name, (rc, stderr), line in zip(files, results, lines, strict=True)
    }


def refused(name: str, files: dict[str, Path], cli: dict) -> str:
    """Assert the case's one-line refusal, in-process and through the command line."""
    path = files[name]
    with pytest.raises(KdbenchError) as err:
        load_suite(path)
    message = str(err.value)
    want = expected(name, path)
    assert message.startswith(want) if want.endswith(": ") else message == want, message
    assert "\n" not in message and len(message) < 600, message
    rc, stderr, line = cli[name]
    assert rc == 2 and "Traceback" not in stderr, stderr
    assert stderr == f"kdbench: error: {message}\n", stderr
    assert line == f"invalid: {message}", line
    assert not Path(f"{path}.results").exists()
    return message


@pytest.mark.slow
def test_billion_laughs_and_oversized_files_are_refused_before_they_are_built(files, cli):
    for name in (
        "laughs in name",
        "laughs in a param",
        "alias inside its own anchor",
        "file over 1 MiB",
        "6.5 million seeds in a file",
    ):
        start = time.perf_counter()
        refused(name, files, cli)
        assert time.perf_counter() - start < 2, name


def test_show_is_bounded_for_any_value():
    huge: object = ["lol"] * 10
    for _ in range(12):  # 10**13 strings, shared
        huge = [huge] * 10
    cycle: list = []
    cycle.append(cycle)
    start = time.perf_counter()
    shown = [
        _show(huge),
        _show({"k": huge}),
        _show(cycle),
        _show(10**5000),
        _show(7**400),
        _show("a\nb" * 10**6),
        _show(b"x" * 10**7),
    ]
    assert time.perf_counter() - start < 1
    assert all(len(s) <= 80 and "\n" not in s for s in shown), shown
    assert shown[0].startswith('[[[[[[[[[[[[["lol", "lol"') and shown[0].endswith("...")
    assert shown[3] == "an integer of about 5001 digits"
    assert shown[4] == "an integer of 339 digits"
    assert shown[5].startswith("'a\\nba\\nb")
    # what the messages of today show is unchanged
    assert _show("a/b") == "'a/b'" and _show([20, 10]) == "[20, 10]" and _show(True) == "True"
    assert _show({"a": 1, "b": [1, "x", None]}) == '{"a": 1, "b": [1, "x", null]}'


def test_a_huge_shared_structure_given_to_parse_suite_is_refused_in_a_short_line():
    huge: object = ["lol"] * 10
    for _ in range(12):
        huge = [huge] * 10
    base = {"name": "x", "datasets": ["digits"], "pairs": [{"teacher": "cnn_wide",
            "student": "cnn_tiny"}], "methods": ["kd"], "seeds": [0]}  # fmt: skip
    for over, key in (
        ({"name": huge}, "name"),
        ({"methods": [{"name": "kd", "params": {"T": huge}}]}, "methods[0].params.T"),
        ({"datasets": [huge]}, "datasets[0]"),
    ):
        with pytest.raises(SuiteError) as err:
            parse_suite({**base, **over})
        assert err.value.key == key and len(str(err.value)) < 400, str(err.value)


def test_labels_that_give_one_trial_id_are_refused_naming_both(files, cli):
    refused("labels kd+x and kd_plus_x", files, cli)
    refused("labels that differ in case alone", files, cli)
    refused("labels k\\n and k_", files, cli)


def test_data_set_and_model_names_that_read_alike_in_ids_are_refused(monkeypatch):
    """The registries take lower-case letters, digits and '_' only, so no two registered
    names read alike today; the check stands in case they ever take more."""
    from kdbench.data import DATASETS
    from kdbench.models import MODELS

    for registry in (DATASETS, MODELS):
        registry.load_plugins()
    monkeypatch.setitem(DATASETS._entries, "digits+", DATASETS._entries["digits"])
    monkeypatch.setitem(DATASETS._entries, "digits_plus_", DATASETS._entries["digits"])
    monkeypatch.setitem(MODELS._entries, "cnn tiny", MODELS._entries["cnn_tiny"])
    raw = {"name": "x", "methods": ["kd"], "seeds": [0]}
    pairs = [{"teacher": "cnn_wide", "student": "cnn_tiny"}]
    with pytest.raises(SuiteError) as err:
        parse_suite({**raw, "datasets": ["digits+", "digits_plus_"], "pairs": pairs})
    assert str(err.value) == (
        "<suite>: datasets[1]: 'digits_plus_' reads as 'digits+' (datasets[0]) in trial ids "
        "('digits_plus_'); name only one of them in a suite"
    )
    pairs.append({"teacher": "cnn_tiny", "student": "cnn tiny"})
    with pytest.raises(SuiteError) as err:
        parse_suite({**raw, "datasets": ["digits"], "pairs": pairs})
    assert str(err.value) == (
        "<suite>: pairs[1].student: 'cnn tiny' reads as 'cnn_tiny' (pairs[0].student) in "
        "trial ids ('cnn_tiny'); name only one of them in a suite"
    )


def test_binary_files_and_integers_too_large_for_their_field_are_refused(files, cli):
    for name in (
        "not UTF-8",
        "a NUL character",
        "epochs of 400 digits",
        "an integer of 5000 digits",
        "a param of 400 digits",
        "a seed of 2**63",
        "a tuning seed of 2**32",
    ):
        refused(name, files, cli)


def test_the_largest_seed_every_consumer_takes_is_accepted(tmp_path):
    import numpy as np

    path = tmp_path / "s.yaml"
    path.write_text(suite(seeds=f"[{MAX_SEED}]", extra=f"tuning: {{seed: {MAX_SEED - 1}}}\n"))
    s = load_suite(path)
    assert s.seeds == (MAX_SEED,) and s.tuning.seed == MAX_SEED - 1
    path.write_text(suite(seeds="[0]", extra=f"tuning: {{seed: {MAX_SEED}}}\n"))
    assert load_suite(path).tuning.seed == MAX_SEED
    torch.Generator().manual_seed(MAX_SEED)
    np.random.RandomState(MAX_SEED)  # what Optuna's TPE sampler seeds
    with pytest.raises(ValueError):
        np.random.RandomState(MAX_SEED + 1)


def test_absurd_sizes_are_refused_and_the_bounds_are_documented(files, cli):
    for name in (
        "tuning.trials of 10**12",
        "epochs of 10**12",
        "teacher epochs of 10**12",
        "batch_size of 10**12",
        "10001 seeds",
        "a name ending in a newline",
        "a name of 300 characters",
    ):
        refused(name, files, cli)
    docs = {
        f.name: f.metadata["setting"].doc
        for cls in (Budget, TeacherConfig, TuningConfig)
        for f in dataclasses.fields(cls)
    }
    assert "at most 100000" in docs["epochs"] and "at most 1000000" in docs["batch_size"]
    assert "at most 100000" in docs["trials"] and "at most 4294967295" in docs["seed"]


def test_a_6_5_million_seed_list_is_refused_at_once():
    seeds = list(range(6_500_000))
    raw = {"name": "x", "datasets": ["digits"], "pairs": [{"teacher": "cnn_wide",
           "student": "cnn_tiny"}], "methods": ["kd"], "seeds": seeds}  # fmt: skip
    parse_suite({**raw, "seeds": [0]})  # the imports are paid before the clock starts
    start = time.perf_counter()
    with pytest.raises(SuiteError, match=r"^<suite>: seeds: has 6500000 entries; give at most"):
        parse_suite(raw)
    assert time.perf_counter() - start < 0.5


def test_the_bounds_themselves_are_accepted(tmp_path):
    path = tmp_path / "s.yaml"
    extra = "budget: {epochs: 100000, batch_size: 1000000}\ntuning: {trials: 100000}\n"
    path.write_text(suite(seeds="[" + ", ".join(map(str, range(10_000))) + "]", extra=extra))
    s = load_suite(path)
    assert (s.budget.epochs, s.budget.batch_size, s.tuning.trials) == (100000, 1000000, 100000)
    assert len(s.seeds) == 10_000


@pytest.mark.slow
def test_a_checkpoint_weights_only_refuses_is_caught_by_validation_and_runs_nothing(
    files, cli, tmp_path
):
    marker = files["a pickle that runs code"].parent / "touched"
    refused("a pickle that runs code", files, cli)
    refused("garbage bytes as a checkpoint", files, cli)
    assert not marker.exists()  # validation (in-process, validate, run --dry-run) ran no code
    # A real run stops at the same line, before Ray starts and before its directory exists.
    results = tmp_path / "r"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdbench",
            "run",
            str(files["a pickle that runs code"]),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "pairs[0].teacher.checkpoint: " in proc.stderr
    assert not results.exists() and not marker.exists()
    # The payload is live: loaded without weights_only it does create its file.
    twin, live = tmp_path / "twin.pt", tmp_path / "live"
    torch.save({"w": Touch(live)}, twin)
    torch.load(twin, weights_only=False)["w"].close()
    assert live.exists()


def test_a_good_checkpoint_still_loads(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "mine.pt")
    path = tmp_path / "s.yaml"
    path.write_text(checkpoint_suite("mine.pt"))
    assert load_suite(path).pairs[0].teacher.checkpoint == str((tmp_path / "mine.pt").resolve())
