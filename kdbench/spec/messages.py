"""How a refusal shows a value: one line of at most about ``SHOW_MAX`` characters, whatever
the value (a newline escaped, a huge integer described, a structure drawn only as far as it
is shown: a suite's aliases can make one of billions of nodes, which must never be
serialised)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from kdbench.errors import one_line

SHOW_MAX = 60
"""Characters of a value that a message shows."""


def show(value: Any) -> str:
    """A value as a message shows it: a string quoted, anything else as JSON-like text."""
    if isinstance(value, str):
        return f"'{text(value)}'"
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool):
        return _integer(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return _clip(_pieces(value))
    if isinstance(value, (bytes, bytearray)):
        value = value[: SHOW_MAX + 1]
    return text(repr(value))


def text(value: str, limit: int = SHOW_MAX) -> str:
    """``value`` cut to ``limit`` characters, control characters (a newline) escaped."""
    value = one_line(value[: limit + 1])
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _integer(value: int) -> str:
    if abs(value) < 10**30:
        return repr(value)
    if value.bit_length() < 10_000:  # str() of an int refuses more than 4300 digits
        return f"an integer of {len(str(abs(value)))} digits"
    return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"


def _clip(pieces: Iterator[str]) -> str:
    """The pieces joined, drawn only until more than ``SHOW_MAX`` characters are there."""
    out: list[str] = []
    length = 0
    for piece in pieces:
        out.append(piece)
        length += len(piece)
        if length > SHOW_MAX:
            break
    return text("".join(out))


def _pieces(value: Any) -> Iterator[str]:
    """``value`` as JSON-like text, lazily: each level yields a bracket before descending,
    so a consumer that stops after n characters never goes deeper than n levels (nor loops
    on a structure that contains itself)."""
    if isinstance(value, dict):
        yield "{"
        for i, (k, v) in enumerate(value.items()):
            yield ", " if i else ""
            yield from _pieces(k)
            yield ": "
            yield from _pieces(v)
        yield "}"
    elif isinstance(value, (list, tuple, set, frozenset)):
        yield "["
        for i, v in enumerate(value):
            yield ", " if i else ""
            yield from _pieces(v)
        yield "]"
    elif isinstance(value, str):
        yield json.dumps(value[: SHOW_MAX + 1])
    elif isinstance(value, int) and not isinstance(value, bool):
        yield _integer(value)
    elif value is None or isinstance(value, (bool, float)):
        yield json.dumps(value)
    else:
        yield json.dumps(show(value))
