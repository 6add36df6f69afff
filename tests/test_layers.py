"""The layers of docs/design.md, as pyproject.toml's import contracts: checked here, so that an
import pointing up a layer, or one from the suite layer into torch, fails CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import grimp

from tests.conftest import REPO

LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def lint(cwd, pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [*LINT, "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_of_package(tmp_path):
    """The package and its contracts, copied where a test may break them."""
    shutil.copytree(
        REPO / "kdbench", tmp_path / "kdbench", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path / "kdbench"


def test_the_layer_contracts_hold():
    done = lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_an_upward_import_breaks_the_layer_contract(tmp_path):
    """The check is real: a method that imports the training loop (a layer above it), in a
    copy of the package, is named as the broken contract."""
    kd = copy_of_package(tmp_path) / "methods" / "kd.py"
    kd.write_text(
        kd.read_text()
        + "\n\ndef _upward():\n    from kdbench.training import loop\n\n    return loop\n"
    )
    done = lint(tmp_path, pythonpath=tmp_path)
    assert done.returncode != 0
    assert "kdbench.methods is not allowed to import kdbench.training" in done.stdout
    assert "kdbench.methods.kd -> kdbench.training.loop" in done.stdout


def test_the_suite_layer_imports_no_torch(tmp_path):
    hparams = copy_of_package(tmp_path) / "spec" / "hparams.py"
    hparams.write_text(hparams.read_text() + "\nimport torch  # noqa: E402\n")
    done = lint(tmp_path, pythonpath=tmp_path)
    assert done.returncode != 0
    assert "kdbench.spec.hparams -> torch" in done.stdout


def test_no_module_imports_itself_through_others():
    """No import cycle, in-function imports included: an import kept inside a function to
    dodge a cycle is still an edge here."""
    graph = grimp.build_graph("kdbench", cache_dir=None)
    cycles = [
        (a, b)
        for a in sorted(graph.modules)
        for b in sorted(graph.find_modules_directly_imported_by(a))
        if graph.chain_exists(importer=b, imported=a)
    ]
    assert cycles == []
