"""The names a suite gives (its own, its labels): what they may be, and that no two of them
read alike in trial ids."""

from __future__ import annotations

import re

from kdbench.spec.checks import Reader
from kdbench.spec.ids import slug
from kdbench.spec.messages import show

# Matched with fullmatch: a pattern ending in `$` also accepts a trailing newline.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_MAX = 100
"""Characters of a suite's name or a label: they name a directory and trial files."""


def short(r: Reader, name: str, key: str) -> None:
    """Refuse a name longer than ``NAME_MAX``."""
    if len(name) > NAME_MAX:
        raise r.fail(
            key,
            f"{show(name)} has {len(name)} characters; give at most {NAME_MAX} "
            "(it names files and directories)",
        )


def one_id_part(r: Reader, entries: list[tuple[str, str]], fix: str) -> None:
    """Refuse two different names that read alike in trial ids (``slug``: ``kd+x`` and
    ``kd_plus_x``), case aside (a file system that ignores case keeps one of two files). A
    label is not in an id's hash, so two such labels of one method would share every trial
    id, and one row would silently take the other's place."""
    seen: dict[str, tuple[str, str]] = {}
    for key, name in entries:
        first_key, first = seen.setdefault(slug(name).casefold(), (key, name))
        if first != name:
            part = show(slug(first)) + (", case aside" if slug(first) != slug(name) else "")
            raise r.fail(
                key,
                f"{show(name)} reads as {show(first)} ({first_key}) in trial ids ({part}); {fix}",
            )
