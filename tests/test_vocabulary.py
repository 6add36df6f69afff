"""Phases and statuses are one vocabulary (``results.schema.Phase``, ``Status``): every name
the code compares a phase or a status with, or writes as one, is declared there."""

from __future__ import annotations

import ast

from kdbench.results.schema import PHASES, STATUSES
from tests.conftest import REPO

VOCABULARY = {"phase": set(PHASES), "status": set(STATUSES)}


def _field(node: ast.AST) -> str | None:
    """'phase' or 'status' when ``node`` reads one: ``x.phase``, ``row["status"]``, ``phase``."""
    if isinstance(node, ast.Attribute) and node.attr in VOCABULARY:
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value if node.slice.value in VOCABULARY else None
    if isinstance(node, ast.Name) and node.id in VOCABULARY:
        return node.id
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _field(node.func.value)  # rows["phase"].isin([...])
    return None


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _strings(e)]
    return []


def uses(tree: ast.AST) -> list[tuple[str, str, int]]:
    """(field, name, line) of each phase or status the code spells out."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                field = _field(side)
                if field:
                    for other in (node.left, *node.comparators):
                        found += [(field, s, node.lineno) for s in _strings(other)]
        elif isinstance(node, ast.Call):
            field = _field(node)
            if field and isinstance(node.func, ast.Attribute) and node.func.attr == "isin":
                found += [(field, s, node.lineno) for a in node.args for s in _strings(a)]
            for kw in node.keywords:
                if kw.arg in VOCABULARY:
                    found += [(kw.arg, s, node.lineno) for s in _strings(kw.value)]
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value in VOCABULARY:
                    found += [(k.value, s, node.lineno) for s in _strings(v)]
        elif isinstance(node, ast.AnnAssign) and _field(node.target) and node.value is not None:
            found += [(_field(node.target), s, node.lineno) for s in _strings(node.value)]
    return found


def test_every_phase_and_status_the_code_names_is_declared():
    unknown, seen = [], 0
    for path in sorted((REPO / "kdbench").rglob("*.py")):
        if "mlflow" in path.parts:
            continue  # MLflow's runs have statuses of their own (RUNNING, FINISHED)
        for field, name, line in uses(ast.parse(path.read_text())):
            seen += 1
            if name not in VOCABULARY[field]:
                unknown.append(f"{path.relative_to(REPO)}:{line}: {field} '{name}'")
    assert not unknown, "\n".join(unknown)
    assert seen > 30  # the scan finds the code's uses (a broken scan would pass vacuously)


def test_the_scan_sees_a_misspelt_phase():
    tree = ast.parse('if spec.phase == "finals":\n    pass\nrow.update(status="okay")\n')
    assert uses(tree) == [("phase", "finals", 1), ("status", "okay", 3)]
