"""kdbench as an installed package, away from the checkout: the wheel holds the suites and the
published numbers, runs a shipped suite by name, and its command line answers at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from kdbench import shipped
from tests.conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, unpacked where nothing of the checkout is."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(REPO), "-w", str(out)],
        check=True, capture_output=True, cwd=out,
    )  # fmt: skip
    (wheel,) = out.glob("kdbench-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


# The checkout's editable install answers `import kdbench` before any path does: drop its
# finder, so that the unpacked wheel is what runs (checked by its __file__).
ONLY_THE_WHEEL = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]\n"
    "sys.path_importer_cache.clear()\n"
)


def outside(site: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m kdbench ARGS`` importing the unpacked wheel, from a folder with no suites."""
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("KDBENCH_REFERENCE", None)
    cwd = site.parent / "elsewhere"
    cwd.mkdir(exist_ok=True)
    code = (
        ONLY_THE_WHEEL + "import kdbench, runpy\n"
        f"assert kdbench.__file__.startswith({str(site)!r}), kdbench.__file__\n"
        "sys.argv[0] = 'kdbench'\n"
        "runpy.run_module('kdbench', run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_the_wheel_holds_every_suite_and_published_number(installed):
    assert sorted(p.name for p in (installed / "kdbench" / "suites").iterdir()) == sorted(
        p.name for p in (REPO / "suites").glob("*.yaml")
    )
    assert sorted(p.name for p in (installed / "kdbench" / "reference").glob("*.csv")) == sorted(
        p.name for p in (REPO / "results" / "reference").glob("*.csv")
    )
    code = ONLY_THE_WHEEL + "import kdbench.shipped as s; print(s.SUITES); print(s.reference_dir())"
    env = dict(os.environ, PYTHONPATH=str(installed))
    env.pop("KDBENCH_REFERENCE", None)
    where = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
        cwd=installed.parent,
    ).stdout.split()  # fmt: skip
    assert where == [
        str(installed / "kdbench" / "suites"),
        str(installed / "kdbench" / "reference"),
    ]


def test_the_repository_keeps_one_copy_of_each():
    """suites/ and results/reference/ are where the repository's users look: links to the
    package's folders, not copies."""
    assert (REPO / "suites").resolve() == shipped.SUITES
    assert (REPO / "results" / "reference").resolve() == shipped.REFERENCE


@pytest.mark.slow
def test_a_shipped_suite_runs_by_name_with_its_published_numbers(installed, tmp_path):
    listed = outside(installed, "list", "suites")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == shipped.suite_names() and "quickstart" in names
    assert all(len(line.split(maxsplit=1)) == 2 for line in listed.stdout.splitlines())

    ok = outside(installed, "validate", "cifar100_repdistiller", "quickstart.yaml")
    assert ok.returncode == 0 and ok.stdout.count("ok: ") == 2, ok.stderr
    dry = outside(installed, "run", "dataset_distillation", "--dry-run", "--results", str(tmp_path))
    assert dry.returncode == 0, dry.stderr
    assert str(installed / "kdbench" / "suites" / "dataset_distillation.yaml") in dry.stdout
    line = next(
        x for x in dry.stdout.splitlines() if "mnist/convnet3->convnet3/dd_random_ipc10" in x
    )
    assert "published 95.10%" in line  # the DC paper's random ipc-10 MNIST number

    typo = outside(installed, "run", "quickstrat")
    assert typo.returncode == 2 and "did you mean 'quickstart'" in typo.stderr
    assert typo.stderr.count("\n") == 1


def test_the_command_line_answers_before_importing_the_heavy_parts():
    for args in (["--help"], ["--version"], ["run", "--help"], ["list", "--help"]):
        code = (
            "import sys, time; t = time.perf_counter(); from kdbench.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'pandas', 'pyarrow', 'optuna', 'scipy')"
            " if m in sys.modules), file=sys.stderr)"
        )
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
        )
        assert proc.stderr.strip().splitlines()[-1] == "[]", (args, proc.stderr)
        assert time.perf_counter() - start < 30  # a hang, not a speed target: see benchmarks/
