"""Errors a user can cause and fix. The command line prints them as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KdbenchError(Exception):
    """A user's mistake (bad suite, unknown name, unreadable file): one line, no traceback."""


class SuiteError(KdbenchError):
    """A suite that cannot run; the message names the file, the key, the value and the choices."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(one_line(where + message))


def one_line(text: str) -> str:
    """``text`` with its control characters (a newline inside a value) written as escapes, so
    that a message stays one line whatever a suite holds."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type when it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def choices_hint(value: object, choices: Iterable[str]) -> str:
    """`valid: a, b, c (did you mean 'b'?)` — the closest name is offered for a typo."""
    options = sorted(choices)
    text = "valid: " + ", ".join(options) if options else "nothing is registered"
    # Only a name can be a typo of one; str() of a huge structure must not even be tried.
    if not isinstance(value, str) or len(value) > 100:
        return text
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    if close:
        text += f" (did you mean '{close[0]}'?)"
    return text
