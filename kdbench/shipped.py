"""What ships inside the package: the suites, run by name, and the published numbers.

Both are package data (``kdbench/suites/*.yaml``, ``kdbench/reference/*.csv``), so a wheel
installed anywhere has them; the repository's top-level ``suites/`` and ``results/reference/``
are links to these folders, one copy of each. Nothing here imports more than the standard
library: ``kdbench list suites`` and the name lookup answer at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdbench.errors import KdbenchError, choices_hint

PACKAGE = Path(__file__).resolve().parent
SUITES = PACKAGE / "suites"
REFERENCE = PACKAGE / "reference"
SUFFIX = ".yaml"


def suite_names() -> list[str]:
    """The shipped suites' names (their file names without ``.yaml``), sorted."""
    return sorted(p.stem for p in SUITES.glob(f"*{SUFFIX}"))


def suite_file(suite: str | os.PathLike[str]) -> Path:
    """The file a ``kdbench run SUITE`` argument names: an existing file as given, else the
    shipped suite of that name (``quickstart`` or ``quickstart.yaml``)."""
    path = Path(suite)
    if path.is_file():
        return path
    text = os.fspath(suite)
    name = text[: -len(SUFFIX)] if text.endswith(SUFFIX) else text
    if os.sep not in text and "/" not in text and name in suite_names():
        return SUITES / f"{name}{SUFFIX}"
    if path.exists():  # a directory, a device: the reader says why it is not a suite
        return path
    shipped = suite_names()
    hint = (
        choices_hint(Path(name).name, shipped)
        if shipped
        else "no suite ships with this installation"
    )
    raise KdbenchError(
        f"{text}: no such suite file, and not the name of a shipped suite; {hint} "
        "(`kdbench list suites` describes them)"
    )


def describe(name: str) -> str:
    """A shipped suite's one line: the first line of its leading comment."""
    with (SUITES / f"{name}{SUFFIX}").open(encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            text = line.lstrip("#").strip()
            if text:
                return text
    return ""


def reference_dir() -> Path | None:
    """Where the published numbers are read from: ``$KDBENCH_REFERENCE``, else the package's."""
    env = os.environ.get("KDBENCH_REFERENCE")
    if env:
        return Path(env)
    return REFERENCE if REFERENCE.is_dir() else None
