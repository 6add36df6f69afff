"""Suites: what loads, what is refused, and how the refusal reads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from kdbench.errors import KdbenchError, SuiteError
from kdbench.validation import load_suite
from tests.conftest import REPO, write_suite

GOOD = """\
name: example
datasets: [digits]
pairs:
  - {teacher: cnn_wide, student: cnn_tiny}
  - {teacher: {arch: cnn_wide, checkpoint: mine.pt}, student: cnn_small}
methods:
  - kd
  - {name: kd, label: kd_t8, params: {T: 8}}
  - {name: kd, label: kd_wide_t, search: {T: [1, 30, log]}}
seeds: [0, 1, 2]
budget: {epochs: 30, batch_size: 64, optimizer: sgd, lr: 0.05, momentum: 0.9,
         weight_decay: 5.0e-4, schedule: {step: [10, 20], gamma: 0.1}}
data: {val_fraction: 0.1, augment: true, root: null}
teacher: {epochs: 30, seed: 0}
tuning: {trials: 8, seed: 100, pruner: median, timeout_s: null, storage: null}
resources: {cpus_per_trial: 1, gpus_per_trial: 0, teacher: {cpus: 1, gpus: 0}}
"""


@pytest.fixture
def good_suite(tmp_path):
    import torch

    # Validation loads a checkpoint (weights only): a placeholder would be refused.
    torch.save({"w": torch.zeros(1)}, tmp_path / "mine.pt")
    return write_suite(tmp_path, GOOD)


def test_good_suite_loads_into_frozen_dataclasses(good_suite):
    s = load_suite(good_suite)
    assert s.name == "example"
    assert [m.label for m in s.methods] == ["scratch", "kd", "kd_t8", "kd_wide_t"]
    assert dict(s.methods[2].params) == {"T": 8.0}
    assert s.methods[3].search[0][1].log is True
    assert s.pairs[1].teacher.checkpoint == str((good_suite.parent / "mine.pt").resolve())
    assert s.budget.schedule.milestones == (10, 20)
    with pytest.raises(AttributeError):
        s.name = "other"  # type: ignore[misc]


def test_defaults_fill_everything_not_required(tmp_path):
    s = load_suite(
        write_suite(
            tmp_path,
            "name: q\ndatasets: [digits]\npairs: "
            "[{teacher: cnn_wide, student: cnn_tiny}]\nmethods: [kd]\nseeds: [0]\n",
        )
    )
    assert (
        s.budget.epochs == 30 and s.budget.optimizer == "sgd" and s.budget.schedule.kind == "cosine"
    )
    assert s.data.val_fraction == 0.1 and s.tuning.trials == 8 and s.resources.trial.cpus == 1
    assert s.to_dict()["budget"]["lr"] == 0.05


def test_hash_is_stable_and_follows_content(good_suite, tmp_path):
    a = load_suite(good_suite)
    b = load_suite(write_suite(tmp_path, GOOD, "b.yaml"))
    c = load_suite(write_suite(tmp_path, GOOD.replace("lr: 0.05", "lr: 0.1"), "c.yaml"))
    assert a.sha256() == b.sha256() != c.sha256()


@pytest.mark.slow
def test_shipped_suites_validate():
    for path in sorted((REPO / "suites").glob("*.yaml")):
        load_suite(path)


BASE = {
    "name": "name: bad",
    "datasets": "datasets: [digits]",
    "pairs": "pairs: [{teacher: cnn_wide, student: cnn_tiny}]",
    "methods": "methods: [kd]",
    "seeds": "seeds: [0, 1]",
}


def suite_with(**replace: str) -> str:
    parts = {**BASE, **replace}
    return "\n".join(v for v in parts.values() if v) + "\n"


# (replacements, key in the message, other fragments the message must contain)
BAD = {
    "unknown top-level key": (
        dict(extra="budgett: {epochs: 3}"),
        "budgett",
        ["unknown key", "did you mean 'budget'"],
    ),
    "unknown nested key": (
        dict(extra="budget: {epoch: 3}"),
        "budget.epoch",
        ["did you mean 'epochs'"],
    ),
    "unknown dataset": (
        dict(datasets="datasets: [digitz]"),
        "datasets[0]",
        ["'digitz'", "valid:", "did you mean 'digits'"],
    ),
    "unknown teacher model": (
        dict(pairs="pairs: [{teacher: cnn_wid, student: cnn_tiny}]"),
        "pairs[0].teacher",
        ["'cnn_wid'", "cnn_wide"],
    ),
    "unknown student model": (
        dict(pairs="pairs: [{teacher: cnn_wide, student: resnet}]"),
        "pairs[0].student",
        ["'resnet'", "valid:"],
    ),
    "unknown method": (
        dict(methods="methods: [kdd]"),
        "methods[0].name",
        ["'kdd'", "did you mean 'kd'"],
    ),
    "unknown method in a combination": (
        dict(methods="methods: [kd+fitnett]"),
        "methods[0].name",
        ["'fitnett'"],
    ),
    "scratch in a combination": (
        dict(methods="methods: [scratch+kd]"),
        "methods[0].name",
        ["cannot be combined"],
    ),
    "wrong type": (
        dict(extra="budget: {epochs: ten}"),
        "budget.epochs",
        ["'ten'", "not an integer"],
    ),
    "bool for a number": (dict(extra="budget: {lr: true}"), "budget.lr", ["True"]),
    "empty list": (dict(seeds="seeds: []"), "seeds", ["empty"]),
    "not a list": (dict(datasets="datasets: digits"), "datasets", ["expected a list"]),
    "zero epochs": (dict(extra="budget: {epochs: 0}"), "budget.epochs", ["0", "≥ 1"]),
    "zero batch size": (dict(extra="budget: {batch_size: 0}"), "budget.batch_size", ["≥ 1"]),
    "negative lr": (dict(extra="budget: {lr: -0.1}"), "budget.lr", ["-0.1", "> 0"]),
    "unknown optimizer": (
        dict(extra="budget: {optimizer: sgdd}"),
        "budget.optimizer",
        ["'sgdd'", "did you mean 'sgd'"],
    ),
    "unknown schedule": (
        dict(extra="budget: {schedule: linear}"),
        "budget.schedule",
        ["'linear'", "cosine"],
    ),
    "decreasing milestones": (
        dict(extra="budget: {schedule: {step: [20, 10]}}"),
        "budget.schedule.step",
        ["increasing"],
    ),
    "negative temperature": (
        dict(methods="methods: [{name: kd, params: {T: -1}}]"),
        "methods[0].params.T",
        ["-1", "outside"],
    ),
    "zero temperature": (
        dict(methods="methods: [{name: kd, params: {T: 0}}]"),
        "methods[0].params.T",
        ["outside", "(0, inf)"],
    ),
    "unknown hyperparameter": (
        dict(methods="methods: [{name: kd, params: {temp: 4}}]"),
        "methods[0].params.temp",
        ["valid: T, alpha, gamma"],
    ),
    "bad search range": (
        dict(methods="methods: [{name: kd, search: {T: [10, 1]}}]"),
        "methods[0].search.T",
        ["below"],
    ),
    "log range from zero": (
        dict(methods="methods: [{name: kd, search: {alpha: [0, 1, log]}}]"),
        "methods[0].search.alpha",
        ["log range"],
    ),
    "params and search on one key": (
        dict(methods="methods: [{name: kd, params: {T: 4}, search: {T: [1, 8]}}]"),
        "methods[0].search.T",
        ["fixed in params"],
    ),
    "duplicate dataset": (
        dict(datasets="datasets: [digits, digits]"),
        "datasets[1]",
        ["duplicates datasets[0]"],
    ),
    "duplicate pair": (
        dict(
            pairs="pairs: [{teacher: cnn_wide, student: cnn_tiny}, {teacher: cnn_wide, student: cnn_tiny}]"
        ),
        "pairs[1]",
        ["duplicates pairs[0]"],
    ),
    "duplicate method": (dict(methods="methods: [kd, kd]"), "methods[1]", ["label"]),
    "duplicate seed": (dict(seeds="seeds: [0, 0]"), "seeds[1]", ["duplicates seeds[0]"]),
    "negative seed": (dict(seeds="seeds: [-1]"), "seeds[0]", ["≥ 0"]),
    "missing required key": (dict(seeds=""), "seeds", ["required"]),
    "val fraction of one": (dict(extra="data: {val_fraction: 1.0}"), "data.val_fraction", ["< 1"]),
    "unknown pruner": (
        dict(extra="tuning: {pruner: medain}"),
        "tuning.pruner",
        ["did you mean 'median'"],
    ),
    "missing checkpoint": (
        dict(pairs="pairs: [{teacher: {arch: cnn_wide, checkpoint: nope.pt}, student: cnn_tiny}]"),
        "pairs[0].teacher.checkpoint",
        ["'nope.pt'", "not a file"],
    ),
    "bad suite name": (dict(name="name: 'a/b'"), "name", ["'a/b'"]),
    "GPU as a custom resource": (
        dict(extra="resources: {custom: {GPU: 1}}"),
        "resources.custom.GPU",
        ["not a custom resource"],
    ),
    "custom resource of zero": (
        dict(extra="resources: {teacher: {custom: {a100: 0}}}"),
        "resources.teacher.custom.a100",
        ["must be > 0"],
    ),
    "custom resources as a list": (
        dict(extra="resources: {custom: [a100]}"),
        "resources.custom",
        ["expected a mapping"],
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_suite_is_refused_with_file_key_and_value(tmp_path, case):
    replace, key, fragments = BAD[case]
    path = write_suite(tmp_path, suite_with(**replace))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}: "), msg
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write_suite(tmp_path, "name: x\ndatasets: [digits\npairs: []\n")
    with pytest.raises(KdbenchError, match=rf"^{path}: line \d+, column \d+: YAML syntax error"):
        load_suite(path)


def test_a_key_given_twice_is_refused(tmp_path):
    path = write_suite(tmp_path, suite_with(extra="seeds: [3]"))
    with pytest.raises(KdbenchError, match=r"line 6.*key 'seeds' is given twice"):
        load_suite(path)


def test_yaml_cannot_construct_objects(tmp_path):
    path = write_suite(tmp_path, suite_with(name="name: !!python/object/apply:os.system ['true']"))
    with pytest.raises(KdbenchError, match="YAML syntax error"):
        load_suite(path)


@pytest.mark.slow
def test_validate_command_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad = write_suite(tmp_path, suite_with(datasets="datasets: [digitz]"))
    good = write_suite(tmp_path, suite_with(), "good.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "kdbench", "validate", str(good), str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert f"ok: {good}" in proc.stdout and "trials (1 teacher" in proc.stdout
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "did you mean 'digits'" in proc.stderr


@pytest.mark.slow
def test_run_with_a_bad_suite_exits_2_before_anything_runs(tmp_path):
    bad = write_suite(tmp_path, textwrap.dedent(suite_with(extra="budget: {epochs: -3}")))
    proc = subprocess.run(
        [sys.executable, "-m", "kdbench", "run", str(bad), "--results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("kdbench: error: ") and "budget.epochs" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_custom_resources_and_gpu_type_reach_the_trials_ray_options(tmp_path):
    from kdbench.plan import expand
    from kdbench.scheduler.tasks import options

    text = suite_with(
        extra="resources: {gpus_per_trial: 0.5, custom: {fast_disk: 1, a100: 0.5},"
        " accelerator_type: A100, teacher: {gpus: 1, custom: {big_mem: 2}}}"
    )
    s = load_suite(write_suite(tmp_path, text))
    plan = expand(s)
    student = options(plan.finals[0])
    assert student["num_gpus"] == 0.5 and student["accelerator_type"] == "A100"
    assert student["resources"] == {"a100": 0.5, "fast_disk": 1.0}
    teacher = options(plan.teachers[0])
    assert teacher["resources"] == {"big_mem": 2.0} and "accelerator_type" not in teacher
    # resources do not change what a trial is
    plain = expand(load_suite(write_suite(tmp_path, suite_with(), "plain.yaml")))
    assert [t.trial_id for t in plan.trials] == [t.trial_id for t in plain.trials]
    # the resolved suite written with each run keeps them as a mapping
    assert s.to_dict()["resources"]["custom"] == {"a100": 0.5, "fast_disk": 1.0}


def test_a_method_entry_can_name_the_pairs_it_runs_on():
    from kdbench.plan import expand
    from kdbench.validation import parse_suite

    raw = {
        "name": "two",
        "datasets": ["digits"],
        "pairs": [
            {"teacher": "cnn_wide", "student": "cnn_tiny"},
            {"teacher": "cnn_wide", "student": "convnet3"},
        ],
        "methods": ["kd", {"name": "dd_random", "pairs": ["cnn_wide->convnet3"]}],
        "seeds": [0],
        "tuning": {"trials": 0},
    }
    suite = parse_suite(raw)
    keys = [c.key for c in expand(suite).cells]
    assert keys == [
        "digits/cnn_wide->cnn_tiny/scratch",
        "digits/cnn_wide->cnn_tiny/kd",
        "digits/cnn_wide->convnet3/scratch",
        "digits/cnn_wide->convnet3/kd",
        "digits/cnn_wide->convnet3/dd_random",
    ]
    again = parse_suite(suite.to_dict())  # the resolved suite says it too
    assert again.methods == suite.methods and again.sha256() == suite.sha256()
    raw["methods"] = [{"name": "kd", "pairs": ["cnn_wide->cnn_tin"]}]
    with pytest.raises(SuiteError, match=r"methods\[0\]\.pairs\[0\]: 'cnn_wide->cnn_tin' is not"):
        parse_suite(raw)


PAIRED = """\
name: paired
datasets: [digits]
pairs:
  - {teacher: cnn_wide, student: cnn_tiny}
  - {teacher: cnn_wide, student: resnet8}
