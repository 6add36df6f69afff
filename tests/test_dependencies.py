"""Every package kdbench imports is one it declares: a fresh ``pip install kdbench`` (or
``kdbench[extra]``) has everything the code it runs needs, and nothing arrives by chance
through another package's dependencies."""

from __future__ import annotations

import ast
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised as PEP 503 does."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = {
        extra: {_name(r) for r in reqs}
        for extra, reqs in project.get("optional-dependencies", {}).items()
    }
    return {_name(r) for r in project["dependencies"]}, extras


def _imports(folder: Path) -> dict[str, list[tuple[str, bool]]]:
    """Top-level module -> [(file:line, imported at module level)] of every absolute import."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        guarded = {  # `if TYPE_CHECKING:` blocks import for the type checker only
            id(inner)
            for node in tree.body
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in node.body
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            if id(node) in guarded:
                continue
            for module in modules:
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                found.setdefault(module.split(".")[0], []).append((where, id(node) in top_level))
    return found


@functools.cache
def _providers() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _distribution(module: str) -> str | None:
    """The installed distribution that provides a top-level module (None: the standard
    library or this project)."""
    if module in sys.stdlib_module_names or module in ("kdbench", "tests", "__future__"):
        return None
    if any((REPO / folder / f"{module}.py").is_file() for folder in ("tests", "benchmarks")):
        return None  # a helper module of the tests or benchmarks (a plugin they register)
    dists = _providers().get(module)
    assert dists, f"'{module}' is imported but no installed distribution provides it"
    return _name(dists[0])


def test_every_import_of_the_package_is_declared():
    core, extras = _declared()
    optional = set().union(*extras.values()) - {"pytest", "ruff"}
    problems = []
    for module, uses in _imports(REPO / "kdbench").items():
        dist = _distribution(module)
        if dist is None or dist in core:
            continue
        if dist not in optional:
            problems.append(f"{module} ({dist}) is imported at {uses[0][0]} but not declared")
            continue
        eager = [where for where, at_top in uses if at_top]
        if eager:  # an optional package must load only where its feature is used
            problems.append(
                f"{module} ({dist}) is an optional dependency, imported at module level at "
                f"{eager[0]}: `import kdbench` would fail without it"
            )
    assert not problems, "\n".join(problems)


def test_tests_and_benchmarks_import_only_declared_packages():
    core, extras = _declared()
    declared = core | extras.get("dev", set())
    problems = [
        f"{module} ({dist}) is imported at {uses[0][0]} but is neither a dependency nor in [dev]"
        for folder in ("tests", "benchmarks")
        for module, uses in _imports(REPO / folder).items()
        if (dist := _distribution(module)) is not None and dist not in declared
    ]
    assert not problems, "\n".join(problems)


def test_the_check_sees_an_undeclared_import():
    """The scan itself: scipy is imported by the leaderboard, and it is found there."""
    uses = _imports(REPO / "kdbench").get("scipy", [])
    assert any(w.startswith("kdbench/results/leaderboard.py") for w, _ in uses)
    assert _distribution("scipy") == "scipy"
    assert _distribution("yaml") == "pyyaml" and _distribution("json") is None