methods:
  - {name: kd, pairs: [cnn_wide->cnn_tiny]}
  - {name: kd, label: kd_t8, params: {T: 8}, pairs: [cnn_wide->resnet8]}
seeds: [0]
"""


def test_a_method_that_cannot_pair_two_models_is_refused_naming_both(tmp_path, monkeypatch):
    """Validation builds each pair on the meta device and asks the method; the refusal names
    the entry, the method, both models, the data set and what is missing."""
    from kdbench.methods import METHODS

    seen = []

    def pairing(cls, student, teacher, hp):
        seen.append(([tuple(f.shape) for f in student.feats], hp["T"]))
        wide = student.feats[-1].shape[1] == 64
        return "the student's last block has 64 channels" if wide else None

    monkeypatch.setattr(METHODS.get("kd"), "pairing", classmethod(pairing))
    path = write_suite(tmp_path, PAIRED)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    msg = str(err.value)
    assert "methods[1]" in msg and "'kd' cannot distil cnn_wide → resnet8 on digits" in msg
    assert msg.endswith("the student's last block has 64 channels")
    # real shapes at digits' 1×8×8, each entry with its own T, asked only about its pairs
    assert [hp for _, hp in seen] == [4.0, 8.0]
    assert seen[1][0] == [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]


def test_methods_that_pair_anything_build_no_model(tmp_path, monkeypatch):
    import kdbench.validation as suite_module

    monkeypatch.setattr(suite_module, "_probe", lambda *a: pytest.fail("built a model"))
    assert [m.label for m in load_suite(write_suite(tmp_path, PAIRED)).methods][1:] == [
        "kd",
        "kd_t8",
    ]


def test_one_label_may_carry_per_pair_settings_on_disjoint_pairs(tmp_path):
    """mdistiller sets DKD's β per pair: entries of one method share a label when their
    pairs do not overlap, so each cell still has one entry and matches the published `dkd`."""
    text = PAIRED.replace(
        """  - {name: kd, pairs: [cnn_wide->cnn_tiny]}
  - {name: kd, label: kd_t8, params: {T: 8}, pairs: [cnn_wide->resnet8]}""",
        """  - {name: dkd, params: {beta: 8}, pairs: [cnn_wide->cnn_tiny]}
  - {name: dkd, params: {beta: 2}, pairs: [cnn_wide->resnet8]}""",
    )
    s = load_suite(write_suite(tmp_path, text))
    assert [(m.label, dict(m.params)["beta"]) for m in s.methods[1:]] == [
        ("dkd", 8.0),
        ("dkd", 2.0),
    ]
    from kdbench.plan import cells

    dkd = [c for c in cells(s) if c.method.label == "dkd"]
    assert {(c.pair.student, dict(c.method.params)["beta"]) for c in dkd} == {
        ("cnn_tiny", 8.0),
        ("resnet8", 2.0),
    }

    overlapping = text.replace("pairs: [cnn_wide->resnet8]}", "}")
    with pytest.raises(SuiteError, match=r"methods\[1\].*both run on cnn_wide->cnn_tiny"):
        load_suite(write_suite(tmp_path, overlapping))


def test_a_number_yaml_reads_as_text_is_refused_with_the_fix(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-5` as a string: the refusal says how to write it."""
    path = write_suite(tmp_path, suite_with(methods="methods: [{name: ofd, params: {beta: 1e-5}}]"))
    with pytest.raises(
        SuiteError, match=r"methods\[0\]\.params\.beta: '1e-5' is text to YAML.*1\.0e-5"
    ):
        load_suite(path)
    ok = write_suite(tmp_path, suite_with(methods="methods: [{name: ofd, params: {beta: 1.0e-5}}]"))
    assert dict(load_suite(ok).methods[1].params)["beta"] == 1.0e-5
